"""Unit tests of the L2 order book: operations, exports, analytics, policies, bad input."""
from __future__ import annotations

import ctypes
import gc

import numpy as np
import pytest

from engine import (
    LEVEL_DTYPE,
    BookCrossedError,
    BookError,
    CrossPolicy,
    Instrument,
    OrderBook,
    Side,
)

BID, ASK = Side.BID, Side.ASK


@pytest.fixture
def inst() -> Instrument:
    return Instrument("BTCUSDT", tick_size="0.01", lot_size="0.00001")


@pytest.fixture
def book(inst: Instrument) -> OrderBook:
    b = OrderBook(inst)
    for price, qty in [(100, 5), (99, 3), (97, 1)]:
        b.set(BID, price, qty)
    for price, qty in [(101, 2), (103, 7), (104, 1)]:
        b.set(ASK, price, qty)
    return b


def state(b: OrderBook) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    return (
        [tuple(map(int, r)) for r in b.bids()],
        [tuple(map(int, r)) for r in b.asks()],
        b.last_update_id,
        b.event_ts_ns,
    )


def test_level_dtype_mirrors_c_struct() -> None:
    class Level(ctypes.Structure):
        _fields_ = [("price_ticks", ctypes.c_int64), ("qty_lots", ctypes.c_int64)]

    assert LEVEL_DTYPE.itemsize == ctypes.sizeof(Level) == 16
    assert LEVEL_DTYPE.names == ("price", "qty")
    assert LEVEL_DTYPE.fields["qty"][1] == Level.qty_lots.offset


def test_set_update_delete_and_reads(book: OrderBook) -> None:
    assert book.best_bid() == (100, 5)
    assert book.best_ask() == (101, 2)
    assert book.bbo() == (100, 5, 101, 2)
    book.set(BID, 100, 9)
    assert book.qty_at(BID, 100) == 9
    book.set(BID, 100, 0)
    assert book.best_bid() == (99, 3)
    assert book.qty_at(BID, 100) == 0
    book.set(BID, 50, 0)  # deleting an absent level is a no-op
    assert book.bid_count == 2 and book.ask_count == 3 and len(book) == 5
    assert book.level(ASK, 0) == (101, 2)
    assert book.level(ASK, 2) == (104, 1)
    assert book.level_count(ASK) == 3
    with pytest.raises(IndexError):
        book.level(ASK, 3)
    book._check_invariants()


def test_empty_book_reads(inst: Instrument) -> None:
    b = OrderBook(inst)
    assert b.best_bid() is None and b.best_ask() is None
    assert b.bbo() == (None, None, None, None)
    assert b.mid() is None and b.spread() is None and b.microprice() is None
    assert b.imbalance() is None
    assert b.bids().shape == (0,) and b.asks(copy=False).shape == (0,)
    assert b.fill_cost(BID, 5) == (0, 0, None)


def test_exports_best_first(book: OrderBook) -> None:
    bids = book.bids()
    assert bids.dtype == LEVEL_DTYPE
    assert bids["price"].tolist() == [100, 99, 97]
    assert book.asks(2)["price"].tolist() == [101, 103]
    assert book.asks(0).shape == (0,)
    assert book.asks(100)["qty"].tolist() == [2, 7, 1]
    with pytest.raises(ValueError):
        book.bids(-1)


def test_zero_copy_view_is_read_only_and_never_blocks_updates(book: OrderBook) -> None:
    view = book.bids(copy=False)
    assert not view.flags.writeable
    assert _levels(view) == [(100, 5), (99, 3), (97, 1)]
    assert book.live_views == 1
    assert book.bids(copy=False).__array_interface__["data"] == view.__array_interface__["data"]  # reused
    # Updates go ahead while the view is alive, near the touch and far below it.
    book.set(BID, 100, 8)
    for p in range(1, 1000):
        book.set(BID, p - 2000, 1)
    book._check_invariants()
    assert _levels(view) == [(100, 5), (99, 3), (97, 1)]  # as they were when it was made
    again = book.bids(3, copy=False)  # refills the same buffer (it is big enough)
    assert _levels(again) == [(100, 8), (99, 3), (97, 1)]
    # A view that needs a bigger buffer is refused while views are alive...
    with pytest.raises(BufferError, match="bigger export buffer"):
        book.bids(copy=False)
    del view, again
    gc.collect()
    assert book.live_views == 0
    # ...and allowed once they are gone.
    assert _levels(book.bids(copy=False)) == _levels(book.bids())
    book._check_invariants()


