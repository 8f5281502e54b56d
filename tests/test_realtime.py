"""Realtime venue end to end over loopback against feeds.sim.realtime, under asyncio
and uvloop, plus the decoder, the typed events and the send rate limiter alone.

The simulator's market moves only on ``sim.advance(n)``; every scenario ends with the
engine's quotes, trades and typed events equal to what the simulator sent, and no
task or socket left behind.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Callable

import pytest

from engine import Engine, Instrument
from engine.engine import Trade
from engine.errors import DecodeError, FeedError
from feeds.realtime import SESSION_POLICY, RealtimeVenue, SendQueueFullError, SendRateLimiter
from feeds.realtime_decode import Quote
from feeds.realtime_events import (
    ChatMessage, Notification, PostCreated, SessionStarted, UserOnline, decode_event,
)
from feeds.session import Feed, FeedStatus, SessionOptions, StatusEvent
from feeds.sim.market import default_instruments
from feeds.sim.realtime import CLOSE_RATE_LIMIT, RealtimeSim
from loopback import close_engine_and_sim, step as step_sim, assert_no_tasks_left

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.s1gn4tur3xyz"
FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, max_attempts=None, seed=3, connect_timeout_s=3.0)


def _wire_event(body: dict[str, Any]) -> tuple[Any, ...]:
    """A simulator event dict as the tuple of the typed event's fields (no recv_ns)."""
    kind = body["type"]
    if kind == "chat:message":
        return ("chat", body["room"], body["id"], body["userId"], body["user"], body["text"], body["ts"])
    if kind == "user:online":
        return ("online", body["userId"], body["user"], body["online"], body["ts"])
    if kind == "notification:new":
        return ("notification", body["id"], body["title"], body["body"], body["level"], body["ts"])
    if kind == "post:created":
        return ("post", body["id"], body["authorId"], body["title"], body["body"], body["ts"])
    return ("session", body["sessionId"], body["userId"], body["ts"])


def _typed(e: Any) -> tuple[Any, ...]:
    tag = {ChatMessage: "chat", UserOnline: "online", Notification: "notification", PostCreated: "post",
           SessionStarted: "session"}[type(e)]
    return (tag, *dataclasses.astuple(e)[:-1])


class Harness:
    """A RealtimeSim, an engine connected to it, and what the callbacks saw."""

    def __init__(self, sim: RealtimeSim, eng: Engine, feed: Feed) -> None:
        self.sim = sim
        self.eng = eng
        self.feed = feed
        self.trades: list[Trade] = []
        self.events: list[Any] = []
        self.quotes_seen: list[tuple[str, int]] = []
        self.statuses: list[StatusEvent] = []
        eng.on_trade(self.trades.append)
        eng.on_status(self.statuses.append)
        self.venue.on_event(self.events.append)
        self.venue.on_quote(lambda q: self.quotes_seen.append((q.symbol, q.last_price_ticks)))

    @property
    def venue(self) -> RealtimeVenue:
        v = self.feed.venue
        assert isinstance(v, RealtimeVenue)
        return v

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}: {self.feed.status} "
                                     f"{self.feed.status_reason}")
            await asyncio.sleep(0.005)

    def quotes_equal(self) -> bool:
        mine = {s: (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns)
                for s, q in self.venue.quotes.items() if q.updates}
        return mine == self.sim.quotes

    async def caught_up(self, timeout: float = 5.0) -> None:
        await self.until(lambda: self.venue.ready and self.quotes_equal()
                         and len(self.trades) >= len(self.sim.trades), timeout, "quotes and trades")

    def assert_trades(self) -> None:
        got = [(t.symbol, t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) for t in self.trades]
        want = [(t.symbol, f"T-{t.trade_id}", t.price_ticks, t.qty_lots, 1 if t.side == "buy" else -1, t.ts_ns)
                for t in self.sim.trades]
        assert got == want

    def assert_events(self) -> None:
        want = [_wire_event(b) for cid in sorted(self.sim.sent_events) for b in self.sim.sent_events[cid]]
        assert [_typed(e) for e in self.events] == want


