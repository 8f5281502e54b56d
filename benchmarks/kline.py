"""Kline suite: ``python -m benchmarks kline [--quick] [--json PATH]``.

Every competitor builds candles from the same deterministic trade stream (numpy seed:
exponential gaps of 50 ms mean with 30% bursts of equal timestamps, a random-walk
price, sizes 1..5000 lots, random taker side), each in its own process.

Cases (ns per trade, median of repeats):
- ``add_trade``: one trade from Python into four time frames (1s, 1m, 5m, 1h), in a
  ``for p, q, t, s in zip(...)`` loop over Python lists. The bare loop is measured on
  its own as ``python-loop``; the engine's own cost is add_trade minus python-loop.
  Peer: the pure-Python reference aggregator (tests/kline_reference.py).
- ``add_trades``: the same four frames from numpy arrays in one call. Peers: pandas
  ``resample`` of the same trades (open/high/low/close, volume, taker-buy volume,
  count, notional for each of the four rules, from a prepared DataFrame: building the
  DatetimeIndex and the taker-buy and notional columns is not timed) and the reference fed the same trades (its per-trade
  loop is the only way it has). ``extra`` has millions of trades per second.
- ``add_trades_all``: the engine with nine frames at once (1s, 1m, 5m, 1h, 1d, 1w,
  tick:100, volume:500000, notional:10**12), batch.
The reference runs on a tenth of the trades (it is two orders of magnitude slower);
ns per trade is comparable because its cost per trade does not depend on n.

``ns_per_op`` is the wall-clock median (harness); ``extra["cpu_ns_per_op"]`` is the
median of the process's CPU time for the same work, which other processes competing
for the two cores do not inflate. Both are printed; quote both.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any, Callable

import numpy as np

from benchmarks.harness import Record, importable, run_isolated, time_ns_per_op

SEED = 20240808
T0_NS = 1_723_161_600_000_000_000
FRAMES = ("1s", "1m", "5m", "1h")
ALL_FRAMES = ("1s", "1m", "5m", "1h", "1d", "1w", "tick:100", "volume:500000", "notional:1000000000000")
PANDAS_RULES = ("1s", "1min", "5min", "1h")


def make_trades(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic trades: prices (ticks), qtys (lots), ts_ns, sides, all int64."""
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.3, 0, rng.exponential(50_000_000, n)).astype(np.int64)
    ts = T0_NS + np.cumsum(gaps)
    prices = 6_000_000 + np.cumsum(rng.integers(-3, 4, n))
    qtys = rng.integers(1, 5_000, n)
    sides = rng.integers(-1, 2, n)
    return prices.astype(np.int64), qtys.astype(np.int64), ts.astype(np.int64), sides.astype(np.int64)


def _engine(frames: tuple[str, ...]) -> Any:
    from engine import Instrument, KlineAggregator

    return KlineAggregator(Instrument("BENCH", "0.01", "0.00001"), frames, empty="fill", history=1000)


def _reference(frames: tuple[str, ...]) -> Any:
    from tests.kline_reference import ReferenceAggregator

    return ReferenceAggregator(frames, empty="fill", history=1000)


def _pandas_resample(df: Any) -> int:
    out = 0
    for rule in PANDAS_RULES:
        r = df.resample(rule)
        ohlc = r["price"].ohlc()
        sums = r[["qty", "buy_qty", "notional"]].sum()
        count = r["price"].count()
        out += len(ohlc) + len(sums) + len(count)
    return out


