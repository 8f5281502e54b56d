"""Incremental kline (candle) aggregation from trades, in typed memory.

A :class:`KlineAggregator` builds bars for several frames at once from every trade the
moment it arrives: time frames from ``"1s"`` to ``"1w"`` aligned to the UTC epoch
(``"1w"`` starts on Monday 00:00 UTC, as venues do), and activity frames
``"tick:N"`` (N trades), ``"volume:N"`` (N lots) and ``"notional:N"`` (N ticks*lots).

Semantics, per frame (every frame decides on its own):

- A trade at ``ts_ns`` belongs to the time interval ``[start, start + length)`` that
  contains it; a trade exactly on a boundary opens the new bar. A bar closes on the
  first trade past its end, or on ``advance(ts_ns)``.
- Open is the price of the earliest trade (ties: the first to arrive), close the price
  of the latest (ties: the last to arrive): a bar equals the bar of its trades stably
  sorted by time, so equal timestamps keep arrival order.
- Late trades: a trade older than the frame's open interval (time frames) or older than
  the last trade of the frame's last closed bar (activity frames) is never applied to a
  closed bar; it is counted (``stats()["late"]``) and reported to ``on_late``.
- ``empty="fill"`` emits flat bars at the previous close (zero volume, zero count,
  ``BAR_FILLED`` flag) for intervals without trades, including on ``advance``;
  ``empty="skip"`` emits none. A gap longer than the history keeps only the last
  ``history`` filled bars; the rest are counted in ``stats()["fill_skipped"]``.
- Activity bars close on the trade that reaches their threshold (a trade is never split).
"""
cimport cython
from libc.stdint cimport int64_t, uint64_t, INT64_MAX, INT64_MIN
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memset
from cpython.buffer cimport PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport PyBytes_FromStringAndSize

from engine._core.instrument cimport Instrument

import logging
import re
from fractions import Fraction

import numpy as np

from engine.errors import KlineError

_log = logging.getLogger("engine.kline")

cdef extern from *:
    """
    #ifndef ENGINE_DEBUG
    #define ENGINE_DEBUG 0
    #endif
    """
    # 1 in a debug build (ENGINE_DEBUG=1 python setup.py build_ext): every public update
    # then ends with _check_invariants(); 0 compiles the check out.
    const bint ENGINE_DEBUG


# Timestamps are limited to [0, 2**62] ns (up to year 2116) so that interval ends and
# week offsets never overflow int64.
cdef int64_t MAX_TS_NS = (<int64_t>1) << 62
MAX_TIMESTAMP_NS = MAX_TS_NS
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# 1970-01-01 was a Thursday: Monday-aligned weeks start 4 days after the epoch.
WEEK_OFFSET_NS = 4 * 86400 * 1_000_000_000
_TIME_RE = re.compile(r"([1-9][0-9]*)([smhdw])")
_ACTIVITY_RE = re.compile(r"(tick|volume|notional):([1-9][0-9]*)")
_KIND_NAMES = {"tick": FRAME_TICK, "volume": FRAME_VOLUME, "notional": FRAME_NOTIONAL}


def parse_interval(object interval):
    """Parse an interval name into ``(kind, value, offset_ns)``. O(len).

    ``"15s"``, ``"1m"``, ``"4h"``, ``"1d"``, ``"1w"`` -> ``("time", length_ns, offset_ns)``
    (1 s to 1 week; ``"Nw"`` is Monday-aligned, every other length epoch-aligned);
    ``"tick:N"``, ``"volume:N"`` (lots), ``"notional:N"`` (ticks*lots) ->
    ``(kind, N, 0)``. Raises KlineError naming the interval otherwise.
    """
    if not isinstance(interval, str):
        raise KlineError(f"interval must be a str such as '1m' or 'tick:100', got {interval!r}")
    m = _TIME_RE.fullmatch(interval)
    if m is not None:
        length_s = int(m.group(1)) * _UNIT_S[m.group(2)]
        if length_s > 604800:
            raise KlineError(f"interval {interval!r} is longer than one week")
        return ("time", length_s * 1_000_000_000, WEEK_OFFSET_NS if m.group(2) == "w" else 0)
    m = _ACTIVITY_RE.fullmatch(interval)
    if m is not None:
        value = int(m.group(2))
        if value > INT64_MAX:
            raise KlineError(f"interval {interval!r}: threshold does not fit int64")
        return (m.group(1), value, 0)
    raise KlineError(
        f"unknown interval {interval!r}: expected Ns/Nm/Nh/Nd/1w (1 s to 1 week), "
        "'tick:N', 'volume:N' or 'notional:N'"
    )


cdef Bar _probe
cdef char* _base = <char*>&_probe
# Offsets are taken from the compiled struct, so the dtype mirrors it exactly.
BAR_DTYPE = np.dtype({
    "names": ["open_ts_ns", "close_ts_ns", "open_ticks", "high_ticks", "low_ticks", "close_ticks",
              "volume_lots", "buy_volume_lots", "trade_count", "notional_lo", "notional_hi",
              "first_trade_ts_ns", "last_trade_ts_ns", "flags"],
    "formats": ["<i8"] * 9 + ["<u8"] + ["<i8"] * 4,
    "offsets": [
        <Py_ssize_t>(<char*>&_probe.open_ts_ns - _base), <Py_ssize_t>(<char*>&_probe.close_ts_ns - _base),
        <Py_ssize_t>(<char*>&_probe.open_ticks - _base), <Py_ssize_t>(<char*>&_probe.high_ticks - _base),
        <Py_ssize_t>(<char*>&_probe.low_ticks - _base), <Py_ssize_t>(<char*>&_probe.close_ticks - _base),
        <Py_ssize_t>(<char*>&_probe.volume_lots - _base), <Py_ssize_t>(<char*>&_probe.buy_volume_lots - _base),
        <Py_ssize_t>(<char*>&_probe.trade_count - _base), <Py_ssize_t>(<char*>&_probe.notional_lo - _base),
        <Py_ssize_t>(<char*>&_probe.notional_hi - _base), <Py_ssize_t>(<char*>&_probe.first_trade_ts_ns - _base),
        <Py_ssize_t>(<char*>&_probe.last_trade_ts_ns - _base), <Py_ssize_t>(<char*>&_probe.flags - _base),
    ],
    "itemsize": sizeof(Bar),
})
BAR_SIZE = sizeof(Bar)
FILLED = BAR_FILLED
PARTIAL = BAR_PARTIAL
VENUE = BAR_VENUE


cdef object _record(const Bar* bar):
    # A private bytes copy, so the record is an immutable snapshot (read-only np.void).
    return np.frombuffer(PyBytes_FromStringAndSize(<const char*>bar, sizeof(Bar)), dtype=BAR_DTYPE)[0]


