"""Seeded stress tests of the order book where its best level moves: trends, jumps of
window sizes, oscillation, int64 limits, rolled-back batches, pruning, max_depth,
snapshots, zero-copy views and deep reads.

Each side is stored as a tick-indexed window of 1,024 ticks around the best (re-based
up when a new best lands above it, down when deleting the best empties it or leaves
the best near its bottom) over sorted blocks for the deeper levels. These tests are
black-box: every one drives a book and a reference (a SortedDict a side) with the
same operations and compares bests, counts, full contents, level(), qty_at(),
fill_cost() and imbalance(), calling ``_check_invariants()`` along the way. They hold
for any correct layout (blocks only, or a window over blocks). They check that moving
the best by any distance (exactly a window, a window minus the headroom, far past
it, to and from the int64 limits), rejecting a batch that moved it, pruning across
windows, trimming to max_depth and exporting views never lose, duplicate or reorder
a level.
"""
from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import numpy as np
import pytest
from sortedcontainers import SortedDict

from engine import BookCrossedError, BookError, CrossPolicy, Instrument, OrderBook, Side

BID, ASK = int(Side.BID), int(Side.ASK)
RAISE, PRUNE, ALLOW = int(CrossPolicy.RAISE), int(CrossPolicy.PRUNE), int(CrossPolicy.ALLOW)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The books here use a 1,024-tick window (the default is wider) so the edges below are
#: reached often: a re-base puts the best 256 ticks below the window top.
WINDOW_TICKS = 1024
#: Jumps at the window's edges.
WINDOW_JUMPS = (767, 768, 1023, 1024, 1025, 2048)
INST = Instrument("MOVES", tick_size="0.01", lot_size="0.00001")

Update = tuple[int, int, int]


def make_book(cross_policy: int = RAISE, max_depth: int = 0) -> OrderBook:
    """Every book under test comes from here (one place to swap the implementation)."""
    return OrderBook(INST, cross_policy=cross_policy, max_depth=max_depth, window_ticks=WINDOW_TICKS)


def px(side: int, key: int) -> int:
    """The price of a key, where a higher key is better on both sides."""
    return key if side == BID else -key


def key_of(side: int, price: int) -> int:
    return price if side == BID else -price


class Ref:
    """The simplest correct L2 book: a SortedDict a side, crossing checked on the result,
    the same PRUNE rule as the engine (the side whose best the update wrote is fresh),
    then the worst levels beyond max_depth dropped."""

    def __init__(self, policy: int = RAISE, max_depth: int = 0) -> None:
        self.sides: list[SortedDict] = [SortedDict(), SortedDict()]
        self.policy = policy
        self.max_depth = max_depth
        self.pruned = 0

    def best(self, side: int) -> int | None:
        d = self.sides[side]
        if not d:
            return None
        price: int = d.peekitem(-1 if side == BID else 0)[0]
        return price

    def best_level(self, side: int) -> tuple[int, int] | None:
        d = self.sides[side]
        if not d:
            return None
        level: tuple[int, int] = d.peekitem(-1 if side == BID else 0)
        return level

    def crossed(self) -> bool:
        b, a = self.best(BID), self.best(ASK)
        return b is not None and a is not None and b >= a

    def apply(self, updates: Sequence[Update]) -> bool:
        """Apply a batch whole; False (and nothing changed) when it must be rejected."""
        journal: list[tuple[int, int, int | None]] = []
        for side, price, qty in updates:
            d = self.sides[side]
            journal.append((side, price, d.get(price)))
            if qty == 0:
                d.pop(price, None)
            else:
                d[price] = qty
        if self.policy != ALLOW and self.crossed():
            if self.policy == RAISE or not self._prune(updates):
                for side, price, old in reversed(journal):
                    if old is None:
                        self.sides[side].pop(price, None)
                    else:
                        self.sides[side][price] = old
                return False
        self._trim()
        return True

    def set(self, side: int, price: int, qty: int) -> bool:
        return self.apply([(side, price, qty)])

    def _prune(self, updates: Sequence[Update]) -> bool:
        bests = (self.best(BID), self.best(ASK))
        fresh = [False, False]
        for side, price, _ in updates:
            if price == bests[side]:
                fresh[side] = True
        if fresh[BID] == fresh[ASK]:
            return False
        fs = BID if fresh[BID] else ASK
        top = bests[fs]
        assert top is not None
        stale = self.sides[1 - fs]

        def crosses(p: int) -> bool:
            return p <= top if fs == BID else p >= top

        if any(s == 1 - fs and crosses(p) and p in stale for s, p, _ in updates):
            return False  # the batch crosses itself
        end = 0 if fs == BID else -1  # the stale side's best end
        while stale and crosses(stale.peekitem(end)[0]):
            stale.popitem(end)
            self.pruned += 1
        return True

    def _trim(self) -> None:
        if not self.max_depth:
            return
        for side in (BID, ASK):
            d = self.sides[side]
            while len(d) > self.max_depth:
                d.popitem(0 if side == BID else -1)  # the worst end

    def snapshot(self, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]) -> bool:
        b = SortedDict((p, q) for p, q in bids if q)
        a = SortedDict((p, q) for p, q in asks if q)
        if self.policy != ALLOW and b and a and b.peekitem(-1)[0] >= a.peekitem(0)[0]:
            return False
        self.sides = [b, a]
        self._trim()
        return True

    def clear(self) -> None:
        self.sides = [SortedDict(), SortedDict()]

    def walk(self, side: int) -> Iterator[tuple[int, int]]:
        """Levels best first."""
        items = self.sides[side].items()
        return reversed(items) if side == BID else iter(items)

    def arrays(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.sides[side]
        p = np.fromiter(d.keys(), dtype=np.int64, count=len(d))
        q = np.fromiter(d.values(), dtype=np.int64, count=len(d))
        return (p[::-1], q[::-1]) if side == BID else (p, q)

    def fill_cost(self, taker_side: int, qty: int) -> tuple[int, int, int | None]:
        left, notional, worst = qty, 0, None
        for p, q in self.walk(1 - taker_side):
            if left == 0:
                break
            take = min(q, left)
            notional += take * p
            worst = p
            left -= take
        if worst is None:
            return (0, 0, None)
        return (qty - left, notional, worst)

    def imbalance(self, n: int) -> float | None:
        qb = sum(q for _, q in islice(self.walk(BID), n))
        qa = sum(q for _, q in islice(self.walk(ASK), n))
        if qb + qa == 0:
            return None
        return float(qb - qa) / float(qb + qa)


# ----------------------------------------------------------------------------------
# Helpers: drive book and reference together, compare them.
# ----------------------------------------------------------------------------------


def book_state(book: OrderBook) -> tuple[bytes, bytes, int, int]:
    return (book.bids().tobytes(), book.asks().tobytes(), book.version, book.pruned_levels)


def agree(book: OrderBook, ok: bool, what: str, action: Callable[[], object]) -> bool:
    """Run ``action`` on the book. It must be rejected (BookCrossedError, book unchanged)
    exactly when the reference rejected ``what``; returns whether it was applied."""
    before = None if ok else book_state(book)
    try:
        action()
    except BookCrossedError:
        assert not ok, f"engine rejected {what} that the reference applied"
        assert book_state(book) == before, f"a rejected {what} changed the book"
        return False
    assert ok, f"engine applied {what} that the reference rejected"
    return True


def do_set(book: OrderBook, ref: Ref, side: int, price: int, qty: int) -> bool:
    """One set on both."""
    return agree(book, ref.set(side, price, qty), f"set({side}, {price}, {qty})", lambda: book.set(side, price, qty))


def batch_arrays(updates: Sequence[Update]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([u[0] for u in updates], np.int8),
        np.array([u[1] for u in updates], np.int64),
        np.array([u[2] for u in updates], np.int64),
    )


def do_apply(book: OrderBook, ref: Ref, updates: Sequence[Update]) -> bool:
    """A batch on both."""
    return agree(book, ref.apply(updates), f"batch of {len(updates)}", lambda: book.apply(*batch_arrays(updates)))


def do_snapshot(book: OrderBook, ref: Ref, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]) -> bool:
    """A snapshot on both."""
    return agree(book, ref.snapshot(bids, asks), "snapshot", lambda: book.apply_snapshot(
        np.array([p for p, _ in bids], np.int64),
        np.array([q for _, q in bids], np.int64),
        np.array([p for p, _ in asks], np.int64),
        np.array([q for _, q in asks], np.int64),
    ))


