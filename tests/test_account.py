"""Account: orders and positions together, venue event shapes, callbacks, feed mode."""
from __future__ import annotations

import logging
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Account, Instrument, InvalidTransition, OrderStatus, PositionStatus, Side
from engine.account import ORDER_DTYPE, ORDER_ROW_SIZE, Balance, Order, OrderEvent, OrderInputError, Position
from engine.errors import DecimalError

sys.path.insert(0, str(Path(__file__).parent))
import positions_reference as ref  # noqa: E402

S = OrderStatus


def btc() -> Instrument:
    return Instrument("BTCUSDT", "0.01", "0.001")


def account(**kw: Any) -> Account:
    acct = Account("A-1", [btc(), Instrument("ETHUSDT", "0.01", "0.01")], **kw)
    return acct


def full_state(acct: Account) -> tuple[Any, ...]:
    orders = acct.orders()
    positions = [(p.qty_lots, p.entry_notional, p.realized_pnl, p.fees, p.status, p.fill_count)
                 for p in acct.positions()]
    return (orders.tobytes(), tuple(positions), tuple(sorted(acct.balances().items())), acct.order_count)


def test_dtype_mirrors_the_c_row() -> None:
    assert ORDER_DTYPE.itemsize == ORDER_ROW_SIZE


def test_fill_goes_to_order_and_position() -> None:
    acct = account()
    acct.add_order("1", "BTCUSDT", Side.BID, 10, 6183763, status=S.NEW, client_id="c-1", ts_ns=5)
    assert acct.apply_fill("1", trade_id=77, price_ticks=6183763, qty_lots=4, fee=12, ts_ns=9) is True
    o = acct.order("1")
    assert (o.status, o.filled_lots, o.cost, o.updated_ns, o.client_id) == (S.PARTIALLY_FILLED, 4, 6183763 * 4, 9, "c-1")
    assert acct.order_by_client_id("c-1").order_id == "1"
    pos = acct.position("BTCUSDT")
    assert (pos.qty_lots, pos.entry_notional, pos.fees, pos.status) == (4, 6183763 * 4, 12, PositionStatus.IN_PROGRESS)
    rows = acct.orders()
    assert rows.dtype == ORDER_DTYPE
    assert rows[0]["filled_lots"] == 4 and rows[0]["status"] == S.PARTIALLY_FILLED and rows[0]["slot"] == 0
    assert acct.order_ids_by_slot() == ["1"]
    slot = acct.order_slot("1")
    assert acct.apply_fill_slot(slot, 78, 6183700, 6) is True
    assert acct.order("1").status == S.FILLED
    assert len(acct.orders(open_only=True)) == 0
    acct._check_invariants()


def test_refused_fill_changes_neither_order_nor_position() -> None:
    acct = account()
    acct.add_order("1", "BTCUSDT", Side.ASK, 10, 100, status=S.NEW)
    acct.apply_fill("1", 1, 100, 3)
    before = full_state(acct)
    for args in [("1", 1, 100, 1), ("1", 2, 100, 8), ("1", 3, -5, 1), ("1", 4, 100, 0)]:
        with pytest.raises((InvalidTransition, OrderInputError)):
            acct.apply_fill(*args)
        assert full_state(acct) == before
    with pytest.raises(OrderInputError, match="'nope'"):
        acct.apply_fill("nope", 5, 100, 1)
    # A FAILED position refuses the fill; the order must not move either.
    acct.set_position_status("BTCUSDT", PositionStatus.FAILED)
    before = full_state(acct)
    with pytest.raises(InvalidTransition, match="FAILED"):
        acct.apply_fill("1", 6, 100, 1)
    assert full_state(acct) == before
    assert acct.error_count == 6


def test_feed_mode_counts_reports_and_keeps_state() -> None:
    errors: list[Exception] = []
    acct = account(feed_mode=True)
    acct.set_callbacks(on_error=errors.append)
    acct.add_order("1", "BTCUSDT", Side.BID, 5, 100, status=S.NEW)
    acct.apply_fill("1", 1, 100, 5)
    before = full_state(acct)
    assert acct.apply_fill("1", 2, 100, 1) is False                # closed order
    assert acct.apply_order_event("1", OrderEvent.CANCELED) is False
    assert acct.on_position_order_update("1", "Bogus", "0.005") is False
    assert full_state(acct) == before
    assert acct.error_count == 3
    assert [type(e) for e in errors] == [InvalidTransition, InvalidTransition, OrderInputError]
    assert "'1'" in str(errors[0]) and "FILLED" in str(errors[0])
    assert "'Bogus'" in str(errors[2])