def test_view_outlives_nothing(inst: Instrument) -> None:
    b = OrderBook(inst)
    b.set(ASK, 10, 1)
    view = b.asks(copy=False)
    del b
    gc.collect()
    # The view keeps the book alive: reading is safe.
    assert view["price"].tolist() == [10]


def test_analytics(book: OrderBook) -> None:
    assert book.spread() == 1
    assert book.mid() == 100.5
    assert book.microprice() == pytest.approx((100 * 2 + 101 * 5) / 7)
    assert book.imbalance(1) == pytest.approx((5 - 2) / 7)
    assert book.imbalance(3) == pytest.approx((9 - 10) / 19)
    # Buying 5 lots walks 2 @ 101 and 3 @ 103.
    assert book.fill_cost(BID, 5) == (5, 2 * 101 + 3 * 103, 103)
    assert book.vwap(BID, 5) == pytest.approx((2 * 101 + 3 * 103) / 5)
    assert book.worst_price(ASK, 8) == 99
    assert book.vwap(BID, 11) is None  # only 10 lots of asks
    assert book.worst_price(BID, 11) is None


def test_fill_cost_notional_is_exact_beyond_int64(inst: Instrument) -> None:
    b = OrderBook(inst)
    big = 2**62
    b.set(ASK, big, 4)
    b.set(ASK, big + 1, 4)
    assert b.fill_cost(BID, 8) == (8, 4 * big + 4 * (big + 1), big + 1)


def test_cross_policy_raise_leaves_book_unchanged(book: OrderBook) -> None:
    before = state(book)
    with pytest.raises(BookCrossedError):
        book.set(BID, 101, 1)  # locked counts as crossed
    with pytest.raises(BookCrossedError):
        book.apply(np.array([0, 1]), np.array([102, 150]), np.array([1, 1]))
    assert state(book) == before
    book._check_invariants()


def test_cross_policy_prune_removes_stale_opposite(inst: Instrument) -> None:
    b = OrderBook(inst, cross_policy=CrossPolicy.PRUNE)
    b.apply_snapshot([100, 99], [1, 1], [101, 102, 105], [1, 1, 1])
    b.set(BID, 102, 4)  # asks 101 and 102 are stale
    assert b.asks()["price"].tolist() == [105]
    assert b.best_bid() == (102, 4)
    assert b.pruned_levels == 2
    # A batch that crosses: the side it wrote is fresh.
    b.apply(np.array([1]), np.array([100]), np.array([3]))
    assert b.bids()["price"].tolist() == [99]
    assert b.best_ask() == (100, 3)
    b._check_invariants()


def test_cross_policy_prune_rejects_self_crossing_batch(inst: Instrument) -> None:
    b = OrderBook(inst, cross_policy=CrossPolicy.PRUNE)
    b.apply_snapshot([100], [1], [101], [1])
    before = state(b)
    with pytest.raises(BookCrossedError):
        b.apply(np.array([0, 1]), np.array([110, 105]), np.array([1, 1]))
    assert state(b) == before


def test_cross_policy_allow(inst: Instrument) -> None:
    b = OrderBook(inst, cross_policy=CrossPolicy.ALLOW)
    b.set(BID, 100, 1)
    b.set(ASK, 100, 1)
    assert b.is_crossed() and b.is_locked()
    b.set(ASK, 99, 1)
    assert b.is_crossed() and not b.is_locked()


def test_batch_within_frame_may_pass_through_crossed_state(inst: Instrument) -> None:
    """A frame that first adds a bid above the old ask and then removes that ask is
    fine: crossing is judged on the frame's result, as venues intend."""
    b = OrderBook(inst)
    b.apply_snapshot([100], [1], [101, 102], [1, 1])
    b.apply(np.array([0, 1]), np.array([101, 101]), np.array([5, 0]))
    assert b.bbo() == (101, 5, 102, 1)


