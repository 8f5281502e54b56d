"""Pure-Python reference for orders and positions (Fraction / Decimal / Python int).

Written to be obviously right rather than fast; the tests compare the Cython core to
it and the ``positions`` benchmark measures it as the "reference" implementation.

Two views of a position are kept side by side:

- the textbook average-cost accounting in exact ``Fraction`` (``avg_exact``,
  ``realized_exact``): a partial close realizes (price - avg) * lots and leaves the
  average unchanged;
- the engine's integer rule (``notional``, ``realized``): a partial close of k of
  |q| lots removes floor(notional * k / |q|) from the cost basis, the sub-unit
  remainder staying in the open position.

Invariant tying them: realized - notional == realized_exact - avg_exact * qty (so
realized + unrealized PnL at any mark is the same in both), and both realized figures
agree whenever the position is flat.
"""
from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

BID, ASK = 0, 1

# Order statuses and events, spelled out independently of the engine's tables.
PENDING_NEW, NEW, PARTIALLY_FILLED, FILLED, PENDING_CANCEL, PENDING_REPLACE, CANCELED, EXPIRED, REJECTED = range(9)
CLOSED = {FILLED, CANCELED, EXPIRED, REJECTED}
(ACCEPTED, E_REJECTED, FILL, CANCEL_REQUESTED, CANCEL_REJECTED, E_CANCELED, E_EXPIRED,
 REPLACE_REQUESTED, REPLACE_REJECTED, REPLACED) = range(10)

BY_FILL = "by_fill"   # FILLED when complete, else PARTIALLY_FILLED (pending states kept)
OPEN = "open"         # PARTIALLY_FILLED when something is filled, else NEW

# Legal (status, event) -> target; every pair not listed is illegal.
LEGAL: dict[tuple[int, int], int | str] = {}
for _s in (PENDING_NEW, NEW, PARTIALLY_FILLED, PENDING_CANCEL, PENDING_REPLACE):
    LEGAL[(_s, FILL)] = BY_FILL
    LEGAL[(_s, E_CANCELED)] = CANCELED
    LEGAL[(_s, E_EXPIRED)] = EXPIRED
for _s in (PENDING_NEW, NEW, PARTIALLY_FILLED, PENDING_REPLACE):
    LEGAL[(_s, CANCEL_REQUESTED)] = PENDING_CANCEL
for _s in (NEW, PARTIALLY_FILLED):
    LEGAL[(_s, REPLACE_REQUESTED)] = PENDING_REPLACE
    LEGAL[(_s, REPLACED)] = OPEN
LEGAL[(PENDING_NEW, ACCEPTED)] = NEW
LEGAL[(PENDING_NEW, E_REJECTED)] = REJECTED
LEGAL[(PENDING_CANCEL, CANCEL_REJECTED)] = OPEN
LEGAL[(PENDING_REPLACE, REPLACE_REJECTED)] = OPEN
LEGAL[(PENDING_REPLACE, REPLACED)] = OPEN


class ReferenceError_(ValueError):
    """The reference refused an update (mirrors the engine's refusals)."""


class ReferenceOrder:
    """An order as a plain object with a dict transition table."""

    def __init__(self, order_id: str, side: int, qty_lots: int, price_ticks: int, status: int = NEW) -> None:
        self.order_id = order_id
        self.side = side
        self.qty_lots = qty_lots
        self.price_ticks = price_ticks
        self.status = status
        self.filled_lots = 0
        self.cost = 0
        self.trade_ids: list[int] = []

    def _resolve(self, target: int | str) -> int:
        if target == BY_FILL:
            if self.filled_lots == self.qty_lots:
                return FILLED
            return self.status if self.status in (PENDING_CANCEL, PENDING_REPLACE) else PARTIALLY_FILLED
        if target == OPEN:
            if self.filled_lots == self.qty_lots:
                return FILLED
            return PARTIALLY_FILLED if self.filled_lots else NEW
        assert isinstance(target, int)
        return target

    def apply_event(self, event: int) -> None:
        target = LEGAL.get((self.status, event))
        if target is None or event == FILL:
            raise ReferenceError_(f"{event} illegal from {self.status}")
        self.status = self._resolve(target)

    def apply_fill(self, price_ticks: int, qty_lots: int, trade_id: int = 0) -> None:
        if qty_lots <= 0 or price_ticks < 0:
            raise ReferenceError_("bad fill")
        if (self.status, FILL) not in LEGAL:
            raise ReferenceError_("fill illegal")
        if qty_lots > self.qty_lots - self.filled_lots:
            raise ReferenceError_("overfill")
        if trade_id and trade_id in self.trade_ids[-16:]:
            raise ReferenceError_("duplicate")
        self.filled_lots += qty_lots
        self.cost += price_ticks * qty_lots
        self.status = self._resolve(BY_FILL)
        if trade_id:
            self.trade_ids.append(trade_id)


