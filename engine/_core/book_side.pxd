# The order book's side container: a direct tick-indexed window at the touch, and
# sorted blocks of Level structs for everything worse than the window. Everything here
# is nogil and inline: it is compiled into the book's own module (engine/_core/book.pyx,
# its only user), so the split costs no call. See book.pyx's module docstring for the
# layout, complexity and memory rules.
from libc.stdint cimport int64_t, uint64_t, intptr_t, INT64_MAX, INT64_MIN
from libc.string cimport memmove, memcpy, memset
from cpython.mem cimport PyMem_RawMalloc, PyMem_RawRealloc, PyMem_RawFree
from engine._core.types cimport Level

cdef extern from *:
    """
    typedef __int128 engine_i128;
    static inline int engine_clz64(unsigned long long x) { return __builtin_clzll(x); }
    static inline int engine_popcount64(unsigned long long x) { return __builtin_popcountll(x); }
    """
    ctypedef long long engine_i128
    int engine_clz64(uint64_t x) noexcept nogil        # x != 0
    int engine_popcount64(uint64_t x) noexcept nogil

# The window's size is per book (a power of two, `wticks`); from it: a re-base leaves
# wticks / 4 free ticks above the best, and once wticks / 4 writes have gone by since the
# last re-base, deleting the best so that the next one sits below wticks / 8 moves the
# window down (the wait keeps a best that flickers over a gap from re-basing every time).
cdef enum:
    WINDOW_TICKS_DEFAULT = 4096
    WINDOW_TICKS_MIN = 64
    WINDOW_TICKS_MAX = 1 << 20
    BLOCK_LEVELS = 128                     # capacity of a block
    BLOCK_FILL = BLOCK_LEVELS * 3 // 4     # fill of loaded blocks; largest merge result
    BLOCK_LOW = BLOCK_LEVELS // 4          # a smaller block merges or borrows
    BLOCK_SPILL = BLOCK_LEVELS // 8        # room a neighbour needs to take levels from a full block
    INITIAL_SPARE = 2
    INITIAL_SLOTS = 4
    LEVEL_STRIDE = 2                       # int64 fields in a Level: its prices' stride

# Status of the nogil side operations; OrderBook._raise_status turns it into an error.
cdef enum:
    BK_OK = 0
    BK_NO_MEMORY = 1      # malloc failed (MemoryError)

# A block is an array of BLOCK_LEVELS Level structs from the pool, holding `count`
# levels in levels[0:count], sorted worst first.
ctypedef struct Block:
    Level* levels
    Py_ssize_t count

# One side of the book. Prices are compared as keys, key = price ^ mask (mask 0 for
# bids, all ones for asks: ~p = -p - 1 reverses the order with no overflow), so a
# higher key is a better price on either side and no comparison branches on the side.
#
# Window: the levels with key >= wbase, direct-indexed: wqty[key - wbase] is the size
# at that price (0: no level) and bit (key - wbase) of wbits is set iff it is non-zero.
# No level has a key above the window (wbase + wticks - 1 <= INT64_MAX, so no offset
# overflows). When the side is not empty its best level is in the window (wcount > 0),
# at offset wbest (-1 when the window is empty). wqty (wticks entries) and wbits
# (wticks / 64 words) are PyMem_RawCalloc'd by the OrderBook, which owns them; they
# are reallocated only while the side is empty (OrderBook.__init__).
#
# Far: the levels with key < wbase, as a sorted sequence of non-empty blocks, worst
# first, so the far best is the last level of the last block. `blocks` and `tops`
# (tops[j] is the best price in blocks[j], kept for a cache-friendly search) are
# PyMem_RawMalloc'd arrays of `slots` entries owned by the OrderBook; they hold no level
# data, so they may be reallocated at any time.
ctypedef struct BookSide:
    int64_t* wqty
    uint64_t* wbits
    int64_t wbase
    Py_ssize_t wcount
    Py_ssize_t wbest
    Py_ssize_t wticks     # window size in ticks: a power of two
    Py_ssize_t calm       # window writes since the last re-base
    uint64_t moves        # re-bases so far (a diagnostic: OrderBook.window_moves)
    Block* blocks
    int64_t* tops
    Py_ssize_t nblocks
    Py_ssize_t slots
    Py_ssize_t count      # levels on this side, window and far
    int64_t mask
    bint is_bid

