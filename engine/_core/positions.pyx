"""Netting positions: exact average entry, realized PnL and fees in integer quote units.

See positions.pxd for the units, the 128-bit wide type and the one rounding rule.
"""
from fractions import Fraction

from libc.stdint cimport int32_t, int64_t, uint8_t, INT64_MAX
from libc.string cimport memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from engine._core.types cimport SIDE_BID, SIDE_ASK, Status, ST_OK
from engine._core.decimals cimport dec_to_steps, dec_raise
from engine._core.instrument cimport Instrument
from engine._core.types cimport Level
from engine._core.book cimport OrderBook
from engine._core.orders cimport (
    OR_OK, OR_UNCHANGED, OR_ERROR, OR_ILLEGAL, OR_CLOSED, OR_DUPLICATE_FILL, OR_BAD_QTY, OR_BAD_PRICE,
    OR_OVERFLOW, OR_BAD_SIDE, trade_ring_contains, trade_ring_push, tl_add_overflow_i64,
)

from engine.errors import DecimalError, InvalidTransition
from engine._core.orders import OrderInputError

_POSITION_STATUS_NAMES = ("CREATED", "IN_PROGRESS", "FINISHING", "COMPLETED", "FAILED")
_MASK64 = (1 << 64) - 1
_I128_MIN = -(1 << 127)
_I128_MAX = (1 << 127) - 1


cdef object i128_to_py(i128 v):
    # Split in C (the compiler sees the real 128-bit type), join as Python ints.
    cdef int64_t hi = <int64_t>(v >> 64)
    cdef unsigned long long lo = <unsigned long long>v   # low 64 bits
    return (<object>hi << 64) | <object>lo


cdef int i128_from_py(object v, i128* out) except -1:
    if not (_I128_MIN <= v <= _I128_MAX):
        raise OverflowError(f"{v} does not fit a signed 128-bit integer")
    cdef int64_t hi = v >> 64
    cdef unsigned long long lo = v & _MASK64
    out[0] = ((<i128>hi) << 64) | <i128>lo
    return 0


cdef str position_status_name(int status):
    return _POSITION_STATUS_NAMES[status] if 0 <= status < PS_COUNT else f"status#{status}"


cdef object position_error(OrderResult code, str symbol, int status, object detail):
    cdef str where = f"position {symbol} ({position_status_name(status)})"
    cdef str extra = f": {detail}" if detail else ""
    if code == OR_ILLEGAL or code == OR_CLOSED:
        return InvalidTransition(f"{where}: not legal from {position_status_name(status)}{extra}")
    if code == OR_DUPLICATE_FILL:
        return InvalidTransition(f"{where}: duplicate fill{extra}")
    if code == OR_BAD_QTY:
        return OrderInputError(f"{where}: qty_lots must be positive{extra}")
    if code == OR_BAD_PRICE:
        return OrderInputError(f"{where}: negative price{extra}")
    if code == OR_BAD_SIDE:
        return OrderInputError(f"{where}: side must be 0 (BID) or 1 (ASK){extra}")
    if code == OR_OVERFLOW:
        return OrderInputError(f"{where}: integer overflow{extra}")
    return InvalidTransition(f"{where}: result code {<int>code}{extra}")


cdef void position_init(PositionRec* p) noexcept nogil:
    memset(p, 0, sizeof(PositionRec))
    p.min_price_ticks = INT64_MAX
    p.max_price_ticks = -1
    p.instrument_idx = -1
    p.status = PS_CREATED


cdef OrderResult position_apply_fill(PositionRec* p, int side, int64_t price_ticks, int64_t qty_lots,
                                     int64_t fee, int64_t trade_id, int64_t ts_ns) noexcept nogil:
    """Fold one fill at a price into the position. O(1)."""
    if price_ticks < 0:
        return OR_BAD_PRICE
    if qty_lots <= 0:
        return OR_BAD_QTY
    return position_apply_fill_notional(p, side, qty_lots, <i128>price_ticks * qty_lots, price_ticks,
                                        fee, trade_id, ts_ns)


