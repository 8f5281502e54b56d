"""Binance simulator: recorded combined-stream frames over WebSocket and the REST depth
snapshot over a loopback HTTP endpoint.

WebSocket: ``ws://127.0.0.1:<port>/stream?streams=btcusdt@depth@100ms/btcusdt@trade``
(Binance's combined-stream URL). Each frame is a recorded line sent byte for byte
(``{"stream":...,"data":{...}}``), filtered to the client's streams. Live
``{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...],"id":N}`` ->
``{"result":null,"id":N}`` and ``LIST_SUBSCRIPTIONS`` are supported; a frame that is
not valid JSON gets ``{"error":{"code":3,"msg":"Invalid JSON"},"id":null}``.

REST: ``GET <rest_url>/api/v3/depth?symbol=BTCUSDT&limit=1000`` returns the book *as
of the replay cursor*: before the cursor reaches the recorded snapshot line, the
recorded snapshot itself (which is ahead of the stream, like a real snapshot taken
while diffs are buffered); afterwards the recorded snapshot plus every depth diff the
cursor has passed, with ``lastUpdateId`` = the last diff's ``u`` and 8-decimal strings
as Binance sends them. ``limit`` (default 100, at most 5000) caps levels per side.

One global replay cursor feeds every client, as one exchange feeds everyone. It starts
moving when the first client has a stream (``interval_s`` seconds between ticks of
``frames_per_tick`` frames, none while ``paused``; ``interval_s=None``: only
:meth:`BinanceSim.advance` moves it) and stops at the end of the recording
(``finished``).

Faults beyond the base ones: :meth:`BinanceSim.skip_sequence` (the next depth diff is
applied to the book but sent to nobody: clients see ``U != previous u + 1`` and must
resync from REST), ``rest_fail_next(status)`` and ``http.delay_s`` (slow REST).
"""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

from engine._core.instrument import Instrument
from feeds.sim.market import BookState, Level, RecordedBinance
from feeds.sim.server import SimClient, SimHttpServer, SimServer

__all__ = ["BinanceSim", "DEFAULT_RECORDING", "binance_instrument", "from_cli", "load_default_recording"]

#: The recording shipped with the tests (first 1500 lines of hftbacktest's spot BTCUSDT).
DEFAULT_RECORDING = Path(__file__).resolve().parents[2] / "tests" / "data" / \
    "binance_spot_btcusdt_20240808_head1500.gz"
_WIRE_DECIMALS = 8


def binance_instrument() -> Instrument:
    """BTCUSDT spot: tick 0.01, lot 0.00001 (Binance's PRICE_FILTER / LOT_SIZE)."""
    return Instrument("BTCUSDT", "0.01", "0.00001")


def load_default_recording(limit: int | None = None) -> RecordedBinance:
    """The recording in tests/data as a :class:`RecordedBinance` of BTCUSDT."""
    return RecordedBinance.load(DEFAULT_RECORDING, binance_instrument(), limit)


def _wire(s: str) -> str:
    # Binance prints 8 decimals: extend the instrument's exact string with zeros.
    whole, _, frac = s.partition(".")
    return f"{whole}.{frac.ljust(_WIRE_DECIMALS, '0')}"


