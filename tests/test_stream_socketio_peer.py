"""The stream venue against a REAL Socket.IO server: python-socketio's AsyncServer on
aiohttp (loopback, ephemeral port), under asyncio and uvloop.

The server handles the venue's subscription events with ordinary python-socketio
handlers (the return value is the ack) and emits the documented payloads with
``sio.emit``; the engine's books, trades, venue candles, orders and balances must end
equal to exactly what it emitted. Also: Engine.IO ping/pong with a short
pingInterval keeps the connection alive, a server-side disconnect and a dropped
Engine.IO session reconnect and resubscribe, a refused connect is terminal, and a
custom namespace works.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest
import socketio
import uvloop
from aiohttp import web

from engine import Engine, Instrument
from engine.account import OrderStatus
from engine.errors import FeedError
from feeds.session import Feed, FeedStatus
from feeds.stream import StreamVenue

KEY = "peer-api-key-7d1e"
T0_MS = 1_723_161_600_000
NS = 1_000_000
FAST: dict[str, Any] = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=5, connect_timeout_s=3.0)


class Peer:
    """A python-socketio server speaking the stream venue's events on one namespace."""

    def __init__(self, namespace: str = "/", ping_interval: float = 25, ping_timeout: float = 20) -> None:
        self.namespace = namespace
        self.sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=ping_interval,
                                        ping_timeout=ping_timeout, logger=False, engineio_logger=False)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.refuse = False
        self.connects: list[str] = []
        self.subscribed: dict[str, list[dict[str, Any]]] = {}
        self.snapshot: dict[str, Any] = {}  # what a new subscriber gets first, by event name
        ns = namespace

        @self.sio.on("connect", namespace=ns)  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: Any, auth: Any = None) -> None:
            if self.refuse:
                raise socketio.exceptions.ConnectionRefusedError("unauthorized")
            self.connects.append(sid)

        for name in ("orderbook", "kline", "positions", "openorders"):
            self.sio.on(name, self._handler(name), namespace=ns)

    def _handler(self, name: str) -> Callable[..., Any]:
        async def handle(sid: str, msg: dict[str, Any]) -> dict[str, Any]:
            if name in ("positions", "openorders") and msg.get("apiKey") != KEY:
                return {"ok": False, "code": 401, "message": "invalid apiKey"}
            self.subscribed.setdefault(name, []).append(msg)
            await self.sio.enter_room(sid, name, namespace=self.namespace)
            if name in self.snapshot:  # the current state, before the ack (as venues do)
                await self.sio.emit(name, self.snapshot[name], to=sid, namespace=self.namespace)
            return {"ok": True}
        return handle

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        assert self.runner is not None
        for sid in list(self.connects):
            try:
                await self.sio.disconnect(sid, namespace=self.namespace)
            except Exception:
                pass
        await self.sio.shutdown()
        await self.runner.cleanup()

    async def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Broadcast to the event's subscribers, and keep it as the snapshot for
        later subscribers when it is state (orderbook, positions)."""
        if name in ("orderbook", "positions"):
            self.snapshot[name] = payload
        await self.sio.emit(name, payload, room=name, namespace=self.namespace)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def _book(seq: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]],
          trades: list[tuple[int, int, int, str]]) -> dict[str, Any]:
    return {"symbol": "BTC-USDT", "seq": seq, "ts": T0_MS + seq,
            "bids": [{"ticks": p, "lots": q, "count": 2} for p, q in bids],
            "asks": [{"ticks": p, "lots": q, "count": 1} for p, q in asks],
            "trades": [{"id": i, "ticks": p, "lots": q, "side": s, "ts": T0_MS + i} for i, p, q, s in trades]}


class Session:
    def __init__(self, peer: Peer, eng: Engine, feed: Feed) -> None:
        self.peer = peer
        self.eng = eng
        self.feed = feed
        self.trades: list[Any] = []
        self.statuses: list[Any] = []
        eng.on_trade(self.trades.append)
        eng.on_status(self.statuses.append)

    @property
    def venue(self) -> StreamVenue:
        v = self.feed.venue
        assert isinstance(v, StreamVenue)
        return v

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({self.feed.status.value}: "
                                     f"{self.feed.status_reason})")
            await asyncio.sleep(0.005)


class open_session:
    def __init__(self, peer_kw: dict[str, Any] | None = None, key: str = KEY, **connect_kw: Any) -> None:
        self.peer_kw = peer_kw or {}
        self.key = key
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Session:
        self.peer = Peer(**self.peer_kw)
        await self.peer.start()
        eng = Engine(bar_intervals=("1m",))
        eng.add_instrument(Instrument("BTC-USDT", "0.01", "0.00001"))
        feed = eng.connect("stream", url=self.peer.url, token=self.key, account_id="A-1",
                           namespace=self.peer.namespace, **self.connect_kw)
        self.s = Session(self.peer, eng, feed)
        await eng.start()
        return self.s

    async def __aexit__(self, *exc: Any) -> None:
        await self.s.eng.close()
        await self.peer.stop()
        # The engine left nothing behind; the peer's own tasks (python-engineio pings)
        # are not the engine's business: cancelled here.
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        peer_tasks = {t for t in left if _is_peer_task(t)}
        for t in peer_tasks:
            t.cancel()
        await asyncio.gather(*peer_tasks, return_exceptions=True)
        assert not left - peer_tasks, left - peer_tasks


def _is_peer_task(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return any(f"/{pkg}/" in filename for pkg in ("engineio", "socketio", "aiohttp"))


async def _emit_scenario(s: Session) -> None:
    """Books with overlapping trade windows, candles, balances and an order's life."""
    peer = s.peer
    await peer.emit("orderbook", _book(2, [(6183763, 2000), (6183760, 10)], [(6183764, 150000)],
                                       [(101, 6183763, 1500, "buy"), (100, 6183762, 5, "sell")]))
    await peer.emit("kline", {"symbol": "BTC-USDT", "interval": "1m", "add": {
        "created": T0_MS, "o": 6183762, "h": 6183763, "l": 6183762, "c": 6183763, "v": 1505, "m": T0_MS + 101},
        "modify": None})
    await peer.emit("orderbook", _book(3, [(6183763, 500)], [(6183765, 7), (6183770, 9)],
                                       [(101, 6183763, 1500, "buy"), (102, 6183765, 20, "buy")]))
    await peer.emit("kline", {"symbol": "BTC-USDT", "interval": "1m", "modify": {
        "created": T0_MS, "o": 6183762, "h": 6183765, "l": 6183762, "c": 6183765, "v": 1525, "m": T0_MS + 102}})
    await peer.emit("kline", {"symbol": "BTC-USDT", "interval": "1m", "add": {
        "created": T0_MS + 60_000, "o": 6183770, "h": 6183770, "l": 6183770, "c": 6183770, "v": 1,
        "m": T0_MS + 60_001}})
    await peer.emit("positions", {"ts": T0_MS + 5, "balances": [
        {"asset": "USDT", "total": "100000.00000000", "available": "96908.50000000", "reserved": "3091.50000000"},
        {"asset": "BTC", "total": "0.50000000", "available": "0.50000000", "reserved": "0"}]})
    order = {"id": "O-1", "clientId": "c-1", "symbol": "BTC-USDT", "side": "buy", "type": "limit",
             "price": 6183000, "state": "open", "resd": 2000, "exec": 0, "cost": 0, "seq": 1, "ts": T0_MS + 6}
    await peer.emit("openorders", {"ts": T0_MS + 6, "modify": [order], "cancel": []})
    await peer.emit("openorders", {"ts": T0_MS + 7, "modify": [dict(order, state="partial", resd=1500, exec=500,
                                                                     cost=6183000 * 500, seq=2, ts=T0_MS + 7)]})
    order2 = dict(order, id="O-2", clientId="c-2", price=6182000, resd=100, seq=3, ts=T0_MS + 8)
    await peer.emit("openorders", {"ts": T0_MS + 8, "modify": [order2]})
    await peer.emit("openorders", {"ts": T0_MS + 9, "cancel": [{"id": "O-2", "seq": 4, "ts": T0_MS + 9}]})