def test_callbacks_run_after_the_change_and_user_errors_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    acct = account()
    seen: list[tuple[str, Any]] = []

    def on_order(order: Order) -> None:
        # The account already shows the new state when the callback runs.
        seen.append(("order", (order.status, acct.order(order.order_id).filled_lots)))
        raise RuntimeError("user bug")

    def on_position(pos: Position) -> None:
        seen.append(("position", pos.qty_lots))

    def on_balance(asset: str, bal: Balance) -> None:
        seen.append(("balance", (asset, bal.total)))

    acct.set_callbacks(on_order=on_order, on_position=on_position, on_balance=on_balance)
    acct.add_order("1", "BTCUSDT", Side.BID, 5, 100, status=S.NEW)
    with caplog.at_level(logging.ERROR, logger="engine.account"):
        acct.apply_fill("1", 1, 100, 2)
    acct.set_balance("USDT", 100, 90, 10)
    assert seen == [("order", (S.NEW, 0)), ("order", (S.PARTIALLY_FILLED, 2)), ("position", 2),
                    ("balance", ("USDT", 100))]
    assert acct.callback_error_count == 2
    assert "user bug" in caplog.text
    assert acct.order("1").filled_lots == 2
    acct._check_invariants()


def test_order_events_stale_and_idempotent() -> None:
    acct = account()
    acct.add_order("1", "BTCUSDT", Side.BID, 5, 100)
    assert acct.apply_order_event("1", OrderEvent.ACCEPTED, ts_ns=10, seq=1) is True
    assert acct.apply_order_event("1", OrderEvent.ACCEPTED, ts_ns=10, seq=1) is False
    assert acct.apply_order_event("1", OrderEvent.CANCELED, ts_ns=11, seq=1) is False   # stale sequence
    assert acct.stale_count == 2
    assert acct.order("1").status == S.NEW
    assert acct.apply_order_snapshot("1", S.PARTIALLY_FILLED, 5, 2, 100, cost=200, seq=3, fold_fills=True)
    assert acct.position("BTCUSDT").qty_lots == 2
    assert not acct.apply_order_snapshot("1", S.PARTIALLY_FILLED, 5, 2, 100, cost=200, seq=3, fold_fills=True)
    assert acct.position("BTCUSDT").qty_lots == 2


def test_bot_platform_flow() -> None:
    acct = account()
    assert acct.on_position_create("P1", "BTCUSDT", "Created", ts_ns=1)
    assert acct.on_position_order_create("P1", "O1", "BTCUSDT", "Buy", "Limit", "New", "0.010", "61837.63",
                                         client_id="c1", ts_ns=2)
    o = acct.order("O1")
    assert (o.qty_lots, o.price_ticks, o.status, o.side) == (10, 6183763, S.NEW, Side.BID)
    assert acct.on_position_order_update("O1", "PartiallyFilled", "0.010", "61837.63", filled_qty="0.004", ts_ns=3)
    assert not acct.on_position_order_update("O1", "PartiallyFilled", "0.010", "61837.63", filled_qty="0.004",
                                             ts_ns=3)                     # the same object again
    assert not acct.on_position_order_update("O1", "New", "0.010", "61837.63", ts_ns=2)   # older: stale
    assert acct.order("O1").filled_lots == 4
    assert acct.on_position_update("P1", "BTCUSDT", "InProgress", "0.004", entry_price="61837.63", ts_ns=4)
    pos = acct.position("BTCUSDT")
    assert (pos.qty_lots, pos.avg_entry_price, pos.status) == (4, 6183763, PositionStatus.IN_PROGRESS)
    # A stop order of another type, created already filled.
    assert acct.on_position_order_create("P1", "O2", "BTCUSDT", "Sell", "StopMarket", "Filled", "0.004",
                                         None, stop_price="61000", filled_qty="0.004", ts_ns=5)
    assert acct.order("O2").status == S.FILLED and acct.order("O2").stop_price_ticks == 6100000
    assert acct.on_position_update("P1", "BTCUSDT", "Completed", "0", realized_pnl="-3.36252", ts_ns=6)
    pos = acct.position("BTCUSDT")
    assert (pos.qty_lots, pos.status, pos.realized_pnl) == (0, PositionStatus.COMPLETED, -336252)
    # A new venue position on the flat instrument starts a new round trip.
    assert acct.on_position_create("P2", "BTCUSDT", "InProgress", "0.002", entry_price="61000.005", side="Short")
    pos = acct.position("BTCUSDT")
    assert pos.qty_lots == -2 and pos.entry_notional == -12200001 and pos.realized_pnl == -336252


def test_bot_platform_bad_input_changes_nothing() -> None:
    acct = account()
    acct.on_position_create("P1", "BTCUSDT", "InProgress", "0.004", entry_price="100")
    acct.on_position_order_create("P1", "O1", "BTCUSDT", "Buy", "Limit", "New", "0.010", "100")
    before = full_state(acct)
    bad_calls = [
        (acct.on_position_order_update, ("O1", "Weird", "0.010", "100"), OrderInputError, "'Weird'"),
        (acct.on_position_order_update, ("O1", "New", "-0.010", "100"), OrderInputError, "quantity"),
        (acct.on_position_order_update, ("O1", "PartiallyFilled", "0.010", "100", None, "0.011"),
         InvalidTransition, "overfill"),
        (acct.on_position_order_update, ("O1", "New", "0.0105", "100"), DecimalError, "0.0105"),
        (acct.on_position_order_create, ("P1", "O9", "BTCUSDT", "Buy", "Iceberg", "New", "1", "1"),
         OrderInputError, "'Iceberg'"),
        (acct.on_position_create, ("P1", "BTCUSDT", "Created"), InvalidTransition, "already"),
        (acct.on_position_update, ("P1", "BTCUSDT", "Created", "0.004", "100"), InvalidTransition, "CREATED"),
        (acct.on_position_update, ("P1", "BTCUSDT", "Done", "0.004", "100"), OrderInputError, "'Done'"),
        (acct.on_position_update, ("P1", "BTCUSDT", "InProgress", "0.001", "100.001"), DecimalError, "100.001"),
        (acct.on_position_update, ("PX", "BTCUSDT", "InProgress", "0.001", "100"), OrderInputError, "'PX'"),
        (acct.on_nft_energy_update, (-1,), OrderInputError, "energy"),
    ]
    for fn, args, exc, match in bad_calls:
        with pytest.raises(exc, match=match):
            fn(*args)
        assert full_state(acct) == before, fn


