"""Order state machine: the whole transition table, fills, full objects, idempotence."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from engine import InvalidTransition
from engine.account import (
    Order,
    OrderEvent,
    OrderInputError,
    OrderStatus,
    OrderType,
    TRADE_ID_MEMORY,
    order_transition,
    parse_order_status,
    parse_order_type,
    parse_side,
)

sys.path.insert(0, str(Path(__file__).parent))
import positions_reference as ref  # noqa: E402

S = OrderStatus
E = OrderEvent


def state(o: Order) -> tuple[Any, ...]:
    return (o.status, o.qty_lots, o.filled_lots, o.cost, o.price_ticks, o.stop_price_ticks,
            o.updated_ns, o.seq)


def make(status: OrderStatus, qty: int = 10) -> Order:
    """An order of ``qty`` lots brought to ``status`` through legal events only."""
    start = S.PENDING_NEW if status in (S.PENDING_NEW, S.REJECTED) else S.NEW
    o = Order("o-1", 0, qty, 100, status=start)
    if status == S.PARTIALLY_FILLED:
        o.apply_fill(100, 3, trade_id=1)
    elif status == S.FILLED:
        o.apply_fill(100, qty, trade_id=1)
    elif status == S.PENDING_CANCEL:
        o.apply_event(E.CANCEL_REQUESTED)
    elif status == S.PENDING_REPLACE:
        o.apply_event(E.REPLACE_REQUESTED)
    elif status == S.CANCELED:
        o.apply_event(E.CANCELED)
    elif status == S.EXPIRED:
        o.apply_event(E.EXPIRED)
    elif status == S.REJECTED:
        o.apply_event(E.REJECTED)
    assert o.status == status
    o._check_invariants()
    return o


def reference_for(o: Order) -> ref.ReferenceOrder:
    r = ref.ReferenceOrder(o.order_id, o.side, o.qty_lots, o.price_ticks, status=o.status)
    r.filled_lots = o.filled_lots
    return r


ALL_PAIRS = [(s, e) for s in OrderStatus for e in OrderEvent]


def test_enums_match_the_reference_numbering() -> None:
    assert [s.value for s in OrderStatus] == list(range(9))
    assert S.CANCELED == ref.CANCELED and E.REPLACED == ref.REPLACED and E.FILL == ref.FILL


@pytest.mark.parametrize("status,event", ALL_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS])
def test_transition_table_entry(status: OrderStatus, event: OrderEvent) -> None:
    expected = ref.LEGAL.get((status, event))
    raw = order_transition(status, event)
    if expected is None:
        assert raw == -1
    elif expected == ref.BY_FILL:
        assert raw == -2
    elif expected == ref.OPEN:
        assert raw == -3
    else:
        assert raw == expected


@pytest.mark.parametrize("status,event", ALL_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS])
def test_transition_behaviour(status: OrderStatus, event: OrderEvent) -> None:
    """Every (state, event): legal ones land where the reference says, illegal ones raise
    InvalidTransition naming the order and both states, and change nothing."""
    o = make(status)
    r = reference_for(o)
    before = state(o)
    legal = (status, event) in ref.LEGAL
    if event == E.FILL:
        if legal:
            o.apply_fill(101, 1, trade_id=99, ts_ns=5)
            r.apply_fill(101, 1, 99)
            assert (o.status, o.filled_lots) == (r.status, r.filled_lots)
        else:
            with pytest.raises(InvalidTransition) as info:
                o.apply_fill(101, 1, trade_id=99, ts_ns=5)
            assert "'o-1'" in str(info.value) and status.name in str(info.value)
            assert state(o) == before
        o._check_invariants()
        return
    if legal:
        assert o.apply_event(event, ts_ns=5) is True
        r.apply_event(event)
        assert o.status == r.status
        assert o.updated_ns == 5
    else:
        with pytest.raises(InvalidTransition) as info:
            o.apply_event(event, ts_ns=5)
        msg = str(info.value)
        assert "'o-1'" in msg and status.name in msg and event.name in msg
        assert state(o) == before
    o._check_invariants()


def test_fill_in_pending_states_keeps_pending_until_complete() -> None:
    o = make(S.PENDING_CANCEL)
    o.apply_fill(100, 4, trade_id=1)
    assert o.status == S.PENDING_CANCEL and o.filled_lots == 4
    o.apply_event(E.CANCEL_REJECTED)
    assert o.status == S.PARTIALLY_FILLED
    o.apply_event(E.REPLACE_REQUESTED)
    o.apply_fill(100, 6, trade_id=2)
    assert o.status == S.FILLED and o.is_closed


def test_fill_before_ack_moves_pending_new_on() -> None:
    o = make(S.PENDING_NEW)
    o.apply_fill(100, 2)
    assert o.status == S.PARTIALLY_FILLED


def test_overfill_duplicate_and_closed_are_refused_unchanged() -> None:
    o = make(S.NEW)
    o.apply_fill(100, 6, trade_id=10)
    before = state(o)
    with pytest.raises(InvalidTransition, match="overfill"):
        o.apply_fill(100, 5, trade_id=11)
    with pytest.raises(InvalidTransition, match="duplicate"):
        o.apply_fill(100, 1, trade_id=10)
    assert state(o) == before
    o.apply_fill(100, 4, trade_id=12)
    before = state(o)
    with pytest.raises(InvalidTransition, match="closed"):
        o.apply_fill(100, 1, trade_id=13)
    assert state(o) == before


def test_duplicate_memory_is_bounded_as_documented() -> None:
    o = Order("o", 1, 10_000, 5, status=S.NEW)
    for i in range(1, TRADE_ID_MEMORY + 2):
        o.apply_fill(5, 1, trade_id=i)
    # The last TRADE_ID_MEMORY ids are remembered; the first one has been forgotten.
    with pytest.raises(InvalidTransition):
        o.apply_fill(5, 1, trade_id=TRADE_ID_MEMORY + 1)
    with pytest.raises(InvalidTransition):
        o.apply_fill(5, 1, trade_id=2)
    assert o.apply_fill(5, 1, trade_id=1) is True


def test_cost_is_sum_of_fill_notionals() -> None:
    o = make(S.NEW)
    o.apply_fill(100, 3)
    o.apply_fill(107, 2)
    assert o.cost == 100 * 3 + 107 * 2


@pytest.mark.parametrize("qty,price", [(0, 1), (-1, 1), (1, -1)])
def test_bad_fill_values_raise_and_change_nothing(qty: int, price: int) -> None:
    o = make(S.NEW)
    before = state(o)
    with pytest.raises(OrderInputError):
        o.apply_fill(price, qty)
    assert state(o) == before


def test_constructor_rejects_bad_values() -> None:
    with pytest.raises(OrderInputError, match="qty_lots"):
        Order("x", 0, -5)
    with pytest.raises(OrderInputError, match="side"):
        Order("x", 2, 5)
    with pytest.raises(OrderInputError, match="FILLED"):
        Order("x", 0, 5, status=S.FILLED)
    with pytest.raises(OrderInputError, match="order type"):
        Order("x", 0, 5, order_type=99)


def test_repeated_event_is_idempotent_newer_one_is_illegal() -> None:
    o = make(S.NEW)
    assert o.apply_event(E.CANCELED, ts_ns=10) is True
    assert o.apply_event(E.CANCELED, ts_ns=10) is False     # the same update again
    assert o.apply_event(E.CANCELED, ts_ns=9) is False      # older: stale
    with pytest.raises(InvalidTransition):
        o.apply_event(E.CANCELED, ts_ns=11)                 # a new cancel of a canceled order


def test_stale_by_sequence_and_time_does_not_overwrite() -> None:
    o = make(S.NEW)
    assert o.apply_snapshot(S.PARTIALLY_FILLED, 10, 4, 100, seq=5) is True
    assert o.apply_snapshot(S.PARTIALLY_FILLED, 10, 2, 100, seq=4) is False
    assert o.filled_lots == 4 and o.seq == 5
    assert o.apply_snapshot(S.PARTIALLY_FILLED, 10, 4, 100, seq=5) is False
    t = make(S.NEW)
    assert t.apply_snapshot(S.PARTIALLY_FILLED, 10, 4, 100, ts_ns=200) is True
    assert t.apply_snapshot(S.NEW, 10, 0, 100, ts_ns=100) is False
    assert (t.status, t.filled_lots, t.updated_ns) == (S.PARTIALLY_FILLED, 4, 200)


def test_snapshot_combines_amend_fill_and_status() -> None:
    o = make(S.PENDING_NEW)
    assert o.apply_snapshot(S.FILLED, 10, 10, 100, cost=1000) is True
    assert o.status == S.FILLED and o.cost == 1000
    p = make(S.PARTIALLY_FILLED)
    assert p.apply_snapshot(S.CANCELED, 10, 5, 100) is True       # filled 2 more, then canceled
    assert (p.status, p.filled_lots) == (S.CANCELED, 5)
    q = make(S.NEW)
    assert q.apply_snapshot(S.NEW, 12, 0, 99) is True              # amend
    assert (q.qty_lots, q.price_ticks, q.status) == (12, 99, S.NEW)
    r = make(S.PARTIALLY_FILLED)
    assert r.apply_snapshot(S.FILLED, 3, 3, 100) is True           # amended down to the filled qty
    assert r.status == S.FILLED


@pytest.mark.parametrize(
    "status,qty,filled,match",
    [
        (S.FILLED, 10, 5, "contradicts"),
        (S.PARTIALLY_FILLED, 3, 3, "contradicts"),
        (S.NEW, 10, 11, "overfill"),
        (S.PARTIALLY_FILLED, 10, 1, "went down"),
        (S.PENDING_NEW, 10, 3, "not a legal"),
    ],
)
def test_bad_snapshots_raise_and_change_nothing(status: OrderStatus, qty: int, filled: int, match: str) -> None:
    o = make(S.PARTIALLY_FILLED)
    before = state(o)
    with pytest.raises(InvalidTransition, match=match):
        o.apply_snapshot(status, qty, filled, 100, ts_ns=50)
    assert state(o) == before


def test_snapshot_negative_quantity_or_unknown_status_is_input_error() -> None:
    o = make(S.NEW)
    before = state(o)
    with pytest.raises(OrderInputError, match="quantity"):
        o.apply_snapshot(S.NEW, -10, 0, 100)
    with pytest.raises(OrderInputError, match="status 99"):
        o.apply_snapshot(99, 10, 0, 100)
    assert state(o) == before


@pytest.mark.parametrize(
    "text,expected",
    [("New", S.NEW), ("PartiallyFilled", S.PARTIALLY_FILLED), ("PARTIALLY_FILLED", S.PARTIALLY_FILLED),
     ("Filled", S.FILLED), ("Expired", S.EXPIRED), ("Canceled", S.CANCELED), ("cancelled", S.CANCELED),
     ("open", S.NEW), ("partial", S.PARTIALLY_FILLED), ("PendingCancel", S.PENDING_CANCEL),
     ("rejected", S.REJECTED)],
)
def test_parse_status(text: str, expected: OrderStatus) -> None:
    assert parse_order_status(text) is expected


@pytest.mark.parametrize("text", ["Bogus", "", "Fill", "New!"])
def test_parse_unknown_status_names_it(text: str) -> None:
    with pytest.raises(OrderInputError, match=repr(text).replace("!", "\\!")):
        parse_order_status(text)


def test_parse_types_and_sides() -> None:
    names = ["Limit", "Market", "Stop", "StopMarket", "TakeProfit", "TakeProfitMarket", "TrailingStopMarket"]
    assert [parse_order_type(n) for n in names] == list(OrderType)
    assert parse_side("Buy") == 0 and parse_side("SELL") == 1 and parse_side(1) == 1
    with pytest.raises(OrderInputError, match="'Hold'"):
        parse_order_type("Hold")
    with pytest.raises(OrderInputError):
        parse_side("up")
    with pytest.raises(OrderInputError):
        parse_side(3)
