"""``python -m benchmarks positions``: fills into orders and positions, order status updates.

Cases (every impl gets the same deterministic data; each impl runs in its own process):

- ``fill_order_position``: one fill applied to its order and to the position, called
  from Python. Data: K groups (one instrument/position with a buy and a sell order
  each), M fills per group, sides 2:1 buy:sell so positions stay open and partial
  closes happen. engine: ``Account.apply_fill(order_id, trade_id, price_ticks,
  qty_lots)``; reference: ``tests/positions_reference.ReferenceAccount`` (Python ints,
  dicts, the same integer rule; its Fraction textbook view is switched off here);
  nautilus_trader: ``order.apply(OrderFilled)`` then ``Position.apply``, with
  the ``OrderFilled`` events built before the clock starts (so nautilus is not
  charged for building its event objects; engine and reference get plain ints).
- ``fill_position``: the same fills into the position alone.
- ``order_status_update``: an order cycled through REPLACE_REQUESTED / REPLACED
  (nautilus: ``OrderPendingUpdate`` / ``OrderUpdated``), M updates per order.
- ``order_update_strings`` (engine only): the bot platform's full order object with
  decimal strings (``Account.on_position_order_update``), fill quantity rising.

nautilus_trader keeps every fill's trade id in a list that it scans for duplicates,
so its cost per fill grows with fills per order/position; M is fixed (100) for every
impl and reported in ``extra``. When nautilus_trader is not importable its rows are
skipped with a note.
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.harness import Record, run_isolated, time_ns_per_op

SUITE = "positions"
FILLS_PER_GROUP = 100
MODULE = "benchmarks.positions"


def _reference_module() -> Any:
    path = Path(__file__).resolve().parent.parent / "tests" / "positions_reference.py"
    spec = importlib.util.spec_from_file_location("positions_reference", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the reference from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["positions_reference"] = module
    spec.loader.exec_module(module)
    return module


def make_fills(groups: int, per_group: int, seed: int = 11) -> list[tuple[int, int, int, int, int]]:
    """(group, side, trade_id, price_ticks, qty_lots) rows; side 0 buys twice as often
    as side 1 sells, so each group's position stays long and is partly closed."""
    rng = random.Random(seed)
    rows = []
    trade_id = 0
    for g in range(groups):
        for i in range(per_group):
            trade_id += 1
            side = 1 if i % 3 == 1 else 0
            rows.append((g, side, trade_id, 5_000_000 + rng.randint(-5_000, 5_000), rng.randint(1, 9)))
    return rows


