"""Order state machine: the transition table, fills, full-object updates, ``Order``.

Every helper validates first and changes nothing unless it returns OR_OK; the one
GIL-holding wrapper per public method turns a result code into an exception through
``order_raise``.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memset

from engine._core.types cimport SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument

from engine.errors import EngineError, InvalidTransition, OrderInputError


_STATUS_NAMES = ("PENDING_NEW", "NEW", "PARTIALLY_FILLED", "FILLED", "PENDING_CANCEL",
                 "PENDING_REPLACE", "CANCELED", "EXPIRED", "REJECTED")
_EVENT_NAMES = ("ACCEPTED", "REJECTED", "FILL", "CANCEL_REQUESTED", "CANCEL_REJECTED",
                "CANCELED", "EXPIRED", "REPLACE_REQUESTED", "REPLACE_REJECTED", "REPLACED")

# The status a plain event leads to, used to recognise a repeated event (idempotence).
# 255: the event's result depends on quantities, so it is never a plain repeat.
cdef uint8_t[OE_COUNT] EVENT_RESULT
EVENT_RESULT[:] = [OS_NEW, OS_REJECTED, 255, OS_PENDING_CANCEL, 255, OS_CANCELED, OS_EXPIRED,
                   OS_PENDING_REPLACE, 255, 255]


cdef str order_status_name(int status):
    return _STATUS_NAMES[status] if 0 <= status < OS_COUNT else f"status#{status}"


cdef str order_event_name(int event):
    return _EVENT_NAMES[event] if 0 <= event < OE_COUNT else f"event#{event}"


cdef str _event_target_name(int event):
    # The status an event leads to, as a name for error messages.
    if event >= 0 and event < OE_COUNT and EVENT_RESULT[event] != 255:
        return order_status_name(EVENT_RESULT[event])
    return "FILLED/PARTIALLY_FILLED" if event == OE_FILL else "NEW/PARTIALLY_FILLED"


def order_transition(int status, int event):
    """The raw table entry for (status, event): the next status code, -1 when illegal,
    -2 when it depends on the filled quantity (fills), -3 when it returns to the open
    state the quantities say (NEW or PARTIALLY_FILLED). O(1)."""
    if not (0 <= status < OS_COUNT) or not (0 <= event < OE_COUNT):
        raise OrderInputError(f"no such order status {status} or event {event}")
    cdef uint8_t t = ORDER_TABLE[status][event]
    if t == OT_TARGET_ILLEGAL:
        return -1
    if t == OT_TARGET_BY_FILL:
        return -2
    if t == OT_TARGET_OPEN:
        return -3
    return t


cdef void order_init(OrderRec* o, int side, int order_type, int64_t qty_lots, int64_t price_ticks,
                     int64_t stop_price_ticks, int status, int64_t ts_ns) noexcept nogil:
    memset(o, 0, sizeof(OrderRec))
    o.side = <uint8_t>side
    o.order_type = <uint8_t>order_type
    o.qty_lots = qty_lots
    o.price_ticks = price_ticks
    o.stop_price_ticks = stop_price_ticks
    o.status = <uint8_t>status
    o.created_ns = ts_ns
    o.updated_ns = ts_ns
    o.instrument_idx = -1


cdef inline OrderResult _event_step(OrderRec* o, int event) noexcept nogil:
    cdef uint8_t target = ORDER_TABLE[o.status][event]
    if target == OT_TARGET_ILLEGAL:
        return OR_CLOSED if order_is_closed(o.status) and event == OE_FILL else OR_ILLEGAL
    o.status = order_resolve(o, target, o.filled_lots)
    return OR_OK


cdef OrderResult order_apply_event(OrderRec* o, int event, int64_t ts_ns, int64_t seq) noexcept nogil:
    """One non-fill event of the table (fills go through order_check_fill/commit)."""
    if event < 0 or event >= OE_COUNT or event == OE_FILL:
        return OR_ILLEGAL
    if order_is_stale(o, ts_ns, seq):
        return OR_STALE
    if ORDER_TABLE[o.status][event] == OT_TARGET_ILLEGAL:
        # The same event delivered twice (no newer time or sequence) is not an error.
        if EVENT_RESULT[event] == o.status and ts_ns <= o.updated_ns and (seq == 0 or seq == o.seq):
            return OR_UNCHANGED
        return OR_ILLEGAL
    _event_step(o, event)
    if ts_ns > o.updated_ns:
        o.updated_ns = ts_ns
    if seq != 0:
        o.seq = seq
    return OR_OK


cdef inline int _event_towards(uint8_t current, uint8_t wanted) noexcept nogil:
    """The event that takes an order from `current` to the stated `wanted` status."""
    if wanted == OS_NEW or wanted == OS_PARTIALLY_FILLED:
        if current == OS_PENDING_NEW:
            return OE_ACCEPTED
        if current == OS_PENDING_CANCEL:
            return OE_CANCEL_REJECTED
        if current == OS_PENDING_REPLACE:
            return OE_REPLACE_REJECTED
        return OE_REPLACED if wanted == OS_NEW else OE_FILL
    if wanted == OS_FILLED:
        return OE_FILL
    if wanted == OS_PENDING_CANCEL:
        return OE_CANCEL_REQUESTED
    if wanted == OS_PENDING_REPLACE:
        return OE_REPLACE_REQUESTED
    if wanted == OS_CANCELED:
        return OE_CANCELED
    if wanted == OS_EXPIRED:
        return OE_EXPIRED
    if wanted == OS_REJECTED:
        return OE_REJECTED
    return OE_ACCEPTED   # PENDING_NEW is never a target: the table refuses it


cdef OrderResult order_apply_snapshot(OrderRec* o, uint8_t status, int64_t qty_lots, int64_t filled_lots,
                                      int64_t price_ticks, int64_t stop_price_ticks, int64_t cost,
                                      int64_t ts_ns, int64_t seq, int* event_out) noexcept nogil:
    # Work on a copy: a full object may carry an amend, a fill and a status change at
    # once, and it applies whole or not at all.
    cdef OrderRec tmp
    cdef OrderResult r
    cdef int event
    event_out[0] = OE_REPLACED
    if status >= OS_COUNT:
        return OR_ILLEGAL
    if qty_lots <= 0 or filled_lots < 0:
        return OR_BAD_QTY
    if price_ticks < 0 or stop_price_ticks < 0:
        return OR_BAD_PRICE
    event_out[0] = OE_FILL
    if filled_lots > qty_lots:
        return OR_OVERFILL
    if order_is_stale(o, ts_ns, seq):
        return OR_STALE
    if (status == o.status and qty_lots == o.qty_lots and filled_lots == o.filled_lots
            and price_ticks == o.price_ticks and stop_price_ticks == o.stop_price_ticks
            and (cost < 0 or cost == o.cost)):
        return OR_UNCHANGED
    event_out[0] = _event_towards(o.status, status)
    if order_is_closed(o.status):
        return OR_CLOSED
    tmp = o[0]
    if filled_lots < tmp.filled_lots:
        return OR_FILL_DECREASE
    if qty_lots != tmp.qty_lots or price_ticks != tmp.price_ticks or stop_price_ticks != tmp.stop_price_ticks:
        event_out[0] = OE_REPLACED
        if qty_lots < tmp.filled_lots:
            return OR_BAD_QTY
        tmp.qty_lots = qty_lots
        tmp.price_ticks = price_ticks
        tmp.stop_price_ticks = stop_price_ticks
        # An amend that the stated status does not also finish (cancel, fill) must be legal.
        if status != OS_CANCELED and status != OS_EXPIRED and filled_lots == tmp.filled_lots:
            r = _event_step(&tmp, OE_REPLACED)
            if r != OR_OK:
                return r
    if filled_lots > tmp.filled_lots:
        event_out[0] = OE_FILL
        if ORDER_TABLE[tmp.status][OE_FILL] == OT_TARGET_ILLEGAL:
            return OR_ILLEGAL
        tmp.filled_lots = filled_lots
        tmp.status = order_resolve(&tmp, OT_TARGET_BY_FILL, filled_lots)
    if cost >= 0:
        tmp.cost = cost
    if tmp.status != status:
        if order_is_closed(tmp.status):
            return OR_INCONSISTENT    # the quantities closed it (filled) but the status says otherwise
        event = _event_towards(tmp.status, status)
        event_out[0] = event
        r = _event_step(&tmp, event)
        if r != OR_OK:
            return r
        if tmp.status != status:
            return OR_INCONSISTENT
    if ts_ns > tmp.updated_ns:
        tmp.updated_ns = ts_ns
    if seq != 0:
        tmp.seq = seq
    o[0] = tmp
    return OR_OK


cdef int order_validate_new(str order_id, int side, int order_type, int status, int64_t qty_lots,
                            int64_t price_ticks, int64_t stop_price_ticks) except -1:
    """Raise OrderInputError naming the field when a new order's values are bad."""
    if side != SIDE_BID and side != SIDE_ASK:
        raise OrderInputError(f"order {order_id!r}: side must be 0 (BID) or 1 (ASK), got {side}")
    if not (0 <= order_type < OT_COUNT):
        raise OrderInputError(f"order {order_id!r}: unknown order type {order_type}")
    if not (0 <= status < OS_COUNT) or order_is_closed(status) or status == OS_PARTIALLY_FILLED:
        raise OrderInputError(f"order {order_id!r}: cannot start in status {order_status_name(status)}")
    if qty_lots <= 0:
        raise OrderInputError(f"order {order_id!r}: qty_lots must be positive, got {qty_lots}")
    if price_ticks < 0 or stop_price_ticks < 0:
        raise OrderInputError(f"order {order_id!r}: negative price_ticks {price_ticks} / {stop_price_ticks}")
    return 0