def delete_best(book: OrderBook, ref: Ref, side: int) -> None:
    best = ref.best(side)
    assert best is not None
    do_set(book, ref, side, best, 0)


def random_level(rng: random.Random, ref: Ref, side: int) -> int | None:
    d = ref.sides[side]
    return d.peekitem(rng.randrange(len(d)))[0] if d else None


def check_top(book: OrderBook, ref: Ref) -> None:
    """O(1) reads: both bests and both counts."""
    assert book.best_bid() == ref.best_level(BID)
    assert book.best_ask() == ref.best_level(ASK)
    assert book.bid_count == len(ref.sides[BID]), "bid count"
    assert book.ask_count == len(ref.sides[ASK]), "ask count"


def assert_side(got: np.ndarray, ref: Ref, side: int, n: int | None = None) -> None:
    p, q = ref.arrays(side)
    if n is not None:
        p, q = p[:n], q[:n]
    if len(got) == len(p) and np.array_equal(got["price"], p) and np.array_equal(got["qty"], q):
        return
    m = min(len(got), len(p))
    bad = np.flatnonzero((got["price"][:m] != p[:m]) | (got["qty"][:m] != q[:m]))
    i = int(bad[0]) if len(bad) else m
    name = "bid" if side == BID else "ask"
    raise AssertionError(
        f"{name}s differ: engine {len(got)} levels, reference {len(p)}; first difference at {i}: "
        f"engine {got[i] if i < len(got) else None}, reference "
        f"{(int(p[i]), int(q[i])) if i < len(p) else None}")


def check_full(book: OrderBook, ref: Ref) -> None:
    assert book._check_invariants()
    assert_side(book.bids(), ref, BID)
    assert_side(book.asks(), ref, ASK)
    check_top(book, ref)
    assert book.pruned_levels == ref.pruned


