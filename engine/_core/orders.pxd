# C-level contract of the order state machine.
#
# An order lives in an OrderRec (plain struct). The Account keeps them in one
# PyMem-owned array indexed by slot; a standalone engine.Order holds one by value.
# Every mutation goes through the noexcept nogil helpers below, which validate
# first and change nothing unless they return OR_OK.
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

# Order statuses. Values are fixed: they appear in numpy exports and engine.OrderStatus.
cdef enum:
    OS_PENDING_NEW = 0
    OS_NEW = 1
    OS_PARTIALLY_FILLED = 2
    OS_FILLED = 3
    OS_PENDING_CANCEL = 4
    OS_PENDING_REPLACE = 5
    OS_CANCELED = 6
    OS_EXPIRED = 7
    OS_REJECTED = 8
    OS_COUNT = 9

# Order types (engine.OrderType).
cdef enum:
    OT_LIMIT = 0
    OT_MARKET = 1
    OT_STOP = 2
    OT_STOP_MARKET = 3
    OT_TAKE_PROFIT = 4
    OT_TAKE_PROFIT_MARKET = 5
    OT_TRAILING_STOP_MARKET = 6
    OT_COUNT = 7

# Events of the transition table (engine.OrderEvent).
cdef enum:
    OE_ACCEPTED = 0           # venue acknowledged a pending order
    OE_REJECTED = 1           # venue refused a pending order
    OE_FILL = 2               # a trade against the order
    OE_CANCEL_REQUESTED = 3
    OE_CANCEL_REJECTED = 4
    OE_CANCELED = 5
    OE_EXPIRED = 6
    OE_REPLACE_REQUESTED = 7
    OE_REPLACE_REJECTED = 8
    OE_REPLACED = 9           # amended price/quantity took effect
    OE_COUNT = 10

# Targets in the table besides a plain status.
cdef enum:
    OT_TARGET_ILLEGAL = 255
    OT_TARGET_BY_FILL = 254   # FILLED when complete; else PARTIALLY_FILLED (pending states kept)
    OT_TARGET_OPEN = 253      # PARTIALLY_FILLED when anything is filled, else NEW

# Result codes of the helpers. Below OR_ERROR nothing is wrong.
cdef enum OrderResult:
    OR_OK = 0
    OR_UNCHANGED = 1          # the same update again: nothing to do
    OR_STALE = 2              # older than the applied one: ignored
    OR_ERROR = 10
    OR_ILLEGAL = 10           # (status, event) not in the table
    OR_OVERFILL = 11          # fill beyond the order quantity
    OR_DUPLICATE_FILL = 12    # trade id already applied
    OR_CLOSED = 13            # fill or change on a closed order
    OR_BAD_QTY = 14           # non-positive quantity, or below the filled quantity
    OR_BAD_PRICE = 15         # negative price
    OR_OVERFLOW = 16          # a sum would not fit its integer type
    OR_INCONSISTENT = 17      # a full object whose status contradicts its quantities
    OR_FILL_DECREASE = 18     # a full object whose filled quantity went down
    OR_BAD_SIDE = 19

# Bounded memory of applied trade ids (per order, per position). Duplicates are
# caught among the last TRADE_RING ids; 0 means "no trade id" and is never stored.
cdef enum:
    TRADE_RING = 16

ctypedef struct TradeRing:
    int64_t ids[TRADE_RING]
    int32_t next

# One order. Field order keeps 8-byte fields first so the struct has no holes.
ctypedef struct OrderRec:
    int64_t price_ticks
    int64_t stop_price_ticks
    int64_t qty_lots
    int64_t filled_lots
    int64_t cost              # sum of fill price_ticks * qty_lots: quote units of (tick * lot)
    int64_t created_ns
    int64_t updated_ns
    int64_t seq               # last applied venue sequence (0: the venue sends none)
    int32_t instrument_idx    # index into the owner's instrument table (-1: standalone)
    uint8_t side              # SIDE_BID / SIDE_ASK
    uint8_t order_type
    uint8_t status
    uint8_t _pad
    TradeRing trades

# The transition table: ORDER_TABLE[status][event] is the next status or an
# OT_TARGET_* code. A static const C array so every module that cimports this file
# reads it with no indirection. Rows: statuses in OS_* order; columns: events in
# OE_* order (ACCEPTED, REJECTED, FILL, CANCEL_REQUESTED, CANCEL_REJECTED, CANCELED,
# EXPIRED, REPLACE_REQUESTED, REPLACE_REJECTED, REPLACED). X: illegal, F: by fill,
# O: back to the open state the quantities say.
cdef extern from *:
    """
    #define TL_X 255
    #define TL_F 254
    #define TL_O 253
    static const unsigned char TL_ORDER_TABLE[9][10] __attribute__((unused)) = {
        /* PENDING_NEW      */ {1,    8,    TL_F, 4,    TL_X, 6, 7, TL_X, TL_X, TL_X},
        /* NEW              */ {TL_X, TL_X, TL_F, 4,    TL_X, 6, 7, 5,    TL_X, TL_O},
        /* PARTIALLY_FILLED */ {TL_X, TL_X, TL_F, 4,    TL_X, 6, 7, 5,    TL_X, TL_O},
        /* FILLED           */ {TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X},
        /* PENDING_CANCEL   */ {TL_X, TL_X, TL_F, TL_X, TL_O, 6, 7, TL_X, TL_X, TL_X},
        /* PENDING_REPLACE  */ {TL_X, TL_X, TL_F, 4,    TL_X, 6, 7, TL_X, TL_O, TL_O},
        /* CANCELED         */ {TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X},
        /* EXPIRED          */ {TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X},
        /* REJECTED         */ {TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X, TL_X},
    };
    #define tl_mul_overflow_i64(a, b, out) __builtin_mul_overflow((a), (b), (out))
    #define tl_add_overflow_i64(a, b, out) __builtin_add_overflow((a), (b), (out))
    """
    const uint8_t ORDER_TABLE "TL_ORDER_TABLE"[9][10]
    bint tl_mul_overflow_i64(int64_t a, int64_t b, int64_t* out) noexcept nogil
    bint tl_add_overflow_i64(int64_t a, int64_t b, int64_t* out) noexcept nogil