def test_batch_later_entry_wins(book: OrderBook) -> None:
    book.apply(np.array([0, 0, 0]), np.array([98, 98, 98]), np.array([1, 0, 6]), update_id=42, ts_ns=7)
    assert book.qty_at(BID, 98) == 6
    assert book.last_update_id == 42 and book.event_ts_ns == 7


def test_snapshot_replaces_and_sorts(inst: Instrument) -> None:
    b = OrderBook(inst)
    b.set(BID, 5, 5)
    b.apply_snapshot([97, 100, 99], [1, 2, 0], [103, 101], [1, 1], update_id=9)
    assert b.bids()["price"].tolist() == [100, 97]  # zero size skipped
    assert b.asks()["price"].tolist() == [101, 103]
    assert b.last_update_id == 9
    b._check_invariants()


@pytest.mark.parametrize(
    "args, match",
    [
        (([100, 100], [1, 1], [101], [1]), "repeats a bid price"),
        (([100], [-1], [101], [1]), "negative size"),
        (([100, 99], [1], [101], [1]), "differ in length"),
        (([100.5], [1], [101], [1]), "integer array"),
    ],
)
def test_bad_snapshot_changes_nothing(book: OrderBook, args: tuple[list[float], ...], match: str) -> None:
    before = state(book)
    with pytest.raises(BookError, match=match):
        book.apply_snapshot(*args)
    assert state(book) == before


def test_crossed_snapshot_rejected(book: OrderBook) -> None:
    before = state(book)
    with pytest.raises(BookCrossedError):
        book.apply_snapshot([105], [1], [104], [1])
    assert state(book) == before


@pytest.mark.parametrize(
    "sides, prices, qtys, match",
    [
        (np.array([0, 2]), np.array([1, 2]), np.array([1, 1]), r"sides\[1\] = 2"),
        (np.array([0, 0]), np.array([1, 2]), np.array([1, -1]), r"qtys\[1\] = -1"),
        (np.array([0, 0]), np.array([1, 2]), np.array([1]), "same length"),
        (np.array([0]), np.array([1.5]), np.array([1]), "integer array"),
        (np.array([0]), np.array([1], dtype=np.uint64), np.array([1]), "without loss"),
        (np.array([0]), np.array([[1]]), np.array([1]), "1-d"),
        (np.array([0.0]), np.array([1]), np.array([1]), "integer array"),
    ],
)
def test_bad_batch_changes_nothing(book: OrderBook, sides: object, prices: object, qtys: object, match: str) -> None:
    before = state(book)
    with pytest.raises(BookError, match=match):
        book.apply(sides, prices, qtys)
    assert state(book) == before


def test_bad_single_set_changes_nothing(book: OrderBook) -> None:
    before = state(book)
    with pytest.raises(BookError, match="negative size"):
        book.set(BID, 90, -1)
    with pytest.raises(BookError, match="side 3"):
        book.set(3, 90, 1)
    with pytest.raises(OverflowError):
        book.set(BID, 2**63, 1)
    with pytest.raises(TypeError):
        book.set(BID, "100", 1)  # type: ignore[arg-type]
    assert state(book) == before


def test_narrower_integer_dtypes_accepted(book: OrderBook) -> None:
    book.apply(np.array([0], np.int64), np.array([98], np.int32), np.array([4], np.uint16))
    assert book.qty_at(BID, 98) == 4


def test_extreme_and_negative_prices(inst: Instrument) -> None:
    b = OrderBook(inst)
    lo, hi = -(2**63), 2**63 - 1
    b.set(BID, lo, 1)
    b.set(BID, -5, 2)
    b.set(ASK, hi, 3)
    b.set(ASK, -4, 1)
    assert b.bids()["price"].tolist() == [-5, lo]
    assert b.asks()["price"].tolist() == [-4, hi]
    assert b.spread() == 1
    b._check_invariants()


def test_max_depth_keeps_the_best(inst: Instrument) -> None:
    b = OrderBook(inst, max_depth=3)
    for p in range(1, 11):
        b.set(BID, p, p)
        b.set(ASK, 100 + p, p)
    assert b.bids()["price"].tolist() == [10, 9, 8]
    assert b.asks()["price"].tolist() == [101, 102, 103]
    b._check_invariants()


def test_clear_keeps_memory(book: OrderBook) -> None:
    mem = book.memory_bytes()
    book.clear()
    assert len(book) == 0 and book.best_bid() is None
    assert book.memory_bytes() == mem