cdef object order_error(OrderResult code, str order_id, int status, int event, object detail):
    cdef str where = f"order {order_id!r} ({order_status_name(status)})"
    cdef str extra = f": {detail}" if detail else ""
    cdef str move = f"{order_status_name(status)} -> {_event_target_name(event)} ({order_event_name(event)})"
    if code == OR_ILLEGAL:
        return InvalidTransition(f"{where}: {move} is not a legal transition{extra}")
    if code == OR_CLOSED:
        return InvalidTransition(f"{where}: {move} on a closed order{extra}")
    if code == OR_OVERFILL:
        return InvalidTransition(f"{where}: {move} refused, overfill{extra}")
    if code == OR_DUPLICATE_FILL:
        return InvalidTransition(f"{where}: {move} refused, duplicate trade id{extra}")
    if code == OR_INCONSISTENT:
        return InvalidTransition(f"{where}: stated status contradicts its quantities{extra}")
    if code == OR_FILL_DECREASE:
        return InvalidTransition(f"{where}: filled quantity went down{extra}")
    if code == OR_BAD_QTY:
        return OrderInputError(f"{where}: bad quantity{extra}")
    if code == OR_BAD_PRICE:
        return OrderInputError(f"{where}: negative price{extra}")
    if code == OR_BAD_SIDE:
        return OrderInputError(f"{where}: side must be 0 (BID) or 1 (ASK){extra}")
    if code == OR_OVERFLOW:
        return OrderInputError(f"{where}: integer overflow{extra}")
    return EngineError(f"{where}: result code {<int>code}{extra}")