cdef inline bint order_is_closed(uint8_t status) noexcept nogil:
    return status == OS_FILLED or status == OS_CANCELED or status == OS_EXPIRED or status == OS_REJECTED

cdef inline bint trade_ring_contains(const TradeRing* ring, int64_t trade_id) noexcept nogil:
    cdef int i
    if trade_id == 0:
        return False
    for i in range(TRADE_RING):
        if ring.ids[i] == trade_id:
            return True
    return False

cdef inline void trade_ring_push(TradeRing* ring, int64_t trade_id) noexcept nogil:
    if trade_id != 0:
        ring.ids[ring.next] = trade_id
        ring.next = (ring.next + 1) % TRADE_RING

cdef inline bint order_is_stale(const OrderRec* o, int64_t ts_ns, int64_t seq) noexcept nogil:
    """An update is stale when it carries a sequence not above the applied one, or
    (without sequences) an update time before the applied one."""
    if seq != 0 and o.seq != 0:
        return seq <= o.seq
    return ts_ns != 0 and ts_ns < o.updated_ns

cdef inline uint8_t order_resolve(const OrderRec* o, uint8_t target, int64_t filled_lots) noexcept nogil:
    if target == OT_TARGET_BY_FILL:
        if filled_lots == o.qty_lots:
            return OS_FILLED
        if o.status == OS_PENDING_CANCEL or o.status == OS_PENDING_REPLACE:
            return o.status
        return OS_PARTIALLY_FILLED
    if target == OT_TARGET_OPEN:
        if filled_lots == o.qty_lots:
            return OS_FILLED      # an amend down to the filled quantity completes the order
        return OS_PARTIALLY_FILLED if filled_lots > 0 else OS_NEW
    return target

cdef inline OrderResult order_check_fill(const OrderRec* o, int64_t price_ticks, int64_t qty_lots,
                                         int64_t trade_id, int64_t* cost_out) noexcept nogil:
    """Validate a fill without changing anything; writes the new cost on OR_OK."""
    if qty_lots <= 0:
        return OR_BAD_QTY
    if price_ticks < 0:
        return OR_BAD_PRICE
    if order_is_closed(o.status):
        return OR_CLOSED
    if ORDER_TABLE[o.status][OE_FILL] == OT_TARGET_ILLEGAL:
        return OR_ILLEGAL
    if qty_lots > o.qty_lots - o.filled_lots:
        return OR_OVERFILL
    if trade_ring_contains(&o.trades, trade_id):
        return OR_DUPLICATE_FILL
    cdef int64_t notional
    if tl_mul_overflow_i64(price_ticks, qty_lots, &notional) or tl_add_overflow_i64(o.cost, notional, cost_out):
        return OR_OVERFLOW
    return OR_OK

cdef inline void order_commit_fill(OrderRec* o, int64_t qty_lots, int64_t trade_id,
                                   int64_t cost, int64_t ts_ns) noexcept nogil:
    """Apply a fill that order_check_fill accepted."""
    o.filled_lots += qty_lots
    o.cost = cost
    o.status = order_resolve(o, OT_TARGET_BY_FILL, o.filled_lots)
    trade_ring_push(&o.trades, trade_id)
    if ts_ns > o.updated_ns:
        o.updated_ns = ts_ns

cdef OrderResult order_apply_event(OrderRec* o, int event, int64_t ts_ns, int64_t seq) noexcept nogil
# A full order object as venues send it (absolute filled quantity). cost < 0: not sent.
# *event_out names the event that failed when the result is an error.
cdef OrderResult order_apply_snapshot(OrderRec* o, uint8_t status, int64_t qty_lots, int64_t filled_lots,
                                      int64_t price_ticks, int64_t stop_price_ticks, int64_t cost,
                                      int64_t ts_ns, int64_t seq, int* event_out) noexcept nogil
cdef void order_init(OrderRec* o, int side, int order_type, int64_t qty_lots, int64_t price_ticks,
                     int64_t stop_price_ticks, int status, int64_t ts_ns) noexcept nogil

cdef class Order:
    cdef OrderRec rec
    cdef readonly str order_id
    cdef readonly str client_id
    cdef readonly object instrument       # Instrument or None
    cdef readonly object symbol

    @staticmethod
    cdef Order from_rec(const OrderRec* rec, str order_id, str client_id, object instrument, object symbol)

cdef int order_validate_new(str order_id, int side, int order_type, int status, int64_t qty_lots,
                            int64_t price_ticks, int64_t stop_price_ticks) except -1
cdef str order_status_name(int status)
cdef str order_event_name(int event)
# The exception for a result code (not raised), so feed mode can report it instead.
cdef object order_error(OrderResult code, str order_id, int status, int event, object detail)
cdef int order_raise(OrderResult code, str order_id, int status, int event, object detail) except -1
