# The order book's side container: sorted blocks of Level structs, and the pool the
# blocks come from. Everything here is nogil and inline: it is compiled into the
# book's own module (engine/_core/book.pyx, its only user), so the split costs no call.
# See book.pyx's module docstring for the layout, complexity and memory-safety rules.
from libc.stdint cimport int64_t, uint64_t, intptr_t
from libc.string cimport memmove, memcpy
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawRealloc, PyMem_RawFree
from engine._core.types cimport Level

cdef extern from *:
    """
    typedef __int128 engine_i128;
    """
    ctypedef long long engine_i128

# Level memory comes in blocks: a block is an array of `capacity` Level structs holding
# `count` levels in levels[0:count], sorted worst first. Blocks are owned by their
# OrderBook (see BlockPool for where they come from and when they are freed: never
# while a zero-copy view is alive). A standard block holds BLOCK_LEVELS (128) levels;
# a larger one exists only when a zero-copy export needed more contiguous levels.
ctypedef struct Block:
    Level* levels
    Py_ssize_t count
    Py_ssize_t capacity

# One side of the book: a sorted sequence of non-empty blocks, worst first, so the best
# level is the last level of the last block. `blocks` and `tops` (tops[j] is the best
# price in blocks[j], kept for a cache-friendly search) are PyMem_RawMalloc'd arrays of
# `slots` entries owned by the OrderBook; they hold no level data, so they may be
# reallocated at any time.
ctypedef struct BookSide:
    Block* blocks
    int64_t* tops
    Py_ssize_t nblocks
    Py_ssize_t slots
    Py_ssize_t count      # levels on this side
    bint is_bid

# The OrderBook's block memory. Standard blocks are carved from slabs (one
# PyMem_RawMalloc each, linked through a header Level, freed with the book); a free
# standard block waits on the spare list, linked through its first Level. A larger
# block is its own allocation, freed when released, or `parked` (linked the same way)
# while a view is alive and freed when the last view goes.
ctypedef struct BlockPool:
    Level* slabs
    Level* spare
    Py_ssize_t spare_count
    Level* parked
    Py_ssize_t slab_levels    # capacity of all slabs, in levels
    Py_ssize_t large_levels   # capacity of the larger blocks (held or parked)
    Py_ssize_t exports        # live zero-copy views: no free, and no new block, while > 0
    bint rolling_back         # an undo may take new blocks even while views are alive

cdef enum:
    BLOCK_LEVELS = 128                    # capacity of a standard block
    BLOCK_FILL = BLOCK_LEVELS * 3 // 4    # fill of loaded blocks; largest merge result
    BLOCK_LOW = BLOCK_LEVELS // 4         # a smaller block merges or borrows
    BLOCK_SPILL = BLOCK_LEVELS // 8       # room a neighbour needs to take levels from a full block
    INITIAL_SPARE = 2
    INITIAL_SLOTS = 4
    LEVEL_STRIDE = 2                      # int64 fields in a Level: its prices' stride

# Status of the nogil side operations; OrderBook._raise_status turns it into an error.
cdef enum:
    BK_OK = 0
    BK_NO_MEMORY = 1      # malloc failed (MemoryError)
    BK_VIEWS_ALIVE = 2    # would need new level memory while a view is alive (BufferError)


# ---------------------------------------------------------------------------
# Block pool: nogil. The OrderBook owns every block; these move them between a side,
# the spare list and the allocator, never freeing what a live view may point into.
# ---------------------------------------------------------------------------

cdef inline int pool_reserve(BlockPool* pool, Py_ssize_t n) noexcept nogil:
    """Make at least `n` spare standard blocks available. New memory comes as one slab of
    the shortfall or half the slabs held, whichever is more (so a growing book allocates
    O(log n) times); it is refused while a view is alive, except to undo."""
    cdef Py_ssize_t k = n - pool.spare_count, t
    cdef Level* slab
    cdef Level* blk
    if k <= 0:
        return BK_OK
    if pool.exports > 0 and not pool.rolling_back:
        return BK_VIEWS_ALIVE
    if k < pool.slab_levels // (2 * BLOCK_LEVELS):
        k = pool.slab_levels // (2 * BLOCK_LEVELS)
    slab = <Level*>PyMem_RawMalloc(<size_t>(1 + k * BLOCK_LEVELS) * sizeof(Level))
    if slab == NULL:
        return BK_NO_MEMORY
    slab[0].price_ticks = <int64_t><intptr_t>pool.slabs
    pool.slabs = slab
    pool.slab_levels += k * BLOCK_LEVELS
    for t in range(k):
        blk = &slab[1 + t * BLOCK_LEVELS]
        blk[0].price_ticks = <int64_t><intptr_t>pool.spare
        pool.spare = blk
    pool.spare_count += k
    return BK_OK