class open_harness:
    """``async with open_harness(...) as h``: sim + engine, closed cleanly on exit."""

    def __init__(self, sim_kw: dict[str, Any] | None = None, token: str = JWT, **connect_kw: Any) -> None:
        self.sim_kw = dict(seed=5, jwt=JWT, interval_s=None)
        self.sim_kw.update(sim_kw or {})
        self.token = token
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Harness:
        self.sim = self.sim_kw.pop("cls", RealtimeSim)(**self.sim_kw)
        await self.sim.start()
        eng = Engine(bar_intervals=("1s",))
        for inst in self.sim.instruments.values():
            eng.add_instrument(inst)
        feed = eng.connect("realtime", url=self.sim.url, token=self.token, **self.connect_kw)
        self.h = Harness(self.sim, eng, feed)
        await eng.start()
        return self.h

    async def __aexit__(self, *exc: Any) -> None:
        await close_engine_and_sim(self.h.eng, self.sim)
        assert self.h.venue.limiter.queued == 0 and self.h.venue.limiter._timer is None


async def step(h: Harness, n: int, chunk: int = 10) -> None:
    await step_sim(h.sim, n, chunk)


def cold_events(sim: RealtimeSim) -> None:
    sim.chat("general", "u-9", "bob", "gm")
    sim.user_online("u-9", "bob")
    sim.notify("Deposit", "1 BTC arrived", "info")
    sim.post("u-9", "Q3", "numbers")
    sim.user_online("u-9", "bob", online=False)


# ---------------------------------------------------------------- end to end

def test_end_to_end_quotes_trades_and_typed_events(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 200)
            cold_events(h.sim)
            await h.caught_up()
            await h.until(lambda: len(h.events) == 6, what="events")
            h.assert_trades()
            h.assert_events()
            assert len(h.trades) > 20
            # One on_quote per market:price sent; the book is not touched by quotes.
            assert len(h.quotes_seen) == len(h.sim.trades)
            for sym, q in h.venue.quotes.items():
                inst = h.sim.instruments[sym]
                assert h.venue.last_price(sym) == inst.ticks_to_price(h.sim.quotes[sym][0])
                assert h.venue.change(sym) == inst.ticks_to_price(h.sim.quotes[sym][1])
                assert len(h.eng.book(sym)) == 0
            # Trades went through the Dispatch: the kline aggregator saw them too.
            assert h.venue.user_id == "u-1" and h.venue.session_id == "s-1"
            c = h.feed.counters
            assert c.decode_errors == 0 and c.reconnects == 0 and h.eng.callback_errors == 0
            assert c.latency.count >= len(h.trades)
    run(main())


def test_send_chat_round_trip(run: Any) -> None:
    async def main() -> None:
        async with open_harness(rooms=["general", "desk"]) as h:
            await h.feed.wait_subscribed(5)
            await h.venue.send_chat("desk", "hello desk")
            await h.until(lambda: any(isinstance(e, ChatMessage) for e in h.events), what="echo")
            msg = [e for e in h.events if isinstance(e, ChatMessage)][0]
            assert (msg.room, msg.user_id, msg.text) == ("desk", "u-1", "hello desk")
            assert h.sim.chat_log == [("desk", "u-1", "hello desk")] and h.venue.chat_sent == 1
            with pytest.raises(ValueError, match="exceeds the maximum message size of 65536"):
                await h.venue.send_chat("desk", "x" * 70_000)
    run(main())


def test_send_rate_limit_queues_then_refuses(run: Any) -> None:
    async def main() -> None:
        # 10 messages per 0.5 s, 4 of them kept for protocol messages; queue of 2.
        limits = dict(send_rate=10, send_window_s=0.5, send_queue=2, control_reserve=4)
        async with open_harness(dict(rate_limit=10, rate_window_s=0.5), **limits) as h:
            await h.feed.wait_subscribed(5)
            loop = asyncio.get_running_loop()
            # auth + 3 subscriptions count in the window too: let them leave it first.
            assert h.venue.limiter.in_window() == 4
            await asyncio.sleep(0.55)
            done: list[float] = []

            async def send(i: int) -> None:
                await h.venue.send_chat("general", f"m{i}")
                done.append(loop.time())
            t0 = loop.time()
            tasks = [asyncio.ensure_future(send(i)) for i in range(9)]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            # 6 user slots at once (10 - 4 reserve), 2 wait in the queue, the 9th is refused.
            assert len(errors) == 1 and isinstance(errors[0], SendQueueFullError)
            assert "send queue full" in str(errors[0])
            assert sorted(done)[5] - t0 < 0.2 and sorted(done)[-1] - t0 >= 0.3
            await h.until(lambda: len(h.sim.chat_log) == 8, what="chat log")
            assert [t for _, _, t in h.sim.chat_log] == [f"m{i}" for i in range(8)]
            assert h.venue.limiter.waited == 2
            # The server never saw the client exceed the rate: no 4429 close.
            assert all(c.close_code != CLOSE_RATE_LIMIT for c in h.sim.clients)
            assert h.feed.status is FeedStatus.SUBSCRIBED and h.feed.counters.reconnects == 0
    run(main())


