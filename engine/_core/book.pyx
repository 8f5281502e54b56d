# cython: binding=False
"""Integer-tick L2 order book held in typed memory.

Layout (see book_side.pxd): each side compares prices as keys (``price ^ mask``, so a
higher key is better on either side) and holds its levels in two parts.

- The window: ``window_ticks`` consecutive ticks at the touch (4,096 by default),
  direct-indexed. ``wqty[key - wbase]`` is the size at that price and a bitmap marks
  the occupied ticks. Setting a size there is O(1) with no data-dependent branch
  (size, bitmap bit, counts and best offset are all updated branch-free); only
  deleting the best scans the bitmap down for the next one. The side's best level is
  always in the window.
- The far blocks: every level worse than the window, as a sorted sequence of blocks
  of up to 128 ``Level`` structs, worst first, with each block's best price kept in a
  contiguous array (``tops``). A search gallops down the tops from the far best, then
  searches the block, bounded by tick distance. A full block spills into a neighbour
  with room, else splits; a block below a quarter full merges with or borrows from a
  neighbour.

The window follows the market. A new best above it moves it up (the best lands a
quarter of the window below the top); the levels that fall out of the bottom go on top
of the far blocks, filling the top block's room first. Deleting the best so that the
window empties moves it down at once; deleting it so that the next best sits in the
window's bottom eighth moves it down only once a quarter-window of writes has passed
since the last move, so a best that flickers over a gap does not move it every time.
Moving down takes back the far levels the window now covers.

Complexity, with ``n`` the levels on a side and ``W`` the window: a change within the
window O(1); below it O(log n + 128); best level O(1); the k-th level and top-k
export O(W / 64 + k). A move of the window costs O(W + levels moved): a move down
waits for W / 4 writes (or an empty window); a move up comes from a new best above the
window, so a market that keeps jumping more than W / 4 ticks up and back pays it on
every jump.

Memory: 8 bytes a tick of window per side (32 KiB by default, allocated with the
book), plus far blocks carved from slabs, each the shortfall or half of what is held
(so a growing book allocates O(log n) times) and recycled through a spare list, so the
steady state allocates nothing. Like a vector's capacity, slabs track the deepest book
seen and are freed with the book.

Views: ``bids(n, copy=False)`` copies the top ``n`` levels into a buffer the book owns
(one per side) and returns a read-only numpy view of it; asking again while the book
is unchanged reuses it. A view is valid until the book changes; after that a later
view of the same side may overwrite what it shows. Memory-safety rule: while a view of
a side is alive, that side's buffer is never freed or reallocated (an export that
would need a bigger one raises ``BufferError``); updates are never refused because of
a view.

Whole or nothing: a batch is journaled (side, price, previous size) and rolled back
when it fails (a crossed result under ``CROSS_RAISE``, or no memory for a block). The
undo may need blocks (moving the window back up hands levels to the far blocks); only
if that allocation fails is the book cleared, with ``MemoryError``. Input is
validated before anything is touched.
"""
from cpython.ref cimport Py_INCREF, PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree
from libc.string cimport memmove, memcpy
from libc.stdlib cimport qsort
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t, intptr_t, INT64_MAX

cimport cython
cimport numpy as cnp

from engine._core.types cimport Level, LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument
from engine._core.book_side cimport (
    engine_i128, Block, BookSide, BlockPool, SideCursor, BLOCK_LEVELS, INITIAL_SPARE, INITIAL_SLOTS,
    WINDOW_TICKS_DEFAULT, WINDOW_TICKS_MIN, WINDOW_TICKS_MAX, BK_OK, book_worse, side_mask, side_best, side_best_price, side_qty, side_write, side_empty,
    side_load, side_load_blocks, side_top_qty, cursor_start, cursor_next, cursor_skip, window_drop_worst,
    far_drop_worst, far_ensure_slots, blocks_for, pool_reserve, side_copy_top,
)

import numpy as np

from engine.errors import BookCrossedError, BookError

cnp.import_array()

cdef extern from *:
    """
    #ifndef ENGINE_DEBUG
    #define ENGINE_DEBUG 0
    #endif
    """
    const bint ENGINE_DEBUG

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to `descr`.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)

#: numpy dtype mirroring the C ``Level`` struct (test_book checks the sizes match).
LEVEL_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8")])
cdef cnp.dtype _LEVEL_DTYPE = LEVEL_DTYPE
# Where an empty view (copy=False) points (numpy wants a non-NULL data pointer).
cdef Level _NO_LEVEL

cdef int book_level_cmp_bid(const void* a, const void* b) noexcept nogil:
    # Ascending prices: worst bid first.
    cdef int64_t pa = (<const Level*>a).price_ticks, pb = (<const Level*>b).price_ticks
    return (pa > pb) - (pa < pb)


cdef int book_level_cmp_ask(const void* a, const void* b) noexcept nogil:
    # Descending prices: worst ask first.
    cdef int64_t pa = (<const Level*>a).price_ticks, pb = (<const Level*>b).price_ticks
    return (pa < pb) - (pa > pb)


cdef object book_i128_to_int(engine_i128 v):
    """Exact conversion of a 128-bit integer to a Python int."""
    cdef bint negative = v < 0
    cdef engine_i128 mag = -v if negative else v
    cdef object result = (<object>(<uint64_t>(mag >> 64)) << 64) | <object>(<uint64_t>mag)
    return -result if negative else result


# ---------------------------------------------------------------------------
# Zero-copy export: keeps the book alive and counts itself as a live view.
# ---------------------------------------------------------------------------

# no_gc_clear: even when the collector breaks a cycle through it, __dealloc__ must
# still see the book to give back its view count.
@cython.no_gc_clear
cdef class _LevelsExport:
    """Owner of a levels view (copy=False): keeps the book (and so the export buffer the
    view points into) alive; while any lives, that side's buffer is not reallocated."""
    cdef OrderBook book
    cdef int side

    def __dealloc__(self):
        if self.book is not None:
            self.book.xviews[self.side] -= 1