def test_version_counts_changes(book: OrderBook) -> None:
    v = book.version
    book.set(BID, 1, 1)
    book.apply(np.array([0]), np.array([2]), np.array([1]))
    assert book.version == v + 2
    with pytest.raises(BookError):
        book.set(BID, 1, -1)
    assert book.version == v + 2


def test_constructor_validation(inst: Instrument) -> None:
    with pytest.raises(BookError):
        OrderBook(inst, cross_policy=7)
    with pytest.raises(BookError):
        OrderBook(inst, max_depth=-1)
    with pytest.raises(TypeError):
        OrderBook(None)  # type: ignore[arg-type]


def test_large_book_stays_consistent(inst: Instrument) -> None:
    """Tens of thousands of levels a side, inserted in random order."""
    rng = np.random.default_rng(7)
    b = OrderBook(inst)
    prices = rng.permutation(40_000) + 1
    b.apply(np.zeros(40_000, np.int8), prices, np.ones(40_000, np.int64))
    b.apply(np.ones(40_000, np.int8), prices + 100_000, np.ones(40_000, np.int64))
    assert b.bid_count == b.ask_count == 40_000
    assert b.bbo() == (40_000, 1, 100_001, 1)
    b._check_invariants()


# --- layout: window and far blocks, deep books, structure changes, views -------------


def _ref_levels(d: dict[int, int], side: int) -> list[tuple[int, int]]:
    items = sorted(d.items(), reverse=side == BID)
    return items


def _levels(arr: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(arr["price"].tolist(), arr["qty"].tolist()))


def _ref_set(ref: list[dict[int, int]], side: int, price: int, qty: int) -> None:
    if qty:
        ref[side][price] = qty
    else:
        ref[side].pop(price, None)


def test_deep_random_changes_match_a_reference(inst: Instrument) -> None:
    """Inserts and deletes at every depth of books of ~20,000 levels a side: splits,
    merges and borrowing between blocks, checked against a dict after every batch."""
    rng = np.random.default_rng(11)
    b = OrderBook(inst)
    ref: list[dict[int, int]] = [{}, {}]
    mid = 1_000_000
    for round_ in range(40):
        n = 4000
        sides = rng.integers(0, 2, n).astype(np.int8)
        # Rounds alternate between growing, thinning and churning at uniform depth.
        p_delete = (0.05, 0.7, 0.3, 0.5)[round_ % 4]
        dist = rng.integers(1, 40_000, n)
        prices = np.where(sides == 0, mid - dist, mid + dist)
        qtys = np.where(rng.random(n) < p_delete, 0, rng.integers(1, 1000, n))
        b.apply(sides, prices, qtys)
        for s, p, q in zip(sides.tolist(), prices.tolist(), qtys.tolist()):
            _ref_set(ref, s, p, q)
        b._check_invariants()
        assert b.bid_count == len(ref[0]) and b.ask_count == len(ref[1])
        if round_ % 8 == 7:
            assert _levels(b.bids()) == _ref_levels(ref[0], BID)
            assert _levels(b.asks()) == _ref_levels(ref[1], ASK)
            k = int(rng.integers(0, b.bid_count))
            assert b.level(BID, k) == _ref_levels(ref[0], BID)[k]
    # Single sets at every depth, and reads through the block index.
    for _ in range(3000):
        s = int(rng.integers(0, 2))
        p = mid - int(rng.integers(1, 40_000)) if s == 0 else mid + int(rng.integers(1, 40_000))
        q = 0 if rng.random() < 0.5 else int(rng.integers(1, 1000))
        b.set(s, p, q)
        _ref_set(ref, s, p, q)
        assert b.qty_at(s, p) == q
    b._check_invariants()
    assert _levels(b.bids()) == _ref_levels(ref[0], BID)
    assert _levels(b.asks()) == _ref_levels(ref[1], ASK)
    top = _ref_levels(ref[1], ASK)
    assert b.fill_cost(BID, sum(q for _, q in top[:300])) == (
        sum(q for _, q in top[:300]), sum(p * q for p, q in top[:300]), top[299][0])
    # Thin the book to nothing: every block is released.
    b.apply(np.zeros(len(ref[0]), np.int8), np.array(list(ref[0]), np.int64), np.zeros(len(ref[0]), np.int64))
    assert b.bid_count == 0 and b.best_bid() is None
    b._check_invariants()