async def _assert_scenario(s: Session) -> None:
    book = s.eng.book("BTC-USDT")
    acct = s.eng.account("A-1")
    await s.until(lambda: "O-2" in acct.order_ids_by_slot() and
                  OrderStatus(acct.order("O-2").status).name == "CANCELED", "the scenario")
    assert book.bids().tolist() == [(6183763, 500)] and book.asks().tolist() == [(6183765, 7), (6183770, 9)]
    assert book.last_update_id == 3 and book.event_ts_ns == (T0_MS + 3) * NS
    assert [(t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) for t in s.trades[-3:]] == [
        ("100", 6183762, 5, -1, (T0_MS + 100) * NS), ("101", 6183763, 1500, 1, (T0_MS + 101) * NS),
        ("102", 6183765, 20, 1, (T0_MS + 102) * NS)]
    agg = s.eng.bars("BTC-USDT")
    closed = agg.bars("1m", venue=True)
    assert [(int(b["open_ts_ns"]), int(b["open_ticks"]), int(b["high_ticks"]), int(b["low_ticks"]),
             int(b["close_ticks"]), int(b["volume_lots"]), int(b["last_trade_ts_ns"])) for b in closed] == [
        (T0_MS * NS, 6183762, 6183765, 6183762, 6183765, 1525, (T0_MS + 102) * NS)]
    cur = agg.current("1m", venue=True)
    assert cur is not None and (int(cur["open_ts_ns"]), int(cur["volume_lots"])) == ((T0_MS + 60_000) * NS, 1)
    assert (acct.balance("USDT").total, acct.balance("USDT").available, acct.balance("USDT").reserved) == (
        10_000_000_000_000, 9_690_850_000_000, 309_150_000_000)
    assert acct.balance("BTC").total == 50_000_000
    o1, o2 = acct.order("O-1"), acct.order("O-2")
    assert (OrderStatus(o1.status).name, o1.qty_lots, o1.filled_lots, o1.price_ticks, o1.cost) == (
        "PARTIALLY_FILLED", 2000, 500, 6183000, 6183000 * 500)
    assert (OrderStatus(o2.status).name, o2.qty_lots, o2.filled_lots) == ("CANCELED", 100, 0)
    pos = acct.position("BTC-USDT")
    assert pos.qty_lots == 500 and pos.entry_notional == 6183000 * 500


