"""Differential stress test: engine KlineAggregator against the pure-Python reference.

1,000,000 seeded random trades with random gaps (including gaps of days), bursts of
equal timestamps, and late / out-of-order trades, through every bar type at once
(time frames 1s..1w, tick, volume and notional bars), in fill and skip mode. The engine
is fed in large add_trades batches (plus advance() calls and a stretch of single
add_trade calls); every closed bar (through on_close), every late trade (through
on_late), the history rings, the open bars and the counters must equal the reference's.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import Instrument, KlineAggregator
from tests.kline_reference import ReferenceAggregator

INST = Instrument("BTCUSDT", "0.01", "0.00001")
T0_NS = 1_704_067_200_000_000_000 + 3_600_000_000_000 * 7 + 123_456_789  # 2024-01-01 07:00 + a bit
FRAMES = ("1s", "1m", "5m", "1h", "1d", "1w", "tick:37", "volume:250000", "notional:1500000000000")
SKIP_FRAMES = ("1s", "15s", "1m", "1h", "tick:1000", "volume:3000000", "notional:10000000000000")


def make_trades(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded trades: bursts (equal ts), small and large gaps, a few multi-day gaps, and
    ~1% late trades reaching back up to 3 minutes (into closed and open bars)."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n)
    step = np.where(kind < 0.35, 0, rng.exponential(60_000_000, n).astype(np.int64))  # bursts / ~60 ms
    step = np.where((kind > 0.99) & (kind < 0.995), rng.integers(1, 90_000_000_000, n), step)  # up to 90 s
    step = np.where(kind > 0.99995, rng.integers(1, 3 * 3_600_000_000_000, n), step)  # up to 3 h
    step[n // 3] = 2 * 86_400_000_000_000 + 17  # two days: fill gaps longer than the history
    step[2 * n // 3] = 9 * 86_400_000_000_000  # a week boundary or two
    ts = T0_NS + np.cumsum(step)
    # Some trades land exactly on minute boundaries.
    on_boundary = rng.random(n) < 0.002
    ts = np.where(on_boundary, ts - ts % 60_000_000_000, ts)
    ts = np.maximum.accumulate(ts)
    late = rng.random(n) < 0.01
    ts = np.where(late, ts - rng.integers(0, 180_000_000_000, n), ts).astype(np.int64)
    # Stragglers from before the 9-day gap: late for every frame, the weekly one included.
    ts[2 * n // 3 + 5000: 2 * n // 3 + 5003] = ts[2 * n // 3 - 1]
    prices = (6_000_000 + np.cumsum(rng.integers(-5, 6, n))).astype(np.int64)
    qtys = np.where(rng.random(n) < 0.01, rng.integers(10_000, 5_000_000, n), rng.integers(1, 3_000, n)).astype(np.int64)
    sides = rng.integers(-1, 2, n).astype(np.int64)
    return prices, qtys, ts, sides


def _rows(arr: Any) -> list[tuple[int, ...]]:
    rows: list[tuple[int, ...]] = arr.tolist()  # structured rows -> tuples of Python ints
    return rows


def _record_row(bar: Any) -> tuple[int, ...]:
    row: tuple[int, ...] = bar.tolist()
    return row


def _compare(agg: KlineAggregator, ref: ReferenceAggregator, frames: tuple[str, ...],
             closed: dict[str, list[tuple[int, ...]]], late: dict[str, list[tuple[int, ...]]]) -> None:
    agg._check_invariants()
    for name in frames:
        rf = ref.frames[name]
        assert closed[name] == rf.closed_log, name
        assert late[name] == [tuple(t) for t in rf.late_log], name
        assert _rows(agg.bars(name)) == ref.bars(name), name
        cur = agg.current(name)
        assert (None if cur is None else _record_row(cur)) == ref.current(name), name
        stats = agg.stats(name)
        assert {k: stats[k] for k in ("closed", "late", "fill_skipped")} == ref.stats(name), name


def _run(n: int, seed: int, frames: tuple[str, ...], empty: str, history: int, batch: int) -> dict[str, int]:
    prices, qtys, ts, sides = make_trades(n, seed)
    closed: dict[str, list[tuple[int, ...]]] = {f: [] for f in frames}
    late: dict[str, list[tuple[int, ...]]] = {f: [] for f in frames}
    agg = KlineAggregator(
        INST, frames, empty=empty, history=history,
        on_close=lambda name, bar: closed[name].append(_record_row(bar)),
        on_late=lambda name, p, q, t, s: late[name].append((p, q, t, s)),
    )
    ref = ReferenceAggregator(frames, empty=empty, history=history)
    pl, ql, tl, sl = prices.tolist(), qtys.tolist(), ts.tolist(), sides.tolist()
    single = range(n // 2, n // 2 + 20_000)  # a stretch through the per-trade entry point
    start = 0
    while start < n:
        stop = min(start + batch, n)
        if start == single.start:
            for i in single:
                agg.add_trade(pl[i], ql[i], tl[i], sl[i])
                ref.add_trade(pl[i], ql[i], tl[i], sl[i])
            stop = single.stop
        else:
            agg.add_trades(prices[start:stop], qtys[start:stop], ts[start:stop], sides[start:stop])
            ref.add_trades(pl[start:stop], ql[start:stop], tl[start:stop], sl[start:stop])
        # A quiet-market clock tick now and then: closes bars on time.
        if (start // batch) % 3 == 1:
            t = tl[stop - 1] + 75_000_000_000
            agg.advance(t)
            ref.advance(t)
        _compare(agg, ref, frames, closed, late)
        start = stop
    assert agg.callback_errors == 0 and agg.events_dropped == 0
    return {name: agg.stats(name)["closed"] for name in frames} | {
        "late:" + name: agg.stats(name)["late"] for name in frames
    } | {"fill_skipped": sum(agg.stats(name)["fill_skipped"] for name in frames)}


def test_differential_one_million_trades_fill() -> None:
    counts = _run(1_000_000, seed=20240808, frames=FRAMES, empty="fill", history=4096, batch=125_000)
    # The data must really exercise every path the test is about.
    assert all(counts[name] > 20 for name in FRAMES if name not in ("1d", "1w")), counts
    assert counts["1d"] >= 10 and counts["1w"] >= 2 and counts["fill_skipped"] > 0
    assert all(counts["late:" + name] > 0 for name in FRAMES), counts


def test_differential_skip_mode() -> None:
    counts = _run(300_000, seed=7, frames=SKIP_FRAMES, empty="skip", history=50_000, batch=60_000)
    assert all(counts[name] > 20 for name in SKIP_FRAMES), counts
    assert counts["fill_skipped"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_histories_and_many_batches(seed: int) -> None:
    """Tiny rings (wrapping constantly) and tiny batches, so ring wrap-around, fill
    truncation and checkpoint comparisons happen all the time."""
    _run(20_000, seed=seed, frames=FRAMES, empty="fill", history=3, batch=997)