# The OrderBook's block memory. Blocks are carved from slabs (one PyMem_RawMalloc each,
# linked through a header Level, freed with the book); a free block waits on the spare
# list, linked through its first Level.
ctypedef struct BlockPool:
    Level* slabs
    Level* spare
    Py_ssize_t spare_count
    Py_ssize_t slab_levels    # capacity of all slabs, in levels


# ---------------------------------------------------------------------------
# Block pool.
# ---------------------------------------------------------------------------

cdef inline int pool_reserve(BlockPool* pool, Py_ssize_t n) noexcept nogil:
    """Make at least `n` spare blocks available. New memory comes as one slab of the
    shortfall or half the slabs held, whichever is more (so a growing book allocates
    O(log n) times)."""
    cdef Py_ssize_t k = n - pool.spare_count, t
    cdef Level* slab
    cdef Level* blk
    if k <= 0:
        return BK_OK
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
    """A spare block; the caller reserved it."""
    cdef Level* blk = pool.spare
    pool.spare = <Level*><intptr_t>blk[0].price_ticks
    pool.spare_count -= 1
    return blk


cdef inline void pool_release(BlockPool* pool, Level* blk) noexcept nogil:
    """Give back a block no side holds any more (its slab lives as long as the book)."""
    blk[0].price_ticks = <int64_t><intptr_t>pool.spare
    pool.spare = blk
    pool.spare_count += 1


# ---------------------------------------------------------------------------
# Keys and comparisons.
# ---------------------------------------------------------------------------

cdef inline int64_t side_mask(bint is_bid) noexcept nogil:
    """0 for bids, all ones for asks (see BookSide)."""
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


cdef inline int64_t window_base_for(const BookSide* s, int64_t key) noexcept nogil:
    """Window base that puts `key` wticks / 4 ticks below the window top, clamped so the
    window stays inside the int64 range."""
    cdef int64_t below = s.wticks - (s.wticks >> 2)
    if key < INT64_MIN + below:
        return INT64_MIN
    key -= below
    if key > INT64_MAX - (s.wticks - 1):
        return INT64_MAX - (s.wticks - 1)
    return key


# ---------------------------------------------------------------------------
# Reads.
# ---------------------------------------------------------------------------

cdef inline bint side_best(const BookSide* s, Level* out) noexcept nogil:
    """The best level into *out; False when the side is empty. O(1)."""
    if s.wcount == 0:
        return False
    out.price_ticks = (s.wbase + s.wbest) ^ s.mask
    out.qty_lots = s.wqty[s.wbest]
    return True


cdef inline int64_t side_best_price(const BookSide* s) noexcept nogil:
    """The best price; the side is not empty."""
    return (s.wbase + s.wbest) ^ s.mask