def test_memory_bytes_per_level_is_bounded(inst: Instrument) -> None:
    b = OrderBook(inst)
    n = 20_000
    b.apply_snapshot(np.arange(n, 0, -1), np.ones(n, np.int64), np.arange(n + 1, 2 * n + 1), np.ones(n, np.int64))
    # 16-byte levels in blocks three quarters full (~21.4 bytes), plus index and journal.
    assert b.memory_bytes() / len(b) < 26
    held = b.memory_bytes()
    # Deleted levels' blocks are reused: thinning and refilling takes no new memory.
    for p in range(1, n - 100):
        b.set(BID, p, 0)
    b._check_invariants()
    for p in range(1, n - 100):
        b.set(BID, p, 2)
    b._check_invariants()
    assert b.memory_bytes() == held


def test_zero_copy_views_of_any_size(inst: Instrument) -> None:
    b = OrderBook(inst)
    n = 3000
    b.apply_snapshot(np.arange(n, 0, -1), np.arange(1, n + 1), [n + 1], [1])
    for k in (1, 10, 100, 200, 1000, n):
        view = b.bids(k, copy=False)
        assert _levels(view) == _levels(b.bids(k))
        assert not view.flags.writeable
        b._check_invariants()
        del view
    assert b.live_views == 0
    b.set(BID, 5, 0)
    b.set(BID, 5, 7)
    b._check_invariants()
    assert b.level(BID, n - 5) == (5, 7)


def test_views_alive_refuse_only_a_bigger_export_buffer(inst: Instrument) -> None:
    b = OrderBook(inst)
    n = 2000
    b.apply_snapshot(np.arange(n, 0, -1) * 2, np.ones(n, np.int64), [10 * n], [1])
    view = b.bids(10, copy=False)
    assert _levels(view)[0] == (2 * n, 1)
    assert _levels(b.bids(5, copy=False)) == _levels(view)[:5]  # smaller: same buffer
    with pytest.raises(BufferError, match="bigger export buffer"):
        b.bids(500, copy=False)
    assert _levels(b.asks(1, copy=False)) == [(10 * n, 1)]  # the other side has its own buffer
    # Updates that need new far blocks, batches and snapshots all go ahead.
    gaps = np.arange(1, 2 * n, 2)
    b.apply(np.zeros(len(gaps), np.int8), gaps, np.ones(len(gaps), np.int64))
    assert b.bid_count == 2 * n
    b._check_invariants()
    b.apply_snapshot(np.arange(3 * n, 0, -1) * 2, np.ones(3 * n, np.int64), [20 * n], [1])
    assert b.bid_count == 3 * n
    b._check_invariants()
    assert len(view) == 10  # still readable: the buffer is never freed under it
    del view
    gc.collect()
    assert b.live_views == 0
    assert _levels(b.bids(500, copy=False)) == _levels(b.bids(500))


def test_export_buffers_outlive_clear_and_are_freed_with_the_book(inst: Instrument) -> None:
    """A view keeps its buffer (and the book) alive across clear and snapshots; the
    buffer is counted in memory_bytes and reused, not reallocated, for smaller views."""
    b = OrderBook(inst)
    n = 1000
    b.apply_snapshot(np.arange(n, 0, -1), np.arange(1, n + 1), [n + 1], [1])
    before = b.memory_bytes()
    view = b.bids(n, copy=False)
    assert b.memory_bytes() == before + n * LEVEL_DTYPE.itemsize
    expected = _levels(view)
    assert expected == _levels(b.bids())
    b.clear()
    b.apply_snapshot([5, 4], [1, 1], [6], [1])
    b._check_invariants()
    assert _levels(view) == expected  # not refilled: no export since the change
    small = b.bids(copy=False)
    assert _levels(small) == [(5, 1), (4, 1)]
    del view, small
    gc.collect()
    assert b.live_views == 0
    b._check_invariants()