cdef inline int64_t _align_down(int64_t ts_ns, int64_t length_ns, int64_t offset_ns) noexcept nogil:
    cdef int64_t r = (ts_ns - offset_ns) % length_ns
    if r < 0:
        r += length_ns
    return ts_ns - r


cdef inline void _ring_push(Bar* ring, int64_t cap, int64_t* total, const Bar* bar) noexcept nogil:
    # Every bar is written twice, at slot k and k + cap, so the last `cap` bars are
    # always one contiguous run [start, start + count) of memory, oldest first: that
    # is what makes bars_view() zero-copy. Costs one extra 112-byte copy per close.
    cdef int64_t k = total[0] % cap
    ring[k] = bar[0]
    ring[k + cap] = bar[0]
    total[0] += 1


cdef inline void _bar_out(const Frame* f, Bar* out) noexcept nogil:
    out[0] = f.cur
    out.notional_lo = <uint64_t>f.cur_notional
    out.notional_hi = <int64_t>(f.cur_notional >> 64)
    if f.kind != FRAME_TIME:
        out.open_ts_ns = f.cur.first_trade_ts_ns
        out.close_ts_ns = f.cur.last_trade_ts_ns


cdef inline int64_t _buy_qty(int64_t q, int64_t side) noexcept nogil:
    # q for a taker buy (side +1), else 0, without a branch: the side of the next trade
    # is unpredictable and a mispredicted branch per trade costs more than the rest.
    return q & -(<int64_t>(side > 0))


cdef inline void _bar_update(Bar* b, kline_i128* notional, int64_t p, int64_t q, int64_t ts,
                             int64_t buy_q, kline_i128 pq, bint in_memory) noexcept nogil:
    # Add a trade to an open bar. `in_memory` is a constant at each call site. The batch
    # loop passes 0: it works on a local copy of the bar, which the compiler keeps in
    # registers, and there the rarely taken branches are cheapest (measured). On a bar
    # in memory (1) the selected values are stored unconditionally, so the compiler
    # emits conditional moves: a mispredicted new high/low there costs more (measured).
    cdef bint later = ts >= b.last_trade_ts_ns
    if in_memory:
        b.high_ticks = p if p > b.high_ticks else b.high_ticks
        b.low_ticks = p if p < b.low_ticks else b.low_ticks
        b.close_ticks = p if later else b.close_ticks
        b.last_trade_ts_ns = ts if later else b.last_trade_ts_ns
    else:
        if p > b.high_ticks:
            b.high_ticks = p
        if p < b.low_ticks:
            b.low_ticks = p
        if later:
            b.last_trade_ts_ns = ts
            b.close_ticks = p
    if ts < b.first_trade_ts_ns:
        b.first_trade_ts_ns = ts
        b.open_ticks = p
    b.volume_lots += q
    b.buy_volume_lots += buy_q
    b.trade_count += 1
    notional[0] += pq


cdef inline void _bar_add(Frame* f, int64_t p, int64_t q, int64_t ts, int64_t buy_q,
                          kline_i128 pq) noexcept nogil:
    # buy_q (q for a taker buy, else 0) and pq (p * q) are computed once per trade by the
    # caller: no per-frame branch on the side, whose sign is unpredictable.
    if f.has_open:
        _bar_update(&f.cur, &f.cur_notional, p, q, ts, buy_q, pq, 1)
        return
    f.has_open = 1
    f.cur.open_ticks = p
    f.cur.high_ticks = p
    f.cur.low_ticks = p
    f.cur.close_ticks = p
    f.cur.volume_lots = q
    f.cur.buy_volume_lots = buy_q
    f.cur.trade_count = 1
    f.cur_notional = pq
    f.cur.first_trade_ts_ns = ts
    f.cur.last_trade_ts_ns = ts
    f.cur.notional_lo = 0
    f.cur.notional_hi = 0
    if f.kind == FRAME_TIME:
        f.cur.open_ts_ns = f.period_start_ns
        f.cur.close_ts_ns = f.period_end_ns
        f.cur.flags = BAR_PARTIAL if f.first_open_ts_ns == INT64_MIN else 0
    else:
        f.cur.open_ts_ns = ts
        f.cur.close_ts_ns = ts
        f.cur.flags = 0
    if f.first_open_ts_ns == INT64_MIN:
        f.first_open_ts_ns = f.cur.open_ts_ns


cdef inline bint _reached(const Frame* f, const Bar* b, kline_i128 notional) noexcept nogil:
    if f.kind == FRAME_TICK:
        return b.trade_count >= f.threshold
    if f.kind == FRAME_VOLUME:
        return b.volume_lots >= f.threshold
    return notional >= f.notional_threshold


cdef inline bint _threshold_reached(const Frame* f) noexcept nogil:
    return _reached(f, &f.cur, f.cur_notional)


cdef inline bint _same_candle(const Bar* a, const Bar* b) noexcept nogil:
    return (a.open_ticks == b.open_ticks and a.high_ticks == b.high_ticks
            and a.low_ticks == b.low_ticks and a.close_ticks == b.close_ticks
            and a.volume_lots == b.volume_lots)


cdef extern from *:
    """
    /* Exact int64 of an exact Python int, without a call or an error: 1 and *out set,
       or 0 (not an exact int, or out of range; nothing raised), and the caller then
       takes the checked path. CPython 3.11 with 30-bit digits reads the digits
       directly (ts_ns needs three); elsewhere the public API is used. */
    static CYTHON_INLINE int kline_fast_i64(PyObject* o, int64_t* out) {
        if (!PyLong_CheckExact(o)) return 0;
    #if !defined(PYPY_VERSION) && !defined(Py_LIMITED_API) && PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
        {
            const digit* d = ((PyLongObject*)o)->ob_digit;
            const Py_ssize_t size = Py_SIZE(o);
            uint64_t m;
            if ((size_t)(size + 1) <= 2) {
                /* -1, 0, +1 digits without a branch on the sign (side is unpredictable);
                   3.11 always allocates one digit, so d[0] is readable for 0 too. */
                *out = (int64_t)size * (int64_t)d[0];
                return 1;
            }
            switch (size) {
                case 2: *out = (int64_t)(((uint64_t)d[1] << 30) | d[0]); return 1;
                case -2: *out = -(int64_t)(((uint64_t)d[1] << 30) | d[0]); return 1;
                case 3: case -3:
                    if (d[2] >> 3) return 0;  /* magnitude >= 2**63 (INT64_MIN too: slow path) */
                    m = ((uint64_t)d[2] << 60) | ((uint64_t)d[1] << 30) | d[0];
                    *out = size > 0 ? (int64_t)m : -(int64_t)m;
                    return 1;
                default: return 0;
            }
        }
    #else
        {
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow) return 0;
            *out = (int64_t)v;
            return 1;
        }
    #endif
    }
    """
    bint kline_fast_i64(object o, int64_t* out) noexcept