cdef inline Py_ssize_t window_highest_below(const BookSide* s, Py_ssize_t o) noexcept nogil:
    """The highest occupied window offset below o, or -1."""
    cdef Py_ssize_t w
    cdef uint64_t bits
    if o <= 0:
        return -1
    o -= 1
    w = o >> 6
    # Bits 0..o&63 of the word (2 << 63 wraps to 0: all ones).
    bits = s.wbits[w] & ((<uint64_t>2 << (o & 63)) - 1)
    while bits == 0:
        w -= 1
        if w < 0:
            return -1
        bits = s.wbits[w]
    return (w << 6) + 63 - engine_clz64(bits)


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
    A short window between the two is walked up; a wide one is binary-searched."""
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


cdef inline void far_find(const BookSide* s, int64_t price_ticks, Py_ssize_t* block,
                          Py_ssize_t* index) noexcept nogil:
    """Where a price is or would go among the far blocks: blocks[block].levels[0:index]
    are worse than it and every later far level is not. A new price between two blocks
    goes to the front of the better one; one better than the far best goes after it.
    Gallops down the block tops from the far best, binary-searches them, then searches
    the block. At least one far block."""
    cdef bint is_bid = s.is_bid
    cdef Py_ssize_t top = s.nblocks - 1, lo = 0, hi = top - 1, step = 1, j
    cdef int64_t best = s.tops[top]
    if not book_worse(is_bid, price_ticks, best):
        block[0] = top
        index[0] = s.blocks[top].count - 1 if price_ticks == best else s.blocks[top].count
        return
    if top > 0 and not book_worse(is_bid, s.tops[top - 1], price_ticks):
        while hi - step >= 0:           # tops[hi] is not worse than the price
            if book_worse(is_bid, s.tops[hi - step], price_ticks):
                lo = hi - step + 1
                break
            hi -= step
            step <<= 1
        j = lo + prices_lower_bound(s.tops + lo, 1, hi - lo, price_ticks, is_bid)
    else:
        j = top
    block[0] = j
    index[0] = block_find(s.blocks[j].levels, s.blocks[j].count, s.tops[j], price_ticks, is_bid)


cdef inline int64_t side_qty(const BookSide* s, int64_t price_ticks) noexcept nogil:
    """Size at a price (0 when no level). O(1) in the window, O(log n) below it."""
    cdef int64_t key = price_ticks ^ s.mask
    cdef uint64_t o = <uint64_t>key - <uint64_t>s.wbase
    cdef Py_ssize_t j, i
    if o < <uint64_t>s.wticks:
        return s.wqty[o]
    if key > s.wbase or s.nblocks == 0:
        return 0
    far_find(s, price_ticks, &j, &i)
    if i < s.blocks[j].count and s.blocks[j].levels[i].price_ticks == price_ticks:
        return s.blocks[j].levels[i].qty_lots
    return 0


# A walk over a side's levels, best first: the window's bitmap from the best down, then
# the far blocks from the top. Valid while the side does not change.
ctypedef struct SideCursor:
    Py_ssize_t word       # window word being read; -1 once the window is done
    uint64_t bits         # its bits not visited yet
    Py_ssize_t block      # far block being read; -1 once the blocks are done
    Py_ssize_t index      # next level in it (counting down); -1 when it is done


cdef inline void cursor_start(const BookSide* s, SideCursor* c) noexcept nogil:
    c.word = -1
    c.bits = 0
    if s.wcount > 0:
        c.word = s.wbest >> 6
        c.bits = s.wbits[c.word] & ((<uint64_t>2 << (s.wbest & 63)) - 1)
    c.block = s.nblocks - 1
    c.index = s.blocks[c.block].count - 1 if c.block >= 0 else -1


cdef inline bint cursor_next(const BookSide* s, SideCursor* c, Level* out) noexcept nogil:
    """The next level into *out; False when the side is done."""
    cdef Py_ssize_t o
    while c.word >= 0:
        if c.bits != 0:
            o = 63 - engine_clz64(c.bits)
            c.bits &= ~(<uint64_t>1 << o)
            o += c.word << 6
            out.price_ticks = (s.wbase + o) ^ s.mask
            out.qty_lots = s.wqty[o]
            return True
        c.word -= 1
        if c.word >= 0:
            c.bits = s.wbits[c.word]
    while c.block >= 0:
        if c.index >= 0:
            out[0] = s.blocks[c.block].levels[c.index]
            c.index -= 1
            return True
        c.block -= 1
        if c.block >= 0:
            c.index = s.blocks[c.block].count - 1
    return False


cdef inline void cursor_skip(const BookSide* s, SideCursor* c, Py_ssize_t n) noexcept nogil:
    """Skip n levels: a word or a block at a time where it can."""
    cdef Py_ssize_t held
    while n > 0 and c.word >= 0:
        held = engine_popcount64(c.bits)
        if n < held:
            while n > 0:
                c.bits &= ~(<uint64_t>1 << (63 - engine_clz64(c.bits)))
                n -= 1
            return
        n -= held
        c.word -= 1
        c.bits = s.wbits[c.word] if c.word >= 0 else 0
    while n > 0 and c.block >= 0:
        if n <= c.index:
            c.index -= n
            return
        n -= c.index + 1
        c.block -= 1
        c.index = s.blocks[c.block].count - 1 if c.block >= 0 else -1


cdef inline engine_i128 side_top_qty(const BookSide* s, Py_ssize_t n) noexcept nogil:
    """Total size of the best n levels."""
    cdef engine_i128 total = 0
    cdef SideCursor c
    cdef Level lv
    cursor_start(s, &c)
    while n > 0 and cursor_next(s, &c, &lv):
        total += lv.qty_lots
        n -= 1
    return total


cdef inline void side_copy_top(const BookSide* s, Level* dst, Py_ssize_t k) noexcept nogil:
    """The best k levels (k <= count), best first, into dst."""
    cdef SideCursor c
    cdef Py_ssize_t i
    cursor_start(s, &c)
    for i in range(k):
        cursor_next(s, &c, &dst[i])


# ---------------------------------------------------------------------------
# Far blocks: structure changes. A status other than BK_OK means nothing was changed.
# ---------------------------------------------------------------------------

cdef inline int far_ensure_slots(BookSide* s, Py_ssize_t need) noexcept nogil:
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


cdef inline int far_reserve(BookSide* s, BlockPool* pool, Py_ssize_t k) noexcept nogil:
    """Index room and spare blocks for k more far blocks."""
    cdef int status = far_ensure_slots(s, s.nblocks + k)
    if status == BK_OK:
        status = pool_reserve(pool, k)
    return status


cdef inline void far_open_slots(BookSide* s, Py_ssize_t j, Py_ssize_t k) noexcept nogil:
    """Make index entries j..j+k-1 free by moving the later ones up (room reserved)."""
    memmove(&s.blocks[j + k], &s.blocks[j], <size_t>(s.nblocks - j) * sizeof(Block))
    memmove(&s.tops[j + k], &s.tops[j], <size_t>(s.nblocks - j) * sizeof(int64_t))
    s.nblocks += k


cdef inline void far_close_slot(BookSide* s, Py_ssize_t j) noexcept nogil:
    memmove(&s.blocks[j], &s.blocks[j + 1], <size_t>(s.nblocks - j - 1) * sizeof(Block))
    memmove(&s.tops[j], &s.tops[j + 1], <size_t>(s.nblocks - j - 1) * sizeof(int64_t))
    s.nblocks -= 1


cdef inline Py_ssize_t blocks_for(Py_ssize_t n) noexcept nogil:
    """Blocks that hold n levels at the load fill."""
    return (n + BLOCK_FILL - 1) // BLOCK_FILL


cdef inline void far_fill(BookSide* s, BlockPool* pool, const Level* src, Py_ssize_t n) noexcept nogil:
    """Append n sorted levels, all better than the far best, as blocks_for(n) evenly
    filled blocks above the far blocks (room reserved). The side's count is the
    caller's."""
    cdef Py_ssize_t pieces = blocks_for(n), k, size, start = 0, j = s.nblocks
    cdef Level* blk
    for k in range(pieces):
        size = (n - start) // (pieces - k)
        blk = pool_take(pool)
        memcpy(blk, &src[start], <size_t>size * sizeof(Level))
        s.blocks[j + k].levels = blk
        s.blocks[j + k].count = size
        s.tops[j + k] = blk[size - 1].price_ticks
        start += size
    s.nblocks += pieces


