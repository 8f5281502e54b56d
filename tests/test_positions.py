"""Netting positions: exact average entry and realized PnL against the Fraction reference."""
from __future__ import annotations

import random
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Instrument, InvalidTransition
from engine.account import (
    OrderInputError,
    Position,
    PositionEvent,
    PositionStatus,
    parse_position_status,
    position_transition,
    quote_to_units,
    units_to_quote,
)
from engine.errors import DecimalError

sys.path.insert(0, str(Path(__file__).parent))
import positions_reference as ref  # noqa: E402

BID, ASK = 0, 1
PS = PositionStatus
PE = PositionEvent


def inst() -> Instrument:
    return Instrument("BTCUSDT", "0.01", "0.001")


def snapshot(p: Position) -> tuple[Any, ...]:
    return (p.qty_lots, p.entry_notional, p.realized_pnl, p.fees, p.status, p.min_price_ticks,
            p.max_price_ticks, p.fill_count)


def agree(p: Position, r: ref.ReferencePosition) -> None:
    assert p.qty_lots == r.qty
    assert p.entry_notional == r.notional
    assert p.avg_entry_price == r.avg_entry_price
    assert p.realized_pnl == r.realized
    assert p.fees == r.fees
    # The integer rule never loses value against textbook average-cost accounting:
    # realized + unrealized at any mark (realized + mark * qty - notional) is the same ...
    assert p.realized_pnl - p.entry_notional == r.realized_exact - r.avg_exact * r.qty
    # ... and agrees with it exactly whenever the position is flat.
    if r.qty == 0:
        assert p.realized_pnl == r.realized_exact
    p._check_invariants()


def test_issue_example_and_flip_split() -> None:
    pos = Position(inst())
    pos.apply_fill(BID, 10000, 3, fee=7, trade_id=1)
    pos.apply_fill(ASK, 10100, 5, fee=9, trade_id=2)       # close 3 (+300), open 2 short at 10100
    assert pos.qty_lots == -2
    assert pos.realized_pnl == 300
    assert pos.avg_entry_price == Fraction(10100)
    assert pos.fees == 16
    assert (pos.min_price_ticks, pos.max_price_ticks) == (10000, 10100)
    assert pos.status == PS.IN_PROGRESS
    pos.apply_fill(BID, 10000, 2, trade_id=3)              # short closed at a profit of 200
    assert (pos.qty_lots, pos.realized_pnl, pos.avg_entry_price, pos.status) == (0, 500, None, PS.COMPLETED)
    # 500 units of 0.01 * 0.001 quote currency
    assert pos.realized_pnl_decimal() == "0.00500"


def test_partial_close_keeps_remainder_in_cost_basis() -> None:
    pos = Position(inst())
    pos.apply_fill(BID, 100, 1)
    pos.apply_fill(BID, 101, 2)          # notional 302 over 3 lots: avg 100 2/3
    pos.apply_fill(ASK, 110, 1)          # removes floor(302 / 3) = 100, remainder stays
    assert pos.realized_pnl == 10
    assert pos.entry_notional == 202 and pos.avg_entry_price == Fraction(101)
    pos.apply_fill(ASK, 110, 2)
    # Round trip exact: proceeds 330 - cost 302
    assert pos.realized_pnl == 28 and pos.qty_lots == 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from([BID, ASK]), st.integers(1, 10**6), st.integers(1, 1000),
                          st.integers(-50, 50)), min_size=1, max_size=60))
def test_property_against_reference(fills: list[tuple[int, int, int, int]]) -> None:
    pos = Position(inst())
    r = ref.ReferencePosition("0.01", "0.001")
    for side, price, qty, fee in fills:
        pos.apply_fill(side, price, qty, fee=fee)
        r.apply_fill(side, price, qty, fee)
        agree(pos, r)
    assert Decimal(pos.realized_pnl_decimal()) == r.realized_decimal()
    assert (pos.min_price_ticks, pos.max_price_ticks) == (r.min_price, r.max_price)


def test_seeded_stress_with_closes_and_flips() -> None:
    rng = random.Random(20261121)
    pos = Position(inst())
    r = ref.ReferencePosition()
    for i in range(20_000):
        q = pos.qty_lots
        roll = rng.random()
        if q and roll < 0.15:                       # close exactly
            side, qty = (ASK if q > 0 else BID), abs(q)
        elif q and roll < 0.3:                      # flip
            side, qty = (ASK if q > 0 else BID), abs(q) + rng.randint(1, 50)
        else:
            side, qty = rng.choice([BID, ASK]), rng.randint(1, 200)
        price = rng.randint(90_000, 110_000)
        fee = rng.randint(0, 30)
        pos.apply_fill(side, price, qty, fee=fee, trade_id=i + 1)
        r.apply_fill(side, price, qty, fee)
        if i % 97 == 0 or r.qty == 0:
            agree(pos, r)
    agree(pos, r)