cdef inline Level* pool_take(BlockPool* pool) noexcept nogil:
    """A spare standard block; the caller reserved it."""
    cdef Level* blk = pool.spare
    pool.spare = <Level*><intptr_t>blk[0].price_ticks
    pool.spare_count -= 1
    return blk


cdef inline void pool_release(BlockPool* pool, Level* blk, Py_ssize_t capacity) noexcept nogil:
    """Give back a block no side holds any more. A view may still point into it, so while
    one is alive nothing is freed: a larger block is parked (linked through its first
    level, capacity in its size) until the last view goes. A standard block becomes a
    spare (its slab lives as long as the book)."""
    if capacity == BLOCK_LEVELS:
        blk[0].price_ticks = <int64_t><intptr_t>pool.spare
        pool.spare = blk
        pool.spare_count += 1
    elif pool.exports > 0:
        blk[0].price_ticks = <int64_t><intptr_t>pool.parked
        blk[0].qty_lots = capacity
        pool.parked = blk
    else:
        PyMem_RawFree(blk)
        pool.large_levels -= capacity


cdef inline void pool_free_parked(BlockPool* pool) noexcept nogil:
    """Free the parked blocks; only when no view is alive."""
    cdef Level* blk
    while pool.parked != NULL:
        blk = pool.parked
        pool.parked = <Level*><intptr_t>blk[0].price_ticks
        pool.large_levels -= blk[0].qty_lots
        PyMem_RawFree(blk)


# ---------------------------------------------------------------------------
# Side primitives: nogil. A status other than BK_OK means nothing was changed.
# ---------------------------------------------------------------------------

cdef inline int64_t side_mask(bint is_bid) noexcept nogil:
    """0 for bids, all ones for asks: `price ^ mask` orders every side like bids
    (~p = -p - 1 reverses the order with no overflow), so comparisons need no branch
    on the side (sides alternate at random in real streams: a branch would mispredict)."""
    return <int64_t>is_bid - 1


cdef inline bint book_worse(bint is_bid, int64_t a, int64_t b) noexcept nogil:
    """True when price a is worse than price b on this side."""
    cdef int64_t m = side_mask(is_bid)
    return (a ^ m) < (b ^ m)


cdef inline uint64_t book_gap(bint is_bid, int64_t better, int64_t price_ticks) noexcept nogil:
    """Ticks from a price up to a price not worse than it, on this side (unsigned:
    exact across the whole int64 range)."""
    cdef int64_t m = side_mask(is_bid)
    return <uint64_t>(better ^ m) - <uint64_t>(price_ticks ^ m)


cdef inline const Level* side_best(const BookSide* s) noexcept nogil:
    """The best level, or NULL when the side is empty. O(1)."""
    cdef const Block* top
    if s.nblocks == 0:
        return NULL
    top = &s.blocks[s.nblocks - 1]
    return &top.levels[top.count - 1]


cdef inline Py_ssize_t prices_lower_bound(const int64_t* prices, Py_ssize_t stride, Py_ssize_t n,
                                          int64_t price_ticks, bint is_bid) noexcept nogil:
    """How many of prices[0], prices[stride], ... (n of them, worst first) are worse
    than the price: branchless binary search. Stride 1 for block tops, LEVEL_STRIDE for
    the prices of a Level array."""
    cdef Py_ssize_t base = 0, half
    if n == 0:
        return 0
    while n > 1:
        half = n >> 1
        base = base + half if book_worse(is_bid, prices[(base + half) * stride], price_ticks) else base
        n -= half
    return base + book_worse(is_bid, prices[base * stride], price_ticks)