class BinanceSim(SimServer):
    """Binance spot simulator over a :class:`RecordedBinance` (default: the tests'
    recording). Parameters: ``interval_s`` and ``frames_per_tick`` (replay pace: up
    to ``frames_per_tick`` recorded lines every ``interval_s`` seconds), ``http_port``
    (REST port, 0: free), ``ping_s`` (WebSocket PING interval; clients answer PONG),
    plus the :class:`SimServer` parameters. See the module docstring."""

    name: ClassVar[str] = "binance"
    path: ClassVar[str] = "/stream"
    malformed_payload: ClassVar[bytes] = (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":')

    def __init__(self, recording: RecordedBinance | None = None, *, interval_s: float | None = 0.001,
                 frames_per_tick: int = 50, http_port: int = 0, ping_s: float = 20.0,
                 **server_kw: Any) -> None:
        super().__init__(**server_kw)
        #: Seconds between WebSocket PING frames to every client (Binance: 20 s).
        self.ping_s = ping_s
        self.recording = recording if recording is not None else load_default_recording()
        self.instrument = self.recording.instrument
        self.symbol = self.instrument.symbol
        self.interval_s = interval_s
        self.frames_per_tick = frames_per_tick
        #: Every stream name in the recording.
        self.streams: frozenset[str] = frozenset(
            f.stream for f in self.recording.frames if f.stream is not None)
        self.http = SimHttpServer({"/api/v3/depth": self._rest_depth}, host=self.host, port=http_port)
        self._book = BookState()
        bids, asks = self.recording.snapshot_levels()
        self._book.replace(bids, asks)
        #: ``u`` of the last depth diff applied to the book (the snapshot's id until then).
        self.last_update_id = int(self.recording.snapshot["lastUpdateId"])
        self.cursor = 0
        self._past_snapshot = False
        self._skip = 0
        self.skipped: list[int] = []
        self._rest_fail: list[int] = []
        self._started = asyncio.Event()
        self.finished = asyncio.Event()
        self.frames_sent = 0

    # -- lifecycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.http.start()
        if self.interval_s is not None:
            self.spawn(self._replay_loop(self.interval_s), "replay")
        self.every(self.ping_s, self._ping, "ping", pausable=False)

    def _ping(self) -> None:
        for c in self.clients:
            c.ping()

    async def on_stop(self) -> None:
        await self.http.stop()

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the REST endpoint."""
        return self.http.base_url

    def stream_url(self, *streams: str) -> str:
        """Combined-stream URL for ``streams`` (default: every recorded stream)."""
        names = streams or tuple(sorted(self.streams))
        return f"{self.url}?streams={'/'.join(names)}"

    async def _replay_loop(self, interval_s: float) -> None:
        await self._started.wait()
        while self.cursor < len(self.recording.frames):
            if not self.paused:
                self.advance(self.frames_per_tick)
            await asyncio.sleep(interval_s)
        self.finished.set()

    # -- replay ---------------------------------------------------------------------

    def advance(self, frames: int = 1) -> int:
        """Move the cursor over the next ``frames`` recorded lines: send each stream
        frame to the clients subscribed to it and apply depth diffs to the REST book.
        Returns how many lines were passed (fewer at the end). O(frames x clients)."""
        rec = self.recording.frames
        n = 0
        while n < frames and self.cursor < len(rec):
            f = rec[self.cursor]
            self.cursor += 1
            n += 1
            if f.stream is None:
                self._past_snapshot = True
                continue
            if "@depth" in f.stream:
                data = json.loads(f.raw)["data"]
                if int(data["u"]) > self.last_update_id:
                    self._apply(data)
                if self._skip:
                    self._skip -= 1
                    self.skipped.append(int(data["u"]))
                    continue
            for c in self._clients.values():
                if f.stream in c.state:
                    c.send(f.raw)
                    self.frames_sent += 1
        if self.cursor >= len(rec):
            self.finished.set()
        return n

    def _apply(self, data: dict[str, Any]) -> None:
        inst = self.instrument
        self._book.apply([(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in data["b"]],
                         [(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in data["a"]])
        self.last_update_id = int(data["u"])

    def book(self) -> tuple[list[Level], list[Level]]:
        """(bids, asks) best first in ticks/lots, as the REST endpoint would serve it
        now (the recorded snapshot plus every diff the cursor passed)."""
        return self._book.levels()

    # -- faults ---------------------------------------------------------------------

    def skip_sequence(self, count: int = 1) -> None:
        """The next ``count`` depth diffs are applied to the book but sent to nobody
        (their ``u`` values are appended to :attr:`skipped`)."""
        self._skip += count
        self.stats["faults"] += 1

    def rest_fail_next(self, status: int = 503) -> None:
        """Answer the next REST request with HTTP ``status`` and a Binance error body."""
        self._rest_fail.append(status)
        self.stats["faults"] += 1

    # -- REST -----------------------------------------------------------------------

    def _rest_depth(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if self._rest_fail:
            status = self._rest_fail.pop(0)
            return status, b'{"code":-1003,"msg":"Simulated failure."}'
        symbol = query.get("symbol", [""])[0]
        if symbol != self.symbol:
            return 400, b'{"code":-1121,"msg":"Invalid symbol."}'
        try:
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            return 400, b'{"code":-1100,"msg":"Illegal characters found in parameter \'limit\'."}'
        if not 1 <= limit <= 5000:
            return 400, b'{"code":-1100,"msg":"Illegal value for parameter \'limit\'."}'
        if not self._past_snapshot:
            snap = self.recording.snapshot
            body = {"lastUpdateId": snap["lastUpdateId"], "bids": snap["bids"][:limit],
                    "asks": snap["asks"][:limit]}
            return 200, json.dumps(body, separators=(",", ":")).encode()
        inst = self.instrument
        bids, asks = self._book.levels()
        body = {"lastUpdateId": self.last_update_id,
                "bids": [[_wire(inst.ticks_to_price(p)), _wire(inst.lots_to_qty(q))] for p, q in bids[:limit]],
                "asks": [[_wire(inst.ticks_to_price(p)), _wire(inst.lots_to_qty(q))] for p, q in asks[:limit]]}
        return 200, json.dumps(body, separators=(",", ":")).encode()

    # -- WebSocket ------------------------------------------------------------------

    def on_connect(self, client: SimClient) -> None:
        wanted: set[str] = set()
        for value in client.query.get("streams", []):
            wanted.update(s for s in value.split("/") if s)
        client.state = wanted
        if wanted:
            self._started.set()

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        try:
            msg = json.loads(payload)
            method, params, req_id = msg["method"], msg.get("params", []), msg["id"]
        except (ValueError, KeyError, TypeError):
            client.send(b'{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
            return
        streams: set[str] = client.state
        if method == "SUBSCRIBE":
            streams.update(params)
            self._started.set()
            client.send(json.dumps({"result": None, "id": req_id}))
        elif method == "UNSUBSCRIBE":
            streams.difference_update(params)
            client.send(json.dumps({"result": None, "id": req_id}))
        elif method == "LIST_SUBSCRIPTIONS":
            client.send(json.dumps({"result": sorted(streams), "id": req_id}))
        else:
            client.send(json.dumps({"error": {"code": 1, "msg": f"Unknown method {method!r}"},
                                    "id": req_id}))


def from_cli(args: argparse.Namespace) -> BinanceSim:
    """``python -m feeds.sim binance``: uses ``--recording --interval --ping
    --http-port --host --port`` (see ``feeds.sim.__main__``)."""
    recording = (RecordedBinance.load(args.recording, binance_instrument())
                 if args.recording is not None else None)
    return BinanceSim(recording, interval_s=0.001 if args.interval is None else args.interval,
                      ping_s=20.0 if args.ping is None else float(args.ping),
                      http_port=args.http_port, host=args.host, port=args.port)
