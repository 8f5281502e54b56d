# Incremental kline (candle) aggregation: the C-level contract.
#
# One KlineAggregator holds several frames (time frames such as "1m", and activity
# frames such as "tick:100"). Every frame owns one open bar, a history ring of its
# last N closed bars and, for time frames, the venue's own candles for comparison.
# All prices are int64 ticks, sizes int64 lots, times int64 ns since the UTC epoch.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef extern from *:
    """
    /* Exact notional: |price_ticks * qty_lots| < 2**126 and a bar's volume is kept
       below 2**63, so a bar's notional sum always fits a signed 128-bit integer. */
    typedef __int128 kline_i128;
    """
    # Cython sees a C integer; every operation on it is done by the C compiler at
    # 128 bits. Never convert it to a Python object directly (use kline_i128_to_int).
    ctypedef long long kline_i128

# Frame kinds.
cdef enum:
    FRAME_TIME = 0        # fixed time intervals aligned to the UTC epoch (weeks: Monday)
    FRAME_TICK = 1        # a bar closes after `threshold` trades
    FRAME_VOLUME = 2      # a bar closes once its volume reaches `threshold` lots
    FRAME_NOTIONAL = 3    # a bar closes once its notional reaches `threshold` ticks*lots

# Bar.flags bits (exported in the numpy `flags` field).
cdef enum:
    BAR_FILLED = 1        # a flat bar emitted for a time interval without trades
    BAR_PARTIAL = 2       # the first bar of a time frame: trades before start were not seen
    BAR_VENUE = 4         # a candle the venue sent (not built here)

# Event kinds queued during an update and delivered to callbacks after it.
cdef enum:
    EV_CLOSE = 0
    EV_LATE = 1
    EV_DIVERGENCE = 2

# Frames per aggregator (a 64-bit mask marks the frames an update touched).
cdef enum:
    KLINE_MAX_FRAMES = 64

# Status codes specific to this module (after the shared ones in types.Status).
cdef enum:
    KST_OK = 0
    KST_OVERFLOW = 4       # a bar's volume would overflow int64
    KST_NOMEM = 100

# One bar as it sits in memory; mirrored field by field by engine.kline.BAR_DTYPE
# (all little-endian 8-byte integers, 112 bytes, no padding).
ctypedef struct Bar:
    int64_t open_ts_ns         # time bars: interval start; activity bars: first trade's ts
    int64_t close_ts_ns        # time bars: interval end (exclusive); activity: last trade's ts
    int64_t open_ticks         # price of the earliest trade (ties: first to arrive)
    int64_t high_ticks
    int64_t low_ticks
    int64_t close_ticks        # price of the latest trade (ties: last to arrive)
    int64_t volume_lots
    int64_t buy_volume_lots    # taker-buy volume (trades with side == +1)
    int64_t trade_count
    uint64_t notional_lo       # notional = sum(price_ticks * qty_lots) as a 128-bit
    int64_t notional_hi        #   two's complement integer: hi * 2**64 + lo
    int64_t first_trade_ts_ns  # 0 for filled and venue bars
    int64_t last_trade_ts_ns   # 0 for filled bars; the venue's last-change time for venue bars
    int64_t flags              # BAR_* bits

# A queued callback event. For EV_LATE, `bar` carries the trade: open_ticks = price,
# volume_lots = qty, open_ts_ns = ts, flags = side. For EV_DIVERGENCE, `bar` is the
# venue candle and `other` the local bar (other.trade_count == -1 when there is none).
ctypedef struct KlineEvent:
    int64_t kind
    int64_t frame
    Bar bar
    Bar other