def test_waiting_send_fails_when_connection_closes(run: Any) -> None:
    async def main() -> None:
        async with open_harness(send_rate=6, send_window_s=5.0, send_queue=4, control_reserve=0) as h:
            await h.feed.wait_subscribed(5)
            await h.venue.send_chat("general", "a")  # with auth + 3 subscriptions: 5 of 6
            await h.venue.send_chat("general", "b")
            waiting = asyncio.ensure_future(h.venue.send_chat("general", "c"))
            await asyncio.sleep(0.05)
            assert not waiting.done() and h.venue.limiter.queued == 1
            h.sim.drop()
            with pytest.raises(FeedError, match="not sent"):
                await waiting
            await h.until(lambda: h.venue.ready, what="reconnected")
    run(main())


def test_ping_pong_and_stall(run: Any) -> None:
    async def main() -> None:
        async with open_harness(ping_interval_s=0.1, pong_timeout_s=0.3) as h:
            await h.feed.wait_subscribed(5)
            await h.until(lambda: h.venue.pongs >= 3, what="pongs")
            h.sim.stall(1.5)
            await h.until(lambda: h.feed.counters.reconnects >= 1, what="no-pong reconnect")
            assert any("no pong" in e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING)
            await h.until(lambda: h.venue.ready, what="back")
            await step(h, 50)
            await h.caught_up()
            h.assert_trades()
    run(main())


@pytest.mark.parametrize("fault", ["drop", "close", "malformed", "oversize", "transport-oversize"])
def test_faults_end_with_the_simulators_state(run: Any, fault: str, caplog: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 50)
            await h.caught_up()
            if fault == "drop":
                h.sim.drop()
            elif fault == "close":
                h.sim.close(1011, "internal error")
            elif fault == "malformed":
                h.sim.send_malformed()
            elif fault == "oversize":
                h.sim.send_oversize(70_000)  # over the protocol's 64 KB: refused, connection kept
            else:
                h.sim.send_oversize(2 << 20)  # over the transport cap: the session closes (1009)
            if fault in ("drop", "close", "transport-oversize"):
                await h.until(lambda: h.feed.counters.reconnects >= 1, what="reconnect")
                await h.until(lambda: h.venue.ready, what="ready")
            cold_events(h.sim)
            await step(h, 50)
            await h.caught_up()
            await h.until(lambda: len(h.events) == sum(map(len, h.sim.sent_events.values())), what="events")
            c = h.feed.counters
            if fault in ("drop", "close", "transport-oversize"):
                # Trades published while away are lost (no replay in this protocol); the
                # quotes are absolute, and everything after the reconnect arrives.
                assert c.reconnects == 1 and c.decode_errors == 0
                assert h.quotes_equal()
            else:
                h.assert_trades()
                assert c.reconnects == 0 and c.decode_errors == 1
            h.assert_events()
            if fault == "oversize":
                assert h.venue.decoder is not None and h.venue.decoder.oversize == 1
                assert any("70000 bytes exceeds the maximum message size of 65536 bytes" in r.getMessage()
                           for r in caplog.records)
            if fault == "transport-oversize":
                assert any("oversize" in e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING)
    run(main())