cdef inline int far_split(BookSide* s, BlockPool* pool, Py_ssize_t j) noexcept nogil:
    """Split a full block in two halves."""
    cdef int status = far_reserve(s, pool, 1)
    cdef Block* b
    cdef Level* blk
    cdef Py_ssize_t h
    if status != BK_OK:
        return status
    far_open_slots(s, j + 1, 1)
    b = &s.blocks[j]
    h = b.count >> 1
    blk = pool_take(pool)
    memcpy(blk, &b.levels[h], <size_t>(b.count - h) * sizeof(Level))
    s.blocks[j + 1].levels = blk
    s.blocks[j + 1].count = b.count - h
    s.tops[j + 1] = s.tops[j]
    b.count = h
    s.tops[j] = b.levels[h - 1].price_ticks
    return BK_OK


cdef inline void far_rebalance(BookSide* s, BlockPool* pool, Py_ssize_t j) noexcept nogil:
    """Block j has fallen below BLOCK_LOW levels: merge it with a neighbour when the two
    fit in BLOCK_FILL, else even out their counts (no allocation either way)."""
    cdef Py_ssize_t lo = j - 1 if j > 0 else j, m
    cdef Block* a = &s.blocks[lo]
    cdef Block* b = &s.blocks[lo + 1]
    if a.count + b.count <= BLOCK_FILL:
        memcpy(&a.levels[a.count], b.levels, <size_t>b.count * sizeof(Level))
        a.count += b.count
        s.tops[lo] = s.tops[lo + 1]
        pool_release(pool, b.levels)
        far_close_slot(s, lo + 1)
        return
    if a.count > b.count:
        m = (a.count - b.count) >> 1
        memmove(&b.levels[m], b.levels, <size_t>b.count * sizeof(Level))
        memcpy(b.levels, &a.levels[a.count - m], <size_t>m * sizeof(Level))
        a.count -= m
        b.count += m
    else:
        m = (b.count - a.count) >> 1
        memcpy(&a.levels[a.count], b.levels, <size_t>m * sizeof(Level))
        memmove(b.levels, &b.levels[m], <size_t>(b.count - m) * sizeof(Level))
        a.count += m
        b.count -= m
    s.tops[lo] = a.levels[a.count - 1].price_ticks