cdef inline int64_t _as_i64(object value, str field, KlineAggregator agg) except? -1:
    """Exact int64 from a Python int or a numpy integer; KlineError naming `field`
    otherwise (counted in agg.rejected)."""
    cdef int64_t v
    if kline_fast_i64(value, &v):
        return v
    return _as_i64_slow(value, field, agg)


cdef int64_t _as_i64_slow(object value, str field, KlineAggregator agg) except? -1:
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        agg.rejected += 1
        raise KlineError(f"{field} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value.__index__())
    if not -(1 << 63) <= value < (1 << 63):
        agg.rejected += 1
        raise KlineError(f"{field} {value!r} does not fit int64")
    return value


cdef object _as_i64_array(object values, str field, KlineAggregator agg):
    arr = np.asarray(values)
    if arr.ndim != 1:
        agg.rejected += 1
        raise KlineError(f"{field} must be a 1-d integer array, got shape {arr.shape}")
    if arr.dtype != np.int64:
        if arr.dtype.kind not in "iu" or not np.can_cast(arr.dtype, np.int64, "safe"):
            agg.rejected += 1
            raise KlineError(f"{field} must be an integer array that fits int64, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr)


cdef const int64_t* _i64_data(object arr) except NULL:
    # `arr` is a non-empty C-contiguous int64 ndarray from _as_i64_array.
    cdef size_t address = arr.__array_interface__["data"][0]
    return <const int64_t*>address


@cython.auto_pickle(False)
cdef class BarStore:
    """Fixed block of ``n_bars`` bars exported read-only (bytes) to numpy views.

    ``exports`` counts the buffer views currently alive (a check for tests and for
    users who want to know whether a zero-copy view is still out).
    """

    def __cinit__(self, Py_ssize_t n_bars):
        self.data = <Bar*>calloc(n_bars if n_bars > 0 else 1, sizeof(Bar))
        if self.data == NULL:
            raise MemoryError(f"cannot allocate {n_bars} bars")
        self.n_bars = n_bars
        self.nbytes = n_bars * <Py_ssize_t>sizeof(Bar)
        self.stride = 1
        self.exports = 0

    def __dealloc__(self):
        # Runs only when no view refers to this object any more (views hold a reference).
        free(self.data)
        self.data = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("kline bar history is read-only")
        view.buf = <void*>self.data
        view.obj = self
        view.len = self.nbytes
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = &self.nbytes if (flags & PyBUF_ND) else NULL
        view.strides = &self.stride if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self.exports -= 1


cdef inline int _push_trade(KlineAggregator self, int64_t price_ticks, int64_t qty_lots, int64_t ts_ns,
                            int64_t side) except -1:
    # The body of push_trade, inlined into add_trade (a call less per trade from Python).
    cdef int st
    if self.busy:
        _raise_busy()
    if qty_lots <= 0 or ts_ns < 0 or ts_ns > MAX_TS_NS or side < -1 or side > 1:
        self.rejected += 1
        _raise_trade(price_ticks, qty_lots, ts_ns, side, "")
    st = self.apply_trade(price_ticks, qty_lots, ts_ns, side)
    if st != KST_OK:
        self.rejected += 1
        raise KlineError(f"trade qty_lots={qty_lots} would overflow an open bar's int64 volume")
    if ENGINE_DEBUG:
        self._check_invariants()
    if self.n_events or self.updated_mask:
        self.dispatch()
    return 0


@cython.auto_pickle(False)
cdef class KlineAggregator:
    """Candles for several frames at once, built from each trade as it arrives.

    ``KlineAggregator(inst, intervals=("1s", "1m", "5m", "1h"), empty="fill", history=1000)``

    - ``inst``: the Instrument the trades are in (prices in its ticks, sizes in its lots).
    - ``intervals``: frame names (see ``parse_interval``); each is also the key for
      ``bars()``, ``current()`` and callbacks. At most 64, no duplicates.
    - ``empty``: ``"fill"`` (flat bars for intervals without trades) or ``"skip"``.
    - ``history``: closed bars kept per frame (a ring; older bars are dropped).
    - Callbacks (each may also be set later as an attribute; None disables it):
      ``on_close(interval, bar)``, ``on_update(interval, bar)`` (the open bar after each
      ``add_trade``, or once per frame after an ``add_trades`` batch),
      ``on_late(interval, price_ticks, qty_lots, ts_ns, side)``,
      ``on_divergence(interval, local_bar_or_None, venue_bar)``. ``bar`` is a read-only
      ``numpy.void`` record of ``BAR_DTYPE``. Callbacks run after the update has fully
      changed the state; an exception in one is logged with its traceback (logger
      ``engine.kline``), counted in ``callback_errors``, and does not stop the others.

    Memory: ``2 * history`` bars per frame (plus as much for venue candles of time
    frames), allocated once; nothing is allocated per trade (callback events are queued
    in one growable buffer only while a callback is set).

    Threads: use one aggregator from one thread. ``add_trades`` releases the GIL while it
    applies a batch; any call on the same aggregator from another thread meanwhile
    raises KlineError rather than seeing half-applied state.
    """

    def __cinit__(self):
        self.frames = NULL
        self.events = NULL

    def __init__(self, Instrument inst not None, intervals=("1s", "1m", "5m", "1h"), str empty="fill",
                 Py_ssize_t history=1000, on_close=None, on_update=None, on_late=None,
                 on_divergence=None):
        cdef Py_ssize_t i
        cdef Frame* f
        if self.frames != NULL:
            raise KlineError("KlineAggregator is already initialised")
        if empty not in ("fill", "skip"):
            raise KlineError(f"empty must be 'fill' or 'skip', got {empty!r}")
        if history < 1 or history > 100_000_000:
            raise KlineError(f"history must be between 1 and 100000000 bars, got {history}")
        if isinstance(intervals, str):
            intervals = (intervals,)
        names = tuple(intervals)
        if not names or len(names) > KLINE_MAX_FRAMES:
            raise KlineError(f"intervals must name 1 to {KLINE_MAX_FRAMES} frames, got {len(names)}")
        specs = [parse_interval(name) for name in names]
        if len(set(names)) != len(names):
            raise KlineError(f"duplicate interval in {names!r}")
        self.instrument = inst
        self.fill_empty = empty == "fill"
        self.history = history
        self.names = names
        self.index_of = {name: i for i, name in enumerate(names)}
        self.stores = []
        self.frames = <Frame*>calloc(len(names), sizeof(Frame))
        if self.frames == NULL:
            raise MemoryError("cannot allocate kline frames")
        self.n_frames = len(names)
        for i, (kind, value, offset) in enumerate(specs):
            f = &self.frames[i]
            memset(f, 0, sizeof(Frame))
            f.period_start_ns = INT64_MIN
            f.period_end_ns = INT64_MIN
            f.last_closed_trade_ts_ns = INT64_MIN
            f.first_open_ts_ns = INT64_MIN
            f.ring_cap = history
            store = BarStore(2 * history)
            f.ring = (<BarStore>store).data
            if kind == "time":
                f.kind = FRAME_TIME
                f.length_ns = value
                f.offset_ns = offset
                venue_store = BarStore(2 * history)
                f.venue_ring = (<BarStore>venue_store).data
            else:
                f.kind = _KIND_NAMES[kind]
                f.threshold = value
                f.notional_threshold = <kline_i128>(<int64_t>value)
                venue_store = None
            self.stores.append((store, venue_store))
        self.on_close = on_close
        self.on_update = on_update
        self.on_late = on_late
        self.on_divergence = on_divergence

    def __dealloc__(self):
        # Rings belong to the BarStore objects (freed when they and their views go).
        free(self.frames)
        free(self.events)

    # ---- callbacks -------------------------------------------------------------------

    @property
    def on_close(self):
        """``on_close(interval: str, bar: numpy.void)``, after a bar closed (also filled bars)."""
        return self._on_close

    @on_close.setter
    def on_close(self, cb):
        self._on_close = _callable_or_none(cb, "on_close")
        self.record_close = cb is not None

    @property
    def on_update(self):
        """``on_update(interval: str, bar: numpy.void)``: the open bar after it changed."""
        return self._on_update

    @on_update.setter
    def on_update(self, cb):
        self._on_update = _callable_or_none(cb, "on_update")
        self.record_update = cb is not None

    @property
    def on_late(self):
        """``on_late(interval, price_ticks, qty_lots, ts_ns, side)`` for each late trade and frame."""
        return self._on_late

    @on_late.setter
    def on_late(self, cb):
        self._on_late = _callable_or_none(cb, "on_late")
        self.record_late = cb is not None

    @property
    def on_divergence(self):
        """``on_divergence(interval, local_bar_or_None, venue_bar)`` when a final venue
        candle differs from the local bar of the same interval (o/h/l/c/volume)."""
        return self._on_divergence

    @on_divergence.setter
    def on_divergence(self, cb):
        self._on_divergence = _callable_or_none(cb, "on_divergence")
        self.record_divergence = cb is not None

    # ---- trades ----------------------------------------------------------------------

    @cython.binding(False)  # a plain builtin method: CPython calls it without the cyfunction layer
    def add_trade(self, price_ticks, qty_lots, ts_ns, side=0):
        """Apply one trade to every frame. O(frames); no allocation.

        ``price_ticks`` int64 ticks, ``qty_lots`` > 0 lots, ``ts_ns`` ns since the UTC
        epoch in [0, 2**62], ``side`` +1 taker buy, -1 taker sell, 0 unknown.
        Closes the bars the trade ends, then fires callbacks. Raises KlineError (naming
        the field and value) on bad input, with no change.
        """
        cdef int64_t p, q, t, s
        if not (kline_fast_i64(price_ticks, &p) and kline_fast_i64(qty_lots, &q)
                and kline_fast_i64(ts_ns, &t) and kline_fast_i64(side, &s)):
            # Anything but four exact ints in range: the checked conversions, in argument
            # order, so the first bad field is the one named (and counted).
            p = _as_i64(price_ticks, "price_ticks", self)
            q = _as_i64(qty_lots, "qty_lots", self)
            t = _as_i64(ts_ns, "ts_ns", self)
            s = _as_i64(side, "side", self)
        _push_trade(self, p, q, t, s)

    cdef int push_trade(self, int64_t price_ticks, int64_t qty_lots, int64_t ts_ns, int64_t side) except -1:
        return _push_trade(self, price_ticks, qty_lots, ts_ns, side)

    def add_trades(self, prices, qtys, ts_ns, sides=None):
        """Apply a batch of trades in array order, in one compiled loop without the GIL.

        ``prices`` (ticks), ``qtys`` (lots), ``ts_ns`` and ``sides`` (+1/-1/0; None means
        all 0) are 1-d integer arrays of one length (int64 preferred; other integer
        dtypes that fit are converted). The whole batch is checked before any trade is
        applied: a bad value raises KlineError naming its index, and nothing changes.
        Callbacks fire once the whole batch is applied, grouped by frame (in construction
        order), each frame's in time order; on_update once per frame. O(n * frames).
        Returns n.
        """
        if self.busy:
            _raise_busy()
        p_arr = _as_i64_array(prices, "prices", self)
        q_arr = _as_i64_array(qtys, "qtys", self)
        t_arr = _as_i64_array(ts_ns, "ts_ns", self)
        s_arr = np.zeros(len(p_arr), dtype=np.int64) if sides is None else _as_i64_array(sides, "sides", self)
        cdef Py_ssize_t n = len(p_arr)
        if len(q_arr) != n or len(t_arr) != n or len(s_arr) != n:
            self.rejected += 1
            raise KlineError(f"add_trades arrays differ in length: prices {n}, qtys {len(q_arr)}, "
                             f"ts_ns {len(t_arr)}, sides {len(s_arr)}")
        if n == 0:
            return 0
        # Borrowed pointers into the arrays, which this frame holds until it returns.
        cdef const int64_t* pv = _i64_data(p_arr)
        cdef const int64_t* qv = _i64_data(q_arr)
        cdef const int64_t* tv = _i64_data(t_arr)
        cdef const int64_t* sv = _i64_data(s_arr)
        cdef Py_ssize_t j, bad = -1
        cdef uint64_t qty_sum = 0
        cdef int64_t open_max = 0
        with nogil:
            for j in range(n):
                if (qv[j] <= 0 or tv[j] < 0 or tv[j] > MAX_TS_NS or sv[j] < -1 or sv[j] > 1
                        or <uint64_t>qv[j] > <uint64_t>INT64_MAX - qty_sum):
                    bad = j
                    break
                qty_sum += <uint64_t>qv[j]
        if bad >= 0:
            self.rejected += 1
            if qv[bad] > 0 and tv[bad] >= 0 and tv[bad] <= MAX_TS_NS and -1 <= sv[bad] <= 1:
                raise KlineError(f"add_trades: total qty reaches qtys[{bad}] = {qv[bad]} and would "
                                 "overflow int64; feed smaller batches")
            _raise_trade(pv[bad], qv[bad], tv[bad], sv[bad], f"add_trades[{bad}]: ")
        # Volume overflow must be impossible before the first trade is applied, since a
        # batch is applied whole or not at all: every open bar plus the whole batch fits.
        for j in range(self.n_frames):
            if self.frames[j].has_open and self.frames[j].cur.volume_lots > open_max:
                open_max = self.frames[j].cur.volume_lots
        if qty_sum > <uint64_t>(INT64_MAX - open_max):
            self.rejected += 1
            raise KlineError(f"add_trades: batch volume {qty_sum} lots plus an open bar's {open_max} "
                             "would overflow int64; feed smaller batches")
        # Frames are independent, so the batch runs frame by frame (each frame's state
        # stays in registers over long runs of trades); callbacks then come grouped by
        # frame, in construction order, each frame's in time order.
        # The GIL is released for the batch: `busy` makes any other thread's call on this
        # aggregator fail loudly instead of reading or writing a half-applied state.
        self.busy = True
        with nogil:
            for j in range(self.n_frames):
                self._batch_frame(j, pv, qv, tv, sv, n)
            self.trades_applied += n
            if <uint64_t>self.volume_bound > <uint64_t>INT64_MAX - qty_sum:
                self.volume_bound = INT64_MAX
            else:
                self.volume_bound += <int64_t>qty_sum
        self.busy = False
        if ENGINE_DEBUG:
            self._check_invariants()
        if self.n_events or self.updated_mask:
            self.dispatch()
        return n

    def advance(self, ts_ns):
        """Move every time frame's clock to ``ts_ns``: close (and in fill mode, emit flat
        bars for) every interval that ended by then. Activity frames are unaffected.
        A time earlier than a frame's clock changes nothing. O(frames + bars closed)."""
        cdef int64_t t = _as_i64(ts_ns, "ts_ns", self)
        if self.busy:
            _raise_busy()
        if t < 0 or t > MAX_TS_NS:
            self.rejected += 1
            raise KlineError(f"ts_ns {t} is outside [0, 2**62]")
        self.apply_advance(t)
        if ENGINE_DEBUG:
            self._check_invariants()
        if self.n_events or self.updated_mask:
            self.dispatch()

    cdef int apply_trade(self, int64_t p, int64_t q, int64_t ts, int64_t side) noexcept nogil:
        cdef Py_ssize_t i
        cdef Py_ssize_t n = self.n_frames
        cdef Frame* frames = self.frames
        cdef Frame* f
        cdef uint64_t touched = 0
        cdef int64_t buy_q = _buy_qty(q, side)
        cdef kline_i128 pq = <kline_i128>p * q
        # A trade that lands in an open bar must not overflow its volume, checked for
        # every frame before any change so a rejected trade changes nothing. Every open
        # bar's volume is at most volume_bound, so the exact check is needed only when
        # the bound itself is near the limit (after ~9.2e18 lots in this aggregator's life).
        if q > INT64_MAX - self.volume_bound:
            for i in range(n):
                f = &frames[i]
                if f.has_open and f.cur.volume_lots > INT64_MAX - q:
                    if f.kind == FRAME_TIME:
                        if f.period_start_ns <= ts < f.period_end_ns:
                            return KST_OVERFLOW
                    elif ts >= f.last_closed_trade_ts_ns:
                        return KST_OVERFLOW
            self.volume_bound = INT64_MAX
        else:
            self.volume_bound += q
        for i in range(n):
            f = &frames[i]
            if f.kind == FRAME_TIME:
                if ts < f.period_start_ns:
                    self._late(i, f, p, q, ts, side)
                    continue
                if ts >= f.period_end_ns:
                    self._roll(i, f, _align_down(ts, f.length_ns, f.offset_ns))
                _bar_add(f, p, q, ts, buy_q, pq)
            else:
                if ts < f.last_closed_trade_ts_ns:
                    self._late(i, f, p, q, ts, side)
                    continue
                _bar_add(f, p, q, ts, buy_q, pq)
                if _threshold_reached(f):
                    self._close_bar(i, f)
            touched |= (<uint64_t>1) << i
        if self.record_update:
            self.updated_mask |= touched
        self.trades_applied += 1
        return KST_OK

    cdef void _batch_frame(self, Py_ssize_t i, const int64_t* pv, const int64_t* qv, const int64_t* tv,
                           const int64_t* sv, Py_ssize_t n) noexcept nogil:
        # Apply trades [0, n) to frame i; same rules as apply_trade. Inputs are checked.
        cdef Frame* f = &self.frames[i]
        cdef Py_ssize_t j = 0
        cdef int64_t p, q, ts, lo_ts, hi_ts
        cdef Bar bar
        cdef kline_i128 notional
        cdef bint time_frame = f.kind == FRAME_TIME
        while j < n:
            p = pv[j]
            q = qv[j]
            ts = tv[j]
            if time_frame:
                if ts < f.period_start_ns:
                    self._late(i, f, p, q, ts, sv[j])
                    j += 1
                    continue
                if ts >= f.period_end_ns:
                    self._roll(i, f, _align_down(ts, f.length_ns, f.offset_ns))
            elif ts < f.last_closed_trade_ts_ns:
                self._late(i, f, p, q, ts, sv[j])
                j += 1
                continue
            _bar_add(f, p, q, ts, _buy_qty(q, sv[j]), <kline_i128>p * q)
            j += 1
            if self.record_update:
                self.updated_mask |= (<uint64_t>1) << i
            if not time_frame and _threshold_reached(f):
                self._close_bar(i, f)
                continue
            # The run of following trades that stay in this open bar, on a local copy.
            lo_ts = f.period_start_ns if time_frame else f.last_closed_trade_ts_ns
            hi_ts = f.period_end_ns if time_frame else INT64_MAX
            bar = f.cur
            notional = f.cur_notional
            while j < n:
                ts = tv[j]
                if ts < lo_ts or ts >= hi_ts:
                    break
                p = pv[j]
                q = qv[j]
                _bar_update(&bar, &notional, p, q, ts, _buy_qty(q, sv[j]), <kline_i128>p * q, 0)
                j += 1
                if not time_frame and _reached(f, &bar, notional):
                    break
            f.cur = bar
            f.cur_notional = notional
            if not time_frame and _threshold_reached(f):
                self._close_bar(i, f)

    cdef void apply_advance(self, int64_t ts) noexcept nogil:
        cdef Py_ssize_t i
        cdef Frame* f
        for i in range(self.n_frames):
            f = &self.frames[i]
            if f.kind == FRAME_TIME and ts >= f.period_end_ns:
                self._roll(i, f, _align_down(ts, f.length_ns, f.offset_ns))

    cdef void _roll(self, Py_ssize_t i, Frame* f, int64_t start_ns) noexcept nogil:
        # Move a time frame to the interval starting at start_ns (> the current one).
        cdef int64_t k, keep, j, first_ns
        if f.period_start_ns != INT64_MIN:
            if f.has_open:
                self._close_bar(i, f)
            elif self.fill_empty and f.has_last_close:
                self._push_flat(i, f, f.period_start_ns)
            if self.fill_empty and f.has_last_close and start_ns > f.period_end_ns:
                k = (start_ns - f.period_end_ns) // f.length_ns
                keep = k if k < f.ring_cap else f.ring_cap
                f.fill_skipped += k - keep
                f.closed_total += k - keep
                first_ns = start_ns - keep * f.length_ns
                for j in range(keep):
                    self._push_flat(i, f, first_ns + j * f.length_ns)
        f.period_start_ns = start_ns
        f.period_end_ns = start_ns + f.length_ns
        if f.venue_cmp_seq < f.venue_total:
            self._venue_compare(i, f)

    cdef void _close_bar(self, Py_ssize_t i, Frame* f) noexcept nogil:
        cdef Bar bar
        _bar_out(f, &bar)
        f.has_open = 0
        f.has_last_close = 1
        f.last_close_ticks = bar.close_ticks
        if f.kind != FRAME_TIME:
            f.last_closed_trade_ts_ns = bar.last_trade_ts_ns
        self._push_closed(i, f, &bar)

    cdef void _push_flat(self, Py_ssize_t i, Frame* f, int64_t start_ns) noexcept nogil:
        cdef Bar bar
        memset(&bar, 0, sizeof(Bar))
        bar.open_ts_ns = start_ns
        bar.close_ts_ns = start_ns + f.length_ns
        bar.open_ticks = f.last_close_ticks
        bar.high_ticks = f.last_close_ticks
        bar.low_ticks = f.last_close_ticks
        bar.close_ticks = f.last_close_ticks
        bar.flags = BAR_FILLED
        self._push_closed(i, f, &bar)

    cdef void _push_closed(self, Py_ssize_t i, Frame* f, const Bar* bar) noexcept nogil:
        _ring_push(f.ring, f.ring_cap, &f.ring_total, bar)
        f.closed_total += 1
        if self.record_close:
            self._event(EV_CLOSE, i, bar, NULL)

    cdef void _late(self, Py_ssize_t i, Frame* f, int64_t p, int64_t q, int64_t ts, int64_t side) noexcept nogil:
        cdef Bar trade
        f.late_count += 1
        if self.record_late:
            memset(&trade, 0, sizeof(Bar))
            trade.open_ticks = p
            trade.volume_lots = q
            trade.open_ts_ns = ts
            trade.flags = side
            self._event(EV_LATE, i, &trade, NULL)

    cdef void _event(self, int64_t kind, Py_ssize_t i, const Bar* bar, const Bar* other) noexcept nogil:
        cdef Py_ssize_t cap
        cdef KlineEvent* grown
        cdef KlineEvent* ev
        if self.n_events == self.cap_events:
            cap = 64 if self.cap_events == 0 else 2 * self.cap_events
            grown = <KlineEvent*>realloc(self.events, cap * sizeof(KlineEvent))
            if grown == NULL:
                # The state is already right; only the notification is lost, and counted.
                self.events_dropped += 1
                return
            self.events = grown
            self.cap_events = cap
        ev = &self.events[self.n_events]
        ev.kind = kind
        ev.frame = i
        ev.bar = bar[0]
        if other != NULL:
            ev.other = other[0]
        else:
            memset(&ev.other, 0, sizeof(Bar))
            ev.other.trade_count = -1
        self.n_events += 1

    cdef int dispatch(self) except -1:
        """The one place user callbacks run: after the state change, errors contained."""
        cdef Py_ssize_t i = 0, j
        cdef KlineEvent ev
        cdef uint64_t mask
        cdef Bar cur
        if self.dispatching:
            return 0  # a callback fed more data: the outer loop delivers its events
        self.dispatching = True
        try:
            while True:
                while i < self.n_events:
                    ev = self.events[i]  # copy: a re-entrant update may realloc the queue
                    i += 1
                    name = self.names[ev.frame]
                    if ev.kind == EV_CLOSE:
                        self._call(self._on_close, "on_close", (name, _record(&ev.bar)))
                    elif ev.kind == EV_LATE:
                        self._call(self._on_late, "on_late", (name, ev.bar.open_ticks, ev.bar.volume_lots,
                                                              ev.bar.open_ts_ns, ev.bar.flags))
                    else:
                        local = None if ev.other.trade_count < 0 else _record(&ev.other)
                        self._call(self._on_divergence, "on_divergence", (name, local, _record(&ev.bar)))
                self.n_events = 0
                i = 0
                mask = self.updated_mask
                self.updated_mask = 0
                if mask == 0:
                    break
                for j in range(self.n_frames):
                    if (mask >> j) & 1 and self.frames[j].has_open:
                        _bar_out(&self.frames[j], &cur)
                        self._call(self._on_update, "on_update", (self.names[j], _record(&cur)))
                # Loop: update callbacks may have fed trades whose events are queued.
        finally:
            # Only reached early by a BaseException (KeyboardInterrupt...) out of a
            # callback: the undelivered notifications are dropped, and counted.
            self.events_dropped += self.n_events - i
            self.n_events = 0
            self.updated_mask = 0
            self.dispatching = False
        return 0

    cdef int _call(self, object cb, str what, tuple args) except -1:
        if cb is None:
            return 0
        try:
            cb(*args)
        except Exception:
            self.callback_errors += 1
            _log.exception("kline %s callback raised for %s; state is unaffected", what, args[0])
        return 0

    # ---- venue candles -----------------------------------------------------------------

    def venue_add(self, interval, open_ts_ns, open_ticks, high_ticks, low_ticks, close_ticks,
                  volume_lots, update_ts_ns=0):
        """A venue opened a new candle (stream venue ``kline`` ``add``). O(log history).

        The previous venue candle of that frame becomes final and is compared with the
        local bar of the same interval once that interval has closed locally (mismatch
        of open/high/low/close/volume: ``on_divergence`` and ``stats()["venue_diverged"]``).
        ``open_ts_ns`` must be an interval start of this time frame and later than the
        current venue candle's. Raises KlineError on bad input, with no change."""
        _venue_call(self, True, interval, open_ts_ns, open_ticks, high_ticks, low_ticks, close_ticks,
                    volume_lots, update_ts_ns)

    def venue_modify(self, interval, open_ts_ns, open_ticks, high_ticks, low_ticks, close_ticks,
                     volume_lots, update_ts_ns=0):
        """A venue changed its current candle (``modify``): its values are replaced. O(1).

        ``open_ts_ns`` must equal the current venue candle's open time; a modify with no
        current candle (no ``add`` seen yet) is an error. Raises KlineError, no change."""
        _venue_call(self, False, interval, open_ts_ns, open_ticks, high_ticks, low_ticks, close_ticks,
                    volume_lots, update_ts_ns)

    cdef int push_venue(self, Py_ssize_t i, bint is_add, int64_t open_ts_ns, int64_t open_ticks,
                        int64_t high_ticks, int64_t low_ticks, int64_t close_ticks,
                        int64_t volume_lots, int64_t update_ts_ns) except -1:
        cdef Frame* f = &self.frames[i]
        cdef str what = "venue_add" if is_add else "venue_modify"
        cdef str err = None
        if f.kind != FRAME_TIME:
            err = f"venue candles exist only for time frames, not {self.names[i]!r}"
        elif open_ts_ns < 0 or open_ts_ns > MAX_TS_NS or _align_down(open_ts_ns, f.length_ns, f.offset_ns) != open_ts_ns:
            err = f"open_ts_ns {open_ts_ns} is not a {self.names[i]} interval start"
        elif volume_lots < 0:
            err = f"volume_lots {volume_lots} is negative"
        elif not (low_ticks <= open_ticks <= high_ticks and low_ticks <= close_ticks <= high_ticks):
            err = (f"inconsistent candle o={open_ticks} h={high_ticks} l={low_ticks} c={close_ticks} "
                   "(need low <= open, close <= high)")
        elif is_add and f.venue_has and open_ts_ns <= f.venue_cur.open_ts_ns:
            err = f"open_ts_ns {open_ts_ns} is not after the current venue candle's {f.venue_cur.open_ts_ns}"
        elif not is_add and not f.venue_has:
            err = "modify before any add"
        elif not is_add and open_ts_ns != f.venue_cur.open_ts_ns:
            err = f"open_ts_ns {open_ts_ns} is not the current venue candle's {f.venue_cur.open_ts_ns}"
        if err is not None:
            self.rejected += 1
            raise KlineError(f"{what}({self.names[i]!r}): {err}")
        if is_add and f.venue_has:
            _ring_push(f.venue_ring, f.ring_cap, &f.venue_total, &f.venue_cur)
        memset(&f.venue_cur, 0, sizeof(Bar))
        f.venue_cur.open_ts_ns = open_ts_ns
        f.venue_cur.close_ts_ns = open_ts_ns + f.length_ns
        f.venue_cur.open_ticks = open_ticks
        f.venue_cur.high_ticks = high_ticks
        f.venue_cur.low_ticks = low_ticks
        f.venue_cur.close_ticks = close_ticks
        f.venue_cur.volume_lots = volume_lots
        f.venue_cur.last_trade_ts_ns = update_ts_ns
        f.venue_cur.flags = BAR_VENUE
        f.venue_has = 1
        if f.venue_cmp_seq < f.venue_total:
            self._venue_compare(i, f)
        if ENGINE_DEBUG:
            self._check_invariants()
        if self.n_events:
            self.dispatch()
        return 0

    cdef void _venue_compare(self, Py_ssize_t i, Frame* f) noexcept nogil:
        # Compare final venue candles, oldest first, with the local bars of the same
        # intervals once those have closed locally.
        cdef const Bar* v
        cdef const Bar* local
        cdef int64_t count, start, lo, hi, mid
        while f.venue_cmp_seq < f.venue_total:
            if f.venue_cmp_seq < f.venue_total - f.ring_cap:
                f.venue_uncomparable += 1  # dropped from the venue ring before it could be compared
                f.venue_cmp_seq += 1
                continue
            v = &f.venue_ring[f.venue_cmp_seq % f.ring_cap]
            if f.period_start_ns == INT64_MIN or v.open_ts_ns >= f.period_start_ns:
                return  # that interval is still open locally
            f.venue_cmp_seq += 1
            if f.first_open_ts_ns == INT64_MIN or v.open_ts_ns < f.first_open_ts_ns:
                f.venue_uncomparable += 1  # before the first local trade
                continue
            count = f.ring_total if f.ring_total < f.ring_cap else f.ring_cap
            start = (f.ring_total - count) % f.ring_cap
            local = NULL
            lo = start
            hi = start + count
            while lo < hi:
                mid = (lo + hi) >> 1
                if f.ring[mid].open_ts_ns < v.open_ts_ns:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < start + count and f.ring[lo].open_ts_ns == v.open_ts_ns:
                local = &f.ring[lo]
            if local != NULL:
                if local.flags & BAR_PARTIAL:
                    f.venue_uncomparable += 1  # local bar missed trades before the start
                elif _same_candle(local, v):
                    f.venue_matched += 1
                else:
                    f.venue_diverged += 1
                    if self.record_divergence:
                        self._event(EV_DIVERGENCE, i, v, local)
            elif count > 0 and f.ring[start].open_ts_ns <= v.open_ts_ns:
                # No local bar: no trades there (skip mode). A venue candle with volume is a miss.
                if v.volume_lots == 0:
                    f.venue_matched += 1
                else:
                    f.venue_diverged += 1
                    if self.record_divergence:
                        self._event(EV_DIVERGENCE, i, v, NULL)
            else:
                f.venue_uncomparable += 1  # dropped from the local ring

    # ---- reading -----------------------------------------------------------------------

    cdef Py_ssize_t frame_index(self, object interval) except -1:
        if self.busy:
            _raise_busy()
        idx = self.index_of.get(interval)
        if idx is None:
            raise KlineError(f"interval {interval!r} is not one of {self.names!r}")
        return <Py_ssize_t>idx

    @property
    def intervals(self):
        """The frame names, in construction order."""
        return self.names

    def bars_view(self, interval, bint venue=False):
        """Closed bars of ``interval`` (or final venue candles when ``venue``), oldest
        first, as a READ-ONLY zero-copy numpy view of ``BAR_DTYPE``. O(1).

        Lifetime: the memory stays valid as long as the view lives (it is allocated once
        and never moved), but its CONTENTS are only meaningful until the next change of
        this frame (any add_trade/add_trades/advance/venue_add that closes a bar there):
        the ring is then overwritten in place. Use it inside a callback or right away;
        use ``bars()`` for a copy that stays put."""
        cdef Py_ssize_t i = self.frame_index(interval)
        cdef Frame* f = &self.frames[i]
        cdef int64_t total
        if venue:
            if f.kind != FRAME_TIME:
                raise KlineError(f"venue candles exist only for time frames, not {interval!r}")
            total = f.venue_total
        else:
            total = f.ring_total
        cdef int64_t count = total if total < f.ring_cap else f.ring_cap
        cdef int64_t start = (total - count) % f.ring_cap
        store = self.stores[i][1 if venue else 0]
        return np.frombuffer(store, dtype=BAR_DTYPE, count=count, offset=start * <int64_t>sizeof(Bar))

    def bars(self, interval, bint venue=False):
        """A copy of ``bars_view(interval, venue)``: writable, never changes. O(history)."""
        return self.bars_view(interval, venue).copy()

    def current(self, interval, bint venue=False):
        """The open bar of ``interval`` as a read-only ``numpy.void`` record, or None when
        no trade fell into it yet (``venue``: the venue's current candle). O(1)."""
        cdef Py_ssize_t i = self.frame_index(interval)
        cdef Frame* f = &self.frames[i]
        cdef Bar bar
        if venue:
            return _record(&f.venue_cur) if f.venue_has else None
        if not f.has_open:
            return None
        _bar_out(f, &bar)
        return _record(&bar)

    def vwap(self, interval):
        """Exact VWAP of the open bar, in ticks, as a Fraction (notional / volume); None
        when there is no open bar. O(1)."""
        cdef Py_ssize_t i = self.frame_index(interval)
        cdef Frame* f = &self.frames[i]
        if not f.has_open:
            return None
        return Fraction(_i128_to_int(f.cur_notional), f.cur.volume_lots)

    def stats(self, interval):
        """Counters of one frame: ``closed`` (bars closed, filled included), ``late``,
        ``fill_skipped``, ``history`` (bars in the ring), ``period_start_ns`` (time
        frames; None before the first trade or advance), and venue comparison counters
        ``venue_candles``, ``venue_matched``, ``venue_diverged``, ``venue_uncomparable``."""
        cdef Py_ssize_t i = self.frame_index(interval)
        cdef Frame* f = &self.frames[i]
        return {
            "closed": f.closed_total,
            "late": f.late_count,
            "fill_skipped": f.fill_skipped,
            "history": f.ring_total if f.ring_total < f.ring_cap else f.ring_cap,
            "period_start_ns": None if f.kind != FRAME_TIME or f.period_start_ns == INT64_MIN else f.period_start_ns,
            "venue_candles": f.venue_total + (1 if f.venue_has else 0),
            "venue_matched": f.venue_matched,
            "venue_diverged": f.venue_diverged,
            "venue_uncomparable": f.venue_uncomparable,
        }

    def view_exports(self, interval):
        """How many zero-copy views of ``interval``'s local history are alive now."""
        return (<BarStore>self.stores[self.frame_index(interval)][0]).exports

    def _check_invariants(self):
        """Check every frame's invariants; raise AssertionError naming the first broken one.
        O(frames * history). Used by the stress tests after every batch."""
        if self.busy:
            _raise_busy()
        cdef Py_ssize_t i
        cdef int64_t k, count, start
        cdef Frame* f
        cdef const Bar* b
        cdef const Bar* prev
        for i in range(self.n_frames):
            f = &self.frames[i]
            name = self.names[i]
            if f.kind == FRAME_TIME and f.period_start_ns != INT64_MIN:
                _check(f.period_end_ns - f.period_start_ns == f.length_ns, name, "interval length")
                _check(_align_down(f.period_start_ns, f.length_ns, f.offset_ns) == f.period_start_ns,
                       name, "interval alignment")
            if f.has_open:
                _check(_valid_bar(&f.cur) and f.cur.trade_count >= 1, name, "open bar values")
                if f.kind == FRAME_TIME:
                    _check(f.cur.open_ts_ns == f.period_start_ns and f.period_start_ns <= f.cur.first_trade_ts_ns
                           and f.cur.last_trade_ts_ns < f.period_end_ns, name, "open bar outside its interval")
                else:
                    _check(not _threshold_reached(f), name, "open activity bar past its threshold")
                    _check(f.cur.first_trade_ts_ns >= f.last_closed_trade_ts_ns, name, "open bar before last close")
            _check(f.closed_total >= f.ring_total, name, "closed count")
            count = f.ring_total if f.ring_total < f.ring_cap else f.ring_cap
            start = (f.ring_total - count) % f.ring_cap
            prev = NULL
            for k in range(start, start + count):
                b = &f.ring[k]
                _check(f.ring[k % f.ring_cap].open_ts_ns == f.ring[k % f.ring_cap + f.ring_cap].open_ts_ns,
                       name, "ring mirror")
                if b.flags & BAR_FILLED:
                    _check(b.trade_count == 0 and b.volume_lots == 0 and b.open_ticks == b.close_ticks, name, "flat bar")
                else:
                    _check(_valid_bar(b) and b.trade_count >= 1, name, f"closed bar {k - start} values")
                if f.kind == FRAME_TIME:
                    _check(b.close_ts_ns - b.open_ts_ns == f.length_ns, name, "closed bar length")
                    if prev != NULL:
                        _check(b.open_ts_ns > prev.open_ts_ns, name, "closed bars out of order")
                    _check(b.open_ts_ns < f.period_start_ns, name, "closed bar not before the open interval")
                elif prev != NULL:
                    _check(b.first_trade_ts_ns >= prev.last_trade_ts_ns, name, "activity bars out of order")
                prev = b
        return True

    def __repr__(self):
        return (f"KlineAggregator({self.instrument.symbol!r}, intervals={self.names!r}, "
                f"empty={'fill' if self.fill_empty else 'skip'!r}, history={self.history})")


cdef int _venue_call(KlineAggregator agg, bint is_add, object interval, object open_ts_ns, object open_ticks,
                     object high_ticks, object low_ticks, object close_ticks, object volume_lots,
                     object update_ts_ns) except -1:
    return agg.push_venue(agg.frame_index(interval), is_add, _as_i64(open_ts_ns, "open_ts_ns", agg),
                          _as_i64(open_ticks, "open_ticks", agg), _as_i64(high_ticks, "high_ticks", agg),
                          _as_i64(low_ticks, "low_ticks", agg), _as_i64(close_ticks, "close_ticks", agg),
                          _as_i64(volume_lots, "volume_lots", agg), _as_i64(update_ts_ns, "update_ts_ns", agg))


cdef bint _valid_bar(const Bar* b) noexcept nogil:
    return (b.low_ticks <= b.open_ticks <= b.high_ticks and b.low_ticks <= b.close_ticks <= b.high_ticks
            and 0 <= b.buy_volume_lots <= b.volume_lots and b.volume_lots > 0
            and b.first_trade_ts_ns <= b.last_trade_ts_ns)


cdef int _check(bint ok, str frame, str what) except -1:
    if not ok:
        raise AssertionError(f"kline invariant broken in frame {frame!r}: {what}")
    return 0


cdef object _i128_to_int(kline_i128 v):
    cdef object hi = <int64_t>(v >> 64)
    cdef object lo = <uint64_t>v
    return (hi << 64) + lo


cdef int _raise_trade(int64_t p, int64_t q, int64_t ts, int64_t side, str where) except -1:
    if q <= 0:
        raise KlineError(f"{where}qty_lots {q} must be positive")
    if ts < 0 or ts > MAX_TS_NS:
        raise KlineError(f"{where}ts_ns {ts} is outside [0, 2**62]")
    raise KlineError(f"{where}side {side} must be +1 (taker buy), -1 (taker sell) or 0 (unknown)")


cdef int _raise_busy() except -1:
    raise KlineError("KlineAggregator is not thread-safe: another thread is inside add_trades on it; "
                     "use one aggregator per thread or a lock")


def _callable_or_none(cb, str name):
    if cb is not None and not callable(cb):
        raise KlineError(f"{name} must be callable or None, got {type(cb).__name__}")
    return cb