@pytest.mark.parametrize("mode", ["wrong-jwt", "reject-auth"])
def test_auth_rejected_is_terminal_and_jwt_never_shown(run: Any, caplog: Any, mode: str) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        other = JWT.replace("s1gn", "f0rg")
        async with open_harness(token=other if mode == "wrong-jwt" else JWT) as h:
            if mode == "reject-auth":
                h.sim.reject_auth = True
            await h.until(lambda: h.feed.status is FeedStatus.FAILED, what="failed")
            assert "authentication refused" in h.feed.status_reason
            assert h.feed.counters.reconnects == 0  # terminal: no retry
            texts = [r.getMessage() for r in caplog.records] + [e.reason for e in h.statuses]
            texts += [repr(h.feed), repr(h.venue), repr(h.eng), str(h.venue.describe()), repr(h.sim)]
            for t in texts:
                assert JWT not in t and other not in t, t
            with pytest.raises(FeedError) as info:
                await h.feed.wait_subscribed(0.1)
            assert JWT not in str(info.value) and other not in str(info.value)
    run(main())


def test_refused_subscription_is_terminal(run: Any) -> None:
    async def main() -> None:
        eng = Engine(bar_intervals=())
        sim = RealtimeSim(seed=2, jwt=JWT, interval_s=None)
        await sim.start()
        try:
            eng.add_instrument(Instrument("DOGE-USDT", "0.00001", "1"))  # the server does not list it
            feed = eng.connect("realtime", url=sim.url, token=JWT, **FAST)
            await eng.start()
            with pytest.raises(FeedError, match="subscription refused: 400 unknown symbols"):
                await feed.wait_subscribed(5)
            assert feed.status is FeedStatus.FAILED and feed.counters.reconnects == 0
            await eng.close()
        finally:
            await sim.stop()
        assert_no_tasks_left()
    run(main())


class _SilentSim(RealtimeSim):
    """Accepts the socket, never answers: the 60 s (here 0.3 s) connection timeout."""

    def on_message(self, client: Any, payload: bytes, binary: bool) -> None:
        return


def test_connection_timeout_covers_auth(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(cls=_SilentSim), connect_timeout_s=0.3) as h:
            await h.until(lambda: h.feed.counters.reconnects >= 1, what="timeout")
            assert any("connection timeout: no auth reply within 0.3 s" in e.reason for e in h.statuses)
    run(main())


def test_reconnect_policy_from_the_seed(run: Any) -> None:
    async def main() -> None:
        eng = Engine(bar_intervals=())
        feed = eng.connect("realtime", url="ws://127.0.0.1:9/realtime", token=JWT)
        o = feed.options
        assert (o.backoff_initial_s, o.backoff_factor, o.backoff_max_s, o.jitter, o.max_attempts,
                o.connect_timeout_s) == (1.0, 2.0, 30.0, 0.0, 5, 60.0)
        assert SESSION_POLICY["max_attempts"] == 5 and SessionOptions().backoff_initial_s != 1.0
        # Explicit options win; max_attempts stays 5: five attempts, then "failed".
        statuses: list[StatusEvent] = []
        eng.on_status(statuses.append)
        fast = eng.connect("realtime", url="ws://127.0.0.1:9/realtime", token=JWT, name="rt-fast",
                           backoff_initial_s=0.001, backoff_max_s=0.004)
        assert fast.options.backoff_initial_s == 0.001 and fast.options.max_attempts == 5
        eng.feeds.pop("realtime")
        await eng.start()
        await asyncio.wait_for(fast.wait_closed(), 10)
        mine = [e for e in statuses if e.feed == "rt-fast"]
        assert sum(e.status is FeedStatus.CONNECTING for e in mine) == 5
        assert mine[-1].status is FeedStatus.FAILED and "gave up after 5 attempts" in mine[-1].reason
        await eng.close()
    run(main())


def test_burst(run: Any) -> None:
    async def main() -> None:
        async with open_harness(dict(burst=1000), instruments=["BTC-USDT"]) as h:
            await h.until(lambda: len(h.trades) == 1000, timeout=20, what="burst")
            q = h.venue.quotes["BTC-USDT"]
            assert (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns) == h.sim.burst_quote
            assert [(t.trade_id, t.price_ticks, t.qty_lots) for t in h.trades] == \
                [(f"T-{t.trade_id}", t.price_ticks, t.qty_lots) for t in h.sim.burst_trades]
            assert h.feed.counters.decode_errors == 0
    run(main())


# ---------------------------------------------------------------- decoder and events

@pytest.fixture
def offline() -> Any:
    """An engine and a bound (not started) realtime venue: feed frames to its decoder."""
    eng = Engine(bar_intervals=())
    for inst in default_instruments():
        eng.add_instrument(inst)
    feed = eng.connect("realtime", url="ws://127.0.0.1:9/realtime", token=JWT)
    return eng, feed.venue