def test_nft_energy_is_exact() -> None:
    acct = account()
    assert acct.on_nft_energy_update(12_345_678_901, ts_ns=7)
    assert acct.balance("NFT_ENERGY") == Balance(12_345_678_901, 12_345_678_901, 0, 8, 7)
    assert not acct.on_nft_energy_update(12_345_678_901, ts_ns=7)
    assert not acct.on_nft_energy_update(1, ts_ns=6)        # stale


def test_stream_openorders_create_modify_cancel_and_fold() -> None:
    acct = account()
    n = acct.on_openorders(modify=[
        {"id": "s1", "symbol": "BTCUSDT", "side": "buy", "state": "open", "price": 6000000, "resd": 10,
         "exec": 0, "cost": 0},
        {"id": "s2", "symbol": "BTCUSDT", "side": "sell", "state": "open", "price": 6100000, "resd": 3,
         "exec": 0, "cost": 0},
    ], ts_ns=1)
    assert n == 2 and acct.order("s1").qty_lots == 10 and acct.order("s2").side == Side.ASK
    n = acct.on_openorders(modify=[{"id": "s1", "state": "partial", "resd": 6, "exec": 4, "cost": 24000000}], ts_ns=2)
    assert n == 1
    assert acct.position("BTCUSDT").qty_lots == 4 and acct.position("BTCUSDT").entry_notional == 24000000
    n = acct.on_openorders(modify=[{"id": "s2", "state": "filled", "resd": 0, "exec": 3, "cost": 18300000}],
                           cancel=[{"id": "s1"}], ts_ns=3)
    assert n == 2
    assert acct.order("s1").status == S.CANCELED and acct.order("s2").status == S.FILLED
    pos = acct.position("BTCUSDT")
    assert pos.qty_lots == 1 and pos.realized_pnl == 18300000 - 18000000
    # A decimal-string cost in quote currency converts exactly.
    acct.on_openorders(modify=[{"id": "s3", "symbol": "BTCUSDT", "side": "sell", "state": "filled", "resd": 0,
                                "exec": 1, "cost": "60.5"}])
    assert acct.position("BTCUSDT").qty_lots == 0
    assert acct.position("BTCUSDT").realized_pnl == 300000 + 6050000 - 6000000
    acct._check_invariants()


def test_stream_openorders_frame_is_all_or_nothing() -> None:
    acct = account()
    acct.on_openorders(modify=[{"id": "s1", "symbol": "BTCUSDT", "side": "buy", "state": "open", "resd": 5,
                                "exec": 0, "cost": 0}])
    before = full_state(acct)
    frames: list[dict[str, Any]] = [
        {"modify": [{"id": "s1", "state": "partial", "resd": 3, "exec": 2, "cost": 200},
                    {"id": "s9", "state": "open", "resd": 1, "exec": 0}]},             # s9: no side/symbol
        {"modify": [{"id": "s1", "state": "partial", "resd": 3, "exec": 2, "cost": 200}],
         "cancel": [{"id": "unknown"}]},
        {"modify": [{"id": "s1", "state": "sleeping", "resd": 5, "exec": 0}]},
        {"modify": [{"id": "s1", "state": "partial", "resd": 0, "exec": -1}]},
        {"modify": [{"id": "s1", "state": "filled", "resd": 2, "exec": 3, "cost": 300}]},
    ]
    for frame in frames:
        with pytest.raises((OrderInputError, InvalidTransition, DecimalError)):
            acct.on_openorders(**frame)
        assert full_state(acct) == before, frame


def test_stream_balances() -> None:
    acct = account()
    acct.set_asset_decimals("BTC", 8)
    acct.set_asset_decimals("USDT", 6)
    n = acct.on_balances([{"asset": "BTC", "total": "1.5", "available": "1.25"},
                          {"asset": "USDT", "available": "100.000001", "reserved": "0"}], ts_ns=3)
    assert n == 2
    assert acct.balance("BTC") == Balance(150_000_000, 125_000_000, 25_000_000, 8, 3)
    assert acct.balance("USDT") == Balance(100_000_001, 100_000_001, 0, 6, 3)
    before = full_state(acct)
    with pytest.raises(DecimalError, match="0.0000001"):
        acct.on_balances([{"asset": "BTC", "total": "2", "available": "2"},
                          {"asset": "USDT", "total": "0.0000001", "available": "0"}])
    with pytest.raises(OrderInputError, match="inconsistent"):
        acct.on_balances([{"asset": "BTC", "total": "1", "available": "2", "reserved": "0"}])
    assert full_state(acct) == before


