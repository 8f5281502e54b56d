# C-level contract of the realtime venue's hot-message decoder.
#
# market:price and trade:created are decoded in place with engine._core.jscan; every
# other message type (auth replies, subscription acks, pong, chat, presence,
# notifications, posts, sessions) is validated by the same scan and handed to the
# venue as a bytes copy (cold path, decoded with json in feeds.realtime_events).
from libc.stdint cimport int64_t

from engine._core.instrument cimport Instrument
from engine._core.jscan cimport JsonCursor, JsonSpan
from feeds._hotpath cimport FrameSink, Dispatch


cdef class Quote:
    """Last price of one symbol as the venue's market:price reports it (exact)."""
    cdef readonly str symbol
    cdef bytes symbol_bytes            # UTF-8 symbol matched against "symbol" spans
    cdef readonly Instrument instrument
    cdef readonly int64_t last_price_ticks
    cdef readonly int64_t change_ticks       # signed, in the instrument's ticks
    cdef readonly int64_t change_pct_units   # changePercent in units of 10**-6 percent
    cdef readonly int64_t ts_ns              # venue time (0 when the message had none)
    cdef readonly int64_t recv_ns
    cdef readonly int64_t updates            # market:price messages applied


cdef class RealtimeDecoder(FrameSink):
    cdef list quotes                   # of Quote, one per subscribed symbol (linear match)
    cdef Dispatch dispatch             # the feed's callback dispatch (C-level calls)
    cdef object venue                  # feeds.realtime.RealtimeVenue: on_quote / on_message
    cdef object trade_type             # engine.engine.Trade
    cdef readonly Py_ssize_t max_message_bytes
    cdef public bint emit_quotes       # the venue has quote callbacks
    cdef readonly int64_t prices       # market:price applied
    cdef readonly int64_t trades       # trade:created dispatched
    cdef readonly int64_t cold         # other messages handed to the venue
    cdef readonly int64_t unknown_symbols
    cdef readonly int64_t oversize     # messages refused for exceeding max_message_bytes

    cdef Quote find(self, const JsonCursor* c, const JsonSpan* span)
    cdef int decode(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1