PRICE = b'{"type":"market:price","symbol":"BTC-USDT","price":"61837.63","change":"-12.50",' \
        b'"changePercent":"-0.020208","ts":5}'


def test_decoder_quote_and_trade(offline: Any) -> None:
    eng, venue = offline
    trades: list[Trade] = []
    eng.on_trade(trades.append)
    venue.decoder.feed(PRICE, 1)
    q = venue.quotes["BTC-USDT"]
    assert (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns, q.updates) == \
        (6183763, -1250, -20208, 5, 1)
    assert (q.last_price, q.change, q.change_percent) == ("61837.63", "-12.50", "-0.020208")
    assert "61837.63" in repr(q) and Quote(q.instrument).last_price is None
    # Field order is free; the symbol may come last.
    venue.decoder.feed(b'{"type":"trade:created","id":"T-1","price":"61837.64","qty":"0.01500",'
                       b'"side":"sell","ts":7,"symbol":"BTC-USDT"}', 2)
    t = trades[0]
    assert (t.symbol, t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) == \
        ("BTC-USDT", "T-1", 6183764, 1500, -1, 7)
    venue.decoder.feed(b'{"type":"market:price","symbol":"XRP-USDT","price":"1","change":"0",'
                       b'"changePercent":"0"}', 3)
    assert venue.decoder.unknown_symbols == 1


@pytest.mark.parametrize("frame,match", [
    (b'{"type":"market:price","symbol":"BTC-USDT","price":"61837.63","changePercent":"1"}',
     "needs symbol, price, change and changePercent"),
    (b'{"type":"market:price","symbol":"BTC-USDT","price":"61837.635","change":"0","changePercent":"0"}',
     "BTC-USDT price"),
    (b'{"type":"market:price","symbol":"BTC-USDT","price":"1.00","change":"0","changePercent":"0.0000001"}',
     "changePercent"),
    (b'{"type":"market:price","symbol":"BTC-USDT","price":"-1.00","change":"0","changePercent":"0"}',
     "must be positive"),
    (b'{"type":"market:price","symbol":"BTC-USDT","symbol":"ETH-USDT","price":"1.00","change":"0",'
     b'"changePercent":"0"}', "realtime message"),
    (b'{"type":"trade:created","symbol":"BTC-USDT","id":"T","price":"1.00","qty":"0.00001","side":"hold"}',
     "buy or sell"),
    (b'{"type":"trade:created","symbol":"BTC-USDT","id":"T","price":"1.00","qty":"0","side":"buy"}',
     "qty must be positive"),
    (b'{"symbol":"BTC-USDT"}', "without type"),
    (b'{"type":"market:price","symbol":"BTC-USDT","price":"6', "realtime message"),
    (b'{"type":"chat:message","id":"m","userId":"u","text":"hi"}', "'room' missing"),
    (b'{"type":"user:online","userId":"u","online":"yes"}', "'online' must be true or false"),
    (b'{"type":"post:created","id":"p","authorId":"u","title":7}', "'title' must be a string"),
    (b'{"type":"session:started","sessionId":"s","userId":"u","ts":-1}', "'ts' must be a non-negative"),
])
def test_decoder_rejects_bad_messages_and_changes_nothing(offline: Any, frame: bytes, match: str) -> None:
    eng, venue = offline
    got: list[Any] = []
    venue.on_event(got.append)
    eng.on_trade(got.append)
    venue.decoder.feed(PRICE, 1)
    q = venue.quotes["BTC-USDT"]
    before = (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.updates)
    with pytest.raises(DecodeError, match=match):
        venue.decoder.feed(frame, 2)
    assert (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.updates) == before
    assert got == []


def test_oversize_message_is_refused_by_the_decoder(offline: Any) -> None:
    eng, venue = offline
    big = b'{"type":"notification:new","id":"n","title":"' + b"x" * 70_000 + b'"}'
    with pytest.raises(DecodeError, match=f"{len(big)} bytes exceeds the maximum message size of 65536 bytes"):
        venue.decoder.feed(big, 1)
    assert venue.decoder.oversize == 1 and venue.events == {}