cdef inline Py_ssize_t block_find(const Level* a, Py_ssize_t c, int64_t top, int64_t price_ticks,
                                  bint is_bid) noexcept nogil:
    """Index of the first of a block's levels a[0:c] not worse than the price; its top
    (a[c - 1], price `top`) is not worse, so the answer is at most c - 1.

    Prices are distinct integers, so the answer is within a tick bound from each end:
    a price g ticks from the top is at most g levels below it (in a dense book an exact
    hit), and a level d ticks worse than the price is at most d levels below the answer.
    The window between the two is the number of empty ticks in between, few in a liquid
    book, so it is walked up; a wide one is binary-searched. Unsigned differences:
    exact across the whole int64 range."""
    cdef Py_ssize_t lower = 0, upper
    cdef uint64_t gap = book_gap(is_bid, top, price_ticks)
    cdef int64_t p
    if gap < <uint64_t>(c - 1):
        lower = c - 1 - <Py_ssize_t>gap
    p = a[lower].price_ticks
    if not book_worse(is_bid, p, price_ticks):
        return lower              # the price itself, or the first level better than it
    gap = book_gap(is_bid, price_ticks, p)
    upper = c - 1 if gap >= <uint64_t>(c - 1 - lower) else lower + <Py_ssize_t>gap
    lower += 1
    if upper - lower <= 64:
        # a[upper] is not worse than the price: the walk stops by it at the latest.
        while book_worse(is_bid, a[lower].price_ticks, price_ticks):
            lower += 1
        return lower
    return lower + prices_lower_bound(&a[lower].price_ticks, LEVEL_STRIDE, upper - lower, price_ticks, is_bid)


cdef inline void side_find_deep(const BookSide* s, int64_t price_ticks, Py_ssize_t* block,
                         Py_ssize_t* index) noexcept nogil:
    """side_find for a price below the top block: gallop down the block tops from the
    touch, then binary-search them, then search the block (block_find)."""
    cdef bint is_bid = s.is_bid
    cdef Py_ssize_t lo = 0, hi = s.nblocks - 2, step = 1, j
    while hi - step >= 0:           # tops[hi] is not worse than the price
        if book_worse(is_bid, s.tops[hi - step], price_ticks):
            lo = hi - step + 1
            break
        hi -= step
        step <<= 1
    j = lo + prices_lower_bound(s.tops + lo, 1, hi - lo, price_ticks, is_bid)
    block[0] = j
    index[0] = block_find(s.blocks[j].levels, s.blocks[j].count, s.tops[j], price_ticks, is_bid)


cdef inline void side_find(const BookSide* s, int64_t price_ticks, Py_ssize_t* block,
                           Py_ssize_t* index) noexcept nogil:
    """Where a price is or would go: blocks[block].levels[0:index] are worse than it and
    every later level of the side is not. A new price between two blocks goes to the
    front of the better one; one better than the best goes after it. Side not empty."""
    cdef bint is_bid = s.is_bid
    cdef Py_ssize_t j = s.nblocks - 1, c = s.blocks[j].count
    cdef int64_t best = s.tops[j]   # = the top block's last price, one load fewer on the way
    if not book_worse(is_bid, price_ticks, best):
        block[0] = j
        index[0] = c - 1 if price_ticks == best else c
        return
    if j > 0 and not book_worse(is_bid, s.tops[j - 1], price_ticks):
        side_find_deep(s, price_ticks, block, index)
        return
    # In the top block, whose last level is the side's best.
    block[0] = j
    index[0] = block_find(s.blocks[j].levels, c, best, price_ticks, is_bid)


cdef inline int side_ensure_slots(BookSide* s, Py_ssize_t need) noexcept nogil:
    """Room for `need` block entries in the index arrays (they hold no level data, so
    they may move at any time)."""
    cdef Py_ssize_t slots = s.slots * 2
    cdef Block* blocks
    cdef int64_t* tops
    if need <= s.slots:
        return BK_OK
    if slots < need:
        slots = need
    blocks = <Block*>PyMem_RawRealloc(s.blocks, <size_t>slots * sizeof(Block))
    if blocks == NULL:
        return BK_NO_MEMORY
    s.blocks = blocks
    tops = <int64_t*>PyMem_RawRealloc(s.tops, <size_t>slots * sizeof(int64_t))
    if tops == NULL:
        return BK_NO_MEMORY
    s.tops = tops
    s.slots = slots
    return BK_OK


