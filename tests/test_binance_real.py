"""The whole chain (recorded bytes -> decoder -> sync -> book) on real Binance frames.

Oracles, all from the venue itself: the sequence ids (no gap anywhere in these files),
the bookTicker stream (the book's best bid/ask must equal every ticker whose ``u`` is
the final ``u`` of an applied diff), an independent pure-Python replay of the same
frames (json + Decimal + dicts) for the final book, and the book-event counts a peer
(cryptofeed) reaches on its own captures. Data: tests/data/binance (see its README).
"""
from __future__ import annotations

import functools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from engine import Instrument, OrderBook
from engine.replay import replay
from feeds.binance_sync import BinanceBookSync
from feeds.recording import read_frames

DATA = Path(__file__).parent / "data" / "binance"
SPOT_BTC = DATA / "hftbacktest_spot_btcusdt_20240808.txt.xz"
SPOT_ETH = DATA / "hftbacktest_spot_ethusdt_20240808.txt.xz"
USDM_BTC = DATA / "hftbacktest_usdm_btcusdt_20240808_first6000.txt.xz"
CF_SPOT = DATA / "cryptofeed" / "BINANCE.ws.1.0.xz"
CF_FUTURES = DATA / "cryptofeed" / "BINANCE_FUTURES.ws.1.0.xz"
NAUTILUS = Path("/work/shared/data/nautilus_trader/binance")


def assert_clean(summary: dict[str, Any], min_checks: int) -> None:
    assert summary["gaps"] == 0, summary["last_gap_reason"]
    assert summary["errors"] == 0
    assert summary["crossed"] == 0
    assert summary["bbo_mismatches"] == 0
    assert summary["bbo_checks"] > min_checks
    assert summary["snapshots"] == 1
    assert summary["state"] == "live"


@pytest.mark.parametrize("path, best_bid, best_ask", [
    (SPOT_BTC, "61685.99", "61686.00"),
    (SPOT_ETH, "2682.50", "2682.51"),
])
def test_spot_replay_is_exact(path: Path, best_bid: str, best_ask: str) -> None:
    summary = replay(str(path), "binance-spot")
    assert_clean(summary, 550)
    assert (summary["tick_size"], summary["lot_size"]) == ("0.01", "0.00000001")
    assert (summary["best_bid"], summary["best_ask"]) == (best_bid, best_ask)
    # Every diff was either applied or dropped as older than the snapshot.
    n_diffs = len(_diff_indexes(_frames(path)))
    assert summary["depth_applied"] + summary["dropped_stale"] == n_diffs


def test_usdm_replay_is_exact() -> None:
    summary = replay(str(USDM_BTC), "binance-usdm")
    assert_clean(summary, 40)
    assert (summary["tick_size"], summary["lot_size"]) == ("0.1", "0.001")