def test_remove_closed_orders_frees_slots_and_keeps_open_ones() -> None:
    acct = account()
    for i in range(6):
        acct.add_order(str(i), "ETHUSDT", Side.BID, 2, 100, status=S.NEW)
    for i in (0, 2, 5):
        acct.apply_order_event(str(i), OrderEvent.CANCELED)
    slot4 = acct.order_slot("4")
    assert acct.remove_closed_orders() == 3
    assert acct.order_ids_by_slot() == ["", "1", "", "3", "4", ""]
    assert acct.order_slot("4") == slot4 and acct.order_count == 3
    assert list(acct.orders()["slot"]) == [1, 3, 4]
    assert acct.apply_fill("4", 1, 100, 2)
    with pytest.raises(OrderInputError, match="not in use"):
        acct.apply_fill_slot(0, 2, 100, 1)
    acct._check_invariants()
    with pytest.raises(OrderInputError):
        acct.order("0")
    # Freed slots are reused before the arrays grow.
    assert {acct.add_order(f"n{i}", "ETHUSDT", Side.BID, 1, 100, status=S.NEW) for i in range(3)} == {0, 2, 5}
    assert acct.add_order("n3", "ETHUSDT", Side.BID, 1, 100, status=S.NEW) == 6
    acct._check_invariants()


def test_seeded_random_account_against_reference() -> None:
    """Random adds, fills (some refused) and cancels; the account matches the reference
    after every step and its invariants hold."""
    rng = random.Random(5)
    acct = account()
    r = ref.ReferenceAccount()
    next_id = 0
    open_ids: list[str] = []
    for step in range(3_000):
        if not open_ids or rng.random() < 0.2:
            oid = f"o{next_id}"
            next_id += 1
            side, qty, px = rng.choice([0, 1]), rng.randint(1, 50), rng.randint(900, 1100)
            acct.add_order(oid, "BTCUSDT", side, qty, px, status=S.NEW)
            r.add_order(oid, "BTCUSDT", side, qty, px)
            open_ids.append(oid)
            continue
        oid = rng.choice(open_ids)
        if rng.random() < 0.1:
            acct.apply_order_event(oid, OrderEvent.CANCELED)
            r.orders[oid].apply_event(ref.E_CANCELED)
        else:
            qty = rng.randint(1, 30)
            px = rng.randint(900, 1100)
            try:
                r.orders[oid].apply_fill(px, qty, step + 1)
            except ref.ReferenceError_:
                with pytest.raises(InvalidTransition):
                    acct.apply_fill(oid, step + 1, px, qty)
            else:
                r.positions["BTCUSDT"].apply_fill(r.orders[oid].side, px, qty)
                acct.apply_fill(oid, step + 1, px, qty)
        o, ro = acct.order(oid), r.orders[oid]
        assert (o.status, o.filled_lots, o.cost) == (ro.status, ro.filled_lots, ro.cost)
        if o.is_closed:
            open_ids.remove(oid)
        p, rp = acct.position("BTCUSDT"), r.positions["BTCUSDT"]
        assert (p.qty_lots, p.entry_notional, p.realized_pnl) == (rp.qty, rp.notional, rp.realized)
        if step % 100 == 0:
            acct._check_invariants()
    rows = acct.orders()
    assert np.array_equal(rows["filled_lots"], [r.orders[i].filled_lots for i in acct.order_ids_by_slot()])


def test_docstring_examples_run() -> None:
    import doctest

    import engine.account
    from engine._core import account as core_account, orders as core_orders, positions as core_positions

    for module in (engine.account, core_orders, core_positions, core_account):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(core_positions).attempted > 0


def test_feed_mode_venue_frames_report_and_keep_state() -> None:
    errors: list[Exception] = []
    acct = account(feed_mode=True)
    acct.set_callbacks(on_error=errors.append)
    acct.on_openorders(modify=[{"id": "s1", "symbol": "BTCUSDT", "side": "buy", "state": "open", "resd": 5,
                                "exec": 0, "cost": 0}])
    before = full_state(acct)
    assert acct.on_openorders(modify=[{"id": "s1", "state": "partial", "resd": 3, "exec": 2,
                                       "cost": 10**30}]) == 0                         # cost past int64
    assert acct.on_openorders(modify=[{"id": "s1", "state": "partial", "resd": 3, "exec": 2,
                                       "seq": "x"}]) == 0                             # not an int
    assert acct.on_balances([{"asset": "BTC", "total": "1.5"}]) == 0                  # one figure only
    assert acct.on_position_update("P9", "BTCUSDT", "InProgress", "1", "1") is False   # unknown position
    assert full_state(acct) == before
    assert acct.error_count == len(errors) == 4



