"""Orders, positions and balances: the Python face of ``engine._core.{orders,positions,account}``.

The state lives in Cython structs; this module names the integer codes (``OrderStatus``,
``OrderType``, ``OrderEvent``, ``PositionStatus``, ``PositionEvent``), parses venue
strings into them, and re-exports the classes.

Units everywhere: prices int64 ticks, quantities int64 lots, money exact integer
"quote units" of tick_size * lot_size (``price_ticks * qty_lots`` is a notional in
quote units; ``units_to_quote`` formats one as a decimal string), balances exact
integers at a per-asset ``decimals`` scale, times int64 ns.

>>> from engine import Account, Instrument, OrderStatus, Side
>>> acct = Account()
>>> acct.add_instrument(Instrument("BTCUSDT", "0.01", "0.001"))
0
>>> acct.add_order("42", "BTCUSDT", Side.BID, 5, 6183763, status=OrderStatus.NEW)
0
>>> acct.apply_fill("42", trade_id=1, price_ticks=6183763, qty_lots=2)
True
>>> OrderStatus(acct.order("42").status).name, acct.position("BTCUSDT").qty_lots
('PARTIALLY_FILLED', 2)
"""
from __future__ import annotations

from enum import IntEnum

from engine._core.account import ORDER_DTYPE, ORDER_ROW_SIZE, Account, AccountBatch, Balance
from engine._core.venue_fields import (
    parse_order_status as _parse_order_status,
    parse_order_type as _parse_order_type,
    parse_position_status as _parse_position_status,
    parse_side as _parse_side,
)
from engine._core.orders import Order, OrderInputError, order_transition
from engine._core.positions import Position, position_transition, quote_to_units, units_to_quote

#: Duplicate trade ids are detected among the last this-many fills of each order and
#: of each position (a fixed ring in the struct: no allocation per fill).
TRADE_ID_MEMORY = 16


class OrderStatus(IntEnum):
    """Order status codes (``Order.status``, the ``status`` column of ``ORDER_DTYPE``)."""

    PENDING_NEW = 0
    NEW = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    PENDING_CANCEL = 4
    PENDING_REPLACE = 5
    CANCELED = 6
    EXPIRED = 7
    REJECTED = 8

    @property
    def is_closed(self) -> bool:
        """True for FILLED, CANCELED, EXPIRED, REJECTED: no event is legal any more."""
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)


class OrderType(IntEnum):
    """Order types as the bot platform names them."""

    LIMIT = 0
    MARKET = 1
    STOP = 2
    STOP_MARKET = 3
    TAKE_PROFIT = 4
    TAKE_PROFIT_MARKET = 5
    TRAILING_STOP_MARKET = 6


class OrderEvent(IntEnum):
    """Events of the order transition table (``order_transition``)."""

    ACCEPTED = 0
    REJECTED = 1
    FILL = 2
    CANCEL_REQUESTED = 3
    CANCEL_REJECTED = 4
    CANCELED = 5
    EXPIRED = 6
    REPLACE_REQUESTED = 7
    REPLACE_REJECTED = 8
    REPLACED = 9


class PositionStatus(IntEnum):
    """Position statuses as the bot platform sends them."""

    CREATED = 0
    IN_PROGRESS = 1
    FINISHING = 2
    COMPLETED = 3
    FAILED = 4


class PositionEvent(IntEnum):
    """Events of the position transition table (``position_transition``)."""

    FILL_OPEN = 0
    FILL_FLAT = 1
    SET_CREATED = 2
    SET_IN_PROGRESS = 3
    SET_FINISHING = 4
    SET_COMPLETED = 5
    SET_FAILED = 6


def parse_order_status(text: str) -> OrderStatus:
    """``OrderStatus`` from a venue string: "PartiallyFilled", "PARTIALLY_FILLED",
    "partial", "open", "Cancelled"... (case, '_', '-' and spaces ignored).
    ``OrderInputError`` naming the string when unknown."""
    return OrderStatus(_parse_order_status(text))


def parse_order_type(text: str) -> OrderType:
    """``OrderType`` from a venue string ("Limit", "TakeProfitMarket", "STOP_MARKET")."""
    return OrderType(_parse_order_type(text))


def parse_position_status(text: str) -> PositionStatus:
    """``PositionStatus`` from a venue string ("Created", "InProgress", "IN_PROGRESS")."""
    return PositionStatus(_parse_position_status(text))


def parse_side(value: int | str) -> int:
    """0 (BID: "buy", "bid", "long") or 1 (ASK: "sell", "ask", "short")."""
    return _parse_side(value)


__all__ = [
    "Account",
    "AccountBatch",
    "Balance",
    "ORDER_DTYPE",
    "ORDER_ROW_SIZE",
    "Order",
    "OrderEvent",
    "OrderInputError",
    "OrderStatus",
    "OrderType",
    "Position",
    "PositionEvent",
    "PositionStatus",
    "TRADE_ID_MEMORY",
    "order_transition",
    "parse_order_status",
    "parse_order_type",
    "parse_position_status",
    "parse_side",
    "position_transition",
    "quote_to_units",
    "units_to_quote",
]