def _reference_book(path: Path, futures: bool) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal], int]:
    """Independent replay: json + Decimal + dicts, the documented rules, no engine code."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    pending: list[dict[str, Any]] = []
    last = -1
    for payload in _frames(path):
        msg = json.loads(payload)
        if "lastUpdateId" in msg:
            bids = {Decimal(p): Decimal(q) for p, q in msg["bids"] if Decimal(q)}
            asks = {Decimal(p): Decimal(q) for p, q in msg["asks"] if Decimal(q)}
            last = msg["lastUpdateId"]
            todo, pending = pending, []
        elif msg["data"].get("e") == "depthUpdate":
            if last < 0:
                pending.append(msg["data"])
                continue
            todo = [msg["data"]]
        else:
            continue
        for d in todo:
            if d["u"] < last or (d["u"] == last and not futures):
                continue
            for side, key in ((bids, "b"), (asks, "a")):
                for p, q in d[key]:
                    if Decimal(q):
                        side[Decimal(p)] = Decimal(q)
                    else:
                        side.pop(Decimal(p), None)
            last = d["u"]
    return bids, asks, last


@pytest.mark.parametrize("path, market", [(SPOT_BTC, "spot"), (USDM_BTC, "usdm")])
def test_final_book_equals_independent_reference(path: Path, market: str) -> None:
    book, sync = _book(path, market)
    for frame in _frames(path):
        sync.feed(frame)
    ref_bids, ref_asks, ref_last = _reference_book(path, market != "spot")
    assert book.last_update_id == ref_last
    tick, lot = (Decimal(x) for x in SIZES[path])
    for levels, ref, reverse in ((book.bids(), ref_bids, True), (book.asks(), ref_asks, False)):
        expected = [(int(p / tick), int(q / lot)) for p, q in sorted(ref.items(), reverse=reverse)]
        assert [(int(p), int(q)) for p, q in zip(levels["price"], levels["qty"])] == expected


def test_cryptofeed_spot_matches_peer_event_count() -> None:
    """cryptofeed counts 176 book events (snapshots + applied diffs) on this capture."""
    total = 0
    for symbol in ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"):
        s = replay(str(CF_SPOT), "binance-spot", symbol=symbol)
        assert (s["gaps"], s["errors"], s["crossed"], s["bbo_mismatches"], s["snapshots"]) == (0, 0, 0, 0, 1)
        total += s["snapshots"] + s["depth_applied"]
    assert total == 176


def test_cryptofeed_futures_matches_peer_event_count() -> None:
    """cryptofeed counts 756 book events on this capture; here the snapshot's
    lastUpdateId equals a diff's final u for three symbols (the futures bridge)."""
    total = 0
    for symbol in ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"):
        s = replay(str(CF_FUTURES), "binance-usdm", symbol=symbol)
        assert (s["gaps"], s["errors"], s["crossed"], s["bbo_mismatches"], s["snapshots"]) == (0, 0, 0, 0, 1)
        assert s["bbo_checks"] > 0
        total += s["snapshots"] + s["depth_applied"]
    assert total == 756


# --- faults injected into real streams ------------------------------------------------

@functools.lru_cache(maxsize=None)
def _frames(path: Path) -> list[bytes]:
    return [f.payload for f in read_frames(path)]


def _diff_indexes(frames: list[bytes]) -> list[int]:
    return [i for i, f in enumerate(frames) if b'"depthUpdate"' in f]


def _snapshot_from(book: OrderBook, last_update_id: int) -> bytes:
    inst = book.instrument
    return json.dumps({
        "lastUpdateId": last_update_id,
        "bids": [[inst.ticks_to_price(int(p)), inst.lots_to_qty(int(q))] for p, q in book.bids()],
        "asks": [[inst.ticks_to_price(int(p)), inst.lots_to_qty(int(q))] for p, q in book.asks()],
    }).encode()


# Sizes the replay infers for these files (test_spot_replay_is_exact / test_usdm_... check).
SIZES = {SPOT_BTC: ("0.01", "0.00000001"), USDM_BTC: ("0.1", "0.001")}


def _book(path: Path, market: str = "spot") -> tuple[OrderBook, BinanceBookSync]:
    book = OrderBook(Instrument("BTCUSDT", *SIZES[path]))
    return book, BinanceBookSync(book, market)


def test_dropped_real_diff_is_a_gap_and_a_new_snapshot_recovers() -> None:
    frames = _frames(SPOT_BTC)
    diffs = _diff_indexes(frames)
    drop, resync_at = diffs[1000], diffs[1100]
    # A clean run gives the expected final book and the snapshot we later "fetch".
    clean_book, clean = _book(SPOT_BTC)
    snapshot_at_resync = b""
    for i, f in enumerate(frames):
        clean.feed(f)
        if i == resync_at:
            snapshot_at_resync = _snapshot_from(clean_book, clean_book.last_update_id)
    gaps: list[str] = []
    book, sync = _book(SPOT_BTC)
    sync.on_gap = lambda s, reason: gaps.append(reason)
    for i, f in enumerate(frames):
        if i == drop:
            continue
        sync.feed(f)
        if i == drop + 50:
            assert sync.state_name == "out_of_sync"
            frozen = (book.version, book.last_update_id)
        if drop + 50 < i <= resync_at + 5:
            assert (book.version, book.last_update_id) == frozen
        if i == resync_at + 5:
            sync.feed(snapshot_at_resync)       # fetched a little after diff `resync_at`
    assert len(gaps) == 1 and sync.gaps == 1 and sync.snapshots == 2
    assert sync.state_name == "live" and sync.bbo_mismatches == 0 and sync.errors == 0
    assert book.last_update_id == clean_book.last_update_id
    assert np.array_equal(book.bids(), clean_book.bids())
    assert np.array_equal(book.asks(), clean_book.asks())