def test_callbacks_may_add_orders_but_not_compact() -> None:
    """A callback that grows the order array (realloc) leaves the account consistent;
    compaction, which would move slots under the caller, is refused inside a callback."""
    acct = account()
    added: list[int] = []
    refused: list[Exception] = []

    def on_order(order: Order) -> None:
        if order.order_id == "1" and not added:
            for i in range(500):
                added.append(acct.add_order(f"cb-{i}", "BTCUSDT", Side.ASK, 1, 100, status=S.NEW))
        try:
            acct.remove_closed_orders()
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            refused.append(exc)

    seen_positions: list[int] = []
    acct.add_order("1", "BTCUSDT", Side.BID, 5, 100, status=S.NEW)
    acct.set_callbacks(on_order=on_order, on_position=lambda p: seen_positions.append(p.qty_lots))
    assert acct.apply_fill("1", 1, 100, 5)
    assert acct.order("1").status == S.FILLED and len(added) == 500
    assert seen_positions == [5]
    assert refused and "inside an account callback" in str(refused[0])
    acct._check_invariants()


# ---- balances: int64 bounds (review item 2) --------------------------------------------

def test_balances_out_of_int64_are_refused_whole_and_reported() -> None:
    errors: list[Exception] = []
    acct = account(feed_mode=True)
    acct.set_callbacks(on_error=errors.append, on_balance=lambda a, b: pytest.fail("no balance may change"))
    # available + reserved = 10**21 at 8 decimals: the derived total does not fit int64.
    frame = [{"asset": "EUR", "total": "1", "available": "1"},
             {"asset": "BTC", "available": "50000000000", "reserved": "50000000000"}]
    assert acct.on_balances(frame) == 0
    assert acct.balances() == {} and acct.error_count == 1 and len(errors) == 1
    assert isinstance(errors[0], OrderInputError)
    assert "'BTC'" in str(errors[0]) and "total 10000000000000000000" in str(errors[0])
    assert "derived" in str(errors[0])
    for item, field in [({"asset": "X", "total": 1 << 63, "available": 0}, "total"),
                        ({"asset": "X", "total": 5, "available": -1}, "available"),
                        ({"asset": "X", "available": 5, "reserved": (1 << 63) - 5}, "total"),
                        ({"asset": "X", "total": "1", "available": "2"}, "reserved")]:
        assert acct.on_balances([{"asset": "EUR", "total": "1", "available": "1"}, item]) == 0
        assert f"'X': {field}" in str(errors[-1]) and isinstance(errors[-1], OrderInputError)
    assert acct.balances() == {} and acct.error_count == 5
    strict = account()
    with pytest.raises(OrderInputError, match="'BTC': total"):
        strict.on_balances(frame)
    assert strict.balances() == {} and strict.error_count == 1
    # The largest representable figures are accepted.
    big = (1 << 63) - 1
    assert strict.on_balances([{"asset": "BTC", "total": big, "available": big - 1}]) == 1
    assert strict.balance("BTC")[:3] == (big, big - 1, 1)


def test_balances_frame_notifies_after_every_balance_is_in() -> None:
    acct = account()
    seen: list[tuple[str, int, int]] = []
    acct.set_callbacks(on_balance=lambda asset, b: seen.append(
        (asset, acct.balance("EUR").total, acct.balance("BTC").total)))
    assert acct.on_balances([{"asset": "EUR", "total": "1", "available": "1"},
                             {"asset": "BTC", "total": "2", "available": "2"}]) == 2
    assert seen == [("EUR", 10**8, 2 * 10**8), ("BTC", 10**8, 2 * 10**8)]


# ---- fold by (filled - folded, cost - folded cost) (review item 6) ---------------------

def test_openorders_fill_without_cost_waits_for_the_cost() -> None:
    inst = Instrument("X", "1", "1")
    acct = Account(instruments=[inst])
    acct.on_openorders(modify=[{"id": "o1", "symbol": "X", "side": "buy", "price": 100, "state": "partial",
                                "exec": 1, "resd": 1}])
    assert (acct.position("X").qty_lots, acct.order("o1").filled_lots) == (0, 1)
    acct.on_openorders(modify=[{"id": "o1", "state": "filled", "exec": 2, "resd": 0, "cost": 200}])
    p = acct.position("X")
    assert (p.qty_lots, p.avg_entry_price, p.entry_notional, acct.order("o1").cost) == (2, 100, 200, 200)
    acct._check_invariants()


