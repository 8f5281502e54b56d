"""The per-frame path of every feed, compiled: listener base, counters, latency ring,
callback dispatch. See _hotpath.pxd for the C contract.

Per message the only Python-level work left is what the user's callbacks do: picows
calls ``FrameListener.on_ws_frame`` (C), which hands the borrowed payload pointer to the
venue's ``FrameSink.on_frame_c`` (C), which changes the core objects and calls
``Dispatch.book`` & co (C), which record latency and run the callbacks through
``invoke_callbacks``, the one wrapper around user code.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from picows.picows cimport WSListener, WSFrame, WSTransport, WSMsgType
from engine._core.instrument cimport Instrument
from engine._core.kline cimport KlineAggregator

import logging


cdef int64_t wall_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def time_ns():
    """``wall_ns()`` for Python: ns since the epoch, the clock of every ``recv_ns``."""
    return wall_ns()


cdef class LatencyRing:
    """Fixed-size ring of latency samples in ns; memory never grows.

    ``add`` is O(1); ``percentiles`` sorts a copy of the live samples (O(n log n), cold
    path only). The ring keeps the most recent ``capacity`` samples."""

    def __cinit__(self, Py_ssize_t capacity=4096):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.buf = <int64_t*>PyMem_Malloc(capacity * sizeof(int64_t))
        if self.buf == NULL:
            raise MemoryError()
        self.capacity = capacity
        self.next = 0
        self.count = 0

    def __dealloc__(self):
        PyMem_Free(self.buf)

    cdef void add_c(self, int64_t ns) noexcept:
        self.buf[self.next] = ns if ns > 0 else 0
        self.next += 1
        if self.next == self.capacity:
            self.next = 0
        self.count += 1

    def add(self, int64_t ns):
        """Record one sample (negative values, from a clock step, count as 0). O(1)."""
        self.add_c(ns)

    def samples(self):
        """The live samples, oldest first (a new list)."""
        cdef Py_ssize_t n = self.count if self.count < self.capacity else self.capacity
        cdef Py_ssize_t start = 0 if self.count <= self.capacity else self.next
        return [self.buf[(start + i) % self.capacity] for i in range(n)]

    def percentiles(self, qs=(50.0, 90.0, 99.0)):
        """Nearest-rank percentiles of the live samples, keys like ``"p50"``; plus
        ``"max"``. Empty dict when no sample was recorded."""
        data = sorted(self.samples())
        if not data:
            return {}
        out = {}
        for q in qs:
            rank = max(0, min(len(data) - 1, int(round(q / 100.0 * len(data) + 0.5)) - 1))
            out[f"p{q:g}"] = data[rank]
        out["max"] = data[len(data) - 1]  # (wraparound is off: no negative indices)
        return out

    def clear(self):
        """Forget every sample."""
        self.next = 0
        self.count = 0


cdef class FeedCounters:
    """Per-feed counters (int64, updated on the hot path by one loop thread) and the
    receive-to-callback latency ring."""

    def __init__(self, Py_ssize_t latency_capacity=4096):
        self.latency = LatencyRing(latency_capacity)

    def as_dict(self):
        """Snapshot of every counter plus latency percentiles (``latency_ns``)."""
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "decode_errors": self.decode_errors,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "reconnects": self.reconnects,
            "callback_errors": self.callback_errors,
            "latency_ns": self.latency.percentiles(),
        }

    def __repr__(self):
        return (f"FeedCounters(frames={self.frames}, bytes={self.bytes}, "
                f"decode_errors={self.decode_errors}, gaps={self.gaps}, "
                f"resyncs={self.resyncs}, reconnects={self.reconnects})")


cdef class FrameSink:
    """Base of decoders that take frames at C level (see the .pxd). ``feed`` is the
    Python entry for tests and replay."""

    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        raise NotImplementedError(f"{type(self).__name__}.on_frame_c")

    cdef int deliver(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1:
        # Decoders keep pointers into their scratch buffers (and spans into the frame)
        # across the user callbacks they run; a frame decoded from inside one of those
        # callbacks would grow (realloc) that scratch under them. So a re-entrant frame
        # is refused here, once for every venue, before it touches anything.
        if self.applying:
            raise RuntimeError(f"{type(self).__name__}: a frame was fed from a callback of the frame "
                               f"being applied; refused (feed it after the callback returns)")
        self.applying = True
        try:
            return self.on_frame_c(buf, n, recv_ns)
        finally:
            self.applying = False

    def feed(self, frame, int64_t recv_ns):
        """Decode one message from a bytes-like object (read during the call only).
        RuntimeError, with nothing decoded, when called from a callback of a frame this
        sink is applying."""
        cdef Py_buffer view
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            self.deliver(<const char*>view.buf, view.len, recv_ns)
        finally:
            PyBuffer_Release(&view)


cdef class FrameListener(WSListener):
    """picows listener base: the hot path of every connection.

    Complete text/binary messages go to ``sink.on_frame_c`` (C) or, without a sink, to
    ``on_frame(memoryview, recv_ns)``; everything else goes to Python methods the
    subclass (``feeds.session._Listener``) implements: ``on_other_frame(transport,
    frame)`` (close, fragments, ping/pong), ``on_oversize(transport)``,
    ``on_decode_error(exc)``, ``on_feed_error(transport, exc)``, ``on_decoder_bug(exc)``."""

    def __init__(self, FeedCounters counters not None, on_frame, FrameSink sink, Py_ssize_t max_size,
                 recorder=None):
        self.counters = counters
        self.on_frame = on_frame
        self.sink = sink
        self.max_size = max_size
        self.recorder = recorder
        self.dead = False
        self.last_frame_ns = wall_ns()

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef int64_t recv_ns = wall_ns()
        cdef Py_ssize_t n
        self.last_frame_ns = recv_ns
        if self.dead:
            return  # this connection is being closed: nothing more is applied from it
        if not frame.fin or (frame.msg_type != WSMsgType.TEXT and frame.msg_type != WSMsgType.BINARY):
            self.on_other_frame(transport, frame)
            return
        n = frame.payload_size
        if n > self.max_size:
            # picows enforces max_frame_size too, but under uvloop it can still deliver
            # the frame after starting its close; refuse it here as well.
            self.on_oversize(transport)
            return
        self.counters.frames += 1
        self.counters.bytes += n
        if self.recorder is not None:
            self.recorder.write(recv_ns, frame.get_payload_as_memoryview())
        try:
            if self.sink is not None:
                # payload_ptr borrows picows' read buffer for this call only.
                self.sink.deliver(frame.payload_ptr, n, recv_ns)
            else:
                self.on_frame(frame.get_payload_as_memoryview(), recv_ns)
        except DecodeError as exc:
            self.counters.decode_errors += 1
            self.on_decode_error(exc)
        except FeedError as exc:
            self.on_feed_error(transport, exc)
        except Exception as exc:  # a decoder bug must not kill the loop: count, log, go on
            self.counters.decode_errors += 1
            self.on_decoder_bug(exc)


cpdef int invoke_callbacks(list callbacks, object obj, object engine, FeedCounters counters) except -1:
    """THE wrapper around user callbacks: call each with ``obj``; an exception is
    counted (``counters.callback_errors``) and handed to ``engine._callback_failed``
    (logs it with its traceback), never propagated; a returned coroutine goes to
    ``engine._callback_result`` (run as a bounded task). O(len(callbacks))."""
    for cb in callbacks:
        try:
            result = cb(obj)
        except Exception as exc:
            if counters is not None:
                counters.callback_errors += 1
            engine._callback_failed(cb, exc)
            continue
        if result is not None:
            engine._callback_result(result, counters)
    return 0


cdef class Dispatch:
    """What a venue adapter calls after it changed state; one per feed.

    Each method records receive-to-callback latency (``recv_ns`` to now) in the feed's
    ring and runs the engine's callbacks of that kind through ``invoke_callbacks``.
    The callback lists are the engine's own (registrations made later show up)."""

    def __init__(self, engine, str feed_name, FeedCounters counters not None):
        self.engine = engine
        self.feed_name = feed_name
        self.counters = counters
        self.lat = counters.latency
        self.aggregators = engine.aggregators
        cbs = engine._callbacks
        self.book_cbs = cbs["book"]
        self.trade_cbs = cbs["trade"]
        self.order_cbs = cbs["order"]
        self.position_cbs = cbs["position"]
        self.balance_cbs = cbs["balance"]

    def wants(self, str kind):
        """True when a callback of ``kind`` is registered (lets a venue skip building
        event objects nobody reads). Trades always count: bars are built from them."""
        return kind == "trade" or bool(self.engine._callbacks[kind])

    cpdef book(self, object book, int64_t recv_ns):
        """A book changed (delta applied, or a snapshot replaced it)."""
        self.lat.add_c(wall_ns() - recv_ns)
        if self.book_cbs:
            invoke_callbacks(self.book_cbs, book, self.engine, self.counters)

    cpdef trade(self, object trade, int64_t recv_ns):
        """A public trade: into the symbol's kline aggregator, then ``on_trade``."""
        self.lat.add_c(wall_ns() - recv_ns)
        agg = self.aggregators.get(trade.symbol)
        if agg is not None:
            self.engine._push_trade(agg, trade, self.counters)
        if self.trade_cbs:
            invoke_callbacks(self.trade_cbs, trade, self.engine, self.counters)

    cdef int trade_c(self, Instrument inst, object trade_id, int64_t price_ticks, int64_t qty_lots,
                     int64_t side, int64_t ts_ns, int64_t recv_ns, object trade_type) except -1:
        """``trade`` for decoders, from values: no Trade object and no Python-level call
        unless a trade callback is registered. A trade the aggregator refuses is counted
        (``decode_errors``) and logged, as ``Engine._push_trade`` does. O(frames)."""
        self.lat.add_c(wall_ns() - recv_ns)
        agg = self.aggregators.get(inst.symbol)
        if agg is not None:
            if isinstance(agg, KlineAggregator):
                try:
                    (<KlineAggregator>agg).push_trade(price_ticks, qty_lots, ts_ns, side)
                except Exception as exc:   # a late/invalid trade for bars must not stop the feed
                    self.counters.decode_errors += 1
                    _log.warning("kline %s rejected %r: %s", inst.symbol,
                                 trade_type(inst, _id_text(trade_id), price_ticks, qty_lots, side, ts_ns, recv_ns),
                                 exc)
            else:
                self.engine._push_trade(agg, trade_type(inst, _id_text(trade_id), price_ticks, qty_lots, side,
                                                        ts_ns, recv_ns), self.counters)
        if self.trade_cbs:
            invoke_callbacks(self.trade_cbs,
                             trade_type(inst, _id_text(trade_id), price_ticks, qty_lots, side, ts_ns, recv_ns),
                             self.engine, self.counters)
        return 0

    cpdef order(self, object order, int64_t recv_ns):
        """An order changed state."""
        self.lat.add_c(wall_ns() - recv_ns)
        if self.order_cbs:
            invoke_callbacks(self.order_cbs, order, self.engine, self.counters)

    cpdef position(self, object position, int64_t recv_ns):
        """A position changed."""
        self.lat.add_c(wall_ns() - recv_ns)
        if self.position_cbs:
            invoke_callbacks(self.position_cbs, position, self.engine, self.counters)

    cpdef balance(self, object balance, int64_t recv_ns):
        """A balance changed."""
        if self.balance_cbs:
            invoke_callbacks(self.balance_cbs, balance, self.engine, self.counters)


cdef inline str _id_text(object trade_id):
    # Trade ids reach Dispatch.trade_c as str, or int (venues with numeric ids).
    return trade_id if type(trade_id) is str else str(trade_id)


_log = logging.getLogger("engine")

# Imported last on purpose: ``engine/__init__`` imports ``engine.engine``, which imports
# this module; by the time that can happen every name above already exists.
from engine.errors import DecodeError, FeedError  # noqa: E402
