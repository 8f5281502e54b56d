"""ticklot engine: exact integer-tick order books, klines and positions in Cython.

Public names are re-exported here; see each module's docstring for details.
"""
from __future__ import annotations

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
from engine.engine import Engine, Trade
from engine.kline import BAR_DTYPE, KlineAggregator, KlineError
from engine.account import (
    ORDER_DTYPE,
    Account,
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