@cython.final
cdef class OrderBook:
    """L2 order book of one instrument: prices in int64 ticks, sizes in int64 lots.

    ``OrderBook(instrument, *, cross_policy=CrossPolicy.RAISE, max_depth=0)``

    - ``cross_policy``: what to do when an update leaves best bid >= best ask:
      ``RAISE`` rejects the update (``BookCrossedError``, book unchanged); ``PRUNE``
      removes the opposite side's crossed levels, which are stale (the side the update
      touched is the fresh one); ``ALLOW`` keeps both and ``is_crossed()`` reports it.
    - ``max_depth``: keep at most this many levels a side (the worst are dropped after
      each update); 0 keeps everything.

    - ``window_ticks``: ticks each side direct-indexes at its touch (a power of two,
      64 to 1,048,576; 8 bytes a tick per side). Changes within it are O(1); a wider
      window keeps more of a sparse book's activity there, at a fixed memory cost.

    Memory: a window per side (32 KiB each by default) for the levels at the touch;
    deeper levels in blocks of 128 levels (16 bytes each), a quarter to fully used,
    carved from slabs that grow by half and are kept (like a vector's capacity) until
    the book is dropped; released blocks are reused, so the steady state allocates
    nothing. See ``bids`` for views (``copy=False``).
    """

    def __cinit__(self):
        cdef int k
        cdef BookSide* s
        for k in range(2):
            s = &self.sides[k]
            s.is_bid = k == SIDE_BID
            s.mask = side_mask(s.is_bid)
            s.wbase = 0
            s.wcount = s.nblocks = s.count = 0
            s.wbest = -1
            s.calm = 0
            s.moves = 0
            s.slots = INITIAL_SLOTS
            s.wticks = 0
            s.wqty = NULL
            s.wbits = NULL
            if _alloc_window(s, WINDOW_TICKS_DEFAULT) < 0:
                raise MemoryError()
            s.blocks = <Block*>PyMem_RawMalloc(INITIAL_SLOTS * sizeof(Block))
            s.tops = <int64_t*>PyMem_RawMalloc(INITIAL_SLOTS * sizeof(int64_t))
            if s.blocks == NULL or s.tops == NULL:
                raise MemoryError()
            self.xbuf[k] = NULL
            self.xcap[k] = self.xlen[k] = self.xviews[k] = 0
            self.xversion[k] = 0
        self.pool.slabs = self.pool.spare = NULL
        self.pool.spare_count = self.pool.slab_levels = 0
        self.journal = NULL
        self.journal_capacity = 0
        if pool_reserve(&self.pool, INITIAL_SPARE) != BK_OK:
            raise MemoryError()

    def __init__(self, Instrument instrument not None, *, int cross_policy=0, Py_ssize_t max_depth=0,
                 Py_ssize_t window_ticks=WINDOW_TICKS_DEFAULT):
        cdef int k
        if cross_policy < 0 or cross_policy > 2:
            raise BookError(f"cross_policy {cross_policy!r}: expected CrossPolicy.RAISE, PRUNE or ALLOW")
        if max_depth < 0:
            raise BookError(f"max_depth {max_depth}: must be >= 0 (0 means unlimited)")
        if (window_ticks < WINDOW_TICKS_MIN or window_ticks > WINDOW_TICKS_MAX
                or window_ticks & (window_ticks - 1)):
            raise BookError(f"window_ticks {window_ticks}: expected a power of two from "
                            f"{WINDOW_TICKS_MIN} to {WINDOW_TICKS_MAX}")
        if window_ticks != self.sides[0].wticks:
            if self.sides[0].count or self.sides[1].count:
                raise BookError("window_ticks can only change while the book is empty")
            for k in range(2):
                if _alloc_window(&self.sides[k], window_ticks) < 0:
                    raise MemoryError()
        self.instrument = instrument
        self.cross_policy = cross_policy
        self.max_depth = max_depth
        self.last_update_id = -1
        self.event_ts_ns = -1

    def __dealloc__(self):
        # Exports hold a reference to the book, so none is alive here: free everything.
        # Far blocks live in the slabs, freed below.
        cdef int k
        cdef Level* slab
        for k in range(2):
            PyMem_RawFree(self.sides[k].wqty)
            PyMem_RawFree(self.sides[k].wbits)
            PyMem_RawFree(self.sides[k].blocks)
            PyMem_RawFree(self.sides[k].tops)
            PyMem_RawFree(self.xbuf[k])
        while self.pool.slabs != NULL:
            slab = self.pool.slabs
            self.pool.slabs = <Level*><intptr_t>slab[0].price_ticks
            PyMem_RawFree(slab)
        PyMem_Free(self.journal)

    # ------------------------------------------------------------------
    # Memory (allocation happens here and in the pool/side primitives).
    # ------------------------------------------------------------------

    cdef int _reserve_blocks(self, Py_ssize_t need) except -1:
        """At least `need` spare blocks, before any change is made."""
        return self._raise_status(pool_reserve(&self.pool, need))

    cdef int _raise_status(self, int status) except -1:
        if status != BK_OK:
            raise MemoryError(f"{self.instrument.symbol}: out of memory for book levels")
        return 0

    cdef int _reserve_journal(self, Py_ssize_t n) except -1:
        """Journal room for a batch of n; grows by doubling, to the largest batch seen."""
        cdef JournalEntry* j
        if n <= self.journal_capacity:
            return 0
        if n < 2 * self.journal_capacity:
            n = 2 * self.journal_capacity
        j = <JournalEntry*>PyMem_Realloc(self.journal, <size_t>n * sizeof(JournalEntry))
        if j == NULL:
            raise MemoryError()
        self.journal = j
        self.journal_capacity = n
        return 0

    # ------------------------------------------------------------------
    # Cross handling shared by single updates and batches.
    # ------------------------------------------------------------------

    cdef bint _crossed(self) noexcept nogil:
        cdef const BookSide* b = &self.sides[SIDE_BID]
        cdef const BookSide* a = &self.sides[SIDE_ASK]
        return b.count > 0 and a.count > 0 and side_best_price(b) >= side_best_price(a)

    cdef Py_ssize_t _prune_crossed(self, int fresh_side) noexcept nogil:
        """Remove the levels of the side opposite `fresh_side` that its best crosses or
        locks: they are stale (the venue would have matched them). Returns how many."""
        cdef BookSide* stale = &self.sides[1 - fresh_side]
        cdef int64_t fresh_best = side_best_price(&self.sides[fresh_side]), ignored
        cdef Py_ssize_t removed = 0
        cdef Level best
        # Deleting the best never needs memory, so side_write cannot fail here.
        while side_best(stale, &best) and not book_worse(stale.is_bid, best.price_ticks, fresh_best):
            side_write(stale, &self.pool, best.price_ticks, 0, &ignored)
            removed += 1
        self.pruned_levels += removed
        return removed

    cdef void _trim_depth(self) noexcept nogil:
        """Drop the worst levels beyond max_depth: far blocks first, then the bottom of
        the window (max_depth >= 1, so the best stays)."""
        cdef int k
        cdef BookSide* s
        cdef Py_ssize_t excess, far
        if self.max_depth == 0:
            return
        for k in range(2):
            s = &self.sides[k]
            excess = s.count - self.max_depth
            if excess <= 0:
                continue
            far = s.count - s.wcount
            far_drop_worst(s, &self.pool, excess if excess < far else far)
            if excess > far:
                window_drop_worst(s, excess - far)

    # ------------------------------------------------------------------
    # C API (book.pxd).
    # ------------------------------------------------------------------

    cdef int set_level(self, int side, int64_t price_ticks, int64_t qty_lots) except -1:
        """Set one level (qty 0 deletes). Whole or nothing."""
        cdef const BookSide* opp
        cdef bint crosses = False
        cdef int64_t old
        cdef int status
        if side != SIDE_BID and side != SIDE_ASK:
            raise BookError(f"side {side!r}: expected Side.BID (0) or Side.ASK (1)")
        if qty_lots < 0:
            raise BookError(f"{self.instrument.symbol}: negative size {qty_lots} lots at {price_ticks} ticks")
        if qty_lots > 0:
            opp = &self.sides[1 - side]
            crosses = opp.count > 0 and not book_worse(side == SIDE_BID, price_ticks, side_best_price(opp))
            if crosses and self.cross_policy == CROSS_RAISE:
                raise BookCrossedError(
                    f"{self.instrument.symbol}: {'bid' if side == SIDE_BID else 'ask'} at "
                    f"{price_ticks} ticks would cross the opposite best {side_best_price(opp)}")
        status = side_write(&self.sides[side], &self.pool, price_ticks, qty_lots, &old)
        if status != BK_OK:
            self._raise_status(status)
        if crosses and self.cross_policy == CROSS_PRUNE:
            self._prune_crossed(side)
        if self.max_depth:
            self._trim_depth()
        self.version += 1
        if ENGINE_DEBUG:
            self._check_invariants()
        return 0

    cdef int apply_updates(self, const LevelUpdate* updates, Py_ssize_t n) except -1:
        """Apply a decoded frame's changes, whole or nothing."""
        cdef Py_ssize_t i
        cdef int status
        _check_updates(updates, n, "update")
        self._begin_batch(n)
        for i in range(n):
            status = self._journaled_write(i, updates[i].side, updates[i].price_ticks, updates[i].qty_lots)
            if status != BK_OK:
                self._abort_batch(i, status)
        return self._finish_batch(n)

    cdef int replace_with(self, const LevelUpdate* levels, Py_ssize_t n) except -1:
        """Replace both sides with a snapshot (any order; zero sizes skipped). Whole or nothing."""
        _check_updates(levels, n, "snapshot level")
        # Sort into scratch first (freed after), so nothing changes before all checks pass.
        cdef Level* scratch = <Level*>PyMem_Malloc(<size_t>(n + 1) * sizeof(Level))
        if scratch == NULL:
            raise MemoryError()
        try:
            self._replace_sorted(scratch, levels, n)
        finally:
            PyMem_Free(scratch)
        return 0

    cdef int _replace_sorted(self, Level* bids, const LevelUpdate* levels, Py_ssize_t n) except -1:
        """replace_with after validation, with `bids` scratch room for n levels."""
        cdef Py_ssize_t i, held = 0
        cdef Py_ssize_t counts[2]
        cdef Level* asks
        cdef int k
        counts[SIDE_BID] = self._sorted_side(levels, n, SIDE_BID, bids)
        asks = bids + (counts[SIDE_BID] if counts[SIDE_BID] >= 0 else 0)
        counts[SIDE_ASK] = self._sorted_side(levels, n, SIDE_ASK, asks)
        for k in range(2):
            if counts[k] < 0:
                raise BookError(f"{self.instrument.symbol}: snapshot repeats a "
                                f"{'bid' if k == SIDE_BID else 'ask'} price "
                                f"({(bids if k == SIDE_BID else asks)[-counts[k] - 1].price_ticks} ticks)")
        if (self.cross_policy != CROSS_ALLOW and counts[SIDE_ASK] and counts[SIDE_BID]
                and bids[counts[SIDE_BID] - 1].price_ticks >= asks[counts[SIDE_ASK] - 1].price_ticks):
            raise BookCrossedError(
                f"{self.instrument.symbol}: snapshot is crossed (best bid {bids[counts[SIDE_BID] - 1].price_ticks}"
                f" >= best ask {asks[counts[SIDE_ASK] - 1].price_ticks} ticks)")
        # Every block needed is spare (or held now) before anything changes.
        cdef Py_ssize_t need = 0
        for k in range(2):
            held += self.sides[k].nblocks
            need += side_load_blocks(&self.sides[k], bids if k == SIDE_BID else asks, counts[k])
            # Index room (24 bytes a block) for the book to grow a lot without reallocating.
            self._raise_status(far_ensure_slots(&self.sides[k], 4 * blocks_for(counts[k])))
        self._reserve_blocks(need - held)
        for k in range(2):
            side_empty(&self.sides[k], &self.pool)
        side_load(&self.sides[SIDE_BID], &self.pool, bids, counts[SIDE_BID])
        side_load(&self.sides[SIDE_ASK], &self.pool, asks, counts[SIDE_ASK])
        self._trim_depth()
        self.version += 1
        if ENGINE_DEBUG:
            self._check_invariants()
        return 0

    cdef Py_ssize_t _sorted_side(self, const LevelUpdate* levels, Py_ssize_t n, int side, Level* out) noexcept nogil:
        """Copy one side's non-zero levels into `out` sorted worst first. Returns the count,
        or -(index+1) of a repeated price (found at out[index])."""
        cdef Py_ssize_t i, m = 0
        cdef bint ordered = True
        for i in range(n):
            if levels[i].side == side and levels[i].qty_lots > 0:
                out[m].price_ticks = levels[i].price_ticks
                out[m].qty_lots = levels[i].qty_lots
                m += 1
        # Venues send snapshots best first: reverse, and sort only if that is not enough.
        cdef Level tmp
        for i in range(m // 2):
            tmp = out[i]
            out[i] = out[m - 1 - i]
            out[m - 1 - i] = tmp
        for i in range(1, m):
            if not book_worse(side == SIDE_BID, out[i - 1].price_ticks, out[i].price_ticks):
                ordered = False
                break
        if not ordered:
            qsort(out, <size_t>m, sizeof(Level), book_level_cmp_bid if side == SIDE_BID else book_level_cmp_ask)
            for i in range(1, m):
                if out[i - 1].price_ticks == out[i].price_ticks:
                    return -(i + 1)
        return m

    cdef bint best_level(self, int side, Level* out) noexcept nogil:
        return side_best(&self.sides[side], out)

    cdef Py_ssize_t level_count_c(self, int side) noexcept nogil:
        return self.sides[side].count

    # ------------------------------------------------------------------
    # Batch machinery.
    # ------------------------------------------------------------------

    cdef int _begin_batch(self, Py_ssize_t n) except -1:
        if n > self.journal_capacity:
            self._reserve_journal(n)
        return 0

    cdef int _journaled_write(self, Py_ssize_t i, int side, int64_t price_ticks, int64_t qty_lots) noexcept nogil:
        self.journal[i].side = side
        self.journal[i].price_ticks = price_ticks
        return side_write(&self.sides[side], &self.pool, price_ticks, qty_lots, &self.journal[i].old_qty_lots)

    cdef int _rollback(self, Py_ssize_t n) except -1:
        """Undo journal entries [0, n) in reverse (an undo may need blocks: a re-base up
        hands window levels to the far blocks)."""
        cdef Py_ssize_t i = n - 1
        cdef int64_t ignored
        cdef int status = BK_OK
        while i >= 0 and status == BK_OK:
            status = side_write(&self.sides[self.journal[i].side], &self.pool, self.journal[i].price_ticks,
                                self.journal[i].old_qty_lots, &ignored)
            i -= 1
        if status != BK_OK:
            # Only out of memory gets here: a half-undone book would be worse than none.
            side_empty(&self.sides[SIDE_BID], &self.pool)
            side_empty(&self.sides[SIDE_ASK], &self.pool)
            self.version += 1
            raise MemoryError(f"{self.instrument.symbol}: out of memory undoing a rejected batch; "
                              "the book was cleared (resynchronise from a snapshot)")
        return 0

    cdef int _abort_batch(self, Py_ssize_t n, int status) except -1:
        """Entry n could not be applied (no block for it): undo [0, n) and raise."""
        self._rollback(n)
        return self._raise_status(status)

    cdef int _finish_batch(self, Py_ssize_t n) except -1:
        cdef bint fresh[2]
        cdef Level best[2]
        cdef Py_ssize_t i
        if self.cross_policy != CROSS_ALLOW and self._crossed():
            if self.cross_policy == CROSS_RAISE:
                self._rollback(n)
                self._raise_crossed_batch(n)
            # PRUNE: the side whose best this batch wrote is fresh; the other is stale.
            self.best_level(SIDE_BID, &best[0])
            self.best_level(SIDE_ASK, &best[1])
            fresh[0] = False
            fresh[1] = False
            for i in range(n):
                if self.journal[i].price_ticks == best[self.journal[i].side].price_ticks:
                    fresh[self.journal[i].side] = True
            if fresh[0] == fresh[1] or self._batch_crosses_itself(n, SIDE_BID if fresh[0] else SIDE_ASK):
                self._rollback(n)
                self._raise_crossed_batch(n)
            self._prune_crossed(SIDE_BID if fresh[0] else SIDE_ASK)
        self._trim_depth()
        self.version += 1
        if ENGINE_DEBUG:
            self._check_invariants()
        return 0

    cdef bint _batch_crosses_itself(self, Py_ssize_t n, int fresh_side) noexcept nogil:
        """True when a level this batch left on the stale side is crossed by the fresh
        best: the frame contradicts itself, so pruning would throw away its own data."""
        cdef const BookSide* stale = &self.sides[1 - fresh_side]
        cdef int64_t fresh_best = side_best_price(&self.sides[fresh_side]), price
        cdef Py_ssize_t i
        for i in range(n):
            if self.journal[i].side != 1 - fresh_side:
                continue
            price = self.journal[i].price_ticks
            if not book_worse(stale.is_bid, price, fresh_best) and side_qty(stale, price) != 0:
                return True
        return False

    cdef int _raise_crossed_batch(self, Py_ssize_t n) except -1:
        raise BookCrossedError(
            f"{self.instrument.symbol}: a batch of {n} updates would cross the book; nothing was applied")

    # ------------------------------------------------------------------
    # Python API: updates.
    # ------------------------------------------------------------------

    def set(self, int side, int64_t price_ticks, int64_t qty_lots):
        """Set the size at a price on one side; ``qty_lots == 0`` deletes the level.

        O(1) within the window at the touch (``window_ticks``), O(log n + 128) deeper
        (see the module docstring). Raises ``BookError`` (bad side,
        negative size), ``BookCrossedError`` (policy RAISE) or ``MemoryError``; on error
        the book is unchanged."""
        self.set_level(side, price_ticks, qty_lots)

    def apply(self, sides, prices, qtys, *, int64_t update_id=-1, int64_t ts_ns=-1):
        """Apply many level changes in one call, whole or nothing.

        ``sides`` (0 bid / 1 ask), ``prices`` (ticks) and ``qtys`` (lots; 0 deletes) are
        equal-length 1-d integer numpy arrays. C-contiguous int8 sides and int64
        prices/sizes are read in place; other integer dtypes that convert without loss
        are converted first. Later entries win over earlier ones at the same price.
        ``update_id``/``ts_ns`` (when >= 0) are recorded as the last applied update.
        O(k) for k entries at the touch (see ``set``). Raises ``BookError`` naming the
        first bad entry, ``BookCrossedError`` or ``MemoryError`` (as ``set``); on error
        the book is unchanged."""
        cdef object sd_arr = _as_array(sides, cnp.NPY_INT8, "sides")
        cdef object p_arr = _as_array(prices, cnp.NPY_INT64, "prices")
        cdef object q_arr = _as_array(qtys, cnp.NPY_INT64, "qtys")
        cdef Py_ssize_t n = cnp.PyArray_DIM(p_arr, 0), i
        cdef int status
        if cnp.PyArray_DIM(q_arr, 0) != n or cnp.PyArray_DIM(sd_arr, 0) != n:
            raise BookError(f"sides, prices and qtys must have the same length "
                            f"(got {cnp.PyArray_DIM(sd_arr, 0)}, {n}, {cnp.PyArray_DIM(q_arr, 0)})")
        # The arrays are C-contiguous and held by the locals above for the whole call.
        cdef const int8_t* sd = <const int8_t*>cnp.PyArray_DATA(sd_arr)
        cdef const int64_t* p = <const int64_t*>cnp.PyArray_DATA(p_arr)
        cdef const int64_t* q = <const int64_t*>cnp.PyArray_DATA(q_arr)
        for i in range(n):
            if sd[i] != SIDE_BID and sd[i] != SIDE_ASK:
                raise BookError(f"sides[{i}] = {sd[i]}: expected 0 (bid) or 1 (ask)")
            if q[i] < 0:
                raise BookError(f"qtys[{i}] = {q[i]}: sizes must be >= 0")
        self._begin_batch(n)
        for i in range(n):
            status = self._journaled_write(i, sd[i], p[i], q[i])
            if status != BK_OK:
                self._abort_batch(i, status)
        self._finish_batch(n)
        if update_id >= 0:
            self.last_update_id = update_id
        if ts_ns >= 0:
            self.event_ts_ns = ts_ns

    def apply_snapshot(self, bid_prices, bid_qtys, ask_prices, ask_qtys, *, int64_t update_id=-1, int64_t ts_ns=-1):
        """Replace the whole book with a snapshot, whole or nothing.

        Arrays of ticks and lots, in any order (venues send best first, which is the
        fast path); zero sizes are skipped. Raises ``BookError`` on negative sizes,
        repeated prices or length mismatches, ``BookCrossedError`` if the snapshot is
        crossed (unless policy ALLOW). O(n) for sorted input, O(n log n) otherwise."""
        cdef const int64_t[:] bp = _as_array(bid_prices, cnp.NPY_INT64, "bid_prices")
        cdef const int64_t[:] bq = _as_array(bid_qtys, cnp.NPY_INT64, "bid_qtys")
        cdef const int64_t[:] ap = _as_array(ask_prices, cnp.NPY_INT64, "ask_prices")
        cdef const int64_t[:] aq = _as_array(ask_qtys, cnp.NPY_INT64, "ask_qtys")
        if bp.shape[0] != bq.shape[0] or ap.shape[0] != aq.shape[0]:
            raise BookError(f"price and size arrays differ in length (bids {bp.shape[0]}/{bq.shape[0]}, "
                            f"asks {ap.shape[0]}/{aq.shape[0]})")
        cdef Py_ssize_t nb = bp.shape[0], na = ap.shape[0], i
        cdef LevelUpdate* tmp = <LevelUpdate*>PyMem_Malloc(<size_t>(nb + na + 1) * sizeof(LevelUpdate))
        if tmp == NULL:
            raise MemoryError()
        try:
            for i in range(nb):
                tmp[i].side = SIDE_BID
                tmp[i].price_ticks = bp[i]
                tmp[i].qty_lots = bq[i]
            for i in range(na):
                tmp[nb + i].side = SIDE_ASK
                tmp[nb + i].price_ticks = ap[i]
                tmp[nb + i].qty_lots = aq[i]
            self.replace_with(tmp, nb + na)
        finally:
            PyMem_Free(tmp)
        if update_id >= 0:
            self.last_update_id = update_id
        if ts_ns >= 0:
            self.event_ts_ns = ts_ns

    def clear(self):
        """Remove every level (keeps the memory: the blocks become spares). O(blocks)."""
        side_empty(&self.sides[SIDE_BID], &self.pool)
        side_empty(&self.sides[SIDE_ASK], &self.pool)
        self.version += 1

    # ------------------------------------------------------------------
    # Python API: reads.
    # ------------------------------------------------------------------

    def best_bid(self):
        """Best bid as ``(price_ticks, qty_lots)``, or None when there are no bids. O(1)."""
        cdef Level best
        if not side_best(&self.sides[SIDE_BID], &best):
            return None
        return (best.price_ticks, best.qty_lots)

    def best_ask(self):
        """Best ask as ``(price_ticks, qty_lots)``, or None when there are no asks. O(1)."""
        cdef Level best
        if not side_best(&self.sides[SIDE_ASK], &best):
            return None
        return (best.price_ticks, best.qty_lots)

    def bbo(self):
        """``(bid_price, bid_qty, ask_price, ask_qty)`` in one call; an empty side's two
        entries are None. O(1); the same tuple is returned while the top is unchanged."""
        cdef Level bl, al
        bl.price_ticks = bl.qty_lots = al.price_ticks = al.qty_lots = 0
        cdef bint b = side_best(&self.sides[SIDE_BID], &bl)
        cdef bint a = side_best(&self.sides[SIDE_ASK], &al)
        # Sizes are > 0 for a present level, so (0, 0) marks an empty side in the key.
        if (self.bbo_cache is not None and bl.price_ticks == self.bbo_key[0].price_ticks
                and bl.qty_lots == self.bbo_key[0].qty_lots and al.price_ticks == self.bbo_key[1].price_ticks
                and al.qty_lots == self.bbo_key[1].qty_lots):
            return self.bbo_cache
        self.bbo_key[0] = bl
        self.bbo_key[1] = al
        self.bbo_cache = (
            bl.price_ticks if b else None,
            bl.qty_lots if b else None,
            al.price_ticks if a else None,
            al.qty_lots if a else None,
        )
        return self.bbo_cache

    def level_count(self, int side):
        """Number of levels on a side. O(1)."""
        _check_side(side)
        return self.sides[side].count

    @property
    def bid_count(self):
        """Number of bid levels. O(1)."""
        return self.sides[SIDE_BID].count

    @property
    def ask_count(self):
        """Number of ask levels. O(1)."""
        return self.sides[SIDE_ASK].count

    def __len__(self):
        """Levels on both sides together."""
        return self.sides[0].count + self.sides[1].count

    def qty_at(self, int side, int64_t price_ticks):
        """Size in lots at a price on a side (0 when no level). O(1) within the window
        at the touch, O(log n) deeper."""
        _check_side(side)
        return side_qty(&self.sides[side], price_ticks)

    def level(self, int side, Py_ssize_t index):
        """The index-th best level ``(price_ticks, qty_lots)`` (0 is the best).
        O(window_ticks / 64 + index / 128): whole bitmap words and blocks are skipped.
        Raises IndexError past the last level."""
        _check_side(side)
        cdef const BookSide* s = &self.sides[side]
        cdef SideCursor c
        cdef Level lv
        if index < 0 or index >= s.count:
            raise IndexError(f"level {index} of {s.count} on the {'bid' if side == SIDE_BID else 'ask'} side")
        cursor_start(s, &c)
        cursor_skip(s, &c, index)
        if not cursor_next(s, &c, &lv):
            raise AssertionError(f"level {index}: the side ended early")  # counts are checked above
        return (lv.price_ticks, lv.qty_lots)

    def bids(self, n=None, *, bint copy=True):
        """Top ``n`` bids (all when None), best first, as a numpy array of LEVEL_DTYPE
        (fields ``price`` in ticks and ``qty`` in lots). O(n).

        ``copy=False`` returns a read-only view of a buffer the book owns, with no
        array data allocated: the top ``n`` levels are copied into the side's export
        buffer (O(n)), or, while the book is unchanged since that buffer was filled
        with at least ``n``, it is reused as it is (O(1)). The view is valid until the
        next change of the book; after that a later ``copy=False`` export of the same
        side may overwrite what it shows. It never shows freed memory:

        - while any view of a side is alive the book frees and reallocates no export
          buffer of that side; an export that needs a bigger one then raises
          ``BufferError`` (release the views with ``del``, or use ``copy=True``);
        - updates never wait for views: a live view refuses nothing else."""
        return self._export(SIDE_BID, n, copy)

    def asks(self, n=None, *, bint copy=True):
        """Top ``n`` asks, best first; see ``bids``."""
        return self._export(SIDE_ASK, n, copy)

    cdef object _export(self, int side, object n, bint copy):
        cdef const BookSide* s = &self.sides[side]
        cdef cnp.npy_intp k = s.count
        cdef Level* dst
        cdef void* data = <void*>&_NO_LEVEL
        cdef _LevelsExport owner
        if n is not None:
            if n < 0:
                raise ValueError(f"n = {n}: must be >= 0")
            if n < k:
                k = n
        if copy:
            Py_INCREF(_LEVEL_DTYPE)
            arr = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, _LEVEL_DTYPE, 1, &k, NULL, NULL, 0, NULL)
            side_copy_top(s, <Level*>cnp.PyArray_DATA(arr), k)
            return arr
        if k > 0:
            data = <void*>self._export_buffer(side, k)
        Py_INCREF(_LEVEL_DTYPE)
        arr = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, _LEVEL_DTYPE, 1, &k, NULL, data, 0, NULL)
        owner = _LevelsExport.__new__(_LevelsExport)
        owner.book = self
        owner.side = side
        self.xviews[side] += 1
        cnp.set_array_base(arr, owner)
        return arr

    @property
    def window_ticks(self):
        """Ticks each side direct-indexes at its touch (see the class docstring)."""
        return self.sides[SIDE_BID].wticks

    @property
    def window_moves(self):
        """Times a side's window has moved to follow the market (both sides). Each move
        costs O(window_ticks); if this grows by more than about one per thousand
        updates, a wider ``window_ticks`` keeps more of the activity in the window."""
        return self.sides[SIDE_BID].moves + self.sides[SIDE_ASK].moves

    @property
    def live_views(self):
        """Number of views (``copy=False``) alive, both sides (while a side has any, its export
        buffer is not reallocated)."""
        return self.xviews[SIDE_BID] + self.xviews[SIDE_ASK]

    cdef Level* _export_buffer(self, int side, Py_ssize_t k) except NULL:
        """The side's export buffer holding its best k levels (k >= 1, at most the
        level count): reused when the book is unchanged since it was filled with at
        least k, else (re)filled. It grows, by at least half, only while no view of it
        is alive."""
        cdef Py_ssize_t cap
        cdef Level* buf
        if self.xversion[side] == self.version and self.xlen[side] >= k:
            return self.xbuf[side]
        if k > self.xcap[side]:
            if self.xviews[side] > 0:
                raise BufferError(
                    f"{self.instrument.symbol}: a view of {k} {'bids' if side == SIDE_BID else 'asks'} needs a "
                    f"bigger export buffer (it holds {self.xcap[side]}) but {self.xviews[side]} "
                    "view(s) of it are alive; release them (del the array) or use copy=True")
            cap = k if k > self.xcap[side] * 3 // 2 else self.xcap[side] * 3 // 2
            buf = <Level*>PyMem_RawRealloc(self.xbuf[side], <size_t>cap * sizeof(Level))
            if buf == NULL:
                raise MemoryError()
            self.xbuf[side] = buf
            self.xcap[side] = cap
        side_copy_top(&self.sides[side], self.xbuf[side], k)
        self.xlen[side] = k
        self.xversion[side] = self.version
        return self.xbuf[side]

    # ------------------------------------------------------------------
    # Analytics. Prices in ticks, sizes in lots; floats only for ratios.
    # ------------------------------------------------------------------

    def spread(self):
        """Best ask minus best bid in ticks (exact, a Python int: it may exceed int64
        when the book spans the whole range), or None when a side is empty. O(1)."""
        cdef Level b, a
        if not self.best_level(SIDE_BID, &b) or not self.best_level(SIDE_ASK, &a):
            return None
        return <object>a.price_ticks - <object>b.price_ticks

    def mid(self):
        """Mid price in ticks (a float: it may fall on a half tick), or None. O(1)."""
        cdef Level b, a
        if not self.best_level(SIDE_BID, &b) or not self.best_level(SIDE_ASK, &a):
            return None
        return (<double>b.price_ticks + <double>a.price_ticks) / 2.0

    def microprice(self):
        """Size-weighted mid in ticks: (bid*ask_qty + ask*bid_qty) / (bid_qty + ask_qty),
        or None when a side is empty. O(1)."""
        cdef Level b, a
        if not self.best_level(SIDE_BID, &b) or not self.best_level(SIDE_ASK, &a):
            return None
        return (<double>b.price_ticks * a.qty_lots + <double>a.price_ticks * b.qty_lots) / (
            <double>b.qty_lots + <double>a.qty_lots)

    def imbalance(self, Py_ssize_t n=1):
        """(bid size - ask size) / (bid size + ask size) over the top ``n`` levels of each
        side, in [-1, 1]; None when both are empty. O(n)."""
        if n <= 0:
            raise ValueError(f"n = {n}: must be >= 1")
        cdef engine_i128 qb = side_top_qty(&self.sides[SIDE_BID], n)
        cdef engine_i128 qa = side_top_qty(&self.sides[SIDE_ASK], n)
        if qb + qa == 0:
            return None
        return <double>(qb - qa) / <double>(qb + qa)

    def fill_cost(self, int taker_side, int64_t qty_lots):
        """Walk the book as a taker: ``taker_side`` BID buys (consumes asks), ASK sells
        (consumes bids). Returns ``(filled_lots, notional, worst_price_ticks)`` where
        ``notional`` is the exact sum of price_ticks * qty_lots (a Python int) and
        ``worst_price_ticks`` is None when nothing fills. O(levels walked)."""
        _check_side(taker_side)
        if qty_lots <= 0:
            raise ValueError(f"qty_lots = {qty_lots}: must be > 0")
        cdef const BookSide* s = &self.sides[1 - taker_side]
        cdef int64_t left = qty_lots, take
        cdef engine_i128 notional = 0
        cdef SideCursor c
        cdef Level lv
        cdef int64_t worst = 0
        cursor_start(s, &c)
        while left > 0 and cursor_next(s, &c, &lv):
            take = lv.qty_lots if lv.qty_lots < left else left
            notional += <engine_i128>take * lv.price_ticks
            worst = lv.price_ticks
            left -= take
        if left == qty_lots:
            return (0, 0, None)
        return (qty_lots - left, book_i128_to_int(notional), worst)

    def vwap(self, int taker_side, int64_t qty_lots):
        """Average price in ticks to fill ``qty_lots`` as a taker, or None when the book
        is too thin. O(levels walked)."""
        filled, notional, _ = self.fill_cost(taker_side, qty_lots)
        return notional / filled if filled == qty_lots else None

    def worst_price(self, int taker_side, int64_t qty_lots):
        """Worst price in ticks reached filling ``qty_lots`` as a taker, or None when the
        book is too thin. O(levels walked)."""
        filled, _, worst = self.fill_cost(taker_side, qty_lots)
        return worst if filled == qty_lots else None

    def is_crossed(self):
        """True when best bid >= best ask (crossed or locked). O(1)."""
        return self._crossed()

    def is_locked(self):
        """True when best bid == best ask. O(1)."""
        cdef Level b, a
        return self.best_level(SIDE_BID, &b) and self.best_level(SIDE_ASK, &a) and b.price_ticks == a.price_ticks

    def memory_bytes(self):
        """Bytes of level memory held: windows, far-block slabs, block index, export
        buffers and journal, excluding the Python object. O(1)."""
        cdef Py_ssize_t wticks = self.sides[0].wticks + self.sides[1].wticks
        return (wticks * sizeof(int64_t) + (wticks >> 6) * sizeof(uint64_t)
                + self.pool.slab_levels * sizeof(Level)
                + (self.sides[0].slots + self.sides[1].slots) * (sizeof(Block) + sizeof(int64_t))
                + (self.xcap[0] + self.xcap[1]) * sizeof(Level)
                + self.journal_capacity * sizeof(JournalEntry))

    def _check_invariants(self):
        """Raise AssertionError unless, on each side: the window's bitmap, count and
        best offset match its sizes, it fits the int64 range, and it holds the best
        level whenever the side has any; the far blocks are non-empty and within
        capacity, their levels strictly sorted worst first within and across blocks
        and all worse than the window, each cached block top equal to the block's last
        price; counts add up; no level has size <= 0. Also: the spare list and slabs
        account for every block; max_depth is respected; the book is not crossed
        (unless ALLOW). O(n + window_ticks)."""
        cdef int k
        cdef Py_ssize_t i, j, o, total, wcount, wbest, held = 0, spares = 0
        cdef const BookSide* s
        cdef const Block* b
        cdef const Level* prev
        cdef Level* blk
        cdef bint bit
        for k in range(2):
            s = &self.sides[k]
            if s.is_bid != (k == SIDE_BID) or s.mask != side_mask(s.is_bid):
                raise AssertionError(f"side {k}: is_bid flag or mask wrong")
            if s.wbase > INT64_MAX - (s.wticks - 1):
                raise AssertionError(f"side {k}: window base {s.wbase} runs past the int64 range")
            wcount = 0
            wbest = -1
            for o in range(s.wticks):
                bit = (s.wbits[o >> 6] >> (o & 63)) & 1
                if s.wqty[o] < 0 or bit != (s.wqty[o] != 0):
                    raise AssertionError(f"side {k}: window offset {o} has size {s.wqty[o]}, bit {bit}")
                if bit:
                    wcount += 1
                    wbest = o
            if wcount != s.wcount or wbest != s.wbest:
                raise AssertionError(f"side {k}: window count/best {s.wcount}/{s.wbest}, scan {wcount}/{wbest}")
            if (s.count > 0) != (s.wcount > 0):
                raise AssertionError(f"side {k}: {s.count} levels but {s.wcount} in the window")
            if not (0 <= s.nblocks <= s.slots):
                raise AssertionError(f"side {k}: {s.nblocks} blocks in {s.slots} slots")
            total = wcount
            prev = NULL
            for j in range(s.nblocks):
                b = &s.blocks[j]
                if not (1 <= b.count <= BLOCK_LEVELS):
                    raise AssertionError(f"side {k} block {j}: count {b.count}")
                if s.tops[j] != b.levels[b.count - 1].price_ticks:
                    raise AssertionError(f"side {k} block {j}: cached top {s.tops[j]} != {b.levels[b.count - 1].price_ticks}")
                for i in range(b.count):
                    if b.levels[i].qty_lots <= 0:
                        raise AssertionError(f"side {k}: level {b.levels[i].price_ticks} has size {b.levels[i].qty_lots}")
                    if prev != NULL and not book_worse(s.is_bid, prev.price_ticks, b.levels[i].price_ticks):
                        raise AssertionError(f"side {k} block {j}: unsorted at {prev.price_ticks}, {b.levels[i].price_ticks}")
                    prev = &b.levels[i]
                total += b.count
            held += s.nblocks
            if prev != NULL and (prev.price_ticks ^ s.mask) >= s.wbase:
                raise AssertionError(f"side {k}: far level {prev.price_ticks} is inside the window")
            if total != s.count:
                raise AssertionError(f"side {k}: count {s.count} but window and blocks hold {total}")
            if self.max_depth and s.count > self.max_depth:
                raise AssertionError(f"side {k}: {s.count} levels beyond max_depth {self.max_depth}")
        blk = self.pool.spare
        while blk != NULL:
            spares += 1
            blk = <Level*><intptr_t>blk[0].price_ticks
        if spares != self.pool.spare_count:
            raise AssertionError(f"spare list holds {spares} blocks, counted {self.pool.spare_count}")
        if (held + spares) * BLOCK_LEVELS != self.pool.slab_levels:
            raise AssertionError(f"{held} blocks held and {spares} spare, but slabs hold "
                                 f"{self.pool.slab_levels // BLOCK_LEVELS}")
        if self.cross_policy != CROSS_ALLOW and self._crossed():
            raise AssertionError("book is crossed")
        return True

    def __repr__(self):
        return (f"OrderBook({self.instrument.symbol!r}, bids={self.bid_count}, asks={self.ask_count}, "
                f"best_bid={self.best_bid()!r}, best_ask={self.best_ask()!r})")


