# C-level contract of the prices (Tradevest style) frame decoder.
#
# A PricesDecoder belongs to ONE connection (the primary one, or the short-lived
# handover link opened while the set of markets changes); the MarketBook objects it
# writes into are shared by every decoder of the venue and survive reconnects.
# PRICES frames are decoded in place with engine._core.jscan into one scratch
# LevelUpdate buffer, validated whole (every market of the frame), then each market's
# book is replaced (OrderBook.replace_with), then callbacks run.
from libc.stdint cimport int32_t, int64_t, uint64_t

from engine._core.types cimport LevelUpdate
from engine._core.instrument cimport Instrument
from engine._core.book cimport OrderBook
from engine._core.jscan cimport JsonCursor, JsonSpan, JsonStatus
from feeds._hotpath cimport FrameSink, Dispatch


cdef class MarketBook:
    """One market of the venue: its instrument, the engine's book and counters."""
    cdef readonly str market
    cdef bytes market_bytes            # UTF-8 name matched against the "prices" keys
    cdef readonly Instrument instrument
    cdef readonly OrderBook book
    cdef readonly int64_t replaces     # PRICES entries applied (book replaced)
    cdef readonly int64_t keepalives   # PRICES entries with empty asks and bids
    cdef readonly int64_t last_recv_ns # receive time of the last applied entry
    # Per-frame scratch bookkeeping (valid only inside one feed() call).
    cdef uint64_t frame_gen
    cdef Py_ssize_t frame_start        # first scratch slot of this market's levels
    cdef Py_ssize_t frame_count        # levels of both sides
    cdef Py_ssize_t frame_best_bid     # scratch index of the best bid, -1: no bids
    cdef Py_ssize_t frame_best_ask     # scratch index of the best ask, -1: no asks


cdef class PricesDecoder(FrameSink):
    cdef list markets                  # of MarketBook this connection applies (linear match)
    cdef Dispatch dispatch             # the feed's callback dispatch (C-level calls)
    cdef object link                   # the connection's owner: on_live / on_server_error / on_unknown
    cdef readonly bint live            # a PRICES frame arrived on this connection
    # Scratch for one frame's levels. Owned (PyMem_RawRealloc'd, freed in __dealloc__),
    # grown per frame to the bound its length implies; valid until the next frame.
    cdef LevelUpdate* scratch
    cdef Py_ssize_t capacity
    cdef list touched                  # MarketBooks of the frame being decoded (reused)
    cdef uint64_t gen                  # frame generation (duplicate-market detection)
    cdef readonly int64_t frames_applied
    cdef readonly int64_t keepalive_frames
    cdef readonly int64_t unknown_markets   # entries for markets this connection does not apply
    cdef readonly int64_t errors            # ERROR messages received

    cdef MarketBook find_market(self, const JsonCursor* c, const JsonSpan* key)
    cdef int decode(self, const char* buf, Py_ssize_t n, int64_t recv_ns) except -1
    cdef int read_prices(self, JsonCursor* c, int64_t recv_ns) except -1
    cdef int apply(self, int64_t recv_ns) except -1


# One side of one market: a JSON array of {"price":"…","quantity":"…"} objects, best
# first (bids strictly descending, asks strictly ascending), appended to out[*n].
# Never touches Python; the caller guarantees room for every level (on_frame_c's bound).
# On a refused level *why says which rule failed (WHY_* in the .pyx) for the message.
cdef JsonStatus read_side(JsonCursor* c, int32_t price_decimals, int64_t tick_units,
                          int32_t qty_decimals, int64_t lot_units, int side,
                          LevelUpdate* out, Py_ssize_t capacity, Py_ssize_t* n,
                          int* why) noexcept nogil
