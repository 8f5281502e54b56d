"""Binance live adapter over loopback against feeds.sim.binance (recorded frames + REST
snapshot), under asyncio and uvloop: the engine's book must equal the simulator's."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest

from engine import Engine
from engine.engine import Trade
from feeds.binance import BinanceVenue, HttpError, http_get
from feeds.session import FeedStatus
from feeds.sim.binance import BinanceSim
from loopback import assert_no_tasks_left

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=5)


class Live:
    def __init__(self, **connect_kw: Any) -> None:
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> "Live":
        self.sim = BinanceSim(interval_s=None)
        await self.sim.start()
        self.eng = Engine(bar_intervals=("1s",))
        self.eng.add_instrument(self.sim.instrument)
        self.feed = self.eng.connect("binance", url=self.sim.url, rest_url=self.sim.rest_url,
                                     instruments=[self.sim.symbol], **self.connect_kw)
        self.trades: list[Trade] = []
        self.eng.on_trade(self.trades.append)
        await self.eng.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.eng.close()
        await self.sim.stop()
        assert_no_tasks_left()

    @property
    def venue(self) -> BinanceVenue:
        assert isinstance(self.feed.venue, BinanceVenue)
        return self.feed.venue

    async def play(self, frames: int, chunk: int = 25) -> None:
        for _ in range(0, frames, chunk):
            self.sim.advance(chunk)
            await asyncio.sleep(0.002)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the book is live and has applied the simulator's last diff."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        book = self.eng.book(self.sim.symbol)
        sync = self.venue.syncs[self.sim.symbol]
        while not (sync.in_sync and book.last_update_id == self.sim.last_update_id
                   and self.feed.status is FeedStatus.SUBSCRIBED):
            if loop.time() > deadline:
                raise AssertionError(f"not settled: {sync!r} {book.last_update_id} vs {self.sim.last_update_id}")
            await asyncio.sleep(0.005)

    def assert_book(self) -> None:
        bids, asks = self.sim.book()
        book = self.eng.book(self.sim.symbol)
        assert [tuple(x) for x in book.bids().tolist()] == bids
        assert [tuple(x) for x in book.asks().tolist()] == asks


def recorded_trade_ids(sim: BinanceSim, upto: int) -> list[str]:
    return [str(json.loads(f.raw)["data"]["t"]) for f in sim.recording.frames[:upto]
            if f.stream is not None and f.stream.endswith("@trade")]


def test_snapshot_sync_and_stream_match_simulator(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            await t.sim.wait_for_clients(1)
            await t.play(300)
            await t.settle()
            await t.play(len(t.sim.recording.frames))
            await t.settle()
            t.assert_book()
            assert [tr.trade_id for tr in t.trades] == recorded_trade_ids(t.sim, t.sim.cursor)
            assert all(tr.symbol == t.sim.symbol and tr.qty_lots > 0 and tr.side in (1, -1) for tr in t.trades)
            c = t.feed.counters
            assert c.decode_errors == 0 and c.gaps == 0 and c.reconnects == 0 and c.frames > 300
            assert t.venue.snapshots == 1
    run(main())


def test_skipped_diff_resyncs_from_rest(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            await t.sim.wait_for_clients(1)
            await t.play(300)
            await t.settle()
            t.sim.skip_sequence()
            await t.play(300)
            await t.settle()
            t.assert_book()
            c = t.feed.counters
            assert c.gaps >= 1 and c.resyncs >= 1 and c.reconnects == 0 and t.venue.snapshots >= 2
    run(main())


def test_drop_reconnects_and_resyncs(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            await t.sim.wait_for_clients(1)
            await t.play(200)
            await t.settle()
            t.sim.drop()
            await asyncio.sleep(0.05)
            await t.play(300)
            await t.settle()
            t.assert_book()
            assert t.feed.counters.reconnects == 1
    run(main())


def test_rest_failures(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            t.sim.rest_fail_next(503)
            t.sim.rest_fail_next(429)
            await t.sim.wait_for_clients(1)
            await t.play(300)
            await t.settle()
            t.assert_book()
        async with Live() as t:
            t.sim.rest_fail_next(400)
            await t.sim.wait_for_clients(1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while t.feed.status is not FeedStatus.FAILED:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            assert "HTTP 400" in t.feed.status_reason
    run(main())


def test_malformed_frame_counted(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            await t.sim.wait_for_clients(1)
            await t.play(200)
            await t.settle()
            t.sim.send_malformed()
            await t.play(100)
            await t.settle()
            t.assert_book()
            assert t.feed.counters.decode_errors == 1 and t.feed.counters.reconnects == 0
    run(main())


def test_http_get_errors(run: Any) -> None:
    async def main() -> None:
        async with Live() as t:
            body = await http_get(f"{t.sim.rest_url}/api/v3/depth?symbol={t.sim.symbol}&limit=5")
            assert json.loads(body)["lastUpdateId"] > 0
            with pytest.raises(HttpError) as err:
                await http_get(f"{t.sim.rest_url}/api/v3/depth?symbol=NOPE&limit=5")
            assert err.value.status == 400 and err.value.terminal
            with pytest.raises(HttpError) as err:
                await http_get("http://127.0.0.1:9/x", timeout_s=2)
            assert err.value.status == 0 and not err.value.terminal
    run(main())


def test_multi_symbol_routing() -> None:
    from engine import DecodeError, Instrument
    eng = Engine()
    eng.add_instrument(Instrument("BTCUSDT", "0.01", "0.00001"))
    eng.add_instrument(Instrument("ETHUSDT", "0.01", "0.0001"))
    feed = eng.connect("binance", url="wss://stream.example:9443", rest_url="https://api.example")
    venue = feed.venue
    assert isinstance(venue, BinanceVenue)
    ep = venue.endpoint()
    assert ep.url == ("wss://stream.example:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade/"
                      "ethusdt@depth@100ms/ethusdt@trade")
    diff = ('{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"%s","U":5,"u":6,'
            '"b":[["10.00","1.0"]],"a":[]}}')
    venue.on_frame(memoryview((diff % ("ethusdt", "ETHUSDT")).encode()), 1)
    venue.on_frame(memoryview((diff % ("ethusdt", "ETHUSDT")).encode()), 2)
    venue.on_frame(memoryview((diff % ("btcusdt", "BTCUSDT")).encode()), 3)
    assert venue.syncs["ETHUSDT"].counters()["frames"] == 2
    assert venue.syncs["BTCUSDT"].counters()["frames"] == 1
    venue.on_frame(memoryview(b'{"result":null,"id":1}'), 4)  # reply to a live SUBSCRIBE
    with pytest.raises(DecodeError, match="unknown stream"):
        venue.on_frame(memoryview((diff % ("solusdt", "SOLUSDT")).encode()), 5)


class _RawHttpServer:
    """Loopback server that answers every request with ``parts``, one write each with a
    pause between (so the client sees the body arrive piecemeal), then closes."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.srv: Any = None
        self.handlers: list[asyncio.Task[Any]] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            for part in self.parts:
                if writer.is_closing():
                    break
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.02)
        except (ConnectionError, RuntimeError):
            pass  # the client gave up early (body too big); uvloop raises RuntimeError
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.srv.sockets[0].getsockname()[1]}/api/v3/depth?symbol=X"

    async def __aexit__(self, *exc: Any) -> None:
        self.srv.close()
        await self.srv.wait_closed()
        await asyncio.gather(*self.handlers)


def test_http_get_reads_bodies_without_length_to_eof(run: Any) -> None:
    body = b'{"lastUpdateId":7,"bids":[["1.00","2"]],"asks":[]}' * 20
    pieces = [body[i:i + 97] for i in range(0, len(body), 97)]

    async def main() -> None:
        # HTTP/1.0, no Content-Length: the body is everything until the server closes.
        async with _RawHttpServer([b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n", *pieces]) as url:
            assert await http_get(url) == body
            with pytest.raises(HttpError, match="exceeds 100 bytes"):
                await http_get(url, max_bytes=100)
        # Chunked, the chunks split across writes.
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        async with _RawHttpServer([head] + [chunked[i:i + 50] for i in range(0, len(chunked), 50)]) as url:
            assert await http_get(url) == body
        async with _RawHttpServer([b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"]) as url:
            with pytest.raises(HttpError, match="malformed Content-Length"):
                await http_get(url)
        assert_no_tasks_left()
    run(main())
