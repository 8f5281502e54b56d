# C-level contract of the L2 order book. Decoders cimport this and call the cdef
# methods with the GIL held; every one applies whole or not at all and raises on
# bad input, leaving the book exactly as it was.
from libc.stdint cimport int32_t, int64_t, uint64_t
from engine._core.types cimport Level, LevelUpdate
from engine._core.instrument cimport Instrument
from engine._core.book_side cimport BookSide, BlockPool

# Undo record for whole-or-nothing batches.
ctypedef struct JournalEntry:
    int64_t price_ticks
    int64_t old_qty_lots
    int32_t side

cdef enum CrossPolicyCode:
    CROSS_RAISE = 0      # reject the update (BookCrossedError), book unchanged
    CROSS_PRUNE = 1      # remove the stale opposite levels the update crosses
    CROSS_ALLOW = 2      # keep both; is_crossed() reports it


cimport cython

@cython.final
cdef class OrderBook:
    cdef readonly Instrument instrument
    cdef BookSide sides[2]
    # Sequence tracking: the last applied venue update id and its event time (ns).
    cdef public int64_t last_update_id
    cdef public int64_t event_ts_ns
    # Counts every change of the levels; callers (and the export buffers) compare it to
    # tell whether what they read earlier is still current.
    cdef readonly uint64_t version
    cdef readonly int cross_policy     # CrossPolicyCode
    cdef readonly Py_ssize_t max_depth # levels kept per side; 0: unlimited
    cdef readonly uint64_t pruned_levels  # stale levels removed under CROSS_PRUNE
    cdef BlockPool pool                # far-block memory (see BlockPool)
    # Zero-copy exports, per side: a buffer the top levels are copied into (owned,
    # PyMem_RawMalloc'd; never freed or reallocated while a view of it is alive), the
    # live views of it, how many levels it holds (xlen) and the book version they
    # were copied at.
    cdef Level* xbuf[2]
    cdef Py_ssize_t xviews[2]
    cdef Py_ssize_t xcap[2]
    cdef Py_ssize_t xlen[2]
    cdef uint64_t xversion[2]
    # bbo() returns the same tuple while the top of book is unchanged.
    cdef tuple bbo_cache
    cdef Level bbo_key[2]
    cdef JournalEntry* journal         # owned, grows to the largest batch seen
    cdef Py_ssize_t journal_capacity

    # --- C API for decoders (GIL held) ---
    cdef int apply_updates(self, const LevelUpdate* updates, Py_ssize_t n) except -1
    cdef int replace_with(self, const LevelUpdate* levels, Py_ssize_t n) except -1
    cdef int set_level(self, int side, int64_t price_ticks, int64_t qty_lots) except -1
    cdef bint best_level(self, int side, Level* out) noexcept nogil
    cdef Py_ssize_t level_count_c(self, int side) noexcept nogil

    # --- internals (declared here because Cython requires it) ---
    cdef int _reserve_blocks(self, Py_ssize_t need) except -1
    cdef int _reserve_journal(self, Py_ssize_t n) except -1
    cdef int _replace_sorted(self, Level* bids, const LevelUpdate* levels, Py_ssize_t n) except -1
    cdef int _raise_status(self, int status) except -1
    cdef bint _crossed(self) noexcept nogil
    cdef Py_ssize_t _prune_crossed(self, int fresh_side) noexcept nogil
    cdef void _trim_depth(self) noexcept nogil
    cdef Py_ssize_t _sorted_side(self, const LevelUpdate* levels, Py_ssize_t n, int side, Level* out) noexcept nogil
    cdef int _begin_batch(self, Py_ssize_t n) except -1
    cdef int _journaled_write(self, Py_ssize_t i, int side, int64_t price_ticks, int64_t qty_lots) noexcept nogil
    cdef int _rollback(self, Py_ssize_t n) except -1
    cdef int _abort_batch(self, Py_ssize_t n, int status) except -1
    cdef int _finish_batch(self, Py_ssize_t n) except -1
    cdef int _raise_crossed_batch(self, Py_ssize_t n) except -1
    cdef bint _batch_crosses_itself(self, Py_ssize_t n, int fresh_side) noexcept nogil
    cdef Level* _export_buffer(self, int side, Py_ssize_t k) except NULL
    cdef object _export(self, int side, object n, bint copy)