# Per-frame state. Ring memory is owned by BarStore objects referenced by the
# aggregator (and by any numpy view exported from them), never freed while in use.
ctypedef struct Frame:
    int64_t kind
    int64_t length_ns          # time frames: interval length
    int64_t offset_ns          # time frames: boundaries are offset_ns + k * length_ns
    int64_t threshold          # tick / volume frames
    kline_i128 notional_threshold
    int64_t period_start_ns    # time frames: start of the current interval (INT64_MIN: none yet)
    int64_t period_end_ns
    int64_t has_open           # an open bar with at least one trade exists
    Bar cur                    # the open bar (notional kept in cur_notional while open)
    kline_i128 cur_notional
    int64_t has_last_close
    int64_t last_close_ticks
    int64_t last_closed_trade_ts_ns  # activity frames: trades older than this are late
    int64_t first_open_ts_ns   # open time of the first bar ever built (INT64_MIN: none)
    int64_t closed_total       # bars closed, including filled bars not kept in the ring
    int64_t fill_skipped       # filled bars beyond the ring capacity, counted only
    int64_t late_count
    Bar* ring                  # 2 * ring_cap bars, each bar written twice (see _ring_push)
    int64_t ring_cap
    int64_t ring_total         # bars ever written to the ring
    # Venue candles (time frames only).
    Bar venue_cur
    int64_t venue_has
    Bar* venue_ring
    int64_t venue_total
    int64_t venue_cmp_seq      # next final venue candle (ring sequence) to compare
    int64_t venue_matched
    int64_t venue_diverged
    int64_t venue_uncomparable


cdef class BarStore:
    """Owner of one ring's memory; exports it read-only through the buffer protocol.

    The memory is allocated once and never moved or resized, so a numpy view of it
    stays valid memory for as long as the view lives (the view holds a reference to
    this object); only its contents change as newer bars are written."""
    cdef Bar* data
    cdef Py_ssize_t n_bars
    cdef Py_ssize_t nbytes
    cdef Py_ssize_t stride
    cdef readonly Py_ssize_t exports


@cython.final
cdef class KlineAggregator:
    cdef Frame* frames
    cdef Py_ssize_t n_frames
    cdef tuple names
    cdef dict index_of
    cdef list stores            # BarStore objects owning every ring (keeps them alive)
    cdef readonly object instrument
    cdef readonly bint fill_empty
    cdef readonly Py_ssize_t history
    cdef KlineEvent* events
    cdef Py_ssize_t n_events
    cdef Py_ssize_t cap_events
    cdef bint record_close
    cdef bint record_late
    cdef bint record_divergence
    cdef bint record_update
    cdef bint dispatching
    cdef bint busy                  # add_trades is applying a batch without the GIL
    cdef uint64_t updated_mask
    cdef int64_t volume_bound       # >= every open bar's volume (sum of all sizes applied)
    cdef readonly int64_t callback_errors
    cdef readonly int64_t events_dropped
    cdef readonly int64_t rejected
    cdef readonly int64_t trades_applied
    cdef object _on_close
    cdef object _on_update
    cdef object _on_late
    cdef object _on_divergence

    # C-level entry points for decoders (hold the GIL; raise KlineError on bad input).
    cdef int push_trade(self, int64_t price_ticks, int64_t qty_lots, int64_t ts_ns, int64_t side) except -1
    cdef int push_venue(self, Py_ssize_t frame, bint is_add, int64_t open_ts_ns, int64_t open_ticks,
                        int64_t high_ticks, int64_t low_ticks, int64_t close_ticks,
                        int64_t volume_lots, int64_t update_ts_ns) except -1
    cdef Py_ssize_t frame_index(self, object interval) except -1

    cdef int apply_trade(self, int64_t price_ticks, int64_t qty_lots, int64_t ts_ns, int64_t side) noexcept nogil
    cdef void apply_advance(self, int64_t ts_ns) noexcept nogil
    cdef int dispatch(self) except -1
    cdef int _call(self, object cb, str what, tuple args) except -1

    # Internal nogil steps of an update (no Python objects, no errors possible).
    cdef void _batch_frame(self, Py_ssize_t i, const int64_t* pv, const int64_t* qv, const int64_t* tv,
                           const int64_t* sv, Py_ssize_t n) noexcept nogil
    cdef void _roll(self, Py_ssize_t i, Frame* f, int64_t start_ns) noexcept nogil
    cdef void _close_bar(self, Py_ssize_t i, Frame* f) noexcept nogil
    cdef void _push_closed(self, Py_ssize_t i, Frame* f, const Bar* bar) noexcept nogil
    cdef void _push_flat(self, Py_ssize_t i, Frame* f, int64_t start_ns) noexcept nogil
    cdef void _late(self, Py_ssize_t i, Frame* f, int64_t price_ticks, int64_t qty_lots,
                    int64_t ts_ns, int64_t side) noexcept nogil
    cdef void _event(self, int64_t kind, Py_ssize_t i, const Bar* bar, const Bar* other) noexcept nogil
    cdef void _venue_compare(self, Py_ssize_t i, Frame* f) noexcept nogil
