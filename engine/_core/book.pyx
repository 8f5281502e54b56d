# cython: binding=False
"""Integer-tick L2 order book held in typed memory.

Layout (see book.pxd): each side is one contiguous array of ``Level`` structs sorted
worst first, so the best level sits at the high end. Free room is kept at both ends;
an insert or delete shifts whichever part of the array is shorter. Lookups gallop
down from the touch, then binary-search.

Complexity, with ``d`` the number of levels better than the price touched and ``n``
the levels on that side: find O(log d); insert/delete O(log d + min(d, n - d));
size change at an existing level O(log d); best level O(1); top-k export O(k).
So changes near the touch are O(1) amortised, and changes near the far end are cheap
too (they shift the short worse part).

Whole or nothing: a batch is journaled (side, price, previous size) and rolled back
when it fails (a crossed result under ``CROSS_RAISE``); input is validated before
anything is touched. Capacity for a batch is reserved before its first change, so a
batch never reallocates half-way.
"""
from cpython.ref cimport Py_INCREF, PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memmove, memcpy
from libc.stdlib cimport qsort
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

cimport cython
cimport numpy as cnp

from engine._core.types cimport Level, LevelUpdate, SIDE_BID, SIDE_ASK
from engine._core.instrument cimport Instrument

import numpy as np

from engine.errors import BookCrossedError, BookError

cnp.import_array()

cdef extern from *:
    """
    #ifndef ENGINE_DEBUG
    #define ENGINE_DEBUG 0
    #endif
    typedef __int128 engine_i128;
    """
    const bint ENGINE_DEBUG
    ctypedef long long engine_i128

cdef extern from "numpy/arrayobject.h":
    # Steals a reference to `descr`.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)

#: numpy dtype mirroring the C ``Level`` struct (test_book checks the sizes match).
LEVEL_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8")])
cdef cnp.dtype _LEVEL_DTYPE = LEVEL_DTYPE

cdef enum:
    INITIAL_CAPACITY = 64


# ---------------------------------------------------------------------------
# Side primitives: nogil, no errors possible (callers reserve room first).
# ---------------------------------------------------------------------------

cdef inline bint book_worse(bint is_bid, int64_t a, int64_t b) noexcept nogil:
    """True when price a is worse than price b on this side."""
    return a < b if is_bid else a > b


cdef inline Py_ssize_t book_find(const BookSide* s, int64_t price_ticks) noexcept nogil:
    """Index i in [lo, hi] with buf[lo:i] worse than price and buf[i:hi] better or equal.

    Prices are distinct integers, so a price g ticks from the best is at most g levels
    from it: that bounds the window (in a dense book it is an exact hit). Within the
    window: gallop down from the touch (cost O(log d)), then a branchless binary search
    (no mispredictions)."""
    cdef Py_ssize_t lo = s.lo, hi = s.hi, lower, upper, probe, step = 1, n, half
    cdef bint is_bid = s.is_bid
    cdef const Level* buf = s.buf
    cdef int64_t best
    cdef uint64_t gap
    if hi == lo:
        return hi
    best = buf[hi - 1].price_ticks
    if not book_worse(is_bid, price_ticks, best):
        return hi - 1 if price_ticks == best else hi
    # Unsigned difference: exact even across the whole int64 range.
    gap = <uint64_t>best - <uint64_t>price_ticks if is_bid else <uint64_t>price_ticks - <uint64_t>best
    upper = hi - 1
    if gap < <uint64_t>(hi - 1 - lo):
        lower = hi - 1 - <Py_ssize_t>gap
        if buf[lower].price_ticks == price_ticks:
            return lower  # every tick between it and the best is occupied
    else:
        lower = lo
    if upper - lower <= 64:
        # Small window: the index is `lower` plus the number of empty ticks in between,
        # few in a liquid book, so walk up from the bound.
        while lower < upper and book_worse(is_bid, buf[lower].price_ticks, price_ticks):
            lower += 1
        return lower
    if upper - lower > 32:
        probe = upper - 1
        while probe > lower:
            if book_worse(is_bid, buf[probe].price_ticks, price_ticks):
                lower = probe + 1
                break
            upper = probe
            step <<= 1
            probe = upper - step
    n = upper - lower
    while n > 1:
        half = n >> 1
        lower = lower + half if book_worse(is_bid, buf[lower + half - 1].price_ticks, price_ticks) else lower
        n -= half
    if n == 1 and book_worse(is_bid, buf[lower].price_ticks, price_ticks):
        lower += 1
    return lower