cdef inline void side_open_slots(BookSide* s, Py_ssize_t j, Py_ssize_t k) noexcept nogil:
    """Make index entries j..j+k-1 free by moving the later ones up (room reserved)."""
    memmove(&s.blocks[j + k], &s.blocks[j], <size_t>(s.nblocks - j) * sizeof(Block))
    memmove(&s.tops[j + k], &s.tops[j], <size_t>(s.nblocks - j) * sizeof(int64_t))
    s.nblocks += k


cdef inline void side_close_slot(BookSide* s, Py_ssize_t j) noexcept nogil:
    memmove(&s.blocks[j], &s.blocks[j + 1], <size_t>(s.nblocks - j - 1) * sizeof(Block))
    memmove(&s.tops[j], &s.tops[j + 1], <size_t>(s.nblocks - j - 1) * sizeof(int64_t))
    s.nblocks -= 1


cdef inline Py_ssize_t blocks_for(Py_ssize_t n) noexcept nogil:
    """Standard blocks that hold n levels at the load fill."""
    return (n + BLOCK_FILL - 1) // BLOCK_FILL


cdef inline void side_fill(BookSide* s, BlockPool* pool, Py_ssize_t j, const Level* src, Py_ssize_t n) noexcept nogil:
    """Spread n sorted levels evenly over blocks_for(n) spare blocks placed at index
    entries j onwards (entries free, spares reserved)."""
    cdef Py_ssize_t pieces = blocks_for(n), k, size, start = 0
    cdef Level* blk
    for k in range(pieces):
        size = (n - start) // (pieces - k)
        blk = pool_take(pool)
        memcpy(blk, &src[start], <size_t>size * sizeof(Level))
        s.blocks[j + k].levels = blk
        s.blocks[j + k].count = size
        s.blocks[j + k].capacity = BLOCK_LEVELS
        s.tops[j + k] = blk[size - 1].price_ticks
        start += size


cdef inline int side_rechunk(BookSide* s, BlockPool* pool, Py_ssize_t j) noexcept nogil:
    """Turn a larger block (made for a zero-copy export) back into standard blocks."""
    cdef Block big = s.blocks[j]
    cdef Py_ssize_t pieces = blocks_for(big.count)
    cdef int status = side_ensure_slots(s, s.nblocks + pieces - 1)
    if status == BK_OK:
        status = pool_reserve(pool, pieces)
    if status != BK_OK:
        return status
    side_open_slots(s, j + 1, pieces - 1)
    side_fill(s, pool, j, big.levels, big.count)
    pool_release(pool, big.levels, big.capacity)
    return BK_OK


cdef inline int side_split(BookSide* s, BlockPool* pool, Py_ssize_t j) noexcept nogil:
    """Split a full standard block in two halves."""
    cdef int status = side_ensure_slots(s, s.nblocks + 1)
    cdef Block* b
    cdef Level* blk
    cdef Py_ssize_t h
    if status == BK_OK:
        status = pool_reserve(pool, 1)
    if status != BK_OK:
        return status
    side_open_slots(s, j + 1, 1)
    b = &s.blocks[j]
    h = b.count >> 1
    blk = pool_take(pool)
    memcpy(blk, &b.levels[h], <size_t>(b.count - h) * sizeof(Level))
    s.blocks[j + 1].levels = blk
    s.blocks[j + 1].count = b.count - h
    s.blocks[j + 1].capacity = BLOCK_LEVELS
    s.tops[j + 1] = s.tops[j]
    b.count = h
    s.tops[j] = b.levels[h - 1].price_ticks
    return BK_OK