def test_wide_numbers_past_int64_are_exact() -> None:
    """Notionals and PnL beyond 2**63 (128-bit inside) agree with Python ints."""
    rng = random.Random(7)
    pos = Position(inst())
    r = ref.ReferencePosition()
    for _ in range(2_000):
        side = rng.choice([BID, ASK])
        price = rng.randint(10**12, 4 * 10**12)
        qty = rng.randint(1, 10**7)
        fee = rng.randint(0, 10**15)
        pos.apply_fill(side, price, qty, fee=fee)
        r.apply_fill(side, price, qty, fee)
        agree(pos, r)
    assert abs(r.notional) > 2**63 or abs(r.realized) > 2**63


def test_overflow_is_refused_and_nothing_changes() -> None:
    pos = Position(inst())
    big = 2**62
    pos.apply_fill(BID, big, big)                    # notional 2**124 fits
    before = snapshot(pos)
    with pytest.raises(OrderInputError, match="overflow"):
        pos.apply_fill(ASK, big, 2**10)              # notional * closed lots needs > 127 bits
    assert snapshot(pos) == before
    with pytest.raises(OrderInputError, match="overflow"):
        pos.apply_fill(BID, 1, 2**63 - 1)            # qty_lots would pass int64
    assert snapshot(pos) == before


@pytest.mark.parametrize("side,price,qty,match", [
    (BID, 100, 0, "qty"), (BID, 100, -3, "qty"), (ASK, -1, 1, "price"), (2, 100, 1, "side"),
])
def test_bad_input_raises_and_changes_nothing(side: int, price: int, qty: int, match: str) -> None:
    pos = Position(inst())
    pos.apply_fill(BID, 100, 5, trade_id=4)
    before = snapshot(pos)
    with pytest.raises(OrderInputError, match=match):
        pos.apply_fill(side, price, qty)
    assert snapshot(pos) == before


def test_duplicate_trade_id_is_refused() -> None:
    pos = Position(inst())
    pos.apply_fill(BID, 100, 5, trade_id=4)
    before = snapshot(pos)
    with pytest.raises(InvalidTransition, match="duplicate"):
        pos.apply_fill(BID, 100, 5, trade_id=4)
    assert snapshot(pos) == before


# Expected position table, written out independently: (status, event) -> next status;
# "same" keeps it; missing pairs are illegal.
POSITION_LEGAL: dict[tuple[int, int], int | str] = {
    (PS.CREATED, PE.FILL_OPEN): PS.IN_PROGRESS,
    (PS.CREATED, PE.SET_CREATED): "same",
    (PS.CREATED, PE.SET_IN_PROGRESS): PS.IN_PROGRESS,
    (PS.CREATED, PE.SET_FINISHING): PS.FINISHING,
    (PS.CREATED, PE.SET_COMPLETED): PS.COMPLETED,
    (PS.CREATED, PE.SET_FAILED): PS.FAILED,
    (PS.IN_PROGRESS, PE.FILL_OPEN): "same",
    (PS.IN_PROGRESS, PE.FILL_FLAT): PS.COMPLETED,
    (PS.IN_PROGRESS, PE.SET_IN_PROGRESS): "same",
    (PS.IN_PROGRESS, PE.SET_FINISHING): PS.FINISHING,
    (PS.IN_PROGRESS, PE.SET_COMPLETED): PS.COMPLETED,
    (PS.IN_PROGRESS, PE.SET_FAILED): PS.FAILED,
    (PS.FINISHING, PE.FILL_OPEN): "same",
    (PS.FINISHING, PE.FILL_FLAT): PS.COMPLETED,
    (PS.FINISHING, PE.SET_FINISHING): "same",
    (PS.FINISHING, PE.SET_COMPLETED): PS.COMPLETED,
    (PS.FINISHING, PE.SET_FAILED): PS.FAILED,
    (PS.COMPLETED, PE.FILL_OPEN): PS.IN_PROGRESS,      # a new round trip
    (PS.COMPLETED, PE.SET_COMPLETED): "same",
    (PS.FAILED, PE.SET_FAILED): "same",
}
POSITION_PAIRS = [(s, e) for s in PositionStatus for e in PositionEvent]


def position_in(status: PositionStatus, open_qty: bool) -> Position:
    """A position in ``status``, long 5 lots when ``open_qty`` (else flat)."""
    pos = Position(inst())
    if open_qty:
        pos.apply_fill(BID, 100, 5)
    if status == PS.CREATED:
        assert not open_qty
    elif status == PS.COMPLETED and open_qty:
        raise AssertionError("a completed position is flat")
    elif status != pos.status:
        pos.set_status(status)
    assert pos.status == status
    return pos