cdef int _alloc_window(BookSide* s, Py_ssize_t wticks) noexcept:
    """Give an empty side a zeroed window of wticks ticks (freeing the old one); -1 when
    out of memory (the old window is kept)."""
    cdef int64_t* wqty = <int64_t*>PyMem_RawCalloc(<size_t>wticks, sizeof(int64_t))
    cdef uint64_t* wbits = <uint64_t*>PyMem_RawCalloc(<size_t>(wticks >> 6), sizeof(uint64_t))
    if wqty == NULL or wbits == NULL:
        PyMem_RawFree(wqty)
        PyMem_RawFree(wbits)
        return -1
    PyMem_RawFree(s.wqty)
    PyMem_RawFree(s.wbits)
    s.wqty = wqty
    s.wbits = wbits
    s.wticks = wticks
    return 0


cdef int _check_updates(const LevelUpdate* updates, Py_ssize_t n, str what) except -1:
    """BookError naming the first entry whose side is not BID/ASK or whose size is
    negative (`what` names the entries: "update", "snapshot level")."""
    cdef Py_ssize_t i
    for i in range(n):
        if updates[i].side != SIDE_BID and updates[i].side != SIDE_ASK:
            raise BookError(f"{what} {i}: side {updates[i].side}: expected 0 (bid) or 1 (ask)")
        if updates[i].qty_lots < 0:
            raise BookError(f"{what} {i}: negative size {updates[i].qty_lots} lots at {updates[i].price_ticks} ticks")
    return 0