cdef inline void side_rebalance(BookSide* s, BlockPool* pool, Py_ssize_t j) noexcept nogil:
    """Block j has fallen below BLOCK_LOW levels: merge it with a neighbour when the two
    fit in BLOCK_FILL, else even out their counts (no allocation either way)."""
    cdef Py_ssize_t lo = j - 1 if j > 0 else j, m
    cdef Block* a = &s.blocks[lo]
    cdef Block* b = &s.blocks[lo + 1]
    if a.count + b.count <= BLOCK_FILL:
        memcpy(&a.levels[a.count], b.levels, <size_t>b.count * sizeof(Level))
        a.count += b.count
        s.tops[lo] = s.tops[lo + 1]
        pool_release(pool, b.levels, b.capacity)
        side_close_slot(s, lo + 1)
        return
    if a.count > b.count:
        m = (a.count - b.count) >> 1
        if m > b.capacity - b.count:
            m = b.capacity - b.count
        memmove(&b.levels[m], b.levels, <size_t>b.count * sizeof(Level))
        memcpy(b.levels, &a.levels[a.count - m], <size_t>m * sizeof(Level))
        a.count -= m
        b.count += m
    else:
        m = (b.count - a.count) >> 1
        if m > a.capacity - a.count:
            m = a.capacity - a.count
        memcpy(&a.levels[a.count], b.levels, <size_t>m * sizeof(Level))
        memmove(b.levels, &b.levels[m], <size_t>(b.count - m) * sizeof(Level))
        a.count += m
        b.count -= m
    s.tops[lo] = a.levels[a.count - 1].price_ticks


cdef inline bint side_spill(BookSide* s, Py_ssize_t* block, Py_ssize_t* index) noexcept nogil:
    """Block *block is full: move levels into the neighbour with the most room, if it has
    at least BLOCK_SPILL, instead of splitting (keeps blocks well filled when levels
    arrive in price order). Updates (*block, *index) to where the new level goes."""
    cdef Py_ssize_t j = block[0], i = index[0], m, room_lo = 0, room_hi = 0
    cdef Block* b = &s.blocks[j]
    cdef Block* n
    if j > 0:
        room_lo = s.blocks[j - 1].capacity - s.blocks[j - 1].count
    if j + 1 < s.nblocks:
        room_hi = s.blocks[j + 1].capacity - s.blocks[j + 1].count
    # At most half the full block moves (a larger neighbour may have much more room).
    if room_lo > b.count:
        room_lo = b.count
    if room_hi > b.count:
        room_hi = b.count
    if room_lo >= room_hi and room_lo >= BLOCK_SPILL:
        # The worst m levels go to the end of the block below.
        n = &s.blocks[j - 1]
        m = room_lo >> 1
        memcpy(&n.levels[n.count], b.levels, <size_t>m * sizeof(Level))
        memmove(b.levels, &b.levels[m], <size_t>(b.count - m) * sizeof(Level))
        n.count += m
        b.count -= m
        s.tops[j - 1] = n.levels[n.count - 1].price_ticks
        if i <= m:
            block[0] = j - 1
            index[0] = n.count - m + i
        else:
            index[0] = i - m
        return True
    if room_hi >= BLOCK_SPILL:
        # The best m levels go to the front of the block above.
        n = &s.blocks[j + 1]
        m = room_hi >> 1
        memmove(&n.levels[m], n.levels, <size_t>n.count * sizeof(Level))
        memcpy(n.levels, &b.levels[b.count - m], <size_t>m * sizeof(Level))
        n.count += m
        b.count -= m
        s.tops[j] = b.levels[b.count - 1].price_ticks
        if i > b.count:
            block[0] = j + 1
            index[0] = i - b.count
        return True
    return False


