"""Decode suite: ``python -m benchmarks decode [--quick] [--json PATH]``.

Real recorded Binance depth frames (tests/data/binance, copied from hftbacktest, MIT):
``spot``: the 3,449 BTCUSDT ``depth@100ms`` diffs that follow the REST snapshot
(~1.3 KB and ~36 levels a frame); ``usdm``: the USD-M ``depth@0ms`` diffs of the first
6,000 lines (~1.4 KB, ~59 levels). Each competitor, in its own process, loads the
snapshot into its book (not timed), then processes every diff in order: the whole
sequence is one timed run, repeated on a fresh book; the median is reported.

Impls (each does the whole job: bytes in, exact integers, sequence check, book updated):
- ``engine``: ``BinanceBookSync.feed(frame)`` -- the jscan decoder into the scratch
  buffer, the ``U``/``pu`` chain check, the book's whole-or-nothing apply.
- ``msgspec``: ``msgspec.json.decode`` into typed Structs, ``Decimal`` -> int ticks and
  lots, the same chain check, a ``sortedcontainers.SortedDict`` per side.
- ``orjson`` / ``json``: ``loads`` to dicts, then the same conversion and book.
- ``engine-decode-only``: ``BinanceDecoder.decode_kind`` -- the full decode and
  validation into the scratch buffer (ticks and lots included), no book.
- ``msgspec-decode-only``: the typed decode alone, nothing converted or applied.

Cases: ``<data>/frame`` (ns per frame) and ``<data>/level`` (the same divided by the
mean number of levels a frame). Goals: ``engine`` at least 10x faster than ``msgspec``
and faster than ``msgspec-decode-only``.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import msgspec

# numpy's OpenBLAS threads spin after use and steal one of the two cores; nothing here
# uses BLAS. Set before any import of numpy (the engine imports it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.harness import Record, run_isolated

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance"
FILES = {
    "spot": ("hftbacktest_spot_btcusdt_20240808.txt.xz", "spot", "0.01", "0.00000001"),
    "usdm": ("hftbacktest_usdm_btcusdt_20240808_first6000.txt.xz", "usdm", "0.1", "0.001"),
}
IMPLS = ("engine", "msgspec", "orjson", "json", "engine-decode-only", "msgspec-decode-only")


def load(data: str) -> tuple[list[bytes], bytes, list[bytes]]:
    """The depth diffs received before the REST snapshot, the snapshot, and the diffs
    after it, as raw frame bytes."""
    from feeds.recording import read_frames

    before: list[bytes] = []
    snapshot = b""
    diffs: list[bytes] = []
    for frame in read_frames(DATA / FILES[data][0]):
        if frame.payload.startswith(b'{"lastUpdateId"'):
            snapshot = frame.payload
        elif b'"depthUpdate"' in frame.payload:
            (diffs if snapshot else before).append(frame.payload)
    return before, snapshot, diffs


# --- the pure-Python pipelines (shared by msgspec, orjson and json) -------------------

class PyBook:
    """sortedcontainers book with exact integer ticks/lots and the Binance chain check."""

    def __init__(self, tick: str, lot: str, futures: bool) -> None:
        from sortedcontainers import SortedDict

        self.tick = Decimal(tick)
        self.lot = Decimal(lot)
        self.futures = futures
        self.bids: Any = SortedDict()
        self.asks: Any = SortedDict()
        self.last = -1

    def _ticks(self, text: str) -> int:
        steps = Decimal(text) / self.tick
        if steps != steps.to_integral_value():
            raise ValueError(f"price {text!r} is not a whole number of ticks")
        return int(steps)

    def _lots(self, text: str) -> int:
        steps = Decimal(text) / self.lot
        if steps != steps.to_integral_value():
            raise ValueError(f"size {text!r} is not a whole number of lots")
        return int(steps)

    def snapshot(self, last: int, bids: list[Any], asks: list[Any]) -> None:
        self.bids.clear()
        self.asks.clear()
        for p, q in bids:
            self.bids[self._ticks(p)] = self._lots(q)
        for p, q in asks:
            self.asks[self._ticks(p)] = self._lots(q)
        self.last = last

    def diff(self, U: int, u: int, pu: int, bids: list[Any], asks: list[Any]) -> None:
        if u <= self.last:
            return
        if (pu != self.last) if self.futures else (U != self.last + 1):
            if not (U <= self.last + 1 <= u):      # the first diff bridges the snapshot
                raise ValueError(f"gap at U={U}")
        # Convert everything before touching the book: whole or nothing.
        changes = [(self.bids, self._ticks(p), self._lots(q)) for p, q in bids]
        changes += [(self.asks, self._ticks(p), self._lots(q)) for p, q in asks]
        for side, price, qty in changes:
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)
        self.last = u


class Depth(msgspec.Struct):
    """A depthUpdate, typed (spot has no ``pu``)."""

    e: str
    E: int
    s: str
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]
    pu: int = -1


class Envelope(msgspec.Struct):
    """The combined-stream envelope."""

    stream: str
    data: Depth


class Snapshot(msgspec.Struct):
    """The REST depth snapshot."""

    lastUpdateId: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


def _msgspec_types() -> tuple[Any, Any]:
    return msgspec.json.Decoder(Envelope), msgspec.json.Decoder(Snapshot)


def _setup(impl: str, data: str, before: list[bytes], snapshot: bytes) -> tuple[Any, Callable[[bytes], Any]]:
    """A fresh book synced from the snapshot and the diffs buffered before it, and the
    per-frame function."""
    _, market, tick, lot = FILES[data]
    futures = market != "spot"
    if impl == "engine":
        from engine import Instrument, OrderBook
        from feeds.binance_sync import BinanceBookSync

        book = OrderBook(Instrument("BTCUSDT", tick, lot))
        sync = BinanceBookSync(book, market)
        for frame in before:
            sync.feed(frame)
        sync.feed(snapshot)
        return sync, sync.feed
    if impl == "engine-decode-only":
        from engine import Instrument
        from feeds.binance_decode import BinanceDecoder

        decoder = BinanceDecoder(Instrument("BTCUSDT", tick, lot), market)
        return None, decoder.decode_kind
    if impl in ("msgspec", "msgspec-decode-only"):
        env_dec, snap_dec = _msgspec_types()
        if impl == "msgspec-decode-only":
            return None, env_dec.decode
        pybook = PyBook(tick, lot, futures)
        s = snap_dec.decode(snapshot)
        pybook.snapshot(s.lastUpdateId, s.bids, s.asks)

        def msgspec_frame(frame: bytes) -> None:
            d = env_dec.decode(frame).data
            pybook.diff(d.U, d.u, d.pu, d.b, d.a)

        for frame in before:
            msgspec_frame(frame)
        return pybook, msgspec_frame
    if impl in ("orjson", "json"):
        import json

        import orjson

        loads = orjson.loads if impl == "orjson" else json.loads
        pybook = PyBook(tick, lot, futures)
        s = loads(snapshot)
        pybook.snapshot(s["lastUpdateId"], s["bids"], s["asks"])

        def dict_frame(frame: bytes) -> None:
            d = loads(frame)["data"]
            pybook.diff(d["U"], d["u"], d.get("pu", -1), d["b"], d["a"])

        for frame in before:
            dict_frame(frame)
        return pybook, dict_frame
    raise ValueError(f"unknown impl {impl!r}")


def bench_impl(impl: str, data: str, repeats: int) -> dict[str, Any]:
    """Median ns per frame of ``impl`` over ``data``; runs in its own process."""
    before, snapshot, diffs = load(data)
    samples = []
    state: Any = None
    for _ in range(repeats):
        state, per_frame = _setup(impl, data, before, snapshot)
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            for frame in diffs:
                per_frame(frame)
            samples.append((time.perf_counter_ns() - t0) / len(diffs))
        finally:
            gc.enable()
    extra: dict[str, Any] = {"frames": len(diffs)}
    if impl == "engine":
        extra.update(gaps=state.gaps, errors=state.errors, applied=state.depth_applied)
        if state.gaps or state.errors or state.state_name != "live":
            raise RuntimeError(f"engine replay was not clean: {state.counters()}")
    elif not impl.endswith("decode-only"):
        extra.update(bid_levels=len(state.bids), ask_levels=len(state.asks))
    return {"samples": samples, "extra": extra}


def _mean_levels(diffs: list[bytes]) -> float:
    import json

    total = 0
    for frame in diffs:
        d = json.loads(frame)["data"]
        total += len(d["b"]) + len(d["a"])
    return total / len(diffs)


def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    """Every impl on every data set, each in its own process. The impls take turns
    over several rounds (a fresh process each time) so that a burst of load from
    elsewhere on this shared machine spreads over all of them; the figure is the
    median of every timed run of every round."""
    repeats, rounds = (3, 1) if args.quick else (7, 4)
    records: list[Record] = []
    for data in FILES:
        _, _, diffs = load(data)
        levels = _mean_levels(diffs)
        mean_bytes = sum(map(len, diffs)) / len(diffs)
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        extras: dict[str, dict[str, Any]] = {}
        for _ in range(rounds):
            for impl in IMPLS:
                res = run_isolated("benchmarks.decode", "bench_impl", {"impl": impl, "data": data, "repeats": repeats})
                samples[impl] += res["samples"]
                extras[impl] = res["extra"]
        for impl in IMPLS:
            ns = statistics.median(samples[impl])
            extra = dict(extras[impl], mean_bytes=round(mean_bytes, 1), mean_levels=round(levels, 2),
                         min_ns=round(min(samples[impl]), 1))
            n = len(samples[impl])
            records.append(Record("decode", f"{data}/frame", impl, ns, len(diffs), n, extra))
            records.append(Record("decode", f"{data}/level", impl, ns / levels, round(len(diffs) * levels), n))
    return records