def test_fold_refuses_lost_or_invented_lots() -> None:
    inst = Instrument("X", "1", "1")
    acct = Account(instruments=[inst])
    acct.on_openorders(modify=[{"id": "o1", "symbol": "X", "side": "buy", "state": "partial", "exec": 2,
                                "resd": 8, "cost": 200}])
    before = full_state(acct)
    bad = [
        ({"id": "o1", "state": "partial", "exec": 3, "resd": 7, "cost": 150}, "cost went down"),
        ({"id": "o1", "state": "partial", "exec": 2, "resd": 8, "cost": 250}, "no newly filled lots"),
        ({"id": "o1", "state": "filled", "exec": 10, "resd": 0}, "cost was never"),
        ({"id": "o1", "state": "partial", "exec": 3, "resd": 7, "cost": -1}, "cost -1 is negative"),
        ({"id": "o1", "state": "partial", "exec": 3, "resd": 7, "cost": "-5"}, "cost .-5. is negative"),
    ]
    for item, match in bad:
        with pytest.raises(OrderInputError, match=match):
            acct.on_openorders(modify=[item])
        assert full_state(acct) == before
    # Lots without a cost wait; a cancel would lose them, so it is refused.
    acct.on_openorders(modify=[{"id": "o1", "state": "partial", "exec": 4, "resd": 6}])
    assert acct.position("X").qty_lots == 2 and acct.order("o1").filled_lots == 4
    mid = full_state(acct)
    with pytest.raises(OrderInputError, match="2 filled lots whose cost"):
        acct.on_openorders(cancel=[{"id": "o1"}])
    assert full_state(acct) == mid
    acct.on_openorders(modify=[{"id": "o1", "state": "partial", "exec": 5, "resd": 5, "cost": 530}])
    p = acct.position("X")
    assert (p.qty_lots, p.entry_notional) == (5, 530)
    assert acct.on_openorders(cancel=[{"id": "o1"}]) == 1
    acct._check_invariants()
    # The same rules through apply_order_snapshot(fold_fills=True).
    acct.add_order("o2", "X", Side.ASK, 4, 120, status=S.NEW)
    assert acct.apply_order_snapshot("o2", S.PARTIALLY_FILLED, 4, 1, 120, fold_fills=True)
    assert acct.position("X").qty_lots == 5
    with pytest.raises(OrderInputError, match="cost was never"):
        acct.apply_order_snapshot("o2", S.FILLED, 4, 4, 120, fold_fills=True)
    assert acct.apply_order_snapshot("o2", S.FILLED, 4, 4, 120, cost=480, fold_fills=True)
    assert acct.position("X").qty_lots == 1
    with pytest.raises(OrderInputError, match="cost went down"):
        acct.add_order("o3", "X", Side.ASK, 4, 120, status=S.NEW)
        acct.apply_order_snapshot("o3", S.PARTIALLY_FILLED, 4, 1, 120, cost=120)
        acct.apply_order_snapshot("o3", S.PARTIALLY_FILLED, 4, 2, 120, cost=100)
    acct._check_invariants()


def test_fold_matches_exact_cash_flow_on_random_updates() -> None:
    """Random cumulative (exec, cost) updates, the cost often missing: after every frame
    the position holds exactly the folded lots, and realized - entry notional equals
    minus the signed folded cost (money is neither lost nor invented); with buys only,
    the average entry is the Fraction of the summed cost over the summed lots."""
    from fractions import Fraction

    for seed, sides in ((1, (0,)), (2, (0, 1)), (3, (0, 1))):
        rng = random.Random(seed)
        inst = Instrument("X", "1", "1")
        acct = Account(instruments=[inst])
        state: dict[str, list[int]] = {}    # id -> [side, qty, exec, cost, folded_lots, folded_cost]
        for n in range(400):
            live = [k for k, v in state.items() if v[2] < v[1]]
            if not live or rng.random() < 0.15:
                oid = f"o{n}"
                state[oid] = [rng.choice(sides), rng.randint(1, 40), 0, 0, 0, 0]
                acct.on_openorders(modify=[{"id": oid, "symbol": "X", "side": "buy" if state[oid][0] == 0
                                            else "sell", "state": "open", "exec": 0, "resd": state[oid][1],
                                            "cost": 0}])
                continue
            oid = rng.choice(live)
            v = state[oid]
            add = rng.randint(1, v[1] - v[2])
            v[2] += add
            v[3] += add * rng.randint(90, 110)
            with_cost = rng.random() < 0.5 or v[2] == v[1]
            item: dict[str, Any] = {"id": oid, "state": "filled" if v[2] == v[1] else "partial",
                                    "exec": v[2], "resd": v[1] - v[2]}
            if with_cost:
                item["cost"] = v[3]
                v[4], v[5] = v[2], v[3]
            acct.on_openorders(modify=[item])
            lots = sum(x[4] if x[0] == 0 else -x[4] for x in state.values())
            cash = sum(x[5] if x[0] == 0 else -x[5] for x in state.values())
            p = acct.position("X")
            assert p.qty_lots == lots and p.realized_pnl - p.entry_notional == -cash
            assert acct.order(oid).filled_lots == v[2]
            if sides == (0,) and lots:
                assert p.avg_entry_price == Fraction(cash, lots)
        acct._check_invariants()


# ---- batches (review item 8) -----------------------------------------------------------

def _batch_account(**kw: Any) -> tuple[Account, list[tuple[str, Any]]]:
    acct = account(**kw)
    acct.add_order("1", "BTCUSDT", Side.BID, 10, 100, status=S.NEW, client_id="c1")
    acct.on_position_create("P1", "ETHUSDT", "InProgress", "2", "30")
    acct.set_balance("USDT", 500, 500, 0, 2)
    events: list[tuple[str, Any]] = []
    acct.set_callbacks(on_order=lambda o: events.append(("order", o.order_id)),
                       on_position=lambda p: events.append(("position", p.symbol)),
                       on_balance=lambda a, b: events.append(("balance", a)),
                       on_error=lambda e: events.append(("error", type(e).__name__)))
    return acct, events