cdef int order_raise(OrderResult code, str order_id, int status, int event, object detail) except -1:
    raise order_error(code, order_id, status, event, detail)


cdef class Order:
    """One order with its state machine, standalone (an ``Account`` keeps its orders in
    a struct array and hands out ``Order`` snapshots).

    Quantities are int64 lots, prices int64 ticks, ``cost`` the sum of fill
    price_ticks * qty_lots (quote units of tick * lot), times int64 ns. Every method
    is O(1) and either applies whole or raises (``InvalidTransition`` for illegal
    events, overfills, duplicate trade ids, closed orders; ``OrderInputError`` for bad
    values) leaving the order unchanged. Updates older than the applied one (by
    ``seq`` when both carry one, else by ``ts_ns``) are ignored and return False.

    >>> o = Order("1", 0, 10, price_ticks=100, status=1)   # NEW
    >>> o.apply_fill(100, 4, trade_id=7)
    True
    >>> o.status, o.filled_lots                              # PARTIALLY_FILLED
    (2, 4)
    """

    def __init__(self, str order_id, int side, int64_t qty_lots, int64_t price_ticks=0, *,
                 int order_type=OT_LIMIT, int64_t stop_price_ticks=0, int status=OS_PENDING_NEW,
                 str client_id="", Instrument instrument=None, int64_t ts_ns=0):
        order_validate_new(order_id, side, order_type, status, qty_lots, price_ticks, stop_price_ticks)
        order_init(&self.rec, side, order_type, qty_lots, price_ticks, stop_price_ticks, status, ts_ns)
        self.order_id = order_id
        self.client_id = client_id
        self.instrument = instrument
        self.symbol = instrument.symbol if instrument is not None else None

    @staticmethod
    cdef Order from_rec(const OrderRec* rec, str order_id, str client_id, object instrument, object symbol):
        cdef Order o = Order.__new__(Order)
        o.rec = rec[0]
        o.order_id = order_id
        o.client_id = client_id
        o.instrument = instrument
        o.symbol = symbol
        return o

    def apply_fill(self, int64_t price_ticks, int64_t qty_lots, int64_t trade_id=0, int64_t ts_ns=0):
        """Apply a trade of ``qty_lots`` at ``price_ticks``; ``trade_id`` (non-zero) is
        remembered among the last 16 of this order to refuse duplicates. Returns True. O(1)."""
        cdef int64_t cost = 0
        cdef OrderResult r = order_check_fill(&self.rec, price_ticks, qty_lots, trade_id, &cost)
        if r != OR_OK:
            order_raise(r, self.order_id, self.rec.status, OE_FILL,
                        f"qty_lots={qty_lots} price_ticks={price_ticks} trade_id={trade_id} "
                        f"filled {self.rec.filled_lots}/{self.rec.qty_lots}")
        order_commit_fill(&self.rec, qty_lots, trade_id, cost, ts_ns)
        return True

    def apply_event(self, int event, int64_t ts_ns=0, int64_t seq=0):
        """Apply one event of the table (engine.OrderEvent, not FILL). Returns True when
        the status changed, False for a repeat or a stale update. O(1)."""
        if event == OE_FILL:
            raise OrderInputError(f"order {self.order_id!r}: use apply_fill for fills")
        cdef int before = self.rec.status
        cdef OrderResult r = order_apply_event(&self.rec, event, ts_ns, seq)
        if r >= OR_ERROR:
            order_raise(r, self.order_id, before, event, None)
        return r == OR_OK

    def apply_snapshot(self, int status, int64_t qty_lots, int64_t filled_lots, int64_t price_ticks,
                       int64_t stop_price_ticks=0, int64_t cost=-1, int64_t ts_ns=0, int64_t seq=0):
        """Apply a full order object (absolute quantities, stated status) as venues send
        it: amend, fill and status change together or not at all. Returns True when
        anything changed, False for a repeat or a stale update. O(1)."""
        cdef int event = 0
        if not (0 <= status < OS_COUNT):
            raise OrderInputError(f"order {self.order_id!r}: unknown order status {status}")
        cdef OrderResult r = order_apply_snapshot(&self.rec, <uint8_t>status,
                                                  qty_lots, filled_lots, price_ticks, stop_price_ticks,
                                                  cost, ts_ns, seq, &event)
        if r >= OR_ERROR:
            order_raise(r, self.order_id, self.rec.status, event,
                        f"stated {order_status_name(status)} qty_lots={qty_lots} filled_lots={filled_lots}")
        return r == OR_OK

    def _check_invariants(self):
        """Raise AssertionError when the record breaks an invariant (tests only)."""
        cdef OrderRec* o = &self.rec
        if not (0 <= o.filled_lots <= o.qty_lots):
            raise AssertionError(f"filled {o.filled_lots} outside 0..{o.qty_lots}")
        if o.status >= OS_COUNT:
            raise AssertionError(f"bad status {o.status}")
        if o.status == OS_FILLED and o.filled_lots != o.qty_lots:
            raise AssertionError("FILLED with quantity left")
        if o.status == OS_PARTIALLY_FILLED and not (0 < o.filled_lots < o.qty_lots):
            raise AssertionError("PARTIALLY_FILLED without a partial fill")
        if o.status == OS_NEW and o.filled_lots != 0:
            raise AssertionError("NEW with fills")

    @property
    def side(self) -> int:
        """0 (BID, buy) or 1 (ASK, sell)."""
        return self.rec.side
    @property
    def order_type(self) -> int:
        """engine.OrderType code."""
        return self.rec.order_type
    @property
    def status(self) -> int:
        """engine.OrderStatus code."""
        return self.rec.status
    @property
    def price_ticks(self) -> int:
        """Limit price in ticks (0 when none)."""
        return self.rec.price_ticks
    @property
    def stop_price_ticks(self) -> int:
        """Trigger price in ticks (0 when none)."""
        return self.rec.stop_price_ticks
    @property
    def qty_lots(self) -> int:
        """Order quantity in lots."""
        return self.rec.qty_lots
    @property
    def filled_lots(self) -> int:
        """Filled quantity in lots."""
        return self.rec.filled_lots
    @property
    def remaining_lots(self) -> int:
        """qty_lots - filled_lots."""
        return self.rec.qty_lots - self.rec.filled_lots
    @property
    def cost(self) -> int:
        """Sum of fill price_ticks * qty_lots (quote units of tick * lot), or the venue's figure."""
        return self.rec.cost
    @property
    def created_ns(self) -> int:
        """Creation time, ns."""
        return self.rec.created_ns
    @property
    def updated_ns(self) -> int:
        """Time of the newest applied update, ns."""
        return self.rec.updated_ns
    @property
    def seq(self) -> int:
        """Venue sequence of the newest applied update (0: none)."""
        return self.rec.seq
    @property
    def is_closed(self) -> bool:
        """True once FILLED, CANCELED, EXPIRED or REJECTED: nothing can change it."""
        return order_is_closed(self.rec.status)

    def __repr__(self):
        return (f"Order({self.order_id!r}, {order_status_name(self.rec.status)}, side={self.rec.side}, "
                f"filled={self.rec.filled_lots}/{self.rec.qty_lots} lots, price_ticks={self.rec.price_ticks})")