cdef OrderResult position_apply_fill_notional(PositionRec* p, int side, int64_t qty_lots, i128 notional_abs,
                                              int64_t price_ticks, int64_t fee, int64_t trade_id,
                                              int64_t ts_ns) noexcept nogil:
    """Fold one fill given by its total notional (quote units, >= 0), as venues that
    report cumulative cost do; ``price_ticks`` < 0 means no single price (min/max
    untouched). Everything is computed into locals and written only when no check
    failed. O(1)."""
    cdef int64_t signed_lots, new_qty, abs_qty, close_lots
    cdef i128 notional = p.entry_notional, realized = p.realized_pnl, fees = p.fees
    cdef i128 trade_sign, removed, product, pnl, close_notional
    cdef uint8_t target
    if side != SIDE_BID and side != SIDE_ASK:
        return OR_BAD_SIDE
    if qty_lots <= 0:
        return OR_BAD_QTY
    if notional_abs < 0:
        return OR_BAD_PRICE
    if trade_ring_contains(&p.trades, trade_id):
        return OR_DUPLICATE_FILL
    trade_sign = 1 if side == SIDE_BID else -1
    signed_lots = qty_lots if side == SIDE_BID else -qty_lots
    if tl_add_overflow_i64(p.qty_lots, signed_lots, &new_qty):
        return OR_OVERFLOW
    target = POSITION_TABLE[p.status][PE_FILL_FLAT if new_qty == 0 else PE_FILL_OPEN]
    if target == PT_ILLEGAL:
        return OR_CLOSED if p.status == PS_FAILED else OR_ILLEGAL
    if p.qty_lots == 0 or (p.qty_lots > 0) == (signed_lots > 0):
        # Opening or adding.
        if i128_add(notional, trade_sign * notional_abs, &notional):
            return OR_OVERFLOW
    else:
        # Reducing, closing, or flipping (a close of the whole position, then an open).
        abs_qty = p.qty_lots if p.qty_lots > 0 else -p.qty_lots
        close_lots = qty_lots if qty_lots < abs_qty else abs_qty
        if close_lots == abs_qty:
            removed = notional
        else:
            if i128_mul(notional, <i128>close_lots, &product):
                return OR_OVERFLOW
            removed = i128_floordiv(product, <i128>abs_qty)
        if close_lots == qty_lots:
            close_notional = notional_abs
        else:
            # Flip given only a total notional: the close part gets the floor of its
            # share, the open part the rest (exact when notional_abs = price * qty).
            if i128_mul(notional_abs, <i128>close_lots, &product):
                return OR_OVERFLOW
            close_notional = i128_floordiv(product, <i128>qty_lots)
        # pnl = -(signed close trade notional) - removed cost basis.
        if i128_add(-(trade_sign * close_notional), -removed, &pnl) or i128_add(realized, pnl, &realized):
            return OR_OVERFLOW
        notional = notional - removed
        if close_lots < qty_lots:
            notional = trade_sign * (notional_abs - close_notional)
    if i128_add(fees, <i128>fee, &fees):
        return OR_OVERFLOW
    p.entry_notional = notional
    p.realized_pnl = realized
    p.fees = fees
    p.qty_lots = new_qty
    if target != PT_SAME:
        p.status = target
    if price_ticks >= 0:
        if price_ticks < p.min_price_ticks:
            p.min_price_ticks = price_ticks
        if price_ticks > p.max_price_ticks:
            p.max_price_ticks = price_ticks
    p.fill_count += 1
    trade_ring_push(&p.trades, trade_id)
    if ts_ns > p.updated_ns:
        p.updated_ns = ts_ns
    return OR_OK


cdef OrderResult position_set_status(PositionRec* p, int status, int64_t ts_ns) noexcept nogil:
    """The venue states a status. OR_UNCHANGED when it is the current one."""
    if status < 0 or status >= PS_COUNT:
        return OR_ILLEGAL
    cdef uint8_t target = POSITION_TABLE[p.status][PE_SET_CREATED + status]
    if target == PT_ILLEGAL:
        return OR_ILLEGAL
    if ts_ns > p.updated_ns:
        p.updated_ns = ts_ns
    if target == PT_SAME:
        return OR_UNCHANGED
    p.status = target
    return OR_OK


def position_transition(int status, int event):
    """The raw table entry for (status, engine.PositionEvent): the next status, -1 when
    illegal, -2 when legal and the status stays. O(1)."""
    if not (0 <= status < PS_COUNT) or not (0 <= event < PE_COUNT):
        raise OrderInputError(f"no such position status {status} or event {event}")
    cdef uint8_t t = POSITION_TABLE[status][event]
    return -1 if t == PT_ILLEGAL else (-2 if t == PT_SAME else t)


cdef int64_t _quote_step(Instrument inst, int32_t* decimals) except -1:
    cdef int64_t step
    if tl_mul_overflow(inst.tick_units, inst.lot_units, &step):
        raise OverflowError(f"{inst.symbol}: tick_units * lot_units overflows int64")
    decimals[0] = inst.price_decimals + inst.qty_decimals
    return step


cdef extern from *:
    """
    #define tl_mul_overflow(a, b, out) __builtin_mul_overflow((a), (b), (out))
    """
    bint tl_mul_overflow(int64_t a, int64_t b, int64_t* out) noexcept nogil


