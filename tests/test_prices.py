"""Prices (Tradevest style) venue end to end over loopback against feeds.sim.prices,
under asyncio and uvloop, plus the decoder's whole-frame rules without a socket.

The simulator's market moves only when a test calls ``sim.advance(n)`` (or a test's
own ticker), so every test knows what was published; each scenario ends with the
engine's books equal to the simulator's, and no task or socket left behind.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import pytest

from engine import Engine
from engine.errors import DecodeError, EngineError, FeedError
from feeds.prices import PricesVenue, subscription_message
from feeds.prices_decode import MarketBook
from feeds.session import Feed, FeedStatus, StatusEvent
from feeds.sim.prices import PricesSim, encode_keepalive, encode_prices, prices_instruments
from loopback import close_engine_and_sim, step as step_sim

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=3, connect_timeout_s=3.0)
TOKEN = "prices-bearer-9c1d7e"


def levels(arr: Any) -> list[tuple[int, int]]:
    return [tuple(x) for x in arr.tolist()]


class Harness:
    """A PricesSim, an engine connected to it, and the statuses it reported."""

    def __init__(self, sim: PricesSim, eng: Engine, feed: Feed) -> None:
        self.sim = sim
        self.eng = eng
        self.feed = feed
        self.statuses: list[StatusEvent] = []
        eng.on_status(self.statuses.append)

    @property
    def venue(self) -> PricesVenue:
        v = self.feed.venue
        assert isinstance(v, PricesVenue)
        return v

    def markets(self) -> list[str]:
        return self.venue.markets if self.venue.markets is not None else self.sim.eur_markets

    def same(self, market: str) -> bool:
        bids, asks = self.sim.book(market)
        book = self.eng.book(market)
        return levels(book.bids()) == bids and levels(book.asks()) == asks

    async def caught_up(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (self.feed.status is FeedStatus.SUBSCRIBED and all(self.same(m) for m in self.markets())):
            if loop.time() > deadline:
                raise AssertionError(f"not caught up: {self.feed.status} {self.feed.status_reason}")
            await asyncio.sleep(0.005)

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}: {self.feed.status} "
                                     f"{self.feed.status_reason}")
            await asyncio.sleep(0.005)

    def assert_books(self) -> None:
        for m in self.markets():
            assert self.same(m), m


class open_harness:
    """``async with open_harness(...) as h``: sim + engine, closed cleanly on exit."""

    def __init__(self, sim_kw: dict[str, Any] | None = None, token: str | None = None,
                 instruments: list[str] | None = None, **connect_kw: Any) -> None:
        self.sim_kw = dict(seed=11, interval_s=None, keepalive_s=None)
        self.sim_kw.update(sim_kw or {})
        self.token = token
        self.instruments = instruments
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Harness:
        self.sim = PricesSim(**self.sim_kw)
        await self.sim.start()
        eng = Engine(bar_intervals=())
        for inst in self.sim.instruments.values():
            eng.add_instrument(inst)
        feed = eng.connect("prices", url=self.sim.url, token=self.token, instruments=self.instruments,
                           **self.connect_kw)
        self.h = Harness(self.sim, eng, feed)
        await eng.start()
        return self.h

    async def __aexit__(self, *exc: Any) -> None:
        await close_engine_and_sim(self.h.eng, self.sim)


async def step(h: Harness, n: int, chunk: int = 5) -> None:
    await step_sim(h.sim, n, chunk)


# ---------------------------------------------------------------- end to end

def test_subscription_replace_and_keepalive(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(keepalive_s=0.02), markets=["BTC-EUR", "ETH-EUR"]) as h:
            await h.feed.wait_subscribed(5)
            assert h.sim.subscriptions == [["BTC-EUR", "ETH-EUR"]]
            await step(h, 40)
            await h.caught_up()
            btc = h.venue.books["BTC-EUR"]
            replaces = btc.replaces
            # Keep-alives (empty asks and bids) arrive and never clear or change a book.
            await h.until(lambda: btc.keepalives >= 3, what="keep-alives")
            assert btc.replaces == replaces
            h.assert_books()
            assert len(h.eng.book("BTC-EUR")) > 0
            assert len(h.eng.book("SOL-EUR")) == 0  # not subscribed: untouched
            c = h.feed.counters
            assert c.decode_errors == 0 and c.reconnects == 0 and c.latency.count > 0
    run(main())


def test_markets_omitted_means_all_eur_pairs(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            assert h.sim.subscriptions == [None]
            await step(h, 20)
            await h.caught_up()
            h.assert_books()
            assert sorted(h.markets()) == ["BTC-EUR", "ETH-EUR", "SOL-EUR"]
            assert len(h.eng.book("BTC-USD")) == 0  # a USD pair is not sent
            assert h.venue.decoder is not None and h.venue.decoder.unknown_markets == 0
    run(main())


def test_entries_for_untracked_markets_are_skipped(run: Any) -> None:
    async def main() -> None:
        async with open_harness(instruments=["ETH-EUR"]) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 10)
            await h.until(lambda: h.same("ETH-EUR"))
            assert h.venue.decoder is not None and h.venue.decoder.unknown_markets > 0
            assert len(h.eng.book("BTC-EUR")) == 0
    run(main())


@pytest.mark.parametrize("fault", ["drop", "close", "malformed", "stall", "oversize", "skip"])
def test_faults_end_with_the_simulators_books(run: Any, fault: str) -> None:
    async def main() -> None:
        kw: dict[str, Any] = {}
        sim_kw: dict[str, Any] = {}
        if fault == "stall":
            kw["stale_after_s"] = 0.3
        if fault == "oversize":
            kw["max_message_size"] = 64 * 1024
        async with open_harness(sim_kw, **kw) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 20)
            await h.caught_up()
            if fault == "drop":
                h.sim.drop()
            elif fault == "close":
                h.sim.close(1011, "internal error")
            elif fault == "malformed":
                h.sim.send_malformed()
            elif fault == "stall":
                h.sim.stall(1.0)
            elif fault == "oversize":
                h.sim.send_oversize(100_000)
            else:
                h.sim.skip_update(3)
            await step(h, 20)
            if fault == "stall":
                await h.until(lambda: h.feed.counters.reconnects >= 1, what="stale reconnect")
                assert any(e.status is FeedStatus.STALE for e in h.statuses)
            await h.caught_up()
            h.assert_books()
            c = h.feed.counters
            if fault in ("malformed", "skip"):
                assert c.reconnects == 0
                assert c.decode_errors == (1 if fault == "malformed" else 0)
            else:
                assert c.reconnects >= 1 and c.decode_errors == 0
            if fault == "oversize":
                assert any("oversize" in e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING)
            assert len(h.sim.subscriptions) == 1 + c.reconnects
    run(main())


def test_error_is_reported_with_connection_id_then_reconnects(run: Any, caplog: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 10)
            await h.caught_up()
            h.sim.send_error("maintenance window")
            await h.until(lambda: h.feed.counters.reconnects == 1, what="reconnect")
            await step(h, 10)
            await h.caught_up()
            h.assert_books()
            conn_id, message = h.sim.errors_sent[0]
            assert h.venue.errors == 1 and h.venue.last_error == (conn_id, message)
            reasons = [e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING]
            assert any(conn_id in r and "maintenance window" in r for r in reasons), reasons
            assert h.venue.describe()["last_error"] == [conn_id, message]
            assert any(conn_id in r.getMessage() for r in caplog.records)
    run(main())


def test_error_without_server_close_reconnects_after_grace(run: Any) -> None:
    async def main() -> None:
        async with open_harness(error_grace_s=0.1) as h:
            await h.feed.wait_subscribed(5)
            client = h.sim.subscribed_clients()[0]
            client.send('{"type":"ERROR","connectionId":"c-42","message":"degraded"}')
            await h.until(lambda: h.feed.counters.reconnects == 1, what="reconnect")
            assert client.closed
            await step(h, 5)
            await h.caught_up()
            reasons = [e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING]
            assert any("c-42" in r and "did not close" in r for r in reasons), reasons
    run(main())


@pytest.mark.parametrize("mode", ["wrong-token", "reject-auth"])
def test_auth_rejected_is_terminal_and_token_never_shown(run: Any, caplog: Any, mode: str) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        sim_kw = dict(token="the-right-one")
        async with open_harness(sim_kw, token=TOKEN if mode == "wrong-token" else "the-right-one") as h:
            if mode == "reject-auth":
                h.sim.reject_auth = True
            await h.until(lambda: h.feed.status is FeedStatus.FAILED, what="failed")
            assert "401" in h.feed.status_reason
            assert h.sim.stats["handshakes_refused"] >= 1 and h.feed.counters.frames == 0
            texts = [r.getMessage() for r in caplog.records] + [e.reason for e in h.statuses]
            texts += [repr(h.feed), repr(h.venue), repr(h.eng), str(h.venue.describe()), repr(h.sim)]
            for t in texts:
                assert TOKEN not in t and "the-right-one" not in t, t
    run(main())


def test_token_travels_as_bearer_header(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(token=TOKEN), token=TOKEN) as h:
            await h.feed.wait_subscribed(5)
            assert h.sim.clients[0].headers.get("Authorization") == f"Bearer {TOKEN}"
            assert TOKEN not in repr(h.venue.endpoint())
    run(main())


def test_set_markets_make_before_break(run: Any) -> None:
    """Books keep updating through a market change: the old connection closes only
    after the new one is live, and the kept market never goes dark."""
    async def main() -> None:
        # A real reconnect gap would be >= 0.4 s (no jitter): the handover must not show it.
        async with open_harness(markets=["BTC-EUR", "ETH-EUR"], backoff_initial_s=0.4, jitter=0.0) as h:
            await h.feed.wait_subscribed(5)
            seen: dict[str, list[float]] = {"BTC-EUR": [], "ETH-EUR": [], "SOL-EUR": []}
            h.eng.on_book(lambda b: seen[b.instrument.symbol].append(time.monotonic()))
            closes: list[tuple[int, list[list[str] | None]]] = []
            sim = h.sim
            orig = sim.on_disconnect

            def on_disconnect(client: Any) -> None:
                closes.append((client.client_id, [c.state.markets for c in sim.subscribed_clients()]))
                orig(client)
            sim.on_disconnect = on_disconnect  # type: ignore[method-assign]

            async def ticker() -> None:
                while True:
                    sim.advance(1)
                    await asyncio.sleep(0.01)
            tick = asyncio.ensure_future(ticker())
            try:
                await asyncio.sleep(0.2)
                t0 = time.monotonic()
                await h.venue.set_markets(["ETH-EUR", "SOL-EUR"])
                t1 = time.monotonic()
                await asyncio.sleep(0.2)
            finally:
                tick.cancel()
                await asyncio.gather(tick, return_exceptions=True)
            await h.caught_up()
            h.assert_books()
            # The old primary (client 1) closed while a live connection carried the new set.
            first = [c for c in closes if c[0] == 1]
            assert first and any(m == ["ETH-EUR", "SOL-EUR"] for m in first[0][1]), closes
            eth = [t for t in seen["ETH-EUR"] if t0 - 0.05 <= t <= t1 + 0.1]
            gaps = [b - a for a, b in zip(eth, eth[1:])]
            assert eth and max(gaps) < 0.3, max(gaps)
            assert seen["SOL-EUR"] and min(seen["SOL-EUR"]) < t1  # new market live before the end
            assert h.venue.handovers == 1 and h.venue.markets == ["ETH-EUR", "SOL-EUR"]
            assert len(h.sim.clients) == 1  # the handover link is gone
            btc_after = h.venue.books["BTC-EUR"].replaces
            await step(h, 10)
            await h.caught_up()
            assert h.venue.books["BTC-EUR"].replaces == btc_after  # dropped market: no updates
            assert h.sim.subscriptions[-2:] == [["ETH-EUR", "SOL-EUR"], ["ETH-EUR", "SOL-EUR"]]
    run(main())


def test_set_markets_failure_changes_nothing(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(token=TOKEN), token=TOKEN, markets=["BTC-EUR"]) as h:
            await h.feed.wait_subscribed(5)
            h.sim.reject_auth = True  # the new connection is refused
            with pytest.raises(FeedError, match="did not go live"):
                await h.venue.set_markets(["ETH-EUR"], timeout=2.0)
            h.sim.reject_auth = False
            assert h.venue.markets == ["BTC-EUR"] and h.feed.counters.reconnects == 0
            await step(h, 5)
            await h.caught_up()
            with pytest.raises(EngineError, match="XRP-EUR"):
                await h.venue.set_markets(["XRP-EUR"])
            await h.venue.set_markets(None)  # all EUR pairs
            await step(h, 5)
            await h.caught_up()
            assert h.sim.subscriptions[-1] is None and h.venue.handovers == 1
    run(main())


def test_burst(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(burst=2000), markets=["BTC-EUR"]) as h:
            book = h.venue.books["BTC-EUR"]
            await h.until(lambda: book.replaces == 2001, timeout=20, what="burst")
            bids, asks = h.sim.burst_book
            assert levels(h.eng.book("BTC-EUR").bids()) == bids
            assert levels(h.eng.book("BTC-EUR").asks()) == asks
            assert h.feed.counters.decode_errors == 0
    run(main())


# ---------------------------------------------------------------- decoder rules

@pytest.fixture
def offline() -> Any:
    """An engine and a bound (not started) prices venue: feed frames to its decoder."""
    eng = Engine(bar_intervals=())
    for inst in prices_instruments():
        eng.add_instrument(inst)
    feed = eng.connect("prices", url="ws://127.0.0.1:9/ws/prices", markets=["BTC-EUR", "ETH-EUR"])
    return eng, feed.venue


def _frame(books: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]) -> bytes:
    return encode_prices({i.symbol: i for i in prices_instruments()}, books).encode()


BTC = ([(5_689_010, 400), (5_689_000, 20)], [(5_689_020, 7), (5_689_030, 9)])
ETH = ([(242_048, 1190)], [(242_050, 3)])


def test_decoder_replaces_books_and_keepalive_keeps_them(offline: Any) -> None:
    eng, venue = offline
    venue.decoder.feed(_frame({"BTC-EUR": BTC, "ETH-EUR": ETH}), 1)
    assert levels(eng.book("BTC-EUR").bids()) == BTC[0] and levels(eng.book("BTC-EUR").asks()) == BTC[1]
    venue.decoder.feed(encode_keepalive(["BTC-EUR", "ETH-EUR"]).encode(), 2)
    venue.decoder.feed(b'{"type":"PRICES","prices":{}}', 3)
    assert levels(eng.book("BTC-EUR").bids()) == BTC[0] and levels(eng.book("ETH-EUR").asks()) == ETH[1]
    assert venue.books["BTC-EUR"].keepalives == 1 and venue.decoder.keepalive_frames == 2
    # A one-sided book is a real book: it replaces (the other side is empty).
    venue.decoder.feed(_frame({"BTC-EUR": ([], [(5_689_100, 1)])}), 4)
    assert len(eng.book("BTC-EUR").bids()) == 0 and levels(eng.book("BTC-EUR").asks()) == [(5_689_100, 1)]
    # Field order does not matter; escaped keys compare by their text.
    venue.decoder.feed(b'{"prices":{"BTC\\u002dEUR":{"bids":[{"quantity":"0.00002","price":"56890.00"}],'
                       b'"asks":[]}},"type":"PRICES"}', 5)
    assert levels(eng.book("BTC-EUR").bids()) == [(5_689_000, 2)]


@pytest.mark.parametrize("frame,match", [
    # ETH entry is crossed: the valid BTC entry before it must not be applied either.
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[{"price":"1.00","quantity":"1"}],"bids":[]},'
     b'"ETH-EUR":{"asks":[{"price":"10.00","quantity":"1"}],"bids":[{"price":"10.00","quantity":"1"}]}}}',
     "ETH-EUR: crossed book"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[{"price":"2.00","quantity":"1"},'
     b'{"price":"1.00","quantity":"1"}],"bids":[]}}}', "BTC-EUR asks: levels must be best first"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[{"price":"2.00","quantity":"1"},'
     b'{"price":"2.00","quantity":"1"}]}}}', "BTC-EUR bids: levels must be best first"),  # repeat
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[{"price":"1.005","quantity":"1"}]}}}',
     "not a whole number"),                                                             # off-tick
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[{"price":"1.00","quantity":"-1"}]}}}',
     "BTC-EUR bids: quantity must not be negative"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[{"price":"0","quantity":"1"}]}}}',
     "BTC-EUR bids: price must be positive"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[{"price":"1.00"}]}}}',
     "BTC-EUR bids: a level needs price and quantity"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[]}}}', "missing"),                # no bids
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[]},"BTC-EUR":{"asks":[],"bids":[]}}}',
     "twice|duplicate"),
    (b'{"type":"PRICES"}', "without prices"),
    (b'{"prices":{}}', "without type"),
    (b'{"type":"PRICES","prices":{}} x', "prices message"),
    (b'{"type":"PRICES","prices":{"BTC-EUR":{"asks":[{"price":"1.00","quantity":"1"}', "prices"),
])
def test_decoder_rejects_bad_frames_whole(offline: Any, frame: bytes, match: str) -> None:
    eng, venue = offline
    venue.decoder.feed(_frame({"BTC-EUR": BTC, "ETH-EUR": ETH}), 1)
    before = {m: (levels(eng.book(m).bids()), levels(eng.book(m).asks()), eng.book(m).version)
              for m in ("BTC-EUR", "ETH-EUR")}
    with pytest.raises(DecodeError, match=match):
        venue.decoder.feed(frame, 2)
    after = {m: (levels(eng.book(m).bids()), levels(eng.book(m).asks()), eng.book(m).version)
             for m in ("BTC-EUR", "ETH-EUR")}
    assert after == before


def test_decoder_error_and_unknown_types(offline: Any, caplog: Any) -> None:
    eng, venue = offline
    venue.decoder.feed(b'{"type":"ERROR","connectionId":"abc-1","message":"rate limited"}', 1)
    assert venue.errors == 1 and venue.last_error == ("abc-1", "rate limited")
    venue.decoder.feed(b'{"type":"HELLO","v":1}', 2)
    assert venue.unknown_messages == 1


def test_options_are_checked() -> None:
    eng = Engine(bar_intervals=())
    for inst in prices_instruments():
        eng.add_instrument(inst)
    with pytest.raises(EngineError, match="XRP-EUR"):
        eng.connect("prices", url="ws://127.0.0.1:9/", markets=["XRP-EUR"])
    with pytest.raises(TypeError):
        eng.connect("prices", url="ws://127.0.0.1:9/", markets="BTC-EUR")
    with pytest.raises(TypeError, match="unexpected keyword"):
        eng.connect("prices", url="ws://127.0.0.1:9/", market=["BTC-EUR"])
    assert subscription_message(None) == '{"type":"PRICE_SUBSCRIPTION"}'
    assert subscription_message(["BTC-EUR"]) == '{"type":"PRICE_SUBSCRIPTION","markets":["BTC-EUR"]}'
    assert "replaces=0" in repr(MarketBook("BTC-EUR", prices_instruments()[0], eng.book("BTC-EUR")))


# ---------------------------------------------------------------- the simulator's wire, seen by a peer

def test_simulator_speaks_the_documented_messages(run: Any) -> None:
    """A plain ``websockets`` client (not this library) checks the exact JSON shapes."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        async with PricesSim(seed=2, interval_s=None, keepalive_s=0.05) as sim:
            async with connect(sim.url) as ws:
                await ws.send('{"type":"PRICE_SUBSCRIPTION","markets":["ETH-EUR"]}')
                first = json.loads(await ws.recv())
                assert first["type"] == "PRICES" and list(first["prices"]) == ["ETH-EUR"]
                entry = first["prices"]["ETH-EUR"]
                assert set(entry) == {"asks", "bids"} and set(entry["asks"][0]) == {"price", "quantity"}
                bids, asks = sim.book("ETH-EUR")
                inst = sim.instruments["ETH-EUR"]
                assert entry["bids"][0] == {"price": inst.ticks_to_price(bids[0][0]),
                                            "quantity": inst.lots_to_qty(bids[0][1])}
                assert json.loads(await ws.recv()) == {"type": "PRICES",
                                                       "prices": {"ETH-EUR": {"asks": [], "bids": []}}}
                # A second subscription on one connection: ERROR with the id, then close.
                await ws.send('{"type":"PRICE_SUBSCRIPTION"}')
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "ERROR":
                        break
                assert set(msg) == {"type", "connectionId", "message"} and "new connection" in msg["message"]
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == sim.error_close_code
            for bad, text in ((b"not json", "malformed"), (b'{"type":"PRICE_SUBSCRIPTION","markets":["X-EUR"]}',
                                                           "unknown market X-EUR")):
                async with connect(sim.url) as ws:
                    await ws.send(bad)
                    msg = json.loads(await ws.recv())
                    assert msg["type"] == "ERROR" and text in msg["message"]
            assert len(sim.errors_sent) == 3
    run(main())


def test_cli_serves_the_simulator() -> None:
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "feeds.sim", "prices", "--seconds", "0.3", "--loop", "asyncio",
                          "--set", "keepalive_s=0.1"], capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(out.stdout.splitlines()[0])
    assert info["venue"] == "prices" and info["url"].endswith("/ws/prices")


def test_burst_payloads_decode_offline_to_the_burst_book(offline: Any) -> None:
    eng, venue = offline
    sim = PricesSim(seed=11, burst=300, burst_market="BTC-EUR")
    sim.prepare_burst()
    assert len(sim.burst_payloads) == 300
    for i, frame in enumerate(sim.burst_payloads):
        venue.decoder.feed(frame, i)
    bids, asks = sim.burst_book
    assert levels(eng.book("BTC-EUR").bids()) == bids and levels(eng.book("BTC-EUR").asks()) == asks
