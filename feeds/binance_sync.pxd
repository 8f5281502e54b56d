# C-level contract of the Binance snapshot + diff book sync.
#
# A feed adapter hands every received frame to feed_c (inside its picows callback: the
# buffer is borrowed for that call only; nothing here keeps a pointer to it -- diffs
# buffered before a snapshot are copied into memory this object owns).
from libc.stdint cimport int64_t

from engine._core.types cimport LevelUpdate
from engine._core.book cimport OrderBook
from feeds.binance_decode cimport BinanceDecoder, DepthHeader, BookTicker

cdef enum SyncState:
    SYNC_AWAITING_SNAPSHOT = 0   # never synced: diffs are buffered
    SYNC_BRIDGING = 1            # snapshot applied; the next diff must bridge it
    SYNC_LIVE = 2                # every diff chains to the previous one
    SYNC_OUT_OF_SYNC = 3         # a gap (or a rejected crossing diff): buffering until a new snapshot

cdef enum:
    SYNC_TICKER_RING = 64        # bookTickers kept until the diff with their u arrives

# A diff buffered while waiting for a snapshot; its levels are
# pending_levels[level_start : level_start + header.n_levels].
ctypedef struct PendingDiff:
    DepthHeader header
    Py_ssize_t level_start


cdef class BinanceBookSync:
    cdef readonly OrderBook book
    cdef readonly BinanceDecoder decoder
    cdef readonly int state
    cdef readonly bint futures
    # Counters (see the class docstring).
    cdef readonly int64_t frames
    cdef readonly int64_t depth_applied
    cdef readonly int64_t dropped_stale
    cdef readonly int64_t gaps
    cdef readonly int64_t errors
    cdef readonly int64_t bbo_checks
    cdef readonly int64_t bbo_mismatches
    cdef readonly int64_t crossed
    cdef readonly int64_t snapshots
    cdef readonly int64_t buffered
    cdef readonly int64_t buffer_dropped
    cdef readonly int64_t tickers
    cdef readonly int64_t trades
    cdef readonly int64_t ignored
    cdef readonly int64_t callback_errors
    cdef readonly str last_gap_reason
    cdef public object on_gap
    cdef public object on_trade
    # Diffs buffered before a snapshot. Owned (PyMem), grown by doubling, freed in
    # __dealloc__; at most max_buffered diffs (the oldest half is dropped beyond that).
    cdef PendingDiff* pending
    cdef Py_ssize_t pending_count
    cdef Py_ssize_t pending_capacity
    cdef LevelUpdate* pending_levels
    cdef Py_ssize_t pending_levels_count
    cdef Py_ssize_t pending_levels_capacity
    cdef Py_ssize_t max_buffered
    # bookTickers ahead of the book (u > last applied u), checked when the diff whose
    # final u equals theirs is applied (spot depth@100ms diffs arrive after them).
    cdef BookTicker ticker_ring[SYNC_TICKER_RING]
    cdef Py_ssize_t ticker_count
    cdef str gap_to_signal           # set by a state change, signalled after it

    # Decode and process one frame (borrowed for the call). Returns the BinanceKind;
    # raises DecodeError (counted in `errors`, nothing changed) on a malformed frame.
    cdef int feed_c(self, const char* buf, Py_ssize_t n) except -1

    # Internals (declared here because Cython requires it; not an API).
    cdef int _on_depth(self) except -1
    cdef int _process_diff(self, const DepthHeader* hdr, const LevelUpdate* levels) except -1
    cdef int _gap(self, str reason, bint count=*) except -1
    cdef int _on_snapshot(self) except -1
    cdef void _on_ticker(self) noexcept
    cdef void _check_bbo(self, const BookTicker* t) noexcept
    cdef void _match_tickers(self, int64_t final_update_id) noexcept
    cdef int _buffer(self, const DepthHeader* hdr, const LevelUpdate* levels) except -1
    cdef void _drop_pending(self, Py_ssize_t k) noexcept
    cdef void _invoke(self, object callback, tuple args) noexcept
