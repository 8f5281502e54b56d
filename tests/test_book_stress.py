"""Seeded stress test: a million random book operations against a sortedcontainers
reference, with invariants checked along the way.

Operations: single sets and deletes near the touch, far from it and at negative
prices; whole-or-nothing batches (some crossing, so they must roll back); snapshots;
clears. Every rejected operation must leave the book exactly as it was.
"""
from __future__ import annotations

import numpy as np
import pytest
from sortedcontainers import SortedDict

from engine import BookCrossedError, CrossPolicy, Instrument, OrderBook, Side


class ReferenceBook:
    """The simplest correct L2 book: two SortedDicts, crossing checked on the result."""

    def __init__(self, prune: bool) -> None:
        self.sides = [SortedDict(), SortedDict()]
        self.prune = prune

    def best(self, side: int) -> int | None:
        d = self.sides[side]
        if not d:
            return None
        return d.peekitem(-1)[0] if side == 0 else d.peekitem(0)[0]

    def crossed(self) -> bool:
        b, a = self.best(0), self.best(1)
        return b is not None and a is not None and b >= a

    def apply(self, updates: list[tuple[int, int, int]]) -> bool:
        """Apply a batch; returns False (and changes nothing) if it must be rejected."""
        saved = [SortedDict(self.sides[0]), SortedDict(self.sides[1])]
        for side, price, qty in updates:
            if qty == 0:
                self.sides[side].pop(price, None)
            else:
                self.sides[side][price] = qty
        if not self.crossed():
            return True
        if self.prune:
            fresh = [False, False]
            for side, price, qty in updates:
                if price == self.best(side):
                    fresh[side] = True
            if fresh[0] != fresh[1]:
                fresh_side = 0 if fresh[0] else 1
                top = self.best(fresh_side)
                stale = self.sides[1 - fresh_side]
                crosses = (lambda p: p <= top) if fresh_side == 0 else (lambda p: p >= top)
                if any(s == 1 - fresh_side and crosses(p) and p in stale for s, p, _ in updates):
                    self.sides = saved  # the batch crosses itself
                    return False
                for p in list(stale.keys()):
                    if crosses(p):
                        del stale[p]
                return True
        self.sides = saved
        return False

    def levels(self, side: int) -> list[tuple[int, int]]:
        items = list(self.sides[side].items())
        return items[::-1] if side == 0 else items


def as_list(arr: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(arr["price"].tolist(), arr["qty"].tolist()))


@pytest.mark.parametrize("policy", [CrossPolicy.RAISE, CrossPolicy.PRUNE])
def test_million_random_operations(policy: CrossPolicy) -> None:
    rng = np.random.default_rng(20240808 + int(policy))
    inst = Instrument("STRESS", tick_size="0.5", lot_size="1")
    book = OrderBook(inst, cross_policy=policy)
    ref = ReferenceBook(prune=policy == CrossPolicy.PRUNE)
    mid = 0
    ops = 0
    rejected = 0
    target = 500_000  # per policy: 1,000,000 operations over the two runs
    while ops < target:
        kind = rng.random()
        if kind < 0.0005:
            # A snapshot around a new mid, far away or negative.
            mid = int(rng.choice([0, -(10**12), 10**15, int(rng.integers(-1000, 1000))]))
            nb, na = int(rng.integers(0, 300)), int(rng.integers(0, 300))
            bp = mid - 1 - rng.choice(5000, nb, replace=False)
            ap = mid + 1 + rng.choice(5000, na, replace=False)
            bq = rng.integers(1, 1000, nb)
            aq = rng.integers(1, 1000, na)
            book.apply_snapshot(bp, bq, ap, aq)
            ref.sides = [SortedDict(zip(bp.tolist(), bq.tolist())), SortedDict(zip(ap.tolist(), aq.tolist()))]
            ops += 1
        elif kind < 0.0006:
            book.clear()
            ref.sides = [SortedDict(), SortedDict()]
            ops += 1
        elif kind < 0.05:
            # A batch of up to 64 updates near the touch; some cross.
            n = int(rng.integers(1, 64))
            sides = rng.integers(0, 2, n)
            offs = rng.geometric(0.05, n) - 3  # mostly near the touch, some inside the spread
            prices = np.where(sides == 0, mid - offs, mid + offs)
            qtys = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 1000, n))
            updates = list(zip(sides.tolist(), prices.tolist(), qtys.tolist()))
            ok = ref.apply(updates)
            try:
                book.apply(sides, prices, qtys)
                assert ok, "engine applied a batch the reference rejected"
            except BookCrossedError:
                assert not ok, "engine rejected a batch the reference applied"
                rejected += 1
            ops += n
        else:
            side = int(rng.integers(0, 2))
            if rng.random() < 0.02:
                off = int(rng.integers(-(10**6), 10**6))  # far from the touch
            else:
                off = int(rng.geometric(0.08)) - 2
            price = mid - off if side == 0 else mid + off
            qty = 0 if rng.random() < 0.35 else int(rng.integers(1, 10**6))
            ok = ref.apply([(side, price, qty)])
            try:
                book.set(Side(side), price, qty)
                assert ok
            except BookCrossedError:
                assert not ok
                rejected += 1
            ops += 1
        if ops % 2000 < 64:
            book._check_invariants()
            assert book.bid_count == len(ref.sides[0]) and book.ask_count == len(ref.sides[1])
            bb, ba = ref.best(0), ref.best(1)
            assert book.bbo()[0] == bb and book.bbo()[2] == ba
        if ops % 50_000 < 64:
            assert as_list(book.bids()) == ref.levels(0)
            assert as_list(book.asks()) == ref.levels(1)
    assert as_list(book.bids()) == ref.levels(0)
    assert as_list(book.asks()) == ref.levels(1)
    assert rejected > 0 or policy == CrossPolicy.PRUNE