def median_fresh(make: Callable[[], Any], body: Callable[[Any], int], repeats: int) -> float:
    """Median ns/op of ``body(state)`` over ``repeats`` runs, each on a fresh ``make()``
    (orders and positions are mutated, so state is rebuilt outside the clock)."""
    samples = []
    for _ in range(repeats):
        state = make()
        samples.append(time_ns_per_op(lambda: body(state), 1))
    samples.sort()
    return samples[len(samples) // 2]


# --------------------------------------------------------------------------- engine

def bench_engine(groups: int, per_group: int, repeats: int) -> dict[str, float]:
    from engine import Account, Instrument, OrderEvent, OrderStatus
    from engine.account import Position

    rows = make_fills(groups, per_group)
    insts = [Instrument(f"I{g}", "0.01", "0.001") for g in range(groups)]
    fills = [(f"{'BS'[side]}-{g}", tid, px, q) for g, side, tid, px, q in rows]
    results: dict[str, float] = {}

    def fresh() -> Any:
        acct = Account("bench", insts)
        for g in range(groups):
            acct.add_order(f"B-{g}", f"I{g}", 0, 10**12, 5_000_000, status=OrderStatus.NEW)
            acct.add_order(f"S-{g}", f"I{g}", 1, 10**12, 5_000_000, status=OrderStatus.NEW)
        return acct

    def run_fill(acct: Any) -> int:
        apply = acct.apply_fill
        for oid, tid, px, q in fills:
            apply(oid, tid, px, q)
        return len(fills)

    results["fill_order_position"] = median_fresh(fresh, run_fill, repeats)

    pos_fills = [(g, side, px, q) for g, side, _tid, px, q in rows]

    def run_pos(ps: list[Any]) -> int:
        for g, side, px, q in pos_fills:
            ps[g].apply_fill(side, px, q)
        return len(pos_fills)

    results["fill_position"] = median_fresh(lambda: [Position(i) for i in insts], run_pos, repeats)

    updates = [(f"B-{g}", OrderEvent.REPLACE_REQUESTED if i % 2 == 0 else OrderEvent.REPLACED, i + 1)
               for g in range(groups) for i in range(per_group)]

    def run_updates(acct: Any) -> int:
        ev = acct.apply_order_event
        for oid, event, seq in updates:
            ev(oid, event, 0, seq)
        return len(updates)

    results["order_status_update"] = median_fresh(fresh, run_updates, repeats)

    str_updates = []
    for g in range(groups):
        for i in range(per_group):
            filled = f"{(i + 1) // 1000}.{(i + 1) % 1000:03d}"
            str_updates.append((f"B-{g}", "PartiallyFilled", "1000000000.000", "50000.00", filled, i + 1))

    def run_str_updates(acct: Any) -> int:
        upd = acct.on_position_order_update
        for oid, status, qty, price, filled, seq in str_updates:
            upd(oid, status, qty, price, None, filled, 0, seq)
        return len(str_updates)

    results["order_update_strings"] = median_fresh(fresh, run_str_updates, repeats)
    return results


# --------------------------------------------------------------------------- reference

def bench_reference(groups: int, per_group: int, repeats: int) -> dict[str, float]:
    ref = _reference_module()
    rows = make_fills(groups, per_group)
    fills = [(f"{'BS'[side]}-{g}", tid, px, q) for g, side, tid, px, q in rows]
    results: dict[str, float] = {}

    def fresh() -> Any:
        acct = ref.ReferenceAccount(exact_view=False)
        for g in range(groups):
            acct.add_order(f"B-{g}", f"I{g}", 0, 10**12, 5_000_000)
            acct.add_order(f"S-{g}", f"I{g}", 1, 10**12, 5_000_000)
        return acct

    def run_fill(acct: Any) -> int:
        apply = acct.apply_fill
        for oid, tid, px, q in fills:
            apply(oid, tid, px, q)
        return len(fills)

    results["fill_order_position"] = median_fresh(fresh, run_fill, repeats)

    pos_fills = [(g, side, px, q) for g, side, _tid, px, q in rows]

    def run_pos(ps: list[Any]) -> int:
        for g, side, px, q in pos_fills:
            ps[g].apply_fill(side, px, q)
        return len(pos_fills)

    results["fill_position"] = median_fresh(
        lambda: [ref.ReferencePosition(exact_view=False) for _ in range(groups)], run_pos, repeats)

    updates = [(f"B-{g}", ref.REPLACE_REQUESTED if i % 2 == 0 else ref.REPLACED)
               for g in range(groups) for i in range(per_group)]

    def run_updates(acct: Any) -> int:
        orders = acct.orders
        for oid, event in updates:
            orders[oid].apply_event(event)
        return len(updates)

    results["order_status_update"] = median_fresh(fresh, run_updates, repeats)
    return results


# --------------------------------------------------------------------------- nautilus_trader

def bench_nautilus(groups: int, per_group: int, repeats: int) -> dict[str, float]:
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.identifiers import ClientOrderId, PositionId, TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.model.position import Position
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.test_kit.stubs.events import TestEventStubs
    from nautilus_trader.test_kit.stubs.execution import TestExecStubs

    inst = TestInstrumentProvider.btcusdt_binance()   # tick 0.01, lot 0.000001
    rows = make_fills(groups, per_group)
    results: dict[str, float] = {}

    def new_order(side: Any, coid: str) -> Any:
        order = TestExecStubs.limit_order(instrument=inst, order_side=side, price=Price.from_str("50000.00"),
                                          quantity=Quantity.from_str("1000000.000000"),
                                          client_order_id=ClientOrderId(coid))
        order.apply(TestEventStubs.order_submitted(order))
        order.apply(TestEventStubs.order_accepted(order))
        return order

    def build_fills() -> list[list[tuple[Any, Any]]]:
        out: list[list[tuple[Any, Any]]] = [[] for _ in range(groups)]
        orders = {}
        for g, side, tid, px, q in rows:
            key = (g, side)
            if key not in orders:
                orders[key] = new_order(OrderSide.BUY if side == 0 else OrderSide.SELL, f"{'BS'[side]}-{g}")
            order = orders[key]
            fill = TestEventStubs.order_filled(
                order, inst, trade_id=TradeId(str(tid)), position_id=PositionId(f"P-{g}"),
                last_qty=Quantity.from_str(f"0.{q:03d}000"), last_px=Price.from_str(f"{px // 100}.{px % 100:02d}"))
            out[g].append((order, fill))
        return out

    def run_fill(data: list[list[tuple[Any, Any]]]) -> int:
        n = 0
        for group in data:
            pos = None
            for order, fill in group:
                order.apply(fill)
                if pos is None:
                    pos = Position(inst, fill)
                else:
                    pos.apply(fill)
                n += 1
        return n

    def run_pos(data: list[list[tuple[Any, Any]]]) -> int:
        n = 0
        for group in data:
            pos = None
            for _order, fill in group:
                if pos is None:
                    pos = Position(inst, fill)
                else:
                    pos.apply(fill)
                n += 1
        return n

    results["fill_order_position"] = median_fresh(build_fills, run_fill, repeats)
    results["fill_position"] = median_fresh(build_fills, run_pos, repeats)

    def build_updates() -> list[tuple[Any, Any]]:
        # Built ahead, as for the fills: pending update / updated, alternately.
        built = []
        for g in range(groups):
            order = new_order(OrderSide.BUY, f"U-{g}")
            for i in range(per_group):
                event = TestEventStubs.order_pending_update(order) if i % 2 == 0 else TestEventStubs.order_updated(order)
                built.append((order, event))
        return built

    def run_updates(built: list[tuple[Any, Any]]) -> int:
        for order, event in built:
            order.apply(event)
        return len(built)

    results["order_status_update"] = median_fresh(build_updates, run_updates, repeats)
    return results


def nautilus_available() -> bool:
    """True when nautilus_trader imports (it is optional: a benchmark peer only)."""
    return importlib.util.find_spec("nautilus_trader") is not None


def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    """Run every impl in its own process; return one Record per (case, impl)."""
    groups = 10 if args.quick else 100
    repeats = 3 if args.quick else 7
    payload = {"groups": groups, "per_group": FILLS_PER_GROUP, "repeats": repeats}
    impls: list[tuple[str, str]] = [("engine", "bench_engine"), ("reference", "bench_reference")]
    if nautilus_available():
        impls.append(("nautilus_trader", "bench_nautilus"))
    else:
        print("positions: nautilus_trader is not installed; its rows are skipped", file=sys.stderr)
    records = []
    extra = {"fills_per_order_group": FILLS_PER_GROUP, "groups": groups}
    for impl, func in impls:
        t0 = time.perf_counter()
        figures = run_isolated(MODULE, func, payload)
        for case, ns in figures.items():
            records.append(Record(SUITE, case, impl, ns, ops=groups * FILLS_PER_GROUP, repeats=repeats,
                                  extra={**extra, "ops_per_s": round(1e9 / ns) if ns else None}))
        print(f"positions: {impl} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return records