cdef inline bint far_spill(BookSide* s, Py_ssize_t* block, Py_ssize_t* index) noexcept nogil:
    """Block *block is full: move levels into the neighbour with the most room, if it has
    at least BLOCK_SPILL, instead of splitting (keeps blocks well filled when levels
    arrive in price order). Updates (*block, *index) to where the new level goes."""
    cdef Py_ssize_t j = block[0], i = index[0], m, room_lo = 0, room_hi = 0
    cdef Block* b = &s.blocks[j]
    cdef Block* n
    if j > 0:
        room_lo = BLOCK_LEVELS - s.blocks[j - 1].count
    if j + 1 < s.nblocks:
        room_hi = BLOCK_LEVELS - s.blocks[j + 1].count
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


cdef inline int far_insert_at(BookSide* s, BlockPool* pool, Py_ssize_t j, Py_ssize_t i,
                              int64_t price_ticks, int64_t qty_lots) noexcept nogil:
    """Insert a new level at blocks[j].levels[i] (as far_find placed it)."""
    cdef Block* b
    cdef int status
    cdef Py_ssize_t h
    if s.nblocks == 0:
        status = far_reserve(s, pool, 1)
        if status != BK_OK:
            return status
        s.nblocks = 1
        j = i = 0
        s.blocks[0].levels = pool_take(pool)
        s.blocks[0].count = 0
    elif s.blocks[j].count == BLOCK_LEVELS:
        if not far_spill(s, &j, &i):
            status = far_split(s, pool, j)
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


cdef inline void far_remove_at(BookSide* s, BlockPool* pool, Py_ssize_t j, Py_ssize_t i) noexcept nogil:
    """Remove blocks[j].levels[i]; never fails."""
    cdef Block* b = &s.blocks[j]
    memmove(&b.levels[i], &b.levels[i + 1], <size_t>(b.count - 1 - i) * sizeof(Level))
    b.count -= 1
    s.count -= 1
    if b.count == 0:
        pool_release(pool, b.levels)
        far_close_slot(s, j)
        return
    if i == b.count:
        s.tops[j] = b.levels[i - 1].price_ticks
    if b.count < BLOCK_LOW and s.nblocks > 1:
        far_rebalance(s, pool, j)


cdef inline int far_write(BookSide* s, BlockPool* pool, int64_t price_ticks, int64_t qty_lots,
                          int64_t* old_qty_lots) noexcept nogil:
    """far part of side_write: a price worse than the window."""
    cdef Py_ssize_t j = 0, i = 0
    cdef Level* lv
    old_qty_lots[0] = 0
    if s.nblocks > 0:
        far_find(s, price_ticks, &j, &i)
        if i < s.blocks[j].count:
            lv = &s.blocks[j].levels[i]
            if lv.price_ticks == price_ticks:
                old_qty_lots[0] = lv.qty_lots
                if qty_lots == 0:
                    far_remove_at(s, pool, j, i)
                else:
                    lv.qty_lots = qty_lots
                return BK_OK
    if qty_lots == 0:
        return BK_OK
    return far_insert_at(s, pool, j, i, price_ticks, qty_lots)