def test_max_depth_and_prune_across_blocks(inst: Instrument) -> None:
    rng = np.random.default_rng(3)
    b = OrderBook(inst, max_depth=300)
    prices = rng.permutation(5000) + 1
    b.apply(np.zeros(5000, np.int8), prices, np.ones(5000, np.int64))
    assert b.bids()["price"].tolist() == list(range(5000, 4700, -1))
    b._check_invariants()
    p = OrderBook(inst, cross_policy=CrossPolicy.PRUNE)
    p.apply_snapshot([1], [1], np.arange(2, 3002), np.ones(3000, np.int64))
    p.set(BID, 2500, 1)  # crosses 2,499 asks spread over many blocks
    assert p.pruned_levels == 2499 and p.ask_count == 501
    assert p.best_ask() == (2501, 1)
    p._check_invariants()


def test_far_blocks_stay_full_in_a_rising_market(inst: Instrument) -> None:
    """Each move of the window up hands a few levels to the far blocks; they fill the
    top block's room before taking a new block, so a trend leaves no trail of small
    blocks (memory per level, and level(i), stay as for a snapshot-loaded book)."""
    b = OrderBook(inst, window_ticks=1024)
    n = 20_000
    for i in range(n):
        b.set(BID, i * 100, 1)  # a rising best, levels 100 ticks apart
    b._check_invariants()
    assert b.window_moves > n // 10
    assert b.memory_bytes() / len(b) < 26
    s = OrderBook(inst, window_ticks=1024)
    s.apply_snapshot(np.arange(n - 1, -1, -1) * 100, np.ones(n, np.int64), [], [])
    assert _levels(b.bids()) == _levels(s.bids())
    assert b.level(BID, n - 1) == s.level(BID, n - 1) == (0, 1)


