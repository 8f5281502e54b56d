"""ticklot engine: exact integer-tick order books, klines and positions in Cython.

Public names are re-exported here; see each module's docstring for details.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import (
    BookCrossedError,
    BookError,
    DecimalError,
    DecodeError,
    EngineError,
    FeedError,
    InvalidTransition,
    SequenceGapError,
)
from engine._core.instrument import Instrument
from engine.book import LEVEL_DTYPE, CrossPolicy, OrderBook, Side
from engine.kline import BAR_DTYPE, KlineAggregator, KlineError
from engine.account import (
    ORDER_DTYPE,
    Account,
    AccountBatch,
    Balance,
    Order,
    OrderEvent,
    OrderInputError,
    OrderStatus,
    OrderType,
    Position,
    PositionEvent,
    PositionStatus,
)

__all__ = [
    "Account",
    "AccountBatch",
    "Balance",
    "ORDER_DTYPE",
    "Order",
    "OrderEvent",
    "OrderInputError",
    "OrderStatus",
    "OrderType",
    "Position",
    "PositionEvent",
    "PositionStatus",
    "BAR_DTYPE",
    "KlineAggregator",
    "KlineError",
    "BookCrossedError",
    "BookError",
    "CrossPolicy",
    "DecimalError",
    "DecodeError",
    "Engine",
    "EngineError",
    "FeedError",
    "Instrument",
    "InvalidTransition",
    "LEVEL_DTYPE",
    "OrderBook",
    "SequenceGapError",
    "Side",
    "Trade",
]

if TYPE_CHECKING:
    from engine.engine import Engine, Trade


def __getattr__(name: str) -> Any:
    # The feed-facing Engine is loaded on first use: the core (books, klines, accounts)
    # imports without the feed layer, and feeds.* modules can import engine.errors
    # without an import cycle through engine.engine -> feeds.session.
    if name in ("Engine", "Trade"):
        from engine import engine as engine_module

        return getattr(engine_module, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