def test_real_socketio_server_state_matches(run: Any) -> None:
    async def main() -> None:
        async with open_session() as s:
            await s.feed.wait_subscribed(5)
            assert s.peer.subscribed["orderbook"] == [{"symbol": "BTC-USDT"}]
            assert s.peer.subscribed["kline"] == [{"symbol": "BTC-USDT", "interval": "1m"}]
            assert s.peer.subscribed["openorders"] == [{"apiKey": KEY, "since": 0}]
            await _emit_scenario(s)
            await _assert_scenario(s)
            c = s.feed.counters
            assert c.decode_errors == 0 and c.reconnects == 0 and s.venue.account_errors == 0
            assert s.venue.decoder is not None and s.venue.decoder.duplicate_trades == 1
    run(main())


def test_short_ping_interval_keeps_the_connection(run: Any) -> None:
    async def main() -> None:
        # The server pings every second (python-engineio advertises whole seconds only)
        # and drops a client whose pong is 0.3 s late; the client's own deadline is 1.3 s.
        async with open_session(peer_kw=dict(ping_interval=1, ping_timeout=0.3)) as s:
            await s.feed.wait_subscribed(5)
            info = s.venue.sio.open_info
            assert info is not None and (info.ping_interval_ms, info.ping_timeout_ms) == (1000, 300)
            await asyncio.sleep(3.2)
            assert s.venue.sio.pings >= 3
            assert s.feed.counters.reconnects == 0 and s.feed.status is FeedStatus.SUBSCRIBED
            assert len(s.peer.connects) == 1
            await _emit_scenario(s)
            await _assert_scenario(s)
    run(main())