@pytest.mark.parametrize("status,event", POSITION_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in POSITION_PAIRS])
def test_position_transition_table(status: PositionStatus, event: PositionEvent) -> None:
    expected = POSITION_LEGAL.get((status, event))
    raw = position_transition(status, event)
    assert raw == (-1 if expected is None else -2 if expected == "same" else expected)
    # Behaviour: drive the event on a real position.
    if event == PE.FILL_FLAT:
        if status in (PS.CREATED, PS.COMPLETED):
            return   # a flat position cannot be brought flat by a fill (covered by FILL_OPEN)
        pos = position_in(status, open_qty=True)
        args = (ASK, 100, 5)
    elif event == PE.FILL_OPEN:
        pos = position_in(status, open_qty=status not in (PS.CREATED, PS.COMPLETED))
        args = (BID, 100, 1)
    else:
        pos = position_in(status, open_qty=False)
        args = None
    before = snapshot(pos)
    if expected is None:
        with pytest.raises(InvalidTransition, match=status.name):
            if args is None:
                pos.set_status(event - PE.SET_CREATED)
            else:
                pos.apply_fill(*args)
        assert snapshot(pos) == before
        return
    if args is None:
        changed = pos.set_status(event - PE.SET_CREATED)
        assert changed is (expected != "same")
    else:
        pos.apply_fill(*args)
    assert pos.status == (status if expected == "same" else expected)


def test_parse_position_status() -> None:
    names = ["Created", "InProgress", "Finishing", "Completed", "Failed"]
    assert [parse_position_status(n) for n in names] == list(PositionStatus)
    with pytest.raises(OrderInputError, match="'Done'"):
        parse_position_status("Done")


class FakeBook:
    """Duck-typed top of book (the Python-level API of engine.OrderBook)."""

    def __init__(self, bid: tuple[int, int] | None, ask: tuple[int, int] | None) -> None:
        self.bid, self.ask = bid, ask

    def best_bid(self) -> tuple[int, int] | None:
        return self.bid

    def best_ask(self) -> tuple[int, int] | None:
        return self.ask


def test_unrealized_pnl_against_mid_bid_ask() -> None:
    pos = Position(inst())
    pos.apply_fill(BID, 100, 3)
    pos.apply_fill(BID, 101, 1)                          # notional 401
    book = FakeBook((104, 7), (105, 2))
    assert pos.unrealized_pnl(book, "bid") == 104 * 4 - 401
    assert pos.unrealized_pnl(book, "ask") == 105 * 4 - 401
    assert pos.unrealized_pnl(book) == Fraction(209 * 4, 2) - 401
    assert pos.unrealized_pnl(FakeBook(None, (105, 2))) is None
    assert pos.unrealized_pnl_at(99) == 99 * 4 - 401
    with pytest.raises(OrderInputError):
        pos.unrealized_pnl(book, "last")


def test_unrealized_pnl_with_the_real_order_book() -> None:
    from engine import OrderBook

    book = OrderBook(inst())
    book.set(BID, 10000, 5)
    book.set(ASK, 10010, 5)
    pos = Position(inst())
    assert pos.unrealized_pnl(OrderBook(inst())) is None          # empty book
    pos.apply_fill(ASK, 10020, 2)                        # short 2 at 10020
    assert pos.unrealized_pnl(book, "mid") == Fraction(10005 * -2 + 10020 * 2)
    assert pos.unrealized_pnl(book, "bid") == 10000 * -2 + 10020 * 2
    assert pos.unrealized_pnl(book, "ask") == 10010 * -2 + 10020 * 2
    # Mid of two large prices times a large quantity passes int64; the result is exact.
    big = OrderBook(inst())
    big.set(BID, 2**61, 1)
    big.set(ASK, 2**61 + 1, 1)
    wide = Position(inst())
    wide.apply_fill(BID, 2**61, 2**40)
    assert wide.unrealized_pnl(big) == Fraction((2**62 + 1) * 2**40, 2) - 2**101


def test_quote_units_round_trip_and_errors() -> None:
    i = inst()
    assert quote_to_units(i, "1.5") == 150_000          # 1.5 / (0.01 * 0.001)
    assert quote_to_units(i, "-0.00001") == -1
    assert units_to_quote(i, 150_000) == "1.50000"
    assert units_to_quote(i, -1) == "-0.00001"
    assert units_to_quote(i, 2**70) == str(Decimal(2**70) / 100_000)
    with pytest.raises(DecimalError):
        quote_to_units(i, "0.000001")
    with pytest.raises(DecimalError):
        quote_to_units(i, "1e3")