cdef inline void book_insert_at(BookSide* s, Py_ssize_t i, int64_t price_ticks, int64_t qty_lots) noexcept nogil:
    """Insert at index i, shifting the shorter part. Requires one free slot.

    When the shorter part has no room at its end, the levels are first re-centred in
    the buffer (one O(n) move that buys (capacity - n) / 2 cheap inserts), rather
    than shifting the long part on every insert."""
    cdef Py_ssize_t count, new_lo
    cdef bint up = s.hi - i <= i - s.lo
    if (up and s.hi == s.capacity) or (not up and s.lo == 0):
        count = s.hi - s.lo
        new_lo = (s.capacity - count) // 2
        if new_lo == s.lo:
            # Only one free slot in all: it is at the other end.
            up = not up
        else:
            memmove(&s.buf[new_lo], &s.buf[s.lo], <size_t>count * sizeof(Level))
            i += new_lo - s.lo
            s.lo = new_lo
            s.hi = new_lo + count
            up = (s.hi < s.capacity) and (s.hi - i <= i - s.lo or s.lo == 0)
    if up:
        memmove(&s.buf[i + 1], &s.buf[i], <size_t>(s.hi - i) * sizeof(Level))
        s.hi += 1
    else:
        memmove(&s.buf[s.lo - 1], &s.buf[s.lo], <size_t>(i - s.lo) * sizeof(Level))
        s.lo -= 1
        i -= 1
    s.buf[i].price_ticks = price_ticks
    s.buf[i].qty_lots = qty_lots


cdef inline void book_remove_at(BookSide* s, Py_ssize_t i) noexcept nogil:
    """Remove index i, shifting the shorter part."""
    if s.hi - 1 - i <= i - s.lo:
        memmove(&s.buf[i], &s.buf[i + 1], <size_t>(s.hi - 1 - i) * sizeof(Level))
        s.hi -= 1
    else:
        memmove(&s.buf[s.lo + 1], &s.buf[s.lo], <size_t>(i - s.lo) * sizeof(Level))
        s.lo += 1


cdef inline int64_t book_write(BookSide* s, int64_t price_ticks, int64_t qty_lots) noexcept nogil:
    """Set the size at a price (0 deletes); returns the previous size (0 if absent).
    Requires one free slot when the price may be new."""
    cdef Py_ssize_t i = book_find(s, price_ticks)
    cdef int64_t old
    if i < s.hi and s.buf[i].price_ticks == price_ticks:
        old = s.buf[i].qty_lots
        if qty_lots == 0:
            book_remove_at(s, i)
        else:
            s.buf[i].qty_lots = qty_lots
        return old
    if qty_lots != 0:
        book_insert_at(s, i, price_ticks, qty_lots)
    return 0


cdef inline Py_ssize_t book_count(const BookSide* s) noexcept nogil:
    return s.hi - s.lo


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