def test_typed_events_decode() -> None:
    e = decode_event("notification:new", b'{"type":"notification:new","id":"n1","title":"T"}', 9)
    assert e == Notification("n1", "T", "", "info", 0, 9)
    with pytest.raises(DecodeError, match="not JSON"):
        decode_event("chat:message", b"{", 0)
    with pytest.raises(DecodeError, match="unknown event type"):
        decode_event("chat:deleted", b"{}", 0)


def test_rate_limiter_alone(run: Any) -> None:
    async def main() -> None:
        lim = SendRateLimiter(rate=3, window_s=0.2, max_queue=1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(3):
            await lim.acquire()
        assert loop.time() - t0 < 0.1 and lim.in_window() == 3
        waiter = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0)
        with pytest.raises(SendQueueFullError):
            await lim.acquire()
        await waiter
        assert loop.time() - t0 >= 0.19
        lim.record()
        cancelled = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert lim.queued == 0
        lim.close()
        with pytest.raises(ValueError):
            SendRateLimiter(rate=2, window_s=1.0, max_queue=1, reserve=2)
    run(main())


def test_options_are_checked() -> None:
    eng = Engine(bar_intervals=())
    with pytest.raises(FeedError, match="JWT"):
        eng.connect("realtime", url="ws://127.0.0.1:9/")
    with pytest.raises(TypeError):
        eng.connect("realtime", url="ws://127.0.0.1:9/", token=JWT, rooms="general")
    with pytest.raises(TypeError, match="unexpected keyword"):
        eng.connect("realtime", url="ws://127.0.0.1:9/", token=JWT, room=["general"])


# ---------------------------------------------------------------- the simulator's wire, seen by a peer

def test_simulator_speaks_the_documented_messages(run: Any) -> None:
    """A plain ``websockets`` client (not this library) checks the protocol and the
    limits the simulated server enforces (auth first, 64 KB, send rate)."""
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        async with RealtimeSim(seed=2, jwt=JWT, interval_s=None, rate_limit=8, rate_window_s=5.0) as sim:
            async with connect(sim.url) as ws:
                await ws.send('{"type":"subscribe","channel":"notifications"}')  # before auth
                assert json.loads(await ws.recv()) == {"type": "error", "code": 401, "message": "not authenticated"}
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4401
            async with connect(sim.url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "auth", "token": JWT}))
                assert json.loads(await ws.recv()) == {"type": "auth:ok", "userId": "u-1"}
                assert json.loads(await ws.recv())["type"] == "session:started"
                await ws.send('{"type":"subscribe","channel":"market","symbols":["BTC-USDT"]}')
                assert json.loads(await ws.recv()) == {"type": "subscribed", "channel": "market",
                                                       "symbols": ["BTC-USDT"]}
                await ws.send('{"type":"ping","ts":42}')
                assert json.loads(await ws.recv()) == {"type": "pong", "ts": 42}
                while not sim.trades or sim.trades[-1].symbol != "BTC-USDT":
                    sim.advance(1)
                kinds = []
                while len(kinds) < 2:
                    kinds.append(json.loads(await ws.recv()))
                t = sim.trades[-1]
                assert kinds[0] == {"type": "trade:created", "symbol": "BTC-USDT", "id": f"T-{t.trade_id}",
                                    "price": sim.instruments["BTC-USDT"].ticks_to_price(t.price_ticks),
                                    "qty": sim.instruments["BTC-USDT"].lots_to_qty(t.qty_lots),
                                    "side": t.side, "ts": t.ts_ns}
                assert kinds[1]["type"] == "market:price" and set(kinds[1]) == {
                    "type", "symbol", "price", "change", "changePercent", "ts"}
                await ws.send('{"type":"chat:send","room":"nowhere","text":"x"}')
                assert json.loads(await ws.recv())["code"] == 403
                for _ in range(5):  # auth, subscribe, ping, chat:send + 5 = 9: over the limit of 8
                    await ws.send('{"type":"ping","ts":1}')
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.recv()
                assert ws.close_code == CLOSE_RATE_LIMIT
            async with connect(sim.url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "auth", "token": JWT}))
                await ws.send("x" * (64 * 1024 + 1))  # over the 64 KB message limit
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.recv()
                assert ws.close_code == 1009
    run(main())