def check_reads(book: OrderBook, ref: Ref, side: int) -> None:
    """level(side, i) for every i, IndexError past both ends, qty_at at every level and
    next to it, fill_cost / vwap / worst_price at cumulative-size boundaries, imbalance."""
    levels = list(ref.walk(side))
    for i, lv in enumerate(levels):
        assert book.level(side, i) == lv, f"level({side}, {i})"
    for bad in (len(levels), -1):
        with pytest.raises(IndexError):
            book.level(side, bad)
    for p, q in levels[:: max(1, len(levels) // 500)]:
        assert book.qty_at(side, p) == q
        for near in (p - 1, p + 1):
            if INT64_MIN <= near <= INT64_MAX:
                assert book.qty_at(side, near) == ref.sides[side].get(near, 0)
    cum = np.cumsum([q for _, q in levels], dtype=np.int64).tolist()
    taker = 1 - side
    qtys = {1}
    for i in (0, 1, 126, 127, 128, 129, 255, 256, 767, 768, 1023, 1024, 1025, 2000, len(cum) - 1):
        if 0 <= i < len(cum):
            qtys.update((cum[i] - 1, cum[i], cum[i] + 1))
    if cum:
        qtys.add(cum[-1] + 5)
    for qty in sorted(q for q in qtys if q > 0):
        want = ref.fill_cost(taker, qty)
        assert book.fill_cost(taker, qty) == want, f"fill_cost({taker}, {qty})"
        full = want[0] == qty
        assert book.vwap(taker, qty) == (want[1] / want[0] if full else None)
        assert book.worst_price(taker, qty) == (want[2] if full else None)
    for n in (1, 2, 10, 127, 128, 129, 1000, 1024, 1025, 10**6):
        assert book.imbalance(n) == ref.imbalance(n), f"imbalance({n})"


def geometric(rng: random.Random, mean: float) -> int:
    """1, 2, 3, ... with the given mean."""
    return 1 + int(rng.expovariate(1.0 / mean))


# ----------------------------------------------------------------------------------
# 1. Trends and jumps.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("side", [BID, ASK])
def test_trend_up_then_down(side: int, seed: int) -> None:
    """The best walks up 1..3,000 ticks a step for 3,000 steps (with window-sized and
    random large jumps), leaving levels behind and deep; then walks back down by
    deleting the best, with occasional new bests above it and inserts just below."""
    rng = random.Random(1000 * seed + side)
    book, ref = make_book(), Ref()
    other = 1 - side
    do_set(book, ref, other, px(other, -(10**15)), 1)  # the opposite side, far away
    key = 0
    do_set(book, ref, side, px(side, key), 1)
    for step in range(3000):
        r = rng.random()
        if r < 0.12:
            jump = rng.choice(WINDOW_JUMPS)
        elif r < 0.14:
            jump = rng.randrange(3000, 10**6)
        else:
            jump = rng.randint(1, 3000)
        key += jump
        price = px(side, key)
        do_set(book, ref, side, price, rng.randint(1, 10**6))
        for _ in range(rng.randint(0, 3)):  # left behind, between the old best and below it
            do_set(book, ref, side, px(side, key - rng.randint(1, jump + 400)), rng.randint(1, 1000))
        if rng.random() < 0.1:
            do_set(book, ref, side, px(side, key - rng.randint(1000, 10**6)), 3)
        if rng.random() < 0.2:
            victim = random_level(rng, ref, side)
            assert victim is not None
            do_set(book, ref, side, victim, 0)
        assert book.level(side, 0) == ref.best_level(side)
        assert book.qty_at(side, price) == ref.sides[side].get(price, 0)
        if step % 100 == 0:
            assert book._check_invariants()
            check_top(book, ref)
        if step % 500 == 499:
            check_full(book, ref)
    check_full(book, ref)
    step = 0
    while ref.sides[side]:
        r = rng.random()
        best = ref.best(side)
        assert best is not None
        if r < 0.85:
            do_set(book, ref, side, best, 0)
        elif r < 0.93:
            do_set(book, ref, side, px(side, key_of(side, best) - rng.randint(1, 300)), 2)
        elif r < 0.97:
            jump = rng.choice(WINDOW_JUMPS + (1, 256, 3000))
            do_set(book, ref, side, px(side, key_of(side, best) + jump), 4)
        else:
            victim = random_level(rng, ref, side)
            assert victim is not None
            do_set(book, ref, side, victim, 0)
        check_top(book, ref)
        step += 1
        if step % 100 == 0:
            assert book._check_invariants()
        if step % 500 == 0:
            check_full(book, ref)
    check_full(book, ref)
    assert book.level_count(side) == 0 and book.level_count(1 - side) == 1


BOUNDARY_OFFSETS = sorted(
    {o for c in (1, 128, 256, 512, 767, 768, 1023, 1024, 1280) for o in range(c - 2, c + 3) if o > 0})


@pytest.mark.parametrize("jump", [1, 128, 255, 256, 257, 767, 768, 769, 1023, 1024, 1025, 1279, 1280, 2048, 4096, 10**6])
@pytest.mark.parametrize("side", [BID, ASK])
def test_jump_then_walk_down(side: int, jump: int) -> None:
    """Over a dense run of 1,500 levels and sparse deep ones, the best jumps by `jump`;
    levels are added at every offset around the window's edges below the new best;
    then the best is deleted one level at a time (jumping up again half-way) to empty."""
    rng = random.Random(jump * 2 + side)
    book, ref = make_book(), Ref()
    updates = [(side, px(side, -k), rng.randint(1, 100)) for k in range(1500)]
    updates += [(side, px(side, -rng.randint(1500, 10**5)), 7) for _ in range(300)]
    rng.shuffle(updates)
    assert do_apply(book, ref, updates)
    check_full(book, ref)
    do_set(book, ref, side, px(side, jump), 5)
    check_full(book, ref)
    for o in BOUNDARY_OFFSETS:
        do_set(book, ref, side, px(side, jump - o), rng.randint(1, 100))
        assert book.level(side, 0) == ref.best_level(side)
    check_full(book, ref)
    n = 0
    while ref.sides[side]:
        delete_best(book, ref, side)
        assert book.best_bid() == ref.best_level(BID) and book.best_ask() == ref.best_level(ASK)
        n += 1
        if n % 97 == 0:
            assert book._check_invariants()
        if n % 400 == 0:
            check_full(book, ref)
        if n == 600:  # and up again from wherever the best is now
            best = ref.best(side)
            assert best is not None
            do_set(book, ref, side, px(side, key_of(side, best) + jump), 9)
            check_full(book, ref)
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 2. Oscillation.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [1025, 1300, 5000, 10**9])
@pytest.mark.parametrize("side", [BID, ASK])
def test_best_oscillates_between_far_prices(side: int, distance: int) -> None:
    """The best alternates between a cluster A (400 levels within 700 ticks under key 0)
    and a cluster B about `distance` ticks above it (its best plus up to 40 levels),
    B written by sets or a batch and removed from the top, in random order or by a
    batch; levels near A change while the best is at B and while it is at A."""
    rng = random.Random(distance * 2 + side)
    book, ref = make_book(), Ref()
    a_keys = rng.sample(range(-700, 1), 400)
    assert do_apply(book, ref, [(side, px(side, k), rng.randint(1, 100)) for k in a_keys])

    def touch_a() -> None:
        for _ in range(5):
            k = rng.randint(-900, 20)
            do_set(book, ref, side, px(side, k), 0 if rng.random() < 0.3 else rng.randint(1, 100))
            check_top(book, ref)

    for cycle in range(300):
        b_top = distance + rng.randint(-200, 200)
        b_keys = [b_top] + rng.sample(range(b_top - 700, b_top), rng.randint(0, 40))
        b_prices = [px(side, k) for k in b_keys]
        if cycle % 2:
            assert do_apply(book, ref, [(side, p, rng.randint(1, 50)) for p in b_prices])
        else:
            for p in rng.sample(b_prices, len(b_prices)):
                do_set(book, ref, side, p, rng.randint(1, 50))
        assert book.level(side, 0) == (px(side, b_top), ref.sides[side][px(side, b_top)])
        touch_a()  # deep now: below the window around B
        mode = cycle % 3
        if mode == 0:
            while ref.best(side) in b_prices:
                delete_best(book, ref, side)
                check_top(book, ref)
        elif mode == 1:
            for p in rng.sample(b_prices, len(b_prices)):
                do_set(book, ref, side, p, 0)
                check_top(book, ref)
        else:
            assert do_apply(book, ref, [(side, p, 0) for p in b_prices])
        best = ref.best(side)
        assert best is not None and key_of(side, best) <= 20
        check_top(book, ref)
        touch_a()
        if cycle % 25 == 0:
            check_full(book, ref)
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 3. int64 limits.
# ----------------------------------------------------------------------------------


def edge_prices(rng: random.Random, n: int) -> list[int]:
    """The four extreme prices, a few ordinary ones, and the rest within 2,000 ticks of
    either int64 limit."""
    s = {INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 0, -1, 1, 10**18, -(10**18)}
    while len(s) < n:
        s.add(INT64_MAX - rng.randrange(2000))
        s.add(INT64_MIN + rng.randrange(2000))
    out = sorted(s)
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_levels_at_int64_limits(seed: int) -> None:
    """With CrossPolicy.ALLOW both sides hold prices at and within 2,000 ticks of both
    int64 limits; inserted in random order, the bests deleted and re-inserted, whole
    runs deleted and re-added in batches; reads (fill_cost's exact notional, imbalance,
    level) across all of it."""
    rng = random.Random(seed)
    book, ref = make_book(ALLOW), Ref(ALLOW)
    pools: list[list[int]] = []
    for side in (BID, ASK):
        prices = edge_prices(rng, 900)
        pools.append(prices)
        for i, p in enumerate(prices):
            do_set(book, ref, side, p, rng.randint(1, 10**6))
            check_top(book, ref)
            if i % 100 == 0:
                assert book._check_invariants()
    check_full(book, ref)
    for side in (BID, ASK):
        check_reads(book, ref, side)
    assert book.mid() == (float(ref.best(BID)) + float(ref.best(ASK))) / 2.0  # type: ignore[arg-type]
    for i in range(3000):
        side = rng.randrange(2)
        if rng.random() < 0.6 and ref.sides[side]:
            delete_best(book, ref, side)
        else:
            do_set(book, ref, side, rng.choice(pools[side]), rng.randint(1, 10**6))
        check_top(book, ref)
        if i % 250 == 0:
            check_full(book, ref)
    # Remove everything near one limit in one batch, then put it back in another.
    for side in (BID, ASK):
        for low in (True, False):
            near = [p for p in ref.sides[side] if (p < 0) == low]
            assert do_apply(book, ref, [(side, p, 0) for p in near])
            check_full(book, ref)
            assert do_apply(book, ref, [(side, p, rng.randint(1, 10**6)) for p in near])
            check_full(book, ref)
    for side in (BID, ASK):
        check_reads(book, ref, side)


def test_book_spanning_the_int64_range() -> None:
    """RAISE: bids from INT64_MIN and asks from INT64_MAX; the best bid climbs to -1 and
    the best ask falls to 0 in jumps from window sizes to 10**18 ticks, leaving levels
    behind; a bid at the best ask is refused; then both walk back to the limits by
    deleting their best."""
    rng = random.Random(7)
    book, ref = make_book(RAISE), Ref(RAISE)
    bids = [(p, rng.randint(1, 1000)) for p in {INT64_MIN, INT64_MIN + 1, *(INT64_MIN + rng.randrange(2000) for _ in range(500))}]
    asks = [(p, rng.randint(1, 1000)) for p in {INT64_MAX, INT64_MAX - 1, *(INT64_MAX - rng.randrange(2000) for _ in range(500))}]
    assert do_snapshot(book, ref, bids, asks)
    check_full(book, ref)
    kb, ka = INT64_MIN + 2000, INT64_MAX - 2000
    for step in range(400):
        for side in (BID, ASK):
            jump = rng.choice(WINDOW_JUMPS + (rng.randrange(1, 10**16), rng.randrange(10**17, 10**18)))
            if side == BID:
                kb = min(kb + jump, -1)
                top = kb
            else:
                ka = max(ka - jump, 0)
                top = ka
            do_set(book, ref, side, top, rng.randint(1, 1000))
            for _ in range(rng.randint(0, 3)):
                do_set(book, ref, side, px(side, key_of(side, top) - rng.randint(1, 2000)), 1)
        check_top(book, ref)
        if step % 50 == 0:
            check_full(book, ref)
            b, a = ref.best(BID), ref.best(ASK)
            assert b is not None and a is not None
            assert book.mid() == (float(b) + float(a)) / 2.0
    check_full(book, ref)
    assert ref.best(BID) == -1 and ref.best(ASK) == 0
    assert not do_set(book, ref, BID, 0, 1)  # would lock: refused
    assert not do_set(book, ref, ASK, -1, 1)
    assert book.spread() == 1
    for side in (BID, ASK):
        check_reads(book, ref, side)
    n = 0
    while ref.sides[BID] or ref.sides[ASK]:
        side = rng.randrange(2)
        if ref.sides[side]:
            delete_best(book, ref, side)
        check_top(book, ref)
        n += 1
        if n % 300 == 0:
            check_full(book, ref)
    check_full(book, ref)


@pytest.mark.parametrize("limit", [INT64_MAX, INT64_MIN])
@pytest.mark.parametrize("side", [BID, ASK])
def test_walk_to_and_from_an_int64_limit(side: int, limit: int) -> None:
    """Levels laid from 60,000 ticks away up to the limit (steps of 1..3,000, the limit
    and its neighbour included), then the best deleted down to empty with occasional
    new bests (jumps clamped at the limit): the window's base clamps at both ends of
    the key space, whichever way the best moves."""
    rng = random.Random(side * 3 + (limit > 0))
    book, ref = make_book(), Ref()
    toward = 1 if limit == INT64_MAX else -1
    price = limit - toward * 60_000
    step = 0
    while True:
        do_set(book, ref, side, price, rng.randint(1, 1000))
        for _ in range(rng.randint(0, 2)):
            do_set(book, ref, side, price - toward * rng.randint(1, 2500), rng.randint(1, 1000))
        check_top(book, ref)
        step += 1
        if step % 200 == 0:
            check_full(book, ref)
        if price == limit:
            break
        price = limit if abs(limit - price) <= 3000 else price + toward * rng.randint(1, 3000)
    for extra in [limit, limit - toward] + [limit - toward * rng.randrange(2000) for _ in range(200)]:
        do_set(book, ref, side, extra, rng.randint(1, 1000))
    check_full(book, ref)
    check_reads(book, ref, side)
    n = 0
    while ref.sides[side]:
        best = ref.best(side)
        assert best is not None
        r = rng.random()
        if r < 0.9:
            do_set(book, ref, side, best, 0)
        else:
            jump = rng.choice(WINDOW_JUMPS + (1, 256))
            k = key_of(side, best) + jump
            # clamp to the representable range in key space
            target = px(side, k)
            target = max(INT64_MIN, min(INT64_MAX, target))
            do_set(book, ref, side, target, 3)
        check_top(book, ref)
        n += 1
        if n % 250 == 0:
            check_full(book, ref)
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 4. Rolled-back batches.
# ----------------------------------------------------------------------------------


def random_move(rng: random.Random, ref: Ref) -> list[Update]:
    """One piece of a batch: a best moved far up (levels inserted under it), the top
    levels deleted (the best moves down), or existing levels rewritten repeatedly."""
    side = rng.randrange(2)
    best = ref.best(side)
    if best is None:
        return [(side, px(side, -rng.randint(10**5, 10**5 + 100)), 1)]
    kb = key_of(side, best)
    r = rng.random()
    if r < 0.4:
        new = kb + rng.choice(WINDOW_JUMPS + (rng.randint(1, 50_000),))
        out = [(side, px(side, new), rng.randint(1, 100))]
        out += [(side, px(side, rng.randint(kb - 2000, new - 1)), rng.randint(1, 100))
                for _ in range(rng.randint(300, 1500))]
        return out
    if r < 0.7:
        k = rng.randint(1, 500)
        return [(side, p, 0) for p, _ in islice(ref.walk(side), k)]
    out = []
    for _ in range(rng.randint(1, 200)):
        p = random_level(rng, ref, side)
        assert p is not None
        out += [(side, p, rng.randint(1, 9)), (side, p, 0), (side, p, rng.randint(1, 9))][: rng.randint(1, 3)]
    return out


def fresh_book_updates(rng: random.Random, center: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    bids = [(center - 50_000 - d, rng.randint(1, 100)) for d in rng.sample(range(6000), 2000)]
    asks = [(center + 50_000 + d, rng.randint(1, 100)) for d in rng.sample(range(6000), 2000)]
    return bids, asks


@pytest.mark.parametrize("policy", [RAISE, PRUNE])
@pytest.mark.parametrize("seed", [1, 2])
def test_rejected_batches_leave_the_book_byte_identical(policy: int, seed: int) -> None:
    """Batches that move a best far up (hundreds of levels inserted under it), delete
    the top levels of a side (the best moves down), rewrite levels several times, and
    often carry one crossing entry anywhere in the batch. A batch the reference
    rejects must raise and leave bids/asks byte-identical (and version, pruned count);
    one it accepts must leave exactly its contents."""
    rng = random.Random(seed * 10 + policy)
    book, ref = make_book(policy), Ref(policy)
    assert do_snapshot(book, ref, *fresh_book_updates(rng, 0))
    accepted = rejected = 0
    for trial in range(120):
        b, a = ref.best(BID), ref.best(ASK)
        if b is None or a is None or a - b < 3000 or book.bid_count + book.ask_count > 20_000:
            assert do_snapshot(book, ref, *fresh_book_updates(rng, rng.randint(-(10**12), 10**12)))
            b, a = ref.best(BID), ref.best(ASK)
            assert b is not None and a is not None
        updates: list[Update] = []
        for _ in range(rng.randint(1, 3)):
            updates += random_move(rng, ref)
        if rng.random() < 0.7:
            side = rng.randrange(2)
            opp = ref.best(1 - side)
            assert opp is not None
            crossing = (side, px(side, key_of(side, opp) + rng.randint(0, 3000)), 1)
            updates.insert(rng.randint(0, len(updates)), crossing)
        if do_apply(book, ref, updates):
            accepted += 1
            check_full(book, ref)
        else:
            rejected += 1
            assert book._check_invariants()
            if trial % 5 == 0:
                check_full(book, ref)
    check_full(book, ref)
    assert accepted > 10 and rejected > 10


# ----------------------------------------------------------------------------------
# 5. PRUNE across windows.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_prune_across_windows(flip: bool) -> None:
    """A fresh best far through the opposite side (3,000 levels spread over 9,000
    ticks) prunes exactly the levels it crosses or locks: one set at each of many
    distances from a fresh book, a best walking through in steps, and batches (one
    that also writes a crossed opposite level is refused whole). `flip` mirrors prices
    and sides, so asks prune bids."""
    rng = random.Random(int(flip))

    def m(side: int, price: int) -> tuple[int, int]:
        return (1 - side, -price) if flip else (side, price)

    fresh_side = m(BID, 0)[0]

    def setup() -> tuple[OrderBook, Ref]:
        book, ref = make_book(PRUNE), Ref(PRUNE)
        raw = [(BID, p, rng.randint(1, 50)) for p in rng.sample(range(0, 1000), 500)]
        raw += [(ASK, p, rng.randint(1, 50)) for p in rng.sample(range(1000, 10_000), 3000)]
        levels = [(*m(s, p), q) for s, p, q in raw]
        assert do_snapshot(book, ref, [(p, q) for s, p, q in levels if s == BID],
                           [(p, q) for s, p, q in levels if s == ASK])
        return book, ref

    for target in (1000, 1001, 1767, 1768, 2023, 2024, 2025, 3048, 5000, 9999, 10_000, 50_000):
        book, ref = setup()
        stale = ref.sides[1 - fresh_side]
        expected = sum(1 for p in stale if (p >= -target if flip else p <= target))
        before = book.pruned_levels
        assert do_set(book, ref, *m(BID, target), 5)
        assert book.pruned_levels - before == expected == ref.pruned
        check_full(book, ref)
        assert ref.best(fresh_side) == m(BID, target)[1]
    # A best walking through the asks in steps, each step pruning a few.
    book, ref = setup()
    target = 900
    while ref.sides[1 - fresh_side]:
        target += rng.randint(300, 1500)
        assert do_set(book, ref, *m(BID, target), 5)
        for _ in range(rng.randint(0, 5)):
            assert do_set(book, ref, *m(BID, target - rng.randint(1, 2000)), 2)
        check_full(book, ref)
    # Batches: a far fresh best with levels under it and stale levels beyond it.
    book, ref = setup()
    for trial in range(40):
        top = ref.best(fresh_side)
        assert top is not None
        k = key_of(fresh_side, top) + rng.choice(WINDOW_JUMPS + (rng.randint(1, 3000),))
        ups: list[Update] = [(fresh_side, px(fresh_side, k), 3)]
        ups += [(fresh_side, px(fresh_side, k - rng.randint(1, 3000)), 1) for _ in range(200)]
        ups += [(1 - fresh_side, px(fresh_side, k + rng.randint(1, 5000)), 4) for _ in range(50)]
        if trial % 4 == 3:  # and one stale level it crosses: the batch contradicts itself
            ups.insert(rng.randint(0, len(ups)), (1 - fresh_side, px(fresh_side, k - rng.randint(0, 100)), 1))
        ok = do_apply(book, ref, ups)
        assert ok == (trial % 4 != 3)
        check_full(book, ref)


# ----------------------------------------------------------------------------------
# 6. max_depth.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 129, 1000])
def test_max_depth_while_the_best_moves(depth: int) -> None:
    """PRUNE with max_depth: a mid that jumps (window sizes, thousands of ticks), levels
    up to 5,000 ticks from it on both sides, bests deleted (the survivors of earlier
    trims must be the next levels), random levels deleted."""
    rng = random.Random(depth)
    book, ref = make_book(PRUNE, depth), Ref(PRUNE, depth)
    mid = 0
    for op in range(15_000):
        if rng.random() < 0.01:
            mid += rng.choice((-1, 1)) * rng.choice(WINDOW_JUMPS + (rng.randint(3000, 10**5),))
        side = rng.randrange(2)
        r = rng.random()
        if r < 0.25 and ref.sides[side]:
            delete_best(book, ref, side)
        elif r < 0.35 and ref.sides[side]:
            p = random_level(rng, ref, side)
            assert p is not None
            do_set(book, ref, side, p, 0)
        else:
            off = rng.randint(1, 5000) if rng.random() < 0.4 else geometric(rng, 10)
            do_set(book, ref, side, mid - off if side == BID else mid + off, rng.randint(1, 1000))
        check_top(book, ref)
        if op % 500 == 0:
            check_full(book, ref)
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 7. Snapshots and clears.
# ----------------------------------------------------------------------------------


def snapshot_around(rng: random.Random, mid: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    width = rng.choice((300, 1200, 5000, 10**6))
    nb, na = rng.randint(0, min(3000, width)), rng.randint(0, min(3000, width))
    bids = [(mid - 1 - d, 0 if rng.random() < 0.05 else rng.randint(1, 1000)) for d in rng.sample(range(width), nb)]
    asks = [(mid + 1 + d, 0 if rng.random() < 0.05 else rng.randint(1, 1000)) for d in rng.sample(range(width), na)]
    return bids, asks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshots_and_clears_far_apart(seed: int) -> None:
    """Snapshots (unsorted, some zero sizes) around a mid far from the last one, each
    followed by updates near the touch, new bests far above it and deletes of the best;
    every tenth time a clear() and inserts at a very different price instead."""
    rng = random.Random(seed)
    book, ref = make_book(), Ref()
    mid = 0
    for it in range(80):
        mid = rng.choice((
            mid + rng.choice(WINDOW_JUMPS), mid - rng.choice(WINDOW_JUMPS), mid + 10**6, mid - 10**6,
            10**15, -(10**15), 0, INT64_MAX - 10**7, INT64_MIN + 10**7))
        mid = max(INT64_MIN + 10**7, min(INT64_MAX - 10**7, mid))
        if it % 10 == 9:
            book.clear()
            ref.clear()
            check_full(book, ref)
            for _ in range(300):
                side = rng.randrange(2)
                off = geometric(rng, 30)
                do_set(book, ref, side, mid - off if side == BID else mid + off, rng.randint(1, 1000))
                check_top(book, ref)
        else:
            assert do_snapshot(book, ref, *snapshot_around(rng, mid))
        check_full(book, ref)
        for _ in range(150):
            side = rng.randrange(2)
            best = ref.best(side)
            r = rng.random()
            if best is None or r < 0.5:
                off = geometric(rng, 20) - 3
                do_set(book, ref, side, mid - off if side == BID else mid + off,
                       0 if rng.random() < 0.3 else rng.randint(1, 1000))
            elif r < 0.7:
                do_set(book, ref, side, best, 0)
            elif r < 0.85:
                k = key_of(side, best) + rng.choice(WINDOW_JUMPS + (rng.randint(1, 5000),))
                do_set(book, ref, side, px(side, k), 5)  # refused when it crosses
            else:
                k = key_of(side, best) - rng.randint(1000, 10**6)
                do_set(book, ref, side, px(side, k), 6)
            check_top(book, ref)
        check_full(book, ref)
    # A crossed snapshot and one repeating a price are refused whole.
    assert do_snapshot(book, ref, *snapshot_around(rng, 10**9))
    before = book_state(book)
    assert not do_snapshot(book, ref, [(5000, 1), (10, 1)], [(4000, 1), (9000, 1)])
    with pytest.raises(BookError):
        book.apply_snapshot([7, 7], [1, 2], [9], [1])
    assert book_state(book) == before
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 8. Zero-copy views.
# ----------------------------------------------------------------------------------


def views_equal_copies(book: OrderBook, ks: Sequence[int | None], *, may_refuse: bool) -> int:
    """Fresh views equal fresh copies; returns how many were made. With views alive the
    book may refuse one (BufferError); then it must be unchanged."""
    made = 0
    for side in (BID, ASK):
        export: Callable[..., np.ndarray] = book.bids if side == BID else book.asks
        for k in ks:
            before = book_state(book)
            try:
                view = export(k, copy=False)
            except BufferError:
                assert may_refuse, f"view of {k} refused with no view alive"
                assert book_state(book) == before
                continue
            copy = export(k)
            assert view.tobytes() == copy.tobytes(), f"view of {k} differs from a copy"
            assert not view.flags.writeable
            del view
            made += 1
    return made


@pytest.mark.parametrize("seed", [1, 2])
def test_fresh_views_equal_fresh_copies(seed: int) -> None:
    """Views of 0..all levels (spanning the dense top and sparse deep levels) equal
    copies; with views held, the bests move up far, get deleted and deep levels change
    (a change the book refuses must leave it unchanged), and new views still equal
    copies. Nothing is asserted about what an old view shows after a change."""
    rng = random.Random(seed)
    book, ref = make_book(), Ref()
    bids = [(-k, rng.randint(1, 100)) for k in range(0, 1101)]
    bids += [(-d, 1) for d in rng.sample(range(1101, 10**6), 2000)]
    asks = [(10**7 + k, rng.randint(1, 100)) for k in range(0, 1101)]
    asks += [(10**7 + d, 1) for d in rng.sample(range(1101, 10**6), 2000)]
    assert do_snapshot(book, ref, bids, asks)

    def all_ks() -> list[int | None]:
        return [0, 1, 10, 100, 127, 128, 129, 1000, 1023, 1024, 1025, book.bid_count, book.ask_count + 3, None]

    assert views_equal_copies(book, all_ks(), may_refuse=False) == 2 * len(all_ks())
    check_full(book, ref)
    held: list[np.ndarray] = []
    for rnd in range(40):
        for _ in range(3):
            side = rng.randrange(2)
            export = book.bids if side == BID else book.asks
            k = rng.choice([1, 10, 100, 1000, None])
            try:
                held.append(export(k, copy=False))
            except BufferError:
                continue
            assert held[-1].tobytes() == export(k).tobytes()
        for _ in range(30):
            side = rng.randrange(2)
            best = ref.best(side)
            r = rng.random()
            if best is None or r < 0.3:
                k = (key_of(side, best) if best is not None else -10) + rng.choice(WINDOW_JUMPS + (1, 5))
                ups = [(side, px(side, k), 3)] + [(side, px(side, k - rng.randint(1, 1500)), 1) for _ in range(rng.randint(0, 50))]
            elif r < 0.6:
                ups = [(side, p, 0) for p, _ in islice(ref.walk(side), rng.randint(1, 50))]
            else:
                ups = [(side, p, rng.randint(1, 9)) for p in (random_level(rng, ref, side) for _ in range(20)) if p is not None]
            before = book_state(book)
            try:
                book.apply(*batch_arrays(ups))
            except BufferError:
                assert held, "BufferError without a live view"
                assert book_state(book) == before
                continue
            except BookCrossedError:
                assert not ref.apply(ups)
                assert book_state(book) == before
                continue
            assert ref.apply(ups), "engine applied a batch the reference rejected"
            check_top(book, ref)
        check_full(book, ref)
        views_equal_copies(book, [1, 10, 100, 1000, None], may_refuse=bool(held))
        if rnd % 5 == 4:
            held.clear()
            gc.collect()
            assert views_equal_copies(book, all_ks(), may_refuse=False) == 2 * len(all_ks())
            check_full(book, ref)
    held.clear()
    gc.collect()
    check_full(book, ref)


# ----------------------------------------------------------------------------------
# 9. Deep reads across the window and the blocks.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [BID, ASK])
def test_level_fill_cost_and_imbalance_across_window_and_blocks(side: int) -> None:
    """level(), qty_at(), fill_cost(), vwap(), worst_price() and imbalance() over a side
    with a dense top (1,300 ticks with holes) and 2,500 deep levels, as its best moves:
    up by 2,048, down five levels, up by 10**6, and down below the dense run."""
    rng = random.Random(side)
    book, ref = make_book(), Ref()
    other = 1 - side
    ups: list[Update] = [(side, px(side, -k), rng.randint(1, 10**6)) for k in range(1301) if rng.random() < 0.8]
    ups += [(side, px(side, -d), rng.randint(1, 10**6)) for d in rng.sample(range(1301, 10**6), 2500)]
    ups += [(other, px(side, 10**7 + d), rng.randint(1, 1000)) for d in rng.sample(range(5000), 300)]
    assert do_apply(book, ref, ups)
    for step in range(5):
        if step == 1:  # up by 2,048, with levels between
            for k in (2048, 2000, 1500, 1025, 1):
                do_set(book, ref, side, px(side, k), rng.randint(1, 100))
        elif step == 2:  # down five levels
            for _ in range(5):
                delete_best(book, ref, side)
        elif step == 3:  # up by 10**6, with levels at the window's edges under it
            for k in (0, -1, -767, -768, -1024):
                do_set(book, ref, side, px(side, 10**6 + k), 4)
        elif step == 4:  # down below the dense run, in one batch
            assert do_apply(book, ref, [(side, p, 0) for p, _ in ref.walk(side) if key_of(side, p) > -1000])
        check_full(book, ref)
        check_reads(book, ref, side)
        check_reads(book, ref, other)


# ----------------------------------------------------------------------------------
# 10. A long random walk.
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "seed"), [(PRUNE, 101), (RAISE, 202)], ids=["prune", "raise"])
def test_random_walk_with_drifting_mid(policy: int, seed: int) -> None:
    """200,000 operations: a mid on a random walk with occasional jumps (window sizes up
    to 10**6 ticks, after which stale levels on the wrong side are deleted in a batch
    as a venue would), single sets and batches geometric around each side's touch, 30%
    deletes, some deletes of the best; invariants every ~1,000 operations, full
    contents every ~5,000."""
    rng = random.Random(seed)
    book, ref = make_book(policy), Ref(policy)
    mid = 0
    ops = 0
    next_check, next_full = 1000, 5000
    rejected = 0

    def touch_update(side: int, inside: float) -> Update:
        r = rng.random()
        if r < inside:
            off = rng.randint(-2, 0)  # inside the spread: may cross
        elif r < 0.05:
            off = rng.randint(100, 5000)  # deep
        else:
            off = geometric(rng, 15)
        qty = 0 if rng.random() < 0.3 else rng.randint(1, 10**6)
        return (side, mid - off if side == BID else mid + off, qty)

    while ops < 200_000:
        r = rng.random()
        jumped = r < 0.002
        if jumped:
            mid += rng.choice((-1, 1)) * rng.choice(WINDOW_JUMPS + (rng.randint(3000, 10**6),))
        elif r < 0.3:
            mid += rng.randint(-3, 3)
        b, a = ref.best(BID), ref.best(ASK)
        wrong_side = (b is not None and b >= mid) or (a is not None and a <= mid)
        if wrong_side and (policy == RAISE or (jumped and rng.random() < 0.5)):
            # The venue deletes the levels the mid moved past (PRUNE would drop them).
            stale = [(BID, p, 0) for p in ref.sides[BID].irange(minimum=mid)]
            stale += [(ASK, p, 0) for p in ref.sides[ASK].irange(maximum=mid)]
            if jumped:
                stale += [(BID, mid - geometric(rng, 5), rng.randint(1, 100)) for _ in range(20)]
                stale += [(ASK, mid + geometric(rng, 5), rng.randint(1, 100)) for _ in range(20)]
            rng.shuffle(stale)
            rejected += not do_apply(book, ref, stale)
            ops += len(stale)
        r = rng.random()
        if r < 0.08:
            updates = [touch_update(rng.randrange(2), 0.003) for _ in range(rng.randint(1, 64))]
            rejected += not do_apply(book, ref, updates)
            ops += len(updates)
        elif r < 0.1:
            side = rng.randrange(2)
            if ref.sides[side]:
                delete_best(book, ref, side)
            ops += 1
        else:
            rejected += not do_set(book, ref, *touch_update(rng.randrange(2), 0.02))
            ops += 1
        if ops >= next_check:
            next_check += 1000
            assert book._check_invariants()
            check_top(book, ref)
        if ops >= next_full:
            next_full += 5000
            check_full(book, ref)
    check_full(book, ref)
    for side in (BID, ASK):
        check_reads(book, ref, side)
    assert rejected > 0
    assert ref.pruned > 0 or policy == RAISE


# ----------------------------------------------------------------------------------
# Found while writing these: spread() computes best ask - best bid in int64.
# ----------------------------------------------------------------------------------


def test_spread_of_a_book_spanning_the_int64_range() -> None:
    book = make_book(ALLOW)
    book.set(BID, INT64_MIN, 1)
    book.set(ASK, INT64_MAX, 1)
    assert book.spread() == INT64_MAX - INT64_MIN
    book.clear()
    book.set(BID, INT64_MAX, 1)
    book.set(ASK, INT64_MIN, 1)
    assert book.spread() == INT64_MIN - INT64_MAX
    assert math.isfinite(book.mid() or 0.0)
