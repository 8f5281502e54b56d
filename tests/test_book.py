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


def test_zero_copy_view_is_read_only_and_blocks_reallocation(book: OrderBook) -> None:
    view = book.bids(copy=False)
    assert not view.flags.writeable
    assert view["price"].tolist() == [100, 99, 97]
    assert book.live_views == 1
    book.set(BID, 100, 8)  # in-place change: visible through the view
    assert view["qty"][0] == 8
    # Fill the free room; the insert that needs to grow must be refused.
    with pytest.raises(BufferError):
        for p in range(1, 1000):
            book.set(BID, p - 2000, 1)
    book._check_invariants()
    del view
    gc.collect()
    assert book.live_views == 0
    for p in range(1, 1000):
        book.set(BID, p - 2000, 1)
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