cpdef int64_t quote_to_units(Instrument inst, object value) except? -1:
    """Convert a quote-currency decimal string (a fee, a cost, a PnL) to an exact count of
    quote units (tick_size * lot_size of ``inst``). Signed. ``DecimalError`` naming the
    value when it is malformed, overflows int64, or is not a whole number of units. O(len)."""
    cdef int32_t decimals = 0
    cdef int64_t step = _quote_step(inst, &decimals)
    cdef int64_t out = 0
    cdef const char* s
    cdef Py_ssize_t n
    if isinstance(value, str):
        s = PyUnicode_AsUTF8AndSize(value, &n)
    elif isinstance(value, bytes):
        s = PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
    else:
        raise DecimalError(f"expected a decimal string, got {type(value).__name__} {value!r}")
    cdef Status st = dec_to_steps(s, n, decimals, step, &out)
    if st != ST_OK:
        dec_raise(st, value, f"{inst.symbol} quote amount (tick*lot {inst.tick_size}*{inst.lot_size})")
    return out


def units_to_quote(Instrument inst, object units):
    """Format an exact count of quote units (any Python int) as a decimal string with
    price_decimals + qty_decimals fraction digits, no float anywhere. O(digits)."""
    cdef int32_t decimals = 0
    cdef int64_t step = _quote_step(inst, &decimals)
    v = int(units) * step
    sign = "-" if v < 0 else ""
    digits = str(abs(v)).rjust(decimals + 1, "0")
    if decimals == 0:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