def test_batch_commits_whole_and_notifies_after() -> None:
    acct, events = _batch_account()
    seen_state: list[tuple[int, int, int]] = []
    acct.set_callbacks(on_order=lambda o: (events.append(("order", o.order_id)), seen_state.append(
        (acct.order("1").filled_lots, acct.position("ETHUSDT").qty_lots, acct.balance("USDT").total))),
        on_position=lambda p: events.append(("position", p.symbol)),
        on_balance=lambda a, b: events.append(("balance", a)))
    with acct.batch() as b:
        assert acct.in_batch
        assert acct.apply_fill("1", 1, 100, 3)
        assert acct.apply_fill("1", 2, 101, 2)
        assert acct.on_position_update("P1", "ETHUSDT", "InProgress", "5", "31")
        assert acct.on_balances([{"asset": "USDT", "total": "7", "available": "7"}]) == 1
        assert events == []            # nothing delivered inside the batch
    assert b.applied and not acct.in_batch
    # One notification per changed record, in first-change order, with the final state.
    assert events == [("order", "1"), ("position", "BTCUSDT"), ("position", "ETHUSDT"), ("balance", "USDT")]
    assert seen_state == [(5, 500, 7 * 10**8)]
    assert acct.order("1").filled_lots == 5 and acct.fill_count == 2
    acct._check_invariants()


def test_refused_call_in_feed_mode_rolls_the_whole_batch_back() -> None:
    acct, events = _batch_account(feed_mode=True)
    acct.add_order("2", "BTCUSDT", Side.ASK, 4, 100, status=S.NEW)
    acct.apply_order_event("2", OrderEvent.CANCELED)
    assert acct.remove_closed_orders() == 1        # slot 1 becomes free: a new order reuses it
    events.clear()
    before = full_state(acct)
    before_ids = (acct.order_ids_by_slot(), acct.order_capacity, acct.fill_count, acct.closed_order_count)
    acct.begin_batch()
    assert acct.apply_fill("1", 1, 100, 10)                                   # fills and closes "1"
    assert acct.on_openorders(modify=[{"id": "s1", "symbol": "BTCUSDT", "side": "sell", "state": "partial",
                                       "exec": 1, "resd": 1, "cost": 100, "clientId": "c1"},
                                      {"id": "s2", "symbol": "BTCUSDT", "side": "sell", "state": "open",
                                       "exec": 0, "resd": 1, "cost": 0}]) == 2    # reuses slot 1, appends
    assert acct.on_position_update("P1", "ETHUSDT", "Completed", "0")
    assert acct.on_position_create("P2", "ETHUSDT", "InProgress", "1", "40")
    assert acct.on_balances([{"asset": "USDT", "total": "1", "available": "1"},
                             {"asset": "EUR", "total": "2", "available": "2"}]) == 2   # a new asset
    assert acct.set_position_status("BTCUSDT", PositionStatus.FINISHING)
    assert acct.order_by_client_id("c1").order_id == "s1"
    assert acct.apply_fill("1", 9, 100, 1) is False                           # refused: closed
    assert acct.commit_batch() == 0
    assert full_state(acct) == before
    assert (acct.order_ids_by_slot(), acct.order_capacity, acct.fill_count, acct.closed_order_count) == before_ids
    assert acct.order_by_client_id("c1").order_id == "1"
    with pytest.raises(OrderInputError):
        acct.order("s1")
    with pytest.raises(OrderInputError):
        acct.balance("EUR")
    assert acct.on_position_update("P2", "ETHUSDT", "InProgress", "1", "40") is False   # P2 unknown again
    assert events == [("error", "InvalidTransition"), ("error", "OrderInputError")]
    acct._check_invariants()
    # The account works normally afterwards, reusing the same free slot.
    assert acct.add_order("n", "BTCUSDT", Side.BID, 1, 100, status=S.NEW) == 1
    acct._check_invariants()


def test_exception_in_batch_body_rolls_back_and_propagates() -> None:
    acct, events = _batch_account()
    events.clear()
    before = full_state(acct)
    with pytest.raises(InvalidTransition):
        with acct.batch():
            acct.apply_fill("1", 1, 100, 4)
            acct.on_position_update("P1", "ETHUSDT", "Created", "1", "1")     # IN_PROGRESS -> CREATED
    assert full_state(acct) == before and not acct.in_batch and events == []
    with pytest.raises(ZeroDivisionError):
        with acct.batch():
            acct.apply_fill("1", 1, 100, 4)
            1 / 0
    assert full_state(acct) == before and events == []
    with acct.batch() as b:
        pass
    assert b.applied and events == []


def test_batch_misuse_is_refused() -> None:
    acct, _ = _batch_account()
    from engine.errors import EngineError

    with pytest.raises(EngineError, match="without an open batch"):
        acct.commit_batch()
    with pytest.raises(EngineError, match="without an open batch"):
        acct.abort_batch()
    acct.begin_batch()
    with pytest.raises(EngineError, match="do not nest"):
        acct.begin_batch()
    with pytest.raises(EngineError, match="inside a batch"):
        acct.remove_closed_orders()
    acct.apply_fill("1", 1, 100, 4)
    assert acct.abort_batch() == 0
    assert acct.order("1").filled_lots == 0 and acct.position("BTCUSDT").qty_lots == 0