cdef class _LevelsExport:
    """Owner of a zero-copy levels view: while it lives the book will not reallocate."""
    cdef OrderBook book

    def __dealloc__(self):
        if self.book is not None:
            self.book.exports -= 1


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

    Memory: 16 bytes per level plus free room of at most the same again; it grows
    by doubling and never shrinks, so the steady state allocates nothing.
    """

    def __cinit__(self):
        cdef int k
        for k in range(2):
            self.sides[k].buf = <Level*>PyMem_Malloc(INITIAL_CAPACITY * sizeof(Level))
            if self.sides[k].buf == NULL:
                raise MemoryError()
            self.sides[k].capacity = INITIAL_CAPACITY
            self.sides[k].lo = INITIAL_CAPACITY // 2
            self.sides[k].hi = INITIAL_CAPACITY // 2
            self.sides[k].is_bid = k == SIDE_BID
        self.journal = NULL
        self.journal_capacity = 0

    def __init__(self, Instrument instrument not None, *, int cross_policy=0, Py_ssize_t max_depth=0):
        if cross_policy < 0 or cross_policy > 2:
            raise BookError(f"cross_policy {cross_policy!r}: expected CrossPolicy.RAISE, PRUNE or ALLOW")
        if max_depth < 0:
            raise BookError(f"max_depth {max_depth}: must be >= 0 (0 means unlimited)")
        self.instrument = instrument
        self.cross_policy = cross_policy
        self.max_depth = max_depth
        self.last_update_id = -1
        self.event_ts_ns = -1

    def __dealloc__(self):
        # Exports hold a reference to the book, so none can be alive here.
        PyMem_Free(self.sides[0].buf)
        PyMem_Free(self.sides[1].buf)
        PyMem_Free(self.journal)

    # ------------------------------------------------------------------
    # Capacity (the only places that allocate).
    # ------------------------------------------------------------------

    cdef int _reserve(self, int side, Py_ssize_t extra) except -1:
        """Make room for `extra` more levels on a side, before any change is made."""
        return self._reserve_total(side, book_count(&self.sides[side]) + extra)

    cdef int _reserve_total(self, int side, Py_ssize_t need) except -1:
        """Make the side's capacity at least `need` levels, keeping its levels."""
        cdef BookSide* s = &self.sides[side]
        cdef Py_ssize_t count = s.hi - s.lo, cap, lo
        cdef Level* buf
        if need <= s.capacity:
            return 0
        if self.exports > 0:
            raise BufferError(
                f"{self.instrument.symbol}: the book must grow but {self.exports} zero-copy "
                "view(s) are alive; release them (del the array) or use copies")
        cap = s.capacity
        while cap < need:
            cap *= 2
        # Recentre: the same free room below and above the levels.
        buf = <Level*>PyMem_Malloc(<size_t>cap * sizeof(Level))
        if buf == NULL:
            raise MemoryError()
        lo = (cap - count) // 2
        memcpy(&buf[lo], &s.buf[s.lo], <size_t>count * sizeof(Level))
        PyMem_Free(s.buf)
        s.buf = buf
        s.capacity = cap
        s.lo = lo
        s.hi = lo + count
        return 0

    cdef int _reserve_journal(self, Py_ssize_t n) except -1:
        cdef JournalEntry* j
        if n <= self.journal_capacity:
            return 0
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
        return b.hi > b.lo and a.hi > a.lo and b.buf[b.hi - 1].price_ticks >= a.buf[a.hi - 1].price_ticks

    cdef Py_ssize_t _prune_crossed(self, int fresh_side) noexcept nogil:
        """Remove the levels of the side opposite `fresh_side` that its best crosses or
        locks: they are stale (the venue would have matched them). Returns how many."""
        cdef const BookSide* fresh = &self.sides[fresh_side]
        cdef BookSide* stale = &self.sides[1 - fresh_side]
        cdef int64_t fresh_best = fresh.buf[fresh.hi - 1].price_ticks
        cdef Py_ssize_t removed = 0
        while stale.hi > stale.lo and not book_worse(stale.is_bid, stale.buf[stale.hi - 1].price_ticks, fresh_best):
            stale.hi -= 1
            removed += 1
        self.pruned_levels += removed
        return removed

    cdef void _trim_depth(self) noexcept nogil:
        cdef int k
        if self.max_depth > 0:
            for k in range(2):
                if self.sides[k].hi - self.sides[k].lo > self.max_depth:
                    self.sides[k].lo = self.sides[k].hi - self.max_depth

    # ------------------------------------------------------------------
    # C API (book.pxd).
    # ------------------------------------------------------------------

    cdef int set_level(self, int side, int64_t price_ticks, int64_t qty_lots) except -1:
        """Set one level (qty 0 deletes). Whole or nothing."""
        cdef BookSide* opp
        cdef bint crosses
        if side != SIDE_BID and side != SIDE_ASK:
            raise BookError(f"side {side!r}: expected Side.BID (0) or Side.ASK (1)")
        if qty_lots < 0:
            raise BookError(f"{self.instrument.symbol}: negative size {qty_lots} lots at {price_ticks} ticks")
        if qty_lots > 0:
            opp = &self.sides[1 - side]
            crosses = opp.hi > opp.lo and not book_worse(
                not opp.is_bid, price_ticks, opp.buf[opp.hi - 1].price_ticks)
            if crosses and self.cross_policy == CROSS_RAISE:
                raise BookCrossedError(
                    f"{self.instrument.symbol}: {'bid' if side == SIDE_BID else 'ask'} at "
                    f"{price_ticks} ticks would cross the opposite best {opp.buf[opp.hi - 1].price_ticks}")
            if self.sides[side].hi - self.sides[side].lo >= self.sides[side].capacity:
                self._reserve(side, 1)
            book_write(&self.sides[side], price_ticks, qty_lots)
            if crosses and self.cross_policy == CROSS_PRUNE:
                self._prune_crossed(side)
        else:
            book_write(&self.sides[side], price_ticks, 0)
        self._trim_depth()
        self.version += 1
        if ENGINE_DEBUG:
            self._check_invariants()
        return 0

    cdef int apply_updates(self, const LevelUpdate* updates, Py_ssize_t n) except -1:
        """Apply a decoded frame's changes, whole or nothing."""
        cdef Py_ssize_t i, n_bid = 0
        for i in range(n):
            if updates[i].side != SIDE_BID and updates[i].side != SIDE_ASK:
                raise BookError(f"update {i}: side {updates[i].side}: expected 0 (bid) or 1 (ask)")
            if updates[i].qty_lots < 0:
                raise BookError(f"update {i}: negative size {updates[i].qty_lots} lots at {updates[i].price_ticks} ticks")
            n_bid += updates[i].side == SIDE_BID
        self._begin_batch(n_bid, n - n_bid, n)
        for i in range(n):
            self._journaled_write(i, updates[i].side, updates[i].price_ticks, updates[i].qty_lots)
        return self._finish_batch(n)

    cdef int replace_with(self, const LevelUpdate* levels, Py_ssize_t n) except -1:
        """Replace both sides with a snapshot (any order; zero sizes skipped). Whole or nothing."""
        cdef Py_ssize_t i
        cdef Py_ssize_t counts[2]
        cdef Level* bids
        cdef Level* asks
        cdef int k
        for i in range(n):
            if levels[i].side != SIDE_BID and levels[i].side != SIDE_ASK:
                raise BookError(f"snapshot level {i}: side {levels[i].side}: expected 0 (bid) or 1 (ask)")
            if levels[i].qty_lots < 0:
                raise BookError(f"snapshot level {i}: negative size {levels[i].qty_lots} lots")
        # Sort into scratch first; the journal's memory serves (a JournalEntry is larger
        # than a Level, and a snapshot is never applied in the middle of a batch).
        self._reserve_journal(n + 1)
        bids = <Level*>self.journal
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
        for k in range(2):
            self._reserve_total(k, counts[k])
        self._load_side(SIDE_BID, bids, counts[SIDE_BID])
        self._load_side(SIDE_ASK, asks, counts[SIDE_ASK])
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

    cdef void _load_side(self, int side, const Level* src, Py_ssize_t n) noexcept nogil:
        cdef BookSide* s = &self.sides[side]
        s.lo = (s.capacity - n) // 2
        s.hi = s.lo + n
        memcpy(&s.buf[s.lo], src, <size_t>n * sizeof(Level))

    cdef bint best_level(self, int side, Level* out) noexcept nogil:
        cdef const BookSide* s = &self.sides[side]
        if s.hi == s.lo:
            return False
        out[0] = s.buf[s.hi - 1]
        return True

    cdef Py_ssize_t level_count_c(self, int side) noexcept nogil:
        return self.sides[side].hi - self.sides[side].lo

    # ------------------------------------------------------------------
    # Batch machinery.
    # ------------------------------------------------------------------

    cdef int _begin_batch(self, Py_ssize_t n_bid, Py_ssize_t n_ask, Py_ssize_t n) except -1:
        # Reserve everything first: the batch itself must not fail half-way.
        if self.sides[SIDE_BID].capacity - book_count(&self.sides[SIDE_BID]) < n_bid:
            self._reserve(SIDE_BID, n_bid)
        if self.sides[SIDE_ASK].capacity - book_count(&self.sides[SIDE_ASK]) < n_ask:
            self._reserve(SIDE_ASK, n_ask)
        if n > self.journal_capacity:
            self._reserve_journal(n)
        return 0

    cdef void _journaled_write(self, Py_ssize_t i, int side, int64_t price_ticks, int64_t qty_lots) noexcept nogil:
        self.journal[i].side = side
        self.journal[i].price_ticks = price_ticks
        self.journal[i].old_qty_lots = book_write(&self.sides[side], price_ticks, qty_lots)

    cdef void _rollback(self, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i = n - 1
        while i >= 0:
            book_write(&self.sides[self.journal[i].side], self.journal[i].price_ticks, self.journal[i].old_qty_lots)
            i -= 1

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
        cdef const BookSide* fresh = &self.sides[fresh_side]
        cdef const BookSide* stale = &self.sides[1 - fresh_side]
        cdef int64_t fresh_best = fresh.buf[fresh.hi - 1].price_ticks, price
        cdef Py_ssize_t i, k
        for i in range(n):
            if self.journal[i].side != 1 - fresh_side:
                continue
            price = self.journal[i].price_ticks
            if book_worse(stale.is_bid, price, fresh_best):
                continue
            k = book_find(stale, price)
            if k < stale.hi and stale.buf[k].price_ticks == price:
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

        O(log d + min(d, n - d)) for d levels better than the price. Raises
        ``BookError`` (bad side, negative size) or ``BookCrossedError`` (policy RAISE);
        on error the book is unchanged."""
        self.set_level(side, price_ticks, qty_lots)

    def apply(self, sides, prices, qtys, *, int64_t update_id=-1, int64_t ts_ns=-1):
        """Apply many level changes in one call, whole or nothing.

        ``sides`` (0 bid / 1 ask), ``prices`` (ticks) and ``qtys`` (lots; 0 deletes) are
        equal-length 1-d integer numpy arrays. C-contiguous int8 sides and int64
        prices/sizes are read in place; other integer dtypes that convert without loss
        are converted first. Later entries win over earlier ones at the same price.
        ``update_id``/``ts_ns`` (when >= 0) are recorded as the last applied update.
        O(k log d) for k entries. Raises ``BookError`` naming the first bad entry, or
        ``BookCrossedError``; on error the book is unchanged."""
        cdef object sd_arr = _as_array(sides, cnp.NPY_INT8, "sides")
        cdef object p_arr = _as_array(prices, cnp.NPY_INT64, "prices")
        cdef object q_arr = _as_array(qtys, cnp.NPY_INT64, "qtys")
        cdef Py_ssize_t n = cnp.PyArray_DIM(p_arr, 0), i, n_bid = 0
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
            n_bid += sd[i] == SIDE_BID
        self._begin_batch(n_bid, n - n_bid, n)
        for i in range(n):
            self._journaled_write(i, sd[i], p[i], q[i])
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
        """Remove every level (keeps the memory). O(1)."""
        cdef int k
        for k in range(2):
            self.sides[k].lo = self.sides[k].capacity // 2
            self.sides[k].hi = self.sides[k].lo
        self.version += 1

    # ------------------------------------------------------------------
    # Python API: reads.
    # ------------------------------------------------------------------

    def best_bid(self):
        """Best bid as ``(price_ticks, qty_lots)``, or None when there are no bids. O(1)."""
        cdef const BookSide* s = &self.sides[SIDE_BID]
        if s.hi == s.lo:
            return None
        return (s.buf[s.hi - 1].price_ticks, s.buf[s.hi - 1].qty_lots)

    def best_ask(self):
        """Best ask as ``(price_ticks, qty_lots)``, or None when there are no asks. O(1)."""
        cdef const BookSide* s = &self.sides[SIDE_ASK]
        if s.hi == s.lo:
            return None
        return (s.buf[s.hi - 1].price_ticks, s.buf[s.hi - 1].qty_lots)

    def bbo(self):
        """``(bid_price, bid_qty, ask_price, ask_qty)`` in one call; an empty side's two
        entries are None. O(1); the same tuple is returned while the top is unchanged."""
        cdef const BookSide* b = &self.sides[SIDE_BID]
        cdef const BookSide* a = &self.sides[SIDE_ASK]
        cdef Level bl, al
        bl.price_ticks = bl.qty_lots = al.price_ticks = al.qty_lots = 0
        if b.hi > b.lo:
            bl = b.buf[b.hi - 1]
        if a.hi > a.lo:
            al = a.buf[a.hi - 1]
        # Sizes are > 0 for a present level, so (0, 0) marks an empty side in the key.
        if (self.bbo_cache is not None and bl.price_ticks == self.bbo_key[0].price_ticks
                and bl.qty_lots == self.bbo_key[0].qty_lots and al.price_ticks == self.bbo_key[1].price_ticks
                and al.qty_lots == self.bbo_key[1].qty_lots):
            return self.bbo_cache
        self.bbo_key[0] = bl
        self.bbo_key[1] = al
        self.bbo_cache = (
            b.buf[b.hi - 1].price_ticks if b.hi > b.lo else None,
            b.buf[b.hi - 1].qty_lots if b.hi > b.lo else None,
            a.buf[a.hi - 1].price_ticks if a.hi > a.lo else None,
            a.buf[a.hi - 1].qty_lots if a.hi > a.lo else None,
        )
        return self.bbo_cache

    def level_count(self, int side):
        """Number of levels on a side. O(1)."""
        _check_side(side)
        return self.sides[side].hi - self.sides[side].lo

    @property
    def bid_count(self):
        """Number of bid levels. O(1)."""
        return self.sides[SIDE_BID].hi - self.sides[SIDE_BID].lo

    @property
    def ask_count(self):
        """Number of ask levels. O(1)."""
        return self.sides[SIDE_ASK].hi - self.sides[SIDE_ASK].lo

    def __len__(self):
        """Levels on both sides together."""
        return book_count(&self.sides[0]) + book_count(&self.sides[1])

    def qty_at(self, int side, int64_t price_ticks):
        """Size in lots at a price on a side (0 when no level). O(log d)."""
        _check_side(side)
        cdef const BookSide* s = &self.sides[side]
        cdef Py_ssize_t i = book_find(s, price_ticks)
        if i < s.hi and s.buf[i].price_ticks == price_ticks:
            return s.buf[i].qty_lots
        return 0

    def level(self, int side, Py_ssize_t index):
        """The index-th best level ``(price_ticks, qty_lots)`` (0 is the best). O(1).
        Raises IndexError past the last level."""
        _check_side(side)
        cdef const BookSide* s = &self.sides[side]
        if index < 0 or index >= s.hi - s.lo:
            raise IndexError(f"level {index} of {s.hi - s.lo} on the {'bid' if side == SIDE_BID else 'ask'} side")
        return (s.buf[s.hi - 1 - index].price_ticks, s.buf[s.hi - 1 - index].qty_lots)

    def bids(self, n=None, *, bint copy=True):
        """Top ``n`` bids (all when None), best first, as a numpy array of LEVEL_DTYPE
        (fields ``price`` in ticks and ``qty`` in lots). O(n).

        ``copy=False`` returns a read-only zero-copy view into the book's memory. It is
        valid until the next change of the book (after which it shows whatever the
        memory then holds, never freed memory): while any view is alive the book
        refuses to reallocate (``BufferError`` on an update that needs to grow)."""
        return self._export(SIDE_BID, n, copy)

    def asks(self, n=None, *, bint copy=True):
        """Top ``n`` asks, best first; see ``bids``."""
        return self._export(SIDE_ASK, n, copy)

    cdef object _export(self, int side, object n, bint copy):
        cdef const BookSide* s = &self.sides[side]
        cdef cnp.npy_intp k = s.hi - s.lo
        cdef cnp.npy_intp stride = -<cnp.npy_intp>sizeof(Level)
        cdef Py_ssize_t i
        cdef Level* dst
        cdef _LevelsExport owner
        if n is not None:
            if n < 0:
                raise ValueError(f"n = {n}: must be >= 0")
            if n < k:
                k = n
        if copy:
            Py_INCREF(_LEVEL_DTYPE)
            arr = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, _LEVEL_DTYPE, 1, &k, NULL, NULL, 0, NULL)
            dst = <Level*>cnp.PyArray_DATA(arr)
            for i in range(k):
                dst[i] = s.buf[s.hi - 1 - i]
            return arr
        # Zero copy: a negative stride walks from the best level down.
        Py_INCREF(_LEVEL_DTYPE)
        arr = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, _LEVEL_DTYPE, 1, &k, &stride,
                                   <void*>&s.buf[s.hi - 1] if k > 0 else <void*>s.buf, 0, NULL)
        owner = _LevelsExport.__new__(_LevelsExport)
        owner.book = self
        self.exports += 1
        cnp.set_array_base(arr, owner)
        return arr

    @property
    def live_views(self):
        """Number of zero-copy views alive (the book will not reallocate while > 0)."""
        return self.exports

    # ------------------------------------------------------------------
    # Analytics. Prices in ticks, sizes in lots; floats only for ratios.
    # ------------------------------------------------------------------

    def spread(self):
        """Best ask minus best bid in ticks, or None when a side is empty. O(1)."""
        cdef Level b, a
        if not self.best_level(SIDE_BID, &b) or not self.best_level(SIDE_ASK, &a):
            return None
        return a.price_ticks - b.price_ticks

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
        cdef engine_i128 qb = 0, qa = 0
        cdef const BookSide* b = &self.sides[SIDE_BID]
        cdef const BookSide* a = &self.sides[SIDE_ASK]
        cdef Py_ssize_t i
        for i in range(min(n, b.hi - b.lo)):
            qb += b.buf[b.hi - 1 - i].qty_lots
        for i in range(min(n, a.hi - a.lo)):
            qa += a.buf[a.hi - 1 - i].qty_lots
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
        cdef Py_ssize_t i = s.hi - 1
        cdef int64_t worst = 0
        while left > 0 and i >= s.lo:
            take = s.buf[i].qty_lots if s.buf[i].qty_lots < left else left
            notional += <engine_i128>take * s.buf[i].price_ticks
            worst = s.buf[i].price_ticks
            left -= take
            i -= 1
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
        """Bytes of level and journal memory held (excluding the Python object)."""
        return (self.sides[0].capacity + self.sides[1].capacity) * sizeof(Level) + \
            self.journal_capacity * sizeof(JournalEntry)

    def _check_invariants(self):
        """Raise AssertionError unless: both sides strictly sorted worst first, no
        level with size <= 0, bounds consistent, not crossed (unless ALLOW)."""
        cdef int k
        cdef Py_ssize_t i
        cdef const BookSide* s
        for k in range(2):
            s = &self.sides[k]
            if not (0 <= s.lo <= s.hi <= s.capacity):
                raise AssertionError(f"side {k}: bounds lo={s.lo} hi={s.hi} capacity={s.capacity}")
            if s.is_bid != (k == SIDE_BID):
                raise AssertionError(f"side {k}: is_bid flag wrong")
            for i in range(s.lo, s.hi):
                if s.buf[i].qty_lots <= 0:
                    raise AssertionError(f"side {k}: level {s.buf[i].price_ticks} has size {s.buf[i].qty_lots}")
                if i > s.lo and not book_worse(s.is_bid, s.buf[i - 1].price_ticks, s.buf[i].price_ticks):
                    raise AssertionError(f"side {k}: unsorted at {s.buf[i - 1].price_ticks}, {s.buf[i].price_ticks}")
            if self.max_depth and s.hi - s.lo > self.max_depth:
                raise AssertionError(f"side {k}: {s.hi - s.lo} levels beyond max_depth {self.max_depth}")
        if self.cross_policy != CROSS_ALLOW and self._crossed():
            raise AssertionError("book is crossed")
        return True

    def __repr__(self):
        return (f"OrderBook({self.instrument.symbol!r}, bids={self.bid_count}, asks={self.ask_count}, "
                f"best_bid={self.best_bid()!r}, best_ask={self.best_ask()!r})")


cdef inline int _check_side(int side) except -1:
    if side != SIDE_BID and side != SIDE_ASK:
        raise BookError(f"side {side!r}: expected Side.BID (0) or Side.ASK (1)")
    return 0


cdef object _as_array(object values, int typenum, str name):
    """A 1-d C-contiguous array of `typenum` (int8 for sides, int64 otherwise).

    Fast path: such an ndarray is returned as is (no numpy calls). Otherwise any
    integer array converts if it can do so without loss (sides are range-checked
    first, as they are narrowed to int8)."""
    if (type(values) is cnp.ndarray and cnp.PyArray_NDIM(values) == 1
            and cnp.PyArray_TYPE(values) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(values)):
        return values
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BookError(f"{name}: expected a 1-d array, got {arr.ndim} dimensions")
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