def bench_impl(impl: str, case: str, n: int, repeats: int) -> dict[str, Any]:
    """Run one (impl, case) in this process; called through run_isolated."""
    if impl == "reference":
        n = max(n // 10, 1000)
    prices, qtys, ts, sides = make_trades(n)
    fn: Callable[[], int]
    if case == "add_trade":
        pl, ql, tl, sl = prices.tolist(), qtys.tolist(), ts.tolist(), sides.tolist()
        if impl == "python-loop":
            def fn() -> int:
                for p, q, t, s in zip(pl, ql, tl, sl):
                    pass
                return n
        else:
            holder: list[Any] = []

            def fn() -> int:
                agg = _engine(FRAMES) if impl == "engine" else _reference(FRAMES)
                holder[:] = [agg]  # keep the previous one alive: its teardown is not timed
                add = agg.add_trade
                for p, q, t, s in zip(pl, ql, tl, sl):
                    add(p, q, t, s)
                return n
    elif case in ("add_trades", "add_trades_all"):
        frames = ALL_FRAMES if case == "add_trades_all" else FRAMES
        if impl == "engine":
            def fn() -> int:
                _engine(frames).add_trades(prices, qtys, ts, sides)
                return n
        elif impl == "reference":
            pl, ql, tl, sl = prices.tolist(), qtys.tolist(), ts.tolist(), sides.tolist()

            def fn() -> int:
                _reference(frames).add_trades(pl, ql, tl, sl)
                return n
        elif impl == "pandas":
            import pandas as pd

            df = pd.DataFrame(
                {"price": prices, "qty": qtys, "buy_qty": np.where(sides > 0, qtys, 0), "notional": prices * qtys},
                index=pd.DatetimeIndex(ts.astype("datetime64[ns]")),
            )

            def fn() -> int:
                _pandas_resample(df)
                return n
        else:
            raise ValueError(impl)
    else:
        raise ValueError(case)
    fn()  # warm-up (imports, allocator)
    ns = time_ns_per_op(fn, repeats)
    extra: dict[str, Any] = {"n": n, "cpu_ns_per_op": round(_cpu_ns_per_op(fn, repeats), 2)}
    if case != "add_trade":
        extra["mtrades_per_s"] = round(1e3 / ns, 2)
    return {"ns_per_op": ns, "ops": n, "extra": extra}


def _cpu_ns_per_op(fn: Callable[[], int], repeats: int) -> float:
    """Median of this thread's CPU time per op: on a shared 2-core machine the wall-clock
    median also counts time spent waiting for a core, the CPU time does not."""
    samples = []
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.thread_time_ns()
            ops = fn()
            samples.append((time.thread_time_ns() - t0) / max(ops, 1))
    finally:
        gc.enable()
    return statistics.median(samples)


def _available(impl: str) -> bool:
    return impl != "pandas" or importable("pandas")


def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    n = 100_000 if args.quick else 1_000_000
    repeats = 3 if args.quick else 7
    plan = [
        ("add_trade", ["engine", "reference", "python-loop"]),
        ("add_trades", ["engine", "pandas", "reference"]),
        ("add_trades_all", ["engine"]),
    ]
    records = []
    for case, impls in plan:
        for impl in impls:
            if not _available(impl):
                print(f"skipping {impl}: not installed (pip install -e '.[bench]')")
                continue
            res = run_isolated("benchmarks.kline", "bench_impl", {"impl": impl, "case": case, "n": n, "repeats": repeats})
            records.append(Record("kline", case, impl, res["ns_per_op"], res["ops"], repeats, res["extra"] or None))
            print(f"  {case:<15} {impl:<12} {res['ns_per_op']:10.1f} ns/trade wall, "
                  f"{res['extra']['cpu_ns_per_op']:10.1f} ns/trade CPU", flush=True)
    def figure(case: str, impl: str, cpu: bool) -> float | None:
        rec = next((r for r in records if r.case == case and r.impl == impl), None)
        if rec is None:
            return None
        return float(rec.extra["cpu_ns_per_op"]) if cpu and rec.extra else rec.ns_per_op

    for cpu in (False, True):
        label = "CPU time" if cpu else "wall time"
        loop, eng = figure("add_trade", "python-loop", cpu), figure("add_trade", "engine", cpu)
        if loop is not None and eng is not None:
            print(f"  [{label}] add_trade net of the Python loop: {eng - loop:.1f} ns (goal <= 60)")
        batch = figure("add_trades", "engine", cpu)
        if batch is not None:
            print(f"  [{label}] add_trades, 4 time frames: {1e3 / batch:.1f} M trades/s (goal >= 50)")
    return records