cdef inline int _check_side(int side) except -1:
    if side != SIDE_BID and side != SIDE_ASK:
        raise BookError(f"side {side!r}: expected Side.BID (0) or Side.ASK (1)")
    return 0


cdef object _as_array(object values, int typenum, str name):
    """A 1-d C-contiguous array of `typenum` (int8 for sides, int64 otherwise).

    Fast path: such an ndarray is returned as is (no numpy calls). Otherwise any
    integer array converts if it can do so without loss (sides are range-checked
    first, as they are narrowed to int8), and an empty one of any dtype is fine."""
    if (type(values) is cnp.ndarray and cnp.PyArray_NDIM(values) == 1
            and cnp.PyArray_TYPE(values) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(values)):
        return values
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BookError(f"{name}: expected a 1-d array, got {arr.ndim} dimensions")
    if arr.size == 0:
        return np.empty(0, np.int8 if typenum == cnp.NPY_INT8 else np.int64)  # [] is float64 to numpy
    if arr.dtype.kind not in "iu":
        raise BookError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if typenum == cnp.NPY_INT8:
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            bad = int(np.flatnonzero((arr < 0) | (arr > 1))[0])
            raise BookError(f"{name}[{bad}] = {arr[bad]}: expected 0 (bid) or 1 (ask)")
        return np.ascontiguousarray(arr, dtype=np.int8)
    try:
        return np.ascontiguousarray(arr.astype(np.int64, casting="safe", copy=False))
    except TypeError:
        raise BookError(f"{name}: dtype {arr.dtype} does not convert to int64 without loss") from None
