# The per-frame path of every feed, in C: picows listener base, frame sinks, counters,
# the latency ring, and callback dispatch. feeds.session (connection lifecycle) and
# engine.engine (the Python API) build on these; venue decoders subclass FrameSink.
from libc.stdint cimport int64_t
from picows.picows cimport WSListener, WSFrame, WSTransport
from engine._core.instrument cimport Instrument


# Wall clock in ns since the epoch (CLOCK_REALTIME through the vDSO; no Python call).
cdef int64_t wall_ns() noexcept nogil


cdef class LatencyRing:
    """Fixed-size ring of latency samples (ns). Memory: `buf` is PyMem-owned, allocated
    once in __cinit__ and freed in __dealloc__; it never grows."""
    cdef int64_t* buf
    cdef Py_ssize_t capacity
    cdef Py_ssize_t next
    cdef readonly int64_t count
    cdef void add_c(self, int64_t ns) noexcept


cdef class FeedCounters:
    cdef public int64_t frames
    cdef public int64_t bytes
    cdef public int64_t decode_errors
    cdef public int64_t gaps
    cdef public int64_t resyncs
    cdef public int64_t reconnects
    cdef public int64_t callback_errors
    cdef readonly LatencyRing latency


cdef class FrameSink:
    """A decoder that takes frames at C level. buf[0:n] is BORROWED from picows' read
    buffer: valid only during the call; never keep a pointer to it."""
    cdef bint applying            # inside deliver(): the decoder's scratch is in use and
                                  # user callbacks may be running
    cdef int on_frame_c(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1
    # The one entry to on_frame_c (FrameSink.feed, FrameListener.on_ws_frame): refuses a
    # frame fed from a callback of the frame being applied (RuntimeError, nothing done).
    cdef int deliver(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1


cdef class FrameListener(WSListener):
    cdef readonly FeedCounters counters
    cdef object on_frame          # Python on_frame(memoryview, recv_ns) when sink is None
    cdef FrameSink sink           # C-level decoder, or None
    cdef public object recorder   # object with write(recv_ns, payload), or None
    cdef public Py_ssize_t max_size
    cdef public bint dead         # set when the connection is being closed: frames ignored
    cdef public int64_t last_frame_ns


cdef class Dispatch:
    cdef object engine
    cdef readonly str feed_name
    cdef readonly FeedCounters counters
    cdef LatencyRing lat
    cdef dict aggregators
    cdef list book_cbs
    cdef list trade_cbs
    cdef list order_cbs
    cdef list position_cbs
    cdef list balance_cbs
    cpdef book(self, object book, int64_t recv_ns)
    cpdef trade(self, object trade, int64_t recv_ns)
    # A public trade given as values (decoders): into the symbol's kline aggregator by its
    # C entry, then on_trade. The Trade object (trade_type(inst, str(trade_id), ...)) is
    # built only when a trade callback is registered (or a rejection is logged).
    cdef int trade_c(self, Instrument inst, object trade_id, int64_t price_ticks, int64_t qty_lots,
                     int64_t side, int64_t ts_ns, int64_t recv_ns, object trade_type) except -1
    cpdef order(self, object order, int64_t recv_ns)
    cpdef position(self, object position, int64_t recv_ns)
    cpdef balance(self, object balance, int64_t recv_ns)


cpdef int invoke_callbacks(list callbacks, object obj, object engine, FeedCounters counters) except -1