# ---- retention of closed orders (review item 11) ---------------------------------------

def test_retention_keeps_the_newest_closed_orders_and_slots_flat() -> None:
    acct = Account(instruments=[btc()], max_closed_orders=100)
    assert acct.max_closed_orders == 100 and Account().max_closed_orders == 10_000
    acct.add_order("keep", "BTCUSDT", Side.BID, 5, 100, status=S.NEW)
    n = 1_000_000
    chunk = 50_000
    caps = []
    for start in range(0, n, chunk):
        # Each lifecycle: add, fill completely (closes), through the public API.
        for i in range(start, start + chunk):
            oid = str(i)
            acct.add_order(oid, "BTCUSDT", i & 1, 2, 100, status=S.NEW)
            acct.apply_fill(oid, i + 1, 100, 2)
        caps.append(acct.order_capacity)
    assert max(caps) == caps[0] <= 256
    assert 100 <= acct.closed_order_count <= 100 + 100 // 8 + 1
    assert acct.pruned_count == n - acct.closed_order_count
    assert acct.order("keep").status == S.NEW                  # open orders are never pruned
    assert acct.order(str(n - 1)).status == S.FILLED           # the newest closed are kept
    assert acct.order(str(n - 100)).status == S.FILLED
    with pytest.raises(OrderInputError):
        acct.order(str(n - 200))
    assert acct.has_order(str(n - 1)) and acct.has_order("keep") and not acct.has_order(str(n - 200))
    assert acct.position("BTCUSDT").qty_lots == 0 and acct.fill_count == n
    acct._check_invariants()


def test_retention_never_prunes_inside_a_callback() -> None:
    acct = Account(instruments=[btc()], max_closed_orders=0)
    seen: list[str] = []

    def on_order(o: Order) -> None:
        # Inside the callback every order closed so far is still readable by id.
        for oid in seen:
            assert acct.order(oid).status == S.FILLED
        if o.is_closed:
            seen.append(o.order_id)
            if len(seen) < 5:
                nxt = f"o{len(seen)}"
                acct.add_order(nxt, "BTCUSDT", Side.BID, 1, 100, status=S.NEW)
                acct.apply_fill(nxt, len(seen) + 1, 100, 1)

    acct.set_callbacks(on_order=on_order)
    acct.add_order("o0", "BTCUSDT", Side.BID, 1, 100, status=S.NEW)
    acct.apply_fill("o0", 1, 100, 1)
    assert seen == ["o0", "o1", "o2", "o3", "o4"]
    # The outermost call pruned them all once its callbacks were done.
    assert acct.closed_order_count == 0 and acct.order_count == 0
    acct._check_invariants()
    unbounded = Account(instruments=[btc()], max_closed_orders=None)
    for i in range(50):
        unbounded.add_order(str(i), "BTCUSDT", Side.BID, 1, 100, status=S.NEW)
        unbounded.apply_order_event(str(i), OrderEvent.CANCELED)
    assert unbounded.closed_order_count == 50 and unbounded.max_closed_orders == -1
    with pytest.raises(OrderInputError, match="max_closed_orders"):
        Account(max_closed_orders=-1)


def test_batch_defers_pruning_until_commit() -> None:
    acct = Account(instruments=[btc()], max_closed_orders=0)
    with acct.batch() as b:
        for i in range(3):
            acct.add_order(str(i), "BTCUSDT", Side.BID, 1, 100, status=S.NEW)
            assert acct.apply_fill(str(i), i + 1, 100, 1)
        assert acct.closed_order_count == 3 and all(acct.has_order(str(i)) for i in range(3))
    assert b.applied and acct.closed_order_count == 0 and acct.order_count == 0
    assert acct.position("BTCUSDT").qty_lots == 3
    acct._check_invariants()


def test_retention_bounds_venue_position_ids() -> None:
    acct = Account(instruments=[btc(), Instrument("ETHUSDT", "0.01", "0.01")], max_closed_orders=8)
    acct.on_position_create("E0", "ETHUSDT", "InProgress", "1", "10")     # ETH's newest id: kept
    for i in range(200):
        assert acct.on_position_create(f"B{i}", "BTCUSDT", "InProgress", "1", "100")
        assert acct.on_position_update(f"B{i}", "BTCUSDT", "Completed", "0")
        assert acct.position_id_count <= 8 + 8 // 8 + 1 + 2 + 1
    assert acct.on_position_update("E0", "ETHUSDT", "InProgress", "2", "10")
    assert acct.on_position_create("B200", "BTCUSDT", "InProgress", "1", "100")
    assert acct.on_position_update("B200", "BTCUSDT", "InProgress", "2", "100")
    with pytest.raises(OrderInputError, match="unknown position id 'B3'"):
        acct.on_position_update("B3", "BTCUSDT", "InProgress", "1", "100")
    with pytest.raises(InvalidTransition, match="already created"):
        acct.on_position_create("B199", "BTCUSDT", "InProgress", "1", "100")   # recent ids are remembered
