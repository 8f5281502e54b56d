# C-level contract of netting positions.
#
# Units: quantities are signed int64 lots (long > 0); money ("quote units") is an exact
# integer count of (tick * lot), i.e. price_ticks * qty_lots; to show it as a decimal
# multiply by tick_size * lot_size (Position.to_quote_decimal).
#
# Wide type: entry notional, realized PnL and fees are signed 128-bit integers
# (GCC/Clang __int128; the build needs a 64-bit GCC or Clang). One product of two
# int64 always fits; every sum and the pro-rata product entry_notional * closed_lots
# are overflow-checked and a fill that would overflow is refused (OR_OVERFLOW) with
# the position unchanged; nothing ever wraps.
#
# Rounding rule (the only one): closing k of |q| lots removes
# floor(entry_notional * k / |q|) from the entry notional; the remainder (less than
# one quote unit) stays in the open position's cost basis, so the realized PnL over a
# round trip (open .. flat) is exact and no value is ever lost or invented:
# realized_pnl - entry_notional always equals the exact average-cost figure, so
# realized + unrealized PnL at any mark is exact at every moment; only the split
# between the two may differ from average-cost accounting by the kept remainder.
# A fill known only by its total notional (cumulative venue cost) that flips the
# position splits that notional the same way: floor for the close part, the rest to
# the open part.
from libc.stdint cimport int32_t, int64_t, uint8_t
from engine._core.orders cimport OrderResult, TradeRing
from engine._core.instrument cimport Instrument

cdef extern from *:
    """
    typedef __int128 tl_i128;
    static inline int tl_i128_add(tl_i128 a, tl_i128 b, tl_i128* out) { return __builtin_add_overflow(a, b, out); }
    static inline int tl_i128_mul(tl_i128 a, tl_i128 b, tl_i128* out) { return __builtin_mul_overflow(a, b, out); }
    /* Floor division (C truncates toward zero). b > 0. */
    static inline tl_i128 tl_i128_floordiv(tl_i128 a, tl_i128 b) {
        tl_i128 q = a / b;
        if ((a % b) != 0 && (a < 0)) q -= 1;
        return q;
    }
    """
    # Cython only sees a 64-bit stand-in; never let it convert an i128 to Python
    # implicitly: use i128_to_py / i128_from_py (positions.pyx).
    ctypedef long long i128 "tl_i128"
    bint i128_add "tl_i128_add"(i128 a, i128 b, i128* out) noexcept nogil
    bint i128_mul "tl_i128_mul"(i128 a, i128 b, i128* out) noexcept nogil
    i128 i128_floordiv "tl_i128_floordiv"(i128 a, i128 b) noexcept nogil

# Position statuses as the bot platform sends them (engine.PositionStatus).
cdef enum:
    PS_CREATED = 0
    PS_IN_PROGRESS = 1
    PS_FINISHING = 2
    PS_COMPLETED = 3
    PS_FAILED = 4
    PS_COUNT = 5

# Position events: a fill that leaves it open or flat, or the venue stating a status
# (PE_SET_CREATED + status).
cdef enum:
    PE_FILL_OPEN = 0
    PE_FILL_FLAT = 1
    PE_SET_CREATED = 2
    PE_SET_IN_PROGRESS = 3
    PE_SET_FINISHING = 4
    PE_SET_COMPLETED = 5
    PE_SET_FAILED = 6
    PE_COUNT = 7

cdef enum:
    PT_ILLEGAL = 255
    PT_SAME = 254         # legal, status unchanged

# Rows: statuses; columns: events (FILL_OPEN, FILL_FLAT, SET_CREATED, SET_IN_PROGRESS,
# SET_FINISHING, SET_COMPLETED, SET_FAILED). A fill on a COMPLETED (flat) position
# starts a new round trip (IN_PROGRESS); FAILED is terminal; stating the current
# status again is a no-op.
cdef extern from *:
    """
    #define TL_PX 255
    #define TL_PS 254
    static const unsigned char TL_POSITION_TABLE[5][7] __attribute__((unused)) = {
        /* CREATED     */ {1,     TL_PX, TL_PS, 1,     2,     3,     4},
        /* IN_PROGRESS */ {TL_PS, 3,     TL_PX, TL_PS, 2,     3,     4},
        /* FINISHING   */ {TL_PS, 3,     TL_PX, TL_PX, TL_PS, 3,     4},
        /* COMPLETED   */ {1,     TL_PX, TL_PX, TL_PX, TL_PX, TL_PS, TL_PX},
        /* FAILED      */ {TL_PX, TL_PX, TL_PX, TL_PX, TL_PX, TL_PX, TL_PS},
    };
    """
    const uint8_t POSITION_TABLE "TL_POSITION_TABLE"[5][7]

# One netting position. 16-byte fields first, then 8-byte, so there are no holes.
ctypedef struct PositionRec:
    i128 entry_notional      # signed cost basis of the open quantity, quote units
    i128 realized_pnl        # quote units, fees not included
    i128 fees                # quote units, summed as given (negative: rebates)
    int64_t qty_lots         # signed: long > 0, short < 0
    int64_t min_price_ticks  # lowest fill price seen (INT64_MAX before any fill)
    int64_t max_price_ticks  # highest fill price seen (-1 before any fill)
    int64_t updated_ns
    int64_t fill_count
    int32_t instrument_idx
    uint8_t status
    TradeRing trades

cdef void position_init(PositionRec* p) noexcept nogil
cdef OrderResult position_apply_fill(PositionRec* p, int side, int64_t price_ticks, int64_t qty_lots,
                                     int64_t fee, int64_t trade_id, int64_t ts_ns) noexcept nogil
cdef OrderResult position_apply_fill_notional(PositionRec* p, int side, int64_t qty_lots, i128 notional_abs,
                                              int64_t price_ticks, int64_t fee, int64_t trade_id,
                                              int64_t ts_ns) noexcept nogil
cdef OrderResult position_set_status(PositionRec* p, int status, int64_t ts_ns) noexcept nogil

cdef object i128_to_py(i128 v)
cpdef int64_t quote_to_units(Instrument inst, object value) except? -1
cdef int i128_from_py(object v, i128* out) except -1
cdef str position_status_name(int status)
cdef object position_error(OrderResult code, str symbol, int status, object detail)

cdef class Position:
    cdef PositionRec rec
    cdef readonly object instrument
    cdef readonly str symbol

    @staticmethod
    cdef Position from_rec(const PositionRec* rec, object instrument, str symbol)