class ReferencePosition:
    """A netting position in exact Python numbers (see the module docstring)."""

    def __init__(self, tick_size: str = "1", lot_size: str = "1", *, exact_view: bool = True) -> None:
        # exact_view=False skips the Fraction textbook figures (the benchmark's setting).
        self.exact_view = exact_view
        self.tick_size = Decimal(tick_size)
        self.lot_size = Decimal(lot_size)
        self.qty = 0
        self.notional = 0            # engine rule: int cost basis
        self.realized = 0            # engine rule: int realized PnL
        self.fees = 0
        self.avg_exact = Fraction(0)       # textbook average cost (ticks)
        self.realized_exact = Fraction(0)  # textbook realized PnL (quote units)
        self.min_price: int | None = None
        self.max_price: int | None = None

    def apply_fill(self, side: int, price_ticks: int, qty_lots: int, fee: int = 0) -> None:
        if qty_lots <= 0 or price_ticks < 0 or side not in (BID, ASK):
            raise ReferenceError_("bad fill")
        sign = 1 if side == BID else -1
        signed = sign * qty_lots
        if self.exact_view:
            self._textbook(sign, price_ticks, qty_lots)
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.notional += sign * price_ticks * qty_lots
        else:
            close = min(qty_lots, abs(self.qty))
            removed = self.notional * close // abs(self.qty)   # Python floors toward -inf
            self.realized += -sign * price_ticks * close - removed
            self.notional -= removed
            if qty_lots > close:
                self.notional = sign * price_ticks * (qty_lots - close)
        self.qty += signed
        self.fees += fee
        self.min_price = price_ticks if self.min_price is None else min(self.min_price, price_ticks)
        self.max_price = price_ticks if self.max_price is None else max(self.max_price, price_ticks)

    def _textbook(self, sign: int, price: int, lots: int) -> None:
        q = self.qty
        if q == 0 or (q > 0) == (sign > 0):
            self.avg_exact = (self.avg_exact * abs(q) + price * lots) / (abs(q) + lots)
            return
        close = min(lots, abs(q))
        direction = 1 if q > 0 else -1
        self.realized_exact += (price - self.avg_exact) * close * direction
        if lots > close:
            self.avg_exact = Fraction(price)
        elif close == abs(q):
            self.avg_exact = Fraction(0)

    @property
    def avg_entry_price(self) -> Fraction | None:
        """The engine rule's average entry (ticks), None when flat."""
        return None if self.qty == 0 else Fraction(self.notional, self.qty)

    def realized_decimal(self) -> Decimal:
        """Realized PnL in the quote currency as an exact Decimal."""
        with localcontext() as ctx:
            ctx.prec = 80
            return Decimal(self.realized) * self.tick_size * self.lot_size


class ReferenceAccount:
    """Orders in a dict, one position per symbol: the benchmark's pure-Python peer."""

    def __init__(self, *, exact_view: bool = True) -> None:
        self.exact_view = exact_view
        self.orders: dict[str, ReferenceOrder] = {}
        self.order_symbol: dict[str, str] = {}
        self.positions: dict[str, ReferencePosition] = {}

    def add_order(self, order_id: str, symbol: str, side: int, qty_lots: int, price_ticks: int) -> None:
        self.orders[order_id] = ReferenceOrder(order_id, side, qty_lots, price_ticks)
        self.order_symbol[order_id] = symbol
        self.positions.setdefault(symbol, ReferencePosition(exact_view=self.exact_view))

    def apply_fill(self, order_id: str, trade_id: int, price_ticks: int, qty_lots: int, fee: int = 0) -> bool:
        order = self.orders[order_id]
        order.apply_fill(price_ticks, qty_lots, trade_id)
        self.positions[self.order_symbol[order_id]].apply_fill(order.side, price_ticks, qty_lots, fee)
        return True