cdef inline void far_drop_worst(BookSide* s, BlockPool* pool, Py_ssize_t n) noexcept nogil:
    """Remove the n worst far levels (n <= far count): whole blocks first."""
    cdef Block* b
    while n > 0:
        b = &s.blocks[0]
        if n >= b.count:
            n -= b.count
            s.count -= b.count
            pool_release(pool, b.levels)
            far_close_slot(s, 0)
        else:
            memmove(b.levels, &b.levels[n], <size_t>(b.count - n) * sizeof(Level))
            b.count -= n
            s.count -= n
            if b.count < BLOCK_LOW and s.nblocks > 1:
                far_rebalance(s, pool, 0)
            return


# ---------------------------------------------------------------------------
# Window: re-basing, and moving levels between the window and the far blocks.
# ---------------------------------------------------------------------------

cdef inline void window_rebuild(BookSide* s) noexcept nogil:
    """Bitmap, count and best offset from wqty (after a re-base)."""
    cdef Py_ssize_t w, t, count = 0
    cdef uint64_t bits
    cdef const int64_t* q
    s.wbest = -1
    for w in range(s.wticks >> 6):
        q = s.wqty + (w << 6)
        bits = 0
        for t in range(64):
            bits |= <uint64_t>(q[t] != 0) << t
        s.wbits[w] = bits
        if bits != 0:
            count += engine_popcount64(bits)
            s.wbest = (w << 6) + 63 - engine_clz64(bits)
    s.wcount = count


cdef inline void window_pull_far(BookSide* s, BlockPool* pool) noexcept nogil:
    """Move the far levels whose keys are now inside the window into it: the best far
    levels, at the ends of the top blocks (emptied blocks go back to the pool)."""
    cdef Block* b
    cdef Py_ssize_t i
    cdef int64_t key
    while s.nblocks > 0:
        b = &s.blocks[s.nblocks - 1]
        i = b.count
        while i > 0:
            key = b.levels[i - 1].price_ticks ^ s.mask
            if key < s.wbase:
                break
            i -= 1
            s.wqty[<uint64_t>key - <uint64_t>s.wbase] = b.levels[i].qty_lots
        if i > 0:
            b.count = i
            s.tops[s.nblocks - 1] = b.levels[i - 1].price_ticks
            return
        pool_release(pool, b.levels)
        s.nblocks -= 1       # the last index entry: nothing to move


cdef inline Py_ssize_t blocks_to_push(Py_ssize_t n) noexcept nogil:
    """Blocks far_push_window may take for n levels."""
    return (n + BLOCK_LEVELS - 1) // BLOCK_LEVELS


cdef inline void far_push_window(BookSide* s, BlockPool* pool, Py_ssize_t m) noexcept nogil:
    """Append the levels at window offsets [0, m) above the far blocks (they are better
    than every far level): first into the room of the top far block, then into new
    blocks filled to capacity (blocks_to_push of them reserved), so a rising market
    that hands down a few levels per re-base does not leave a trail of small blocks.
    Counts are the caller's."""
    cdef Py_ssize_t o
    cdef Block* b = NULL
    if s.nblocks > 0 and s.blocks[s.nblocks - 1].count < BLOCK_LEVELS:
        b = &s.blocks[s.nblocks - 1]
    for o in range(m):
        if s.wqty[o] == 0:
            continue
        if b == NULL:
            b = &s.blocks[s.nblocks]
            b.levels = pool_take(pool)
            b.count = 0
            s.nblocks += 1
        b.levels[b.count].price_ticks = (s.wbase + o) ^ s.mask
        b.levels[b.count].qty_lots = s.wqty[o]
        b.count += 1
        s.tops[s.nblocks - 1] = b.levels[b.count - 1].price_ticks
        if b.count == BLOCK_LEVELS:
            b = NULL