cdef inline int side_insert_at(BookSide* s, BlockPool* pool, Py_ssize_t j, Py_ssize_t i,
                        int64_t price_ticks, int64_t qty_lots) noexcept nogil:
    """Insert a new level at blocks[j].levels[i] (as side_find placed it)."""
    cdef Block* b = &s.blocks[j]
    cdef int status
    cdef Py_ssize_t h
    if s.nblocks == 0:
        status = side_ensure_slots(s, 1)
        if status == BK_OK:
            status = pool_reserve(pool, 1)
        if status != BK_OK:
            return status
        s.nblocks = 1
        b = &s.blocks[0]
        b.levels = pool_take(pool)
        b.count = 0
        b.capacity = BLOCK_LEVELS
    elif b.capacity > BLOCK_LEVELS and (b.count == b.capacity or b.count - i > BLOCK_LEVELS):
        # A larger block: back to standard blocks before a split or a long shift (a
        # failure only matters when the block is full).
        status = side_rechunk(s, pool, j)
        if status == BK_OK:
            side_find(s, price_ticks, &j, &i)
        elif s.blocks[j].count == s.blocks[j].capacity:
            return status
        b = &s.blocks[j]
    elif b.count == b.capacity:
        if not side_spill(s, &j, &i):
            status = side_split(s, pool, j)
            if status != BK_OK:
                return status
            h = s.blocks[j].count
            if i > h:
                j += 1
                i -= h
        b = &s.blocks[j]
    memmove(&b.levels[i + 1], &b.levels[i], <size_t>(b.count - i) * sizeof(Level))
    b.levels[i].price_ticks = price_ticks
    b.levels[i].qty_lots = qty_lots
    b.count += 1
    s.count += 1
    if i == b.count - 1:
        s.tops[j] = price_ticks
    return BK_OK


cdef inline void side_remove_at(BookSide* s, BlockPool* pool, Py_ssize_t j, Py_ssize_t i) noexcept nogil:
    """Remove blocks[j].levels[i]; never fails (a re-chunk that cannot get memory is
    skipped)."""
    cdef Block* b = &s.blocks[j]
    cdef int64_t price_ticks
    if b.capacity > BLOCK_LEVELS and b.count - 1 - i > BLOCK_LEVELS:
        price_ticks = b.levels[i].price_ticks
        if side_rechunk(s, pool, j) == BK_OK:
            side_find(s, price_ticks, &j, &i)
            b = &s.blocks[j]
    memmove(&b.levels[i], &b.levels[i + 1], <size_t>(b.count - 1 - i) * sizeof(Level))
    b.count -= 1
    s.count -= 1
    if b.count == 0:
        pool_release(pool, b.levels, b.capacity)
        side_close_slot(s, j)
        return
    if i == b.count:
        s.tops[j] = b.levels[i - 1].price_ticks
    if b.count < BLOCK_LOW and s.nblocks > 1:
        side_rebalance(s, pool, j)


cdef inline int side_write(BookSide* s, BlockPool* pool, int64_t price_ticks, int64_t qty_lots,
                           int64_t* old_qty_lots) noexcept nogil:
    """Set the size at a price (0 deletes); the previous size (0 if absent) goes to
    *old_qty_lots. Only an insert can fail, and then nothing changed."""
    cdef Py_ssize_t j = 0, i = 0
    cdef Level* lv
    old_qty_lots[0] = 0
    if s.nblocks > 0:
        side_find(s, price_ticks, &j, &i)
        if i < s.blocks[j].count:
            lv = &s.blocks[j].levels[i]
            if lv.price_ticks == price_ticks:
                old_qty_lots[0] = lv.qty_lots
                if qty_lots == 0:
                    side_remove_at(s, pool, j, i)
                else:
                    lv.qty_lots = qty_lots
                return BK_OK
    if qty_lots == 0:
        return BK_OK
    return side_insert_at(s, pool, j, i, price_ticks, qty_lots)


cdef inline void side_empty(BookSide* s, BlockPool* pool) noexcept nogil:
    """Release every block of a side."""
    cdef Py_ssize_t j
    for j in range(s.nblocks):
        pool_release(pool, s.blocks[j].levels, s.blocks[j].capacity)
    s.nblocks = 0
    s.count = 0


cdef inline engine_i128 side_top_qty(const BookSide* s, Py_ssize_t n) noexcept nogil:
    """Total size of the best n levels."""
    cdef engine_i128 total = 0
    cdef Py_ssize_t j = s.nblocks - 1, i
    while n > 0 and j >= 0:
        i = s.blocks[j].count - 1
        while n > 0 and i >= 0:
            total += s.blocks[j].levels[i].qty_lots
            i -= 1
            n -= 1
        j -= 1
    return total