def test_real_snapshot_with_diffs_ten_minutes_later_is_a_gap() -> None:
    """MIT-data twin of the nautilus test below: the snapshot, then only the diffs
    from the last fifth of the recording (about a minute later)."""
    frames = _frames(USDM_BTC)
    snap = next(f for f in frames if f.startswith(b'{"lastUpdateId"'))
    late = [frames[i] for i in _diff_indexes(frames)[-200:]]
    book, sync = _book(USDM_BTC, "usdm")
    sync.feed(snap)
    for f in late:
        sync.feed(f)
    assert sync.gaps == 1 and sync.depth_applied == 0
    assert sync.last_gap_reason is not None and "does not cover snapshot" in sync.last_gap_reason
    assert book.last_update_id == json.loads(snap)["lastUpdateId"]


def _nautilus_frames() -> Iterator[bytes]:
    """Turn nautilus_trader's Binance futures depth CSVs into snapshot + diff frames."""
    import csv
    rows = list(csv.DictReader(open(NAUTILUS / "btcusdt-depth-snap.csv")))
    yield json.dumps({
        "lastUpdateId": int(rows[0]["last_update_id"]),
        "bids": [[r["price"], r["qty"]] for r in rows if r["side"] == "b"],
        "asks": [[r["price"], r["qty"]] for r in rows if r["side"] == "a"],
    }).encode()
    groups: dict[tuple[int, int, int], list[dict[str, str]]] = {}
    for r in csv.DictReader(open(NAUTILUS / "btcusdt-depth-update.csv")):
        groups.setdefault((int(r["first_update_id"]), int(r["last_update_id"]), int(r["pu"])), []).append(r)
    for (U, u, pu), rs in groups.items():
        yield json.dumps({"e": "depthUpdate", "E": int(rs[0]["timestamp"]), "s": "BTCUSDT",
                          "U": U, "u": u, "pu": pu,
                          "b": [[r["price"], r["qty"]] for r in rs if r["side"] == "b"],
                          "a": [[r["price"], r["qty"]] for r in rs if r["side"] == "a"]}).encode()


@pytest.mark.skipif(not NAUTILUS.exists(),
                    reason="nautilus_trader data is LGPL and not copied into the repo; "
                           "this test reads /work/shared/data when it is present")
def test_nautilus_snapshot_and_updates_ten_minutes_later_is_a_gap() -> None:
    book = OrderBook(Instrument("BTCUSDT", "0.1", "0.001"))
    sync = BinanceBookSync(book, "usdm")
    for frame in _nautilus_frames():
        sync.feed(frame)
    assert sync.snapshots == 1 and sync.gaps == 1 and sync.depth_applied == 0 and sync.errors == 0
    assert sync.state_name == "out_of_sync"


def test_steady_state_memory_does_not_grow_per_frame() -> None:
    """After warm-up, 15,000 real frames (diffs and tickers) leave at most a few new
    live blocks (a book side growing to a new record depth), not one per frame, and
    the traced peak stays within that growth. (tracemalloc sees live memory, not
    allocations freed at once; the decode path makes none by construction.)"""
    import tracemalloc

    frames = _frames(SPOT_BTC)
    book, sync = _book(SPOT_BTC)
    for f in frames[:20000]:
        sync.feed(f)
    rest = [f for f in frames[20000:] if b'"depthUpdate"' in f or b"@bookTicker" in f]
    feed = sync.feed
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        start_bytes = tracemalloc.get_traced_memory()[0]
        for f in rest:
            feed(f)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert peak_bytes - start_bytes < 256 * 1024
    new_blocks = sum(max(s.count_diff, 0) for s in after.compare_to(before, "filename")
                     if "tracemalloc" not in s.traceback[0].filename)
    assert len(rest) > 15000
    assert new_blocks <= 4, after.compare_to(before, "lineno")[:5]
    assert sync.gaps == 0 and sync.errors == 0