def test_cli_serves_the_simulator() -> None:
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "feeds.sim", "realtime", "--seconds", "0.3", "--loop", "asyncio",
                          "--set", "rate_limit=50"], capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(out.stdout.splitlines()[0])
    assert info["venue"] == "realtime" and info["url"].endswith("/realtime")


def test_burst_payloads_decode_offline(offline: Any) -> None:
    eng, venue = offline
    trades: list[Trade] = []
    eng.on_trade(trades.append)
    sim = RealtimeSim(seed=5, burst=200, burst_symbol="ETH-USDT")
    sim.prepare_burst()
    assert len(sim.burst_payloads) == 400
    for i, frame in enumerate(sim.burst_payloads):
        venue.decoder.feed(frame, i)
    q = venue.quotes["ETH-USDT"]
    assert (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns) == sim.burst_quote
    assert [t.price_ticks for t in trades] == [t.price_ticks for t in sim.burst_trades]


# --- decoder: member order ------------------------------------------------------------

class _ColdVenue:
    def __init__(self) -> None:
        self.cold: list[tuple[str, bytes]] = []
        self.quotes = 0

    def on_message(self, kind: str, raw: bytes, recv_ns: int) -> None:
        self.cold.append((kind, raw))

    def quote_updated(self, quote: Any, recv_ns: int) -> None:
        self.quotes += 1


def _rt_decoder() -> tuple[Any, _ColdVenue, list[Trade], Quote]:
    from feeds._hotpath import Dispatch, FeedCounters
    from feeds.realtime_decode import RealtimeDecoder
    inst = Instrument("BTC-USD", "0.01", "0.0001")
    eng = Engine(bar_intervals=())
    eng.add_instrument(inst)
    trades: list[Trade] = []
    eng.on_trade(trades.append)
    venue, q = _ColdVenue(), Quote(inst)
    return RealtimeDecoder(venue, Dispatch(eng, "r", FeedCounters()), Trade, [q], 65536), venue, trades, q


def test_decoder_field_order_does_not_matter() -> None:
    """Fields named like hot ones (id, ts, price...) in a cold message are not read as
    hot fields, whether they come before or after "type"; a hot message decodes the same
    in any member order, and its field types and repeats are still checked."""
    dec, venue, trades, q = _rt_decoder()
    cold = [b'{"type":"post:created","id":42,"ts":"2024-08-08T00:00:00Z"}',
            b'{"id":42,"ts":"2024-08-08T00:00:00Z","type":"post:created"}',
            b'{"id":1,"id":2,"price":{"x":1},"type":"chat:message"}']
    for raw in cold:
        dec.feed(raw, 1)
    assert [k for k, _ in venue.cold] == ["post:created", "post:created", "chat:message"]
    assert venue.cold[1][1] == cold[1]
    hot = [b'{"type":"trade:created","symbol":"BTC-USD","id":"T1","price":"100.01","qty":"0.5","side":"buy","ts":7}',
           b'{"ts":7,"side":"buy","qty":"0.5","price":"100.01","id":"T1","symbol":"BTC-USD","type":"trade:created"}']
    for raw in hot:
        dec.feed(raw, 3)
    assert trades[0] == trades[1] == Trade(q.instrument, "T1", 10001, 5000, 1, 7, 3)
    dec.feed(b'{"price":"100.02","change":"-1.5","changePercent":"-0.25","symbol":"BTC-USD","ts":9,'
             b'"type":"market:price"}', 4)
    assert (q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns) == (10002, -150, -250000, 9)
    bad = [(b'{"ts":"7","symbol":"BTC-USD","id":"T2","price":"1","qty":"1","side":"buy","type":"trade:created"}',
            "wrong JSON type"),
           (b'{"id":2,"symbol":"BTC-USD","price":"1","qty":"1","side":"buy","type":"trade:created"}',
            "wrong JSON type"),
           (b'{"id":"T2","id":"T3","symbol":"BTC-USD","price":"1","qty":"1","side":"buy","type":"trade:created"}',
            "twice|duplicate"),
           (b'{"type":"trade:created","id":"T2","id":"T3","symbol":"BTC-USD","price":"1","qty":"1","side":"buy"}',
            "twice|duplicate")]
    for raw, why in bad:
        with pytest.raises(DecodeError, match=why):
            dec.feed(raw, 5)
    assert len(trades) == 2 and q.updates == 1 and len(venue.cold) == 3