def test_server_disconnect_and_dropped_session_reconnect(run: Any) -> None:
    async def main() -> None:
        async with open_session() as s:
            await s.feed.wait_subscribed(5)
            peer = s.peer
            await peer.emit("orderbook", _book(1, [(100, 1)], [(101, 1)], [(1, 100, 1, "buy")]))
            await s.until(lambda: s.eng.book("BTC-USDT").last_update_id == 1, "first book")
            # 1) Socket.IO disconnect of the namespace (41): the client reconnects and
            #    resubscribes; the new subscription gets the current book first.
            await peer.sio.disconnect(peer.connects[0], namespace=peer.namespace)
            await peer.emit("orderbook", _book(2, [(99, 3)], [(101, 1)], [(1, 100, 1, "buy"), (2, 99, 1, "sell")]))
            await s.until(lambda: len(peer.connects) == 2 and s.feed.status is FeedStatus.SUBSCRIBED, "reconnect")
            await s.until(lambda: s.eng.book("BTC-USDT").last_update_id == 2, "book after reconnect")
            assert s.feed.counters.reconnects == 1
            assert peer.subscribed["openorders"][-1]["since"] == 0  # no openorders applied yet
            # 2) The Engine.IO session dropped by the server (socket closed).
            await peer.sio.eio.disconnect(peer.sio.manager.eio_sid_from_sid(peer.connects[1], peer.namespace))
            await s.until(lambda: len(peer.connects) == 3 and s.feed.status is FeedStatus.SUBSCRIBED, "reconnect 2")
            await _emit_scenario(s)
            await _assert_scenario(s)
            assert peer.subscribed["openorders"][-1] == {"apiKey": KEY, "since": 0}
            assert s.feed.counters.reconnects == 2 and s.feed.counters.decode_errors == 0
            # Trades across the three sessions: each once (1 and 2, then 100..102).
            assert [t.trade_id for t in s.trades] == ["1", "2", "100", "101", "102"]
            # 3) Openorders recovery asks for changes since the last applied message.
            await peer.sio.disconnect(peer.connects[2], namespace=peer.namespace)
            await s.until(lambda: len(peer.connects) == 4 and s.feed.status is FeedStatus.SUBSCRIBED, "reconnect 3")
            assert peer.subscribed["openorders"][-1] == {"apiKey": KEY, "since": T0_MS + 9}
    run(main())


def test_refused_connect_is_terminal(run: Any) -> None:
    async def main() -> None:
        peer = Peer()
        peer.refuse = True
        await peer.start()
        try:
            eng = Engine(bar_intervals=())
            eng.add_instrument(Instrument("BTC-USDT", "0.01", "0.00001"))
            feed = eng.connect("stream", url=peer.url, **FAST)
            await eng.start()
            with pytest.raises(FeedError) as err:
                await feed.wait_subscribed(5)
            assert err.value.terminal and "unauthorized" in str(err.value)
            assert feed.counters.reconnects == 0
            await eng.close()
        finally:
            await peer.stop()
    run(main())


def test_wrong_api_key_refused_by_ack_is_terminal(run: Any) -> None:
    async def main() -> None:
        async with open_session(key="not-the-key-1234") as s:
            with pytest.raises(FeedError) as err:
                await s.feed.wait_subscribed(5)
            assert err.value.terminal and "401" in str(err.value) and "not-the-key" not in str(err.value)
    run(main())


def test_custom_namespace(run: Any) -> None:
    async def main() -> None:
        async with open_session(peer_kw=dict(namespace="/market")) as s:
            await s.feed.wait_subscribed(5)
            await _emit_scenario(s)
            await _assert_scenario(s)
            assert s.feed.counters.decode_errors == 0
    run(main())