cdef inline int side_rebase(BookSide* s, BlockPool* pool, int64_t new_base) noexcept nogil:
    """Move the window to start at key `new_base`, keeping every level.

    Up: the window levels below the new base go to the top of the far blocks; this
    needs blocks, and on BK_NO_MEMORY nothing changed. Down: never fails; the far
    levels now inside the window come into it. The caller makes sure no level would
    land above the window."""
    cdef uint64_t d
    cdef Py_ssize_t m, o, moved = 0
    cdef int status
    cdef Py_ssize_t w = s.wticks
    if new_base > s.wbase:
        d = <uint64_t>new_base - <uint64_t>s.wbase
        m = w if d >= <uint64_t>w else <Py_ssize_t>d
        for o in range(m):
            moved += s.wqty[o] != 0
        if moved:
            status = far_reserve(s, pool, blocks_to_push(moved))
            if status != BK_OK:
                return status
            far_push_window(s, pool, m)
        memmove(s.wqty, s.wqty + m, <size_t>(w - m) * sizeof(int64_t))
        memset(s.wqty + w - m, 0, <size_t>m * sizeof(int64_t))
        s.wbase = new_base
    elif new_base < s.wbase:
        d = <uint64_t>s.wbase - <uint64_t>new_base
        m = w if d >= <uint64_t>w else <Py_ssize_t>d
        memmove(s.wqty + m, s.wqty, <size_t>(w - m) * sizeof(int64_t))
        memset(s.wqty, 0, <size_t>m * sizeof(int64_t))
        s.wbase = new_base
        window_pull_far(s, pool)
    else:
        return BK_OK
    window_rebuild(s)
    s.calm = 0
    s.moves += 1
    return BK_OK


cdef inline void side_recentre(BookSide* s, BlockPool* pool) noexcept nogil:
    """The best was deleted and the new one (if any) sits below wticks / 8 in the
    window: move the window down so the best is wticks / 4 below its top again, pulling
    levels up from the far blocks. An empty window always moves (the best must be in
    it); one with levels only once wticks / 4 writes have passed since the last re-base.
    Never fails."""
    cdef int64_t key, new_base
    if s.wcount > 0:
        if s.calm < s.wticks >> 2:
            return
        key = s.wbase + s.wbest
    elif s.nblocks > 0:
        key = s.tops[s.nblocks - 1] ^ s.mask
    else:
        return
    new_base = window_base_for(s, key)
    if new_base < s.wbase:
        side_rebase(s, pool, new_base)


cdef inline void window_set(BookSide* s, BlockPool* pool, Py_ssize_t o, int64_t qty_lots,
                            int64_t* old_qty_lots) noexcept nogil:
    """Set the size at window offset o. Branch-free except when the best goes."""
    cdef int64_t prev = s.wqty[o]
    cdef uint64_t bit = <uint64_t>1 << (o & 63)
    cdef uint64_t* word = &s.wbits[o >> 6]
    cdef bint present = qty_lots != 0
    cdef bint better = present & (o > s.wbest)
    cdef Py_ssize_t change = <Py_ssize_t>present - <Py_ssize_t>(prev != 0)
    old_qty_lots[0] = prev
    s.wqty[o] = qty_lots
    word[0] = (word[0] & ~bit) | (bit & (<uint64_t>0 - <uint64_t>present))
    s.wcount += change
    s.count += change
    s.calm += 1
    s.wbest = o if better else s.wbest
    if (o == s.wbest) & (not present):
        s.wbest = window_highest_below(s, o)
        if s.wbest < s.wticks >> 3:
            side_recentre(s, pool)