cdef class Position:
    """A netting position in one instrument.

    ``qty_lots`` is signed (long > 0). Money is exact integer quote units, one unit
    being tick_size * lot_size (so price_ticks * qty_lots is a notional in units):
    ``entry_notional``, ``realized_pnl`` (fees not included) and ``fees``; they are
    Python ints backed by 128-bit integers. ``avg_entry_price`` is the exact
    ``Fraction`` entry_notional / qty_lots in ticks. Rounding rule: see positions.pxd
    (a partial close removes the floor of the pro-rata cost basis; the sub-unit
    remainder stays in the open position; round trips are exact).

    >>> from engine import Instrument
    >>> pos = Position(Instrument("BTCUSDT", "0.01", "0.001"))
    >>> pos.apply_fill(0, 10000, 3); pos.apply_fill(1, 10100, 5)
    >>> pos.qty_lots, pos.realized_pnl, pos.avg_entry_price
    (-2, 300, Fraction(10100, 1))
    """

    def __init__(self, Instrument instrument):
        position_init(&self.rec)
        self.instrument = instrument
        self.symbol = instrument.symbol

    @staticmethod
    cdef Position from_rec(const PositionRec* rec, object instrument, str symbol):
        cdef Position p = Position.__new__(Position)
        p.rec = rec[0]
        p.instrument = instrument
        p.symbol = symbol
        return p

    def apply_fill(self, int side, int64_t price_ticks, int64_t qty_lots, int64_t fee=0,
                   int64_t trade_id=0, int64_t ts_ns=0):
        """Fold a fill in: ``side`` 0 (BID) buys, 1 (ASK) sells; ``fee`` in quote units
        (negative for a rebate); ``trade_id`` non-zero is remembered among the last 16
        to refuse duplicates. A flip is a close then an open at the same price. O(1).
        Raises ``InvalidTransition`` (duplicate, FAILED position) or ``OrderInputError``
        (bad side/qty/price, overflow); the position is then unchanged."""
        cdef OrderResult r = position_apply_fill(&self.rec, side, price_ticks, qty_lots, fee, trade_id, ts_ns)
        if r != OR_OK:
            raise position_error(r, self.symbol, self.rec.status,
                                 f"side={side} price_ticks={price_ticks} qty_lots={qty_lots} trade_id={trade_id}")

    def set_status(self, int status, int64_t ts_ns=0):
        """Apply a venue-stated status (engine.PositionStatus). True when it changed,
        False when it was already that status; ``InvalidTransition`` when illegal. O(1)."""
        cdef int before = self.rec.status
        cdef OrderResult r = position_set_status(&self.rec, status, ts_ns)
        if r >= OR_ERROR:
            raise position_error(r, self.symbol, before, f"to {position_status_name(status)}")
        return r == OR_OK

    def unrealized_pnl_at(self, int64_t price_ticks):
        """Exact unrealized PnL (quote units, int) if the position were valued at
        ``price_ticks``: price_ticks * qty_lots - entry_notional. O(1)."""
        return i128_to_py(<i128>price_ticks * self.rec.qty_lots - self.rec.entry_notional)

    def unrealized_pnl(self, book, str price="mid"):
        """Exact unrealized PnL (``Fraction`` of quote units) against an order book's
        ``"mid"``, ``"bid"`` or ``"ask"``; None when a needed side is empty. The mid may
        be half a tick, hence the Fraction. An ``engine.OrderBook`` is read through its
        C-level best_level; any other object through ``best_bid()``/``best_ask()``
        returning (price_ticks, qty_lots) or None. O(1)."""
        cdef Level level
        cdef int64_t bid = -1, ask = -1
        if price != "mid" and price != "bid" and price != "ask":
            raise OrderInputError(f"price must be 'mid', 'bid' or 'ask', got {price!r}")
        if isinstance(book, OrderBook):
            if price != "ask" and (<OrderBook>book).best_level(SIDE_BID, &level):
                bid = level.price_ticks
            if price != "bid" and (<OrderBook>book).best_level(SIDE_ASK, &level):
                ask = level.price_ticks
        else:
            if price != "ask":
                top = book.best_bid()
                bid = top[0] if top is not None else -1
            if price != "bid":
                top = book.best_ask()
                ask = top[0] if top is not None else -1
        if price == "bid":
            return None if bid < 0 else Fraction(self.unrealized_pnl_at(bid))
        if price == "ask":
            return None if ask < 0 else Fraction(self.unrealized_pnl_at(ask))
        if bid < 0 or ask < 0:
            return None
        # Python ints: (bid + ask) * qty_lots may pass int64.
        return Fraction((<object>bid + <object>ask) * <object>self.rec.qty_lots, 2) - i128_to_py(self.rec.entry_notional)

    def to_quote_decimal(self, units):
        """Format quote units (e.g. ``realized_pnl``) as an exact decimal string."""
        return units_to_quote(self.instrument, units)

    def realized_pnl_decimal(self):
        """``realized_pnl`` as an exact decimal string in the quote currency."""
        return units_to_quote(self.instrument, i128_to_py(self.rec.realized_pnl))

    def _check_invariants(self):
        """Raise AssertionError when the record breaks an invariant (tests only)."""
        cdef PositionRec* p = &self.rec
        if p.qty_lots == 0 and p.entry_notional != 0:
            raise AssertionError("flat position with a cost basis")
        if p.qty_lots > 0 and p.entry_notional < 0 or p.qty_lots < 0 and p.entry_notional > 0:
            raise AssertionError("cost basis sign differs from the quantity's")
        if p.status >= PS_COUNT:
            raise AssertionError(f"bad status {p.status}")
        if p.max_price_ticks >= 0 and p.min_price_ticks > p.max_price_ticks:
            raise AssertionError("min price above max price")
        if (p.max_price_ticks < 0) != (p.min_price_ticks == INT64_MAX):
            raise AssertionError("only one of min/max price set")

    @property
    def qty_lots(self) -> int:
        """Signed quantity in lots (long > 0, short < 0)."""
        return self.rec.qty_lots
    @property
    def entry_notional(self) -> int:
        """Signed cost basis of the open quantity, quote units."""
        return i128_to_py(self.rec.entry_notional)
    @property
    def avg_entry_price(self):
        """Exact average entry in ticks (``Fraction``), None when flat."""
        if self.rec.qty_lots == 0:
            return None
        return Fraction(i128_to_py(self.rec.entry_notional), self.rec.qty_lots)
    @property
    def realized_pnl(self) -> int:
        """Realized PnL in quote units, fees excluded."""
        return i128_to_py(self.rec.realized_pnl)
    @property
    def fees(self) -> int:
        """Sum of fees in quote units."""
        return i128_to_py(self.rec.fees)
    @property
    def status(self) -> int:
        """engine.PositionStatus code."""
        return self.rec.status
    @property
    def min_price_ticks(self):
        """Lowest fill price seen, None before any fill with a price."""
        return self.rec.min_price_ticks if self.rec.max_price_ticks >= 0 else None
    @property
    def max_price_ticks(self):
        """Highest fill price seen, None before any fill with a price."""
        return self.rec.max_price_ticks if self.rec.max_price_ticks >= 0 else None
    @property
    def fill_count(self) -> int:
        """Fills applied."""
        return self.rec.fill_count
    @property
    def updated_ns(self) -> int:
        """Time of the newest applied change, ns."""
        return self.rec.updated_ns

    def __repr__(self):
        return (f"Position({self.symbol}, {position_status_name(self.rec.status)}, qty_lots={self.rec.qty_lots}, "
                f"avg_entry={self.avg_entry_price}, realized={self.realized_pnl}, fees={self.fees})")
