"""Binance simulator (feeds.sim.binance): recorded combined streams and the REST depth
snapshot over loopback, under asyncio and uvloop, with the spot sync rules applied by a
reference client built here from the wire data alone."""
from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
from picows import WSFrame, WSMsgType, WSTransport, ws_connect

from feeds.sim.binance import BinanceSim, binance_instrument, load_default_recording
from feeds.sim.market import BookDelta, BookSnapshot, BookState
from test_sim_server import LOOPS, Collector, run_case, sim_process

DEPTH = "btcusdt@depth@100ms"
TRADE = "btcusdt@trade"
TICKER = "btcusdt@bookTicker"
INST = binance_instrument()


async def http_get(base_url: str, path: str) -> tuple[int, dict[str, Any]]:
    """GET over a raw HTTP/1.1 connection (the server closes it after the response)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def levels(rows: list[list[str]]) -> list[tuple[int, int]]:
    return [(INST.price_to_ticks(p), INST.qty_to_lots(q)) for p, q in rows]


class SpotSync:
    """Reference Binance spot depth sync: buffer diffs, apply the REST snapshot, drop
    ``u <= lastUpdateId``, first ``U <= id+1 <= u``, then ``U == prev u + 1``."""

    def __init__(self) -> None:
        self.book = BookState()
        self.buffer: list[dict[str, Any]] = []
        self.last_u: int | None = None
        self.gaps = 0
        self.ticker_checks = 0
        self.tickers: dict[int, dict[str, Any]] = {}

    def on_frame(self, raw: bytes) -> None:
        msg = json.loads(raw)
        data = msg["data"]
        if msg["stream"] == DEPTH:
            if self.last_u is None:
                self.buffer.append(data)
            else:
                self.apply(data)
        elif msg["stream"] == TICKER:
            # bookTicker is real time, depth@100ms batched: the ticker usually comes first.
            self.tickers[data["u"]] = data
            self.check_ticker()

    def check_ticker(self) -> None:
        data = self.tickers.pop(self.last_u, None) if self.last_u is not None else None
        if data is not None:
            # Exactness on reality: the book's touch equals the venue's bookTicker.
            assert self.book.best_bid() == (INST.price_to_ticks(data["b"]), INST.qty_to_lots(data["B"]))
            assert self.book.best_ask() == (INST.price_to_ticks(data["a"]), INST.qty_to_lots(data["A"]))
            self.ticker_checks += 1

    def apply(self, d: dict[str, Any]) -> None:
        if self.last_u is None or d["u"] <= self.last_u:
            return
        if d["U"] != self.last_u + 1 and not (d["U"] <= self.last_u + 1 <= d["u"]):
            self.gaps += 1
            self.last_u = None  # out of sync until the next snapshot
            self.buffer = []
            return
        self.book.apply(levels(d["b"]), levels(d["a"]))
        self.last_u = d["u"]
        self.check_ticker()

    def on_snapshot(self, snap: dict[str, Any]) -> None:
        self.book.replace(levels(snap["bids"]), levels(snap["asks"]))
        self.last_u = snap["lastUpdateId"]
        buffered, self.buffer = self.buffer, []
        for d in buffered:
            self.apply(d)


def _frames_of(sim: BinanceSim, streams: set[str]) -> list[bytes]:
    return [f.raw for f in sim.recording.frames if f.stream in streams]


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_combined_stream_replays_recorded_bytes_and_rest_syncs(loop_kind: str) -> None:
    async def case() -> None:
        async with BinanceSim(interval_s=None) as sim:
            t, c = await ws_connect(Collector, sim.stream_url(DEPTH, TRADE, TICKER))
            assert isinstance(c, Collector)
            await sim.wait_for_clients(1)
            sync = SpotSync()
            sim.advance(3)  # before the recorded snapshot line (8)
            status, snap = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=1000")
            assert status == 200 and snap["lastUpdateId"] == sim.recording.snapshot["lastUpdateId"]
            assert len(snap["bids"]) == 1000
            await c.wait_frames(3)
            for raw in c.frames:
                sync.on_frame(raw)
            sync.on_snapshot(snap)
            total = len(sim.recording.frames)
            while sim.cursor < total:
                sim.advance(100)
                await asyncio.sleep(0)
            expected = _frames_of(sim, {DEPTH, TRADE, TICKER})
            await c.wait_frames(len(expected), timeout=10)
            assert c.frames == expected  # byte for byte, in recorded order
            for raw in c.frames[3:]:
                sync.on_frame(raw)
            assert sync.gaps == 0 and sync.ticker_checks >= 10  # 18 in these 1500 lines
            assert sync.book.levels() == sim.book()
            assert sim.finished.is_set()
            # After the cursor passed the snapshot line the REST book is "now".
            status, snap2 = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            assert snap2["lastUpdateId"] == sim.last_update_id > snap["lastUpdateId"]
            assert (levels(snap2["bids"]), levels(snap2["asks"])) == sim.book()
            assert snap2["bids"][0][0].endswith("0" * 6) and len(snap2["bids"][0][0].split(".")[1]) == 8
            status, top = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT")
            assert len(top["bids"]) == 100  # Binance's default limit
            t.disconnect()
            await t.wait_disconnected()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_skip_sequence_is_a_gap_and_rest_resyncs(loop_kind: str) -> None:
    async def case() -> None:
        async with BinanceSim(interval_s=None) as sim:
            t, c = await ws_connect(Collector, sim.stream_url(DEPTH))
            assert isinstance(c, Collector)
            await sim.wait_for_clients(1)
            sync = SpotSync()
            sim.advance(400)
            _, snap = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            await asyncio.sleep(0.05)
            for raw in c.frames:
                sync.on_frame(raw)
            sync.on_snapshot(snap)
            seen = len(c.frames)
            sim.skip_sequence()
            sim.advance(200)
            await asyncio.sleep(0.05)
            for raw in c.frames[seen:]:
                sync.on_frame(raw)
            assert sync.gaps == 1 and len(sim.skipped) == 1
            _, snap = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
            sync.on_snapshot(snap)
            seen = len(c.frames)
            sim.advance(len(sim.recording.frames))
            await asyncio.sleep(0.05)
            for raw in c.frames[seen:]:
                sync.on_frame(raw)
            assert sync.gaps == 1 and sync.book.levels() == sim.book()
            t.disconnect()
            await t.wait_disconnected()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_live_subscribe_methods_and_auto_replay(loop_kind: str) -> None:
    async def case() -> None:
        async with BinanceSim(interval_s=0.001, frames_per_tick=200) as sim:
            t, c = await ws_connect(Collector, sim.url)  # no streams yet: replay waits
            assert isinstance(c, Collector)
            await asyncio.sleep(0.05)
            assert sim.cursor == 0
            t.send(WSMsgType.TEXT, b"{nope")
            t.send(WSMsgType.TEXT, json.dumps({"method": "SUBSCRIBE", "params": [TRADE], "id": 7}).encode())
            t.send(WSMsgType.TEXT, json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}).encode())
            await c.wait_frames(3)
            assert json.loads(c.frames[0]) == {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
            assert json.loads(c.frames[1]) == {"result": None, "id": 7}
            assert json.loads(c.frames[2]) == {"result": [TRADE], "id": 8}
            await asyncio.wait_for(sim.finished.wait(), 10)
            expected = _frames_of(sim, {TRADE})
            await c.wait_frames(3 + len(expected))
            assert c.frames[3:] == expected
            t.send(WSMsgType.TEXT, json.dumps({"method": "UNSUBSCRIBE", "params": [TRADE], "id": 9}).encode())
            await c.wait_frames(4 + len(expected))
            assert json.loads(c.frames[-1]) == {"result": None, "id": 9}
            t.disconnect()
            await t.wait_disconnected()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_rest_errors_and_faults(loop_kind: str) -> None:
    async def case() -> None:
        async with BinanceSim(interval_s=None) as sim:
            assert (await http_get(sim.rest_url, "/api/v3/depth?symbol=ETHUSDT"))[0] == 400
            assert (await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=0"))[0] == 400
            assert (await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT&limit=x"))[0] == 400
            sim.rest_fail_next(503)
            status, body = await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT")
            assert status == 503 and body["code"] == -1003
            assert (await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT"))[0] == 200
            sim.http.delay_s = 0.2
            t0 = asyncio.get_running_loop().time()
            assert (await http_get(sim.rest_url, "/api/v3/depth?symbol=BTCUSDT"))[0] == 200
            assert asyncio.get_running_loop().time() - t0 >= 0.2
            # Generic faults on a Binance connection.
            t, c = await ws_connect(Collector, sim.stream_url(DEPTH))
            assert isinstance(c, Collector)
            await sim.wait_for_clients(1)
            sim.send_malformed()
            await c.wait_frames(1)
            assert c.frames[0] == BinanceSim.malformed_payload
            sim.close(1008, "policy")
            await asyncio.wait_for(t.wait_disconnected(), 5)
            assert c.close_code == 1008
    run_case(loop_kind, case)


def test_recording_reshaped_events_match_the_replayed_book() -> None:
    rec = load_default_recording()
    sim = BinanceSim(rec, interval_s=None)
    sim.advance(len(rec.frames))
    book = BookState()
    deltas = 0
    for e in rec.events():
        if isinstance(e, BookDelta):
            book.apply(e.bids, e.asks)
            deltas += 1
        elif isinstance(e, BookSnapshot):
            book.replace(e.bids, e.asks)
    assert deltas == 131 and book.levels() == sim.book()


def test_command_line_binance() -> None:
    with sim_process("binance", "--port", "0", "--seconds", "30",
                     stop_signal=signal.SIGINT) as info:
        assert info["venue"] == "binance" and info["rest_url"].startswith("http://127.0.0.1:")

        async def case() -> None:
            status, snap = await http_get(info["rest_url"], "/api/v3/depth?symbol=BTCUSDT&limit=5")
            assert status == 200 and len(snap["asks"]) == 5
        run_case("asyncio", case)


class PingCounter(Collector):  # type: ignore[misc]
    """Counts WebSocket PINGs (auto-pong off, so picows hands them to us) and answers."""

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            self.pings += 1
            transport.send_pong(frame.get_payload_as_bytes())
        else:
            super().on_ws_frame(transport, frame)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_server_pings_and_stall_silences_them(loop_kind: str) -> None:
    async def case() -> None:
        async with BinanceSim(interval_s=None, ping_s=0.05) as sim:
            t, c = await ws_connect(PingCounter, sim.stream_url(DEPTH), enable_auto_pong=False)
            assert isinstance(c, PingCounter)
            await asyncio.sleep(0.3)
            assert c.pings >= 3
            sim.stall(0.7)  # a frozen server: no data and no pings
            await asyncio.sleep(0.1)  # a ping already on the wire lands first
            before = c.pings
            sim.advance(20)
            await asyncio.sleep(0.3)
            assert c.pings == before and c.frames == []
            await asyncio.sleep(0.6)
            assert c.pings > before and c.frames == _frames_of(sim, {DEPTH})[:len(c.frames)]
            assert c.frames
            t.disconnect()
            await t.wait_disconnected()
    run_case(loop_kind, case)