cdef inline int side_write_outside(BookSide* s, BlockPool* pool, int64_t key, int64_t price_ticks,
                                   int64_t qty_lots, int64_t* old_qty_lots) noexcept nogil:
    """side_write for a price outside the window, or any price on an empty side."""
    cdef int status
    if s.wcount > 0 and key < s.wbase:
        return far_write(s, pool, price_ticks, qty_lots, old_qty_lots)
    # Above the window, or the side is empty: there is no level at this price.
    old_qty_lots[0] = 0
    if qty_lots == 0:
        return BK_OK
    if s.wcount == 0:
        s.wbase = window_base_for(s, key)   # empty side: nothing to move
        s.calm = 0
    else:
        status = side_rebase(s, pool, window_base_for(s, key))
        if status != BK_OK:
            return status
    window_set(s, pool, <Py_ssize_t>(<uint64_t>key - <uint64_t>s.wbase), qty_lots, old_qty_lots)
    return BK_OK


cdef inline int side_write(BookSide* s, BlockPool* pool, int64_t price_ticks, int64_t qty_lots,
                           int64_t* old_qty_lots) noexcept nogil:
    """Set the size at a price (0 deletes); the previous size (0 if absent) goes to
    *old_qty_lots. Only a change that needs blocks can fail, and then nothing changed."""
    cdef int64_t key = price_ticks ^ s.mask
    cdef uint64_t o = <uint64_t>key - <uint64_t>s.wbase
    if o >= <uint64_t>s.wticks or s.wcount == 0:
        return side_write_outside(s, pool, key, price_ticks, qty_lots, old_qty_lots)
    window_set(s, pool, <Py_ssize_t>o, qty_lots, old_qty_lots)
    return BK_OK


cdef inline void window_drop_worst(BookSide* s, Py_ssize_t n) noexcept nogil:
    """Remove the n worst window levels (n < wcount: the best stays)."""
    cdef Py_ssize_t w = 0, o
    cdef uint64_t bits
    s.wcount -= n
    s.count -= n
    while n > 0:
        bits = s.wbits[w]
        while bits != 0 and n > 0:
            o = 63 - engine_clz64(bits & (<uint64_t>0 - bits))   # lowest set bit
            bits &= bits - 1
            s.wqty[(w << 6) + o] = 0
            n -= 1
        s.wbits[w] = bits
        w += 1


cdef inline void side_empty(BookSide* s, BlockPool* pool) noexcept nogil:
    """Remove every level of a side (the blocks become spares)."""
    cdef Py_ssize_t j
    for j in range(s.nblocks):
        pool_release(pool, s.blocks[j].levels)
    s.nblocks = 0
    if s.wcount > 0:
        memset(s.wqty, 0, <size_t>s.wticks * sizeof(int64_t))
        memset(s.wbits, 0, <size_t>(s.wticks >> 6) * sizeof(uint64_t))
    s.wcount = 0
    s.wbest = -1
    s.count = 0


cdef inline Py_ssize_t side_load_split(const BookSide* s, const Level* levels, Py_ssize_t n,
                                       int64_t* base) noexcept nogil:
    """For n > 0 sorted levels (worst first) loaded into an empty side: the window base
    their best gets (*base), and how many of them are below it (they go to far blocks)."""
    cdef Py_ssize_t split = n
    base[0] = window_base_for(s, levels[n - 1].price_ticks ^ s.mask)
    while split > 0 and (levels[split - 1].price_ticks ^ s.mask) >= base[0]:
        split -= 1
    return split


cdef inline Py_ssize_t side_load_blocks(const BookSide* s, const Level* levels, Py_ssize_t n) noexcept nogil:
    """Blocks side_load takes for these n sorted levels."""
    cdef int64_t base
    if n == 0:
        return 0
    return blocks_for(side_load_split(s, levels, n, &base))


cdef inline void side_load(BookSide* s, BlockPool* pool, const Level* levels, Py_ssize_t n) noexcept nogil:
    """Fill an empty side with n sorted levels (worst first): the best in the window,
    the rest as far blocks (side_load_blocks of them reserved)."""
    cdef Py_ssize_t split, i
    if n == 0:
        return
    split = side_load_split(s, levels, n, &s.wbase)
    if split:
        far_fill(s, pool, levels, split)
    for i in range(split, n):
        s.wqty[<uint64_t>(levels[i].price_ticks ^ s.mask) - <uint64_t>s.wbase] = levels[i].qty_lots
    window_rebuild(s)
    s.calm = 0
    s.count = n