def test_a_flickering_best_rarely_moves_the_window(inst: Instrument) -> None:
    """A best that comes and goes 700 ticks above the rest of a 1,024-tick window: the
    first delete would leave the best in the window's bottom eighth, but the window
    moves down only after a quarter-window of writes, so the flicker stays cheap."""
    b = OrderBook(inst, window_ticks=1024)
    b.apply_snapshot(np.arange(10_000, 9_000, -1), np.ones(1000, np.int64), [20_000], [1])
    b.set(BID, 10_700, 5)  # moves the window up: 10,000 is now 700 ticks below the best
    moves = b.window_moves
    for _ in range(1000):
        b.set(BID, 10_700, 0)
        b.set(BID, 10_700, 5)
        b.set(BID, 9_990, 2)  # activity near the rest of the book
    assert b.window_moves - moves <= 2 * (3000 // 256) + 2
    b._check_invariants()
    assert b.best_bid() == (10_700, 5) and b.qty_at(BID, 9_990) == 2


def test_window_ticks(inst: Instrument) -> None:
    assert OrderBook(inst).window_ticks == 4096
    for bad in (0, 32, 100, 3000, 1 << 21):
        with pytest.raises(BookError, match="window_ticks"):
            OrderBook(inst, window_ticks=bad)
    small, big = OrderBook(inst, window_ticks=64), OrderBook(inst, window_ticks=1 << 16)
    assert big.memory_bytes() - small.memory_bytes() == 2 * ((1 << 16) - 64) * (8 + 1 / 8)
    b = OrderBook(inst)
    b.set(BID, 5, 1)
    with pytest.raises(BookError, match="empty"):
        b.__init__(inst, window_ticks=1024)
    assert b.window_ticks == 4096 and b.best_bid() == (5, 1)
    b.clear()
    b.__init__(inst, window_ticks=1024)
    assert b.window_ticks == 1024


@pytest.mark.parametrize("window_ticks", [64, 128, 1 << 16])
def test_window_sizes_against_a_dict(inst: Instrument, window_ticks: int) -> None:
    """Random changes around a drifting touch, for the smallest windows (which move all
    the time) and a wide one, against a dict; invariants along the way."""
    rng = np.random.default_rng(window_ticks)
    b = OrderBook(inst, window_ticks=window_ticks, cross_policy=CrossPolicy.ALLOW)
    ref: list[dict[int, int]] = [{}, {}]
    mid = 0
    for step in range(20_000):
        mid += int(rng.integers(-3, 4)) * (50 if rng.random() < 0.01 else 1)
        side = int(rng.integers(0, 2))
        dist = int(rng.geometric(0.02))
        price = mid - dist if side == BID else mid + dist
        qty = 0 if rng.random() < 0.35 else int(rng.integers(1, 50))
        b.set(side, price, qty)
        _ref_set(ref, side, price, qty)
        if step % 2000 == 0:
            b._check_invariants()
            assert _levels(b.bids()) == _ref_levels(ref[0], BID)
            assert _levels(b.asks()) == _ref_levels(ref[1], ASK)
    b._check_invariants()
    assert _levels(b.bids()) == _ref_levels(ref[0], BID)
    assert _levels(b.asks()) == _ref_levels(ref[1], ASK)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_structure_changes_with_views(inst: Instrument, seed: int) -> None:
    """Random sets at every depth, batches, snapshots, clears and views of any size,
    sometimes held across changes; invariants after every step, contents against a
    dict. A refused export (BufferError: a bigger buffer needed while a view of that
    side is alive) must leave the book as it was."""
    rng = np.random.default_rng(seed)
    b = OrderBook(inst)
    ref: list[dict[int, int]] = [{}, {}]
    held: list[np.ndarray] = []
    refused = 0
    for step in range(6000):
        r = rng.random()
        side = int(rng.integers(0, 2))
        depth = int(rng.integers(1, 3000)) if rng.random() < 0.5 else int(rng.geometric(0.05))
        price = 5000 - depth if side == 0 else 5000 + depth
        before = (b.bids().tobytes(), b.asks().tobytes())
        try:
            if r < 0.75:
                qty = 0 if rng.random() < 0.4 else int(rng.integers(1, 100))
                b.set(side, price, qty)
                _ref_set(ref, side, price, qty)
            elif r < 0.85:
                k = int(rng.integers(1, 400))
                sides = np.full(k, side, np.int8)
                d = rng.integers(1, 3000, k)
                ps = 5000 - d if side == 0 else 5000 + d
                qs = np.where(rng.random(k) < 0.4, 0, rng.integers(1, 100, k))
                b.apply(sides, ps, qs)
                for p, q in zip(ps.tolist(), qs.tolist()):
                    _ref_set(ref, side, p, q)
            elif r < 0.95:
                k = int(rng.choice([1, 10, 100, 129, 300, 1000, 5000]))
                view = (b.bids if side == 0 else b.asks)(k, copy=False)
                assert _levels(view) == _ref_levels(ref[side], side)[:k]
                if rng.random() < 0.3:
                    held.append(view)
                elif k >= 300 and rng.random() < 0.5:
                    # Delete most of the exported levels from the touch down: the window
                    # empties and moves down, taking levels back from the far blocks.
                    top = view["price"][: k * 4 // 5].copy()
                    del view
                    b.apply(np.full(len(top), side, np.int8), top, np.zeros(len(top), np.int64))
                    for p in top.tolist():
                        ref[side].pop(p, None)
                view = None
            elif r < 0.97:
                held.clear()
                gc.collect()
            elif r < 0.99:
                nb, na = int(rng.integers(0, 2500)), int(rng.integers(0, 2500))
                bp = 4999 - rng.choice(3000, nb, replace=False)
                ap = 5001 + rng.choice(3000, na, replace=False)
                bq, aq = rng.integers(1, 100, nb), rng.integers(1, 100, na)
                b.apply_snapshot(bp, bq, ap, aq)
                ref = [dict(zip(bp.tolist(), bq.tolist())), dict(zip(ap.tolist(), aq.tolist()))]
            else:
                b.clear()
                ref = [{}, {}]
        except BufferError:
            assert held, "BufferError without a live view"
            assert (b.bids().tobytes(), b.asks().tobytes()) == before
            refused += 1
        except BookCrossedError:
            assert (b.bids().tobytes(), b.asks().tobytes()) == before
        b._check_invariants()
        if step % 500 == 0:
            assert _levels(b.bids()) == _ref_levels(ref[0], BID)
            assert _levels(b.asks()) == _ref_levels(ref[1], ASK)
    assert refused > 0  # the refusals were exercised too
    held.clear()
    gc.collect()
    assert b.live_views == 0
    b._check_invariants()
    assert _levels(b.bids()) == _ref_levels(ref[0], BID)
    assert _levels(b.asks()) == _ref_levels(ref[1], ASK)
