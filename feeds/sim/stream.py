"""Stream venue simulator: a Socket.IO v4 server (Engine.IO v4, WebSocket transport)
speaking the JayX-style events of ``feeds.stream`` over loopback.

Served at ``ws://127.0.0.1:<port>/socket.io/?EIO=4&transport=websocket`` (other paths
or a query without ``EIO=4&transport=websocket``: HTTP 404). Per connection:

- on connect: ``0{"sid":..,"upgrades":[],"pingInterval":P,"pingTimeout":T,"maxPayload":..}``;
  then ``2`` every ``ping_interval_ms``; a client that does not answer ``3`` within
  ``ping_timeout_ms`` is closed (1000 "ping timeout"), as Engine.IO servers do.
- ``40`` (namespace connect): ``40{"sid":..}``; the ``reject_auth`` fault answers
  ``44{"message":"unauthorized","data":{"code":401}}`` instead; an unknown namespace
  gets ``44/ns,{"message":"Invalid namespace"}``.
- ``42<id>["<event>",{...}]`` subscriptions, each acked ``43<id>[{"ok":true}]`` and
  followed by the stream's current state, exactly the payloads documented in
  ``feeds.stream``: ``orderbook`` (a snapshot with the current ``seq``), ``kline``
  (the current candle as ``add``, if any), ``positions`` (every balance),
  ``openorders`` (``snapshot:true``: every open order and every order changed at or
  after ``since``). Refusals: unknown symbol/interval -> ``{"ok":false,"code":404}``,
  missing field -> 400, wrong ``apiKey`` or ``reject_auth`` -> 401. ``41`` from the
  client unsubscribes everything; ``1`` or a frame that is not Engine.IO closes.

Publishing, per market step (``advance``): each symbol whose book changed gets one
``orderbook`` message (seq +1, top ``depth`` levels a side, the last ``trades_window``
trades); each subscribed (symbol, interval) with a trade gets one ``kline`` message
(``add`` when the trade opened a new interval, else ``modify``); account changes give
one ``openorders`` message (order changes; canceled orders in ``cancel``) and one
``positions`` message when balances changed. Numbers: ticks/lots of the market's
instruments; ``cost`` in ticks x lots units (the market's quote-unit cost divided by
its scale, exact); balances with 8 decimals; times in ms of the market's clock.

Faults: the base ones (drop, close, malformed, oversize, stall, reject_auth) plus
:meth:`StreamSim.skip_sequence` (an orderbook message's seq is consumed but the
message is never sent), :meth:`StreamSim.disconnect` (server ``41``),
:meth:`StreamSim.engineio_close` (``1``) and :meth:`StreamSim.stop_pings`. Burst mode
(``burst=N``): ``burst_symbol``'s orderbook subscription gets N pre-encoded orderbook
messages as fast as the socket takes them; :attr:`StreamSim.burst_book` is the book
they end with.
"""
from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from picows import WSUpgradeRequest

from engine._core.instrument import Instrument
from engine._core.kline import parse_interval
from feeds.sim.market import (
    QUOTE_DECIMALS, Balance, Balances, BookDelta, BookSnapshot, MarketSource, Order,
    SyntheticMarket, Trade, format_amount,
)
from feeds.sim.server import SimClient, SimServer, encode_burst

__all__ = ["StreamSim", "SimCandle", "encode_orderbook", "encode_candle"]

NS_PER_MS = 1_000_000
_STATE = {"New": "open", "PartiallyFilled": "partial", "Filled": "filled", "Canceled": "cancelled"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def event_frame(name: str, payload: Any, namespace: str = "/") -> str:
    """``42["name",payload]`` (``42/ns,[...]`` outside the default namespace)."""
    ns = "" if namespace == "/" else namespace + ","
    return f'42{ns}["{name}",{_dumps(payload)}]'


@dataclass
class SimCandle:
    """One venue candle as the simulator built it (ticks, lots, ns)."""
    open_ts_ns: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int
    update_ts_ns: int

    def wire(self) -> dict[str, int]:
        """The candle object of a ``kline`` message."""
        return {"created": self.open_ts_ns // NS_PER_MS, "o": self.open_ticks, "h": self.high_ticks,
                "l": self.low_ticks, "c": self.close_ticks, "v": self.volume_lots,
                "m": self.update_ts_ns // NS_PER_MS}


def encode_candle(symbol: str, interval: str, add: SimCandle | None, modify: SimCandle | None) -> dict[str, Any]:
    """Payload of a ``kline`` message."""
    return {"symbol": symbol, "interval": interval, "add": add.wire() if add else None,
            "modify": modify.wire() if modify else None}


def encode_orderbook(symbol: str, seq: int, ts_ns: int, bids: list[tuple[int, int]],
                     asks: list[tuple[int, int]], trades: list[Trade], depth: int) -> dict[str, Any]:
    """Payload of an ``orderbook`` message (top ``depth`` levels a side, best first;
    ``count`` is a deterministic stand-in for the number of orders at the level)."""
    def side(levels: list[tuple[int, int]]) -> list[dict[str, int]]:
        return [{"ticks": p, "lots": q, "count": 1 + (p + q) % 7} for p, q in levels[:depth]]
    return {"symbol": symbol, "seq": seq, "ts": ts_ns // NS_PER_MS, "bids": side(bids), "asks": side(asks),
            "trades": [{"id": t.trade_id, "ticks": t.price_ticks, "lots": t.qty_lots, "side": t.side,
                        "ts": t.ts_ns // NS_PER_MS} for t in trades]}


@dataclass
class _KlineState:
    symbol: str
    interval: str
    length_ns: int
    offset_ns: int
    current: SimCandle | None = None
    closed: list[SimCandle] = field(default_factory=list)
    subscribers: dict[int, SimClient] = field(default_factory=dict)


@dataclass
class _Conn:
    sid: str = ""
    connected: bool = False
    subs: set[tuple[str, ...]] = field(default_factory=set)
    awaiting_pong: bool = False
    pong_timer: Any = None


class StreamSim(SimServer):
    """Stream venue simulator (see the module docstring).

    Parameters: ``market`` (a MarketSource; default ``SyntheticMarket(seed=seed)``),
    ``api_key`` (the one accepted key; never logged), ``ping_interval_ms``,
    ``ping_timeout_ms``, ``interval_s`` (seconds between market steps; None: only
    :meth:`advance` moves the market), ``depth`` (levels a side per orderbook
    message; default the market's), ``trades_window`` (recent trades per orderbook
    message), ``namespace``, ``burst``/``burst_symbol``, plus the SimServer ones."""

    name: ClassVar[str] = "stream"
    path: ClassVar[str] = "/socket.io/"
    malformed_payload: ClassVar[bytes] = b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":1,'
    slow_close_code: ClassVar[int] = 1008

    def __init__(self, market: MarketSource | None = None, *, seed: int = 1, api_key: str = "sim-api-key",
                 ping_interval_ms: int = 25_000, ping_timeout_ms: int = 20_000,
                 interval_s: float | None = 0.01, depth: int | None = None, trades_window: int = 20,
                 namespace: str = "/", burst: int = 0, burst_symbol: str | None = None,
                 **server_kw: Any) -> None:
        super().__init__(**server_kw)
        if ping_interval_ms < 1 or ping_timeout_ms < 1:
            raise ValueError("ping_interval_ms and ping_timeout_ms must be >= 1")
        self.market: MarketSource = market if market is not None else SyntheticMarket(seed=seed)
        self._api_key = api_key
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.interval_s = None if burst else interval_s
        self.depth = depth if depth is not None else getattr(self.market, "depth", 1000)
        self.trades_window = trades_window
        self.namespace = namespace
        self.paused = False
        self.pinging = True
        self.seq: dict[str, int] = {sym: 0 for sym in self.market.instruments}
        self._skip: dict[str, int] = {sym: 0 for sym in self.market.instruments}
        self.recent: dict[str, deque[Trade]] = {sym: deque(maxlen=trades_window) for sym in self.market.instruments}
        self.book_subs: dict[str, dict[int, SimClient]] = {sym: {} for sym in self.market.instruments}
        self.klines: dict[tuple[str, str], _KlineState] = {}
        self.private_subs: dict[str, dict[int, SimClient]] = {"positions": {}, "openorders": {}}
        self._touched: dict[tuple[str, str], tuple[_KlineState, bool]] = {}
        #: Per order id: (seq, ts_ns) of its last change, as published.
        self.order_seq: dict[int, tuple[int, int]] = {}
        self.account_seq = 0
        self._scale = {sym: i.tick_units * i.lot_units * 10 ** (QUOTE_DECIMALS - i.price_decimals - i.qty_decimals)
                       for sym, i in self.market.instruments.items()}
        self.burst_count = burst
        self.burst_symbol = burst_symbol or next(iter(self.market.instruments))
        self._burst = encode_burst([])
        self.burst_book: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self.burst_frames: list[bytes] = []
        self.burst_trades: list[Trade] = []

    def __repr__(self) -> str:  # the API key never appears
        return f"StreamSim(port={self.port}, clients={len(self.clients)})"

    # -- routing and connection ------------------------------------------------------

    def accept(self, request: WSUpgradeRequest) -> bool:
        if not super().accept(request):
            return False
        q = parse_qs(urlsplit(request.path.decode("latin-1")).query)
        return q.get("EIO") == ["4"] and q.get("transport") == ["websocket"]

    def on_connect(self, client: SimClient) -> None:
        conn = _Conn(sid=uuid.uuid4().hex[:20])
        client.state = conn
        client.send("0" + _dumps({"sid": conn.sid, "upgrades": [], "pingInterval": self.ping_interval_ms,
                                  "pingTimeout": self.ping_timeout_ms, "maxPayload": self.max_frame_size}))

    def on_disconnect(self, client: SimClient) -> None:
        conn: _Conn = client.state
        if conn.pong_timer is not None:
            conn.pong_timer.cancel()
            conn.pong_timer = None
        self._unsubscribe_all(client)

    def _unsubscribe_all(self, client: SimClient) -> None:
        conn: _Conn = client.state
        for subs in self.book_subs.values():
            subs.pop(client.client_id, None)
        for k in self.klines.values():
            k.subscribers.pop(client.client_id, None)
        for subs in self.private_subs.values():
            subs.pop(client.client_id, None)
        conn.subs.clear()

    async def on_start(self) -> None:
        if self.burst_count:
            self._prepare_burst()
        if self.interval_s is not None:
            self.spawn(self._tick_loop(self.interval_s), "market")
        self.spawn(self._ping_loop(), "ping")

    async def _tick_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not self.paused:
                self.advance(1)

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval_ms / 1000)
            if not self.pinging:
                continue
            for c in self.clients:
                conn: _Conn = c.state
                if c.closed or c.stalled:
                    continue  # a stalled server is frozen: it neither pings nor checks pongs
                c.send("2")
                if conn.pong_timer is None:
                    conn.pong_timer = loop.call_later(self.ping_timeout_ms / 1000, self._no_pong, c)

    def _no_pong(self, client: SimClient) -> None:
        conn: _Conn = client.state
        conn.pong_timer = None
        client.close(1000, "ping timeout")

    # -- client messages ---------------------------------------------------------------

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        conn: _Conn = client.state
        text = payload.decode("utf-8", "replace")
        if text == "3":
            if conn.pong_timer is not None:
                conn.pong_timer.cancel()
                conn.pong_timer = None
            return
        if text == "1":
            client.close(1000, "")
            return
        if not text.startswith("4") or len(text) < 2:
            client.close(1002, "bad engine.io packet")
            return
        kind, rest = text[1], text[2:]
        ns = "/"
        if rest.startswith("/"):
            ns, _, rest = rest.partition(",")
        if kind == "0":
            if ns != self.namespace:
                client.send(f"44{ns},{_dumps({'message': 'Invalid namespace'})}")
            elif self.reject_auth:
                client.send("44" + _dumps({"message": "unauthorized", "data": {"code": 401}}))
            else:
                conn.connected = True
                client.send("40" + self._ns() + _dumps({"sid": conn.sid}))
            return
        if kind == "1":
            conn.connected = False
            self._unsubscribe_all(client)
            return
        if kind != "2" or not conn.connected or ns != self.namespace:
            client.close(1002, "bad socket.io packet")
            return
        digits = 0
        while digits < len(rest) and rest[digits].isdigit():
            digits += 1
        ack_id = int(rest[:digits]) if digits else None
        try:
            data = json.loads(rest[digits:])
        except ValueError:
            client.close(1002, "bad socket.io packet")
            return
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            client.close(1002, "bad socket.io packet")
            return
        msg = data[1] if len(data) > 1 and isinstance(data[1], dict) else {}
        reply, follow = self._subscribe(client, conn, data[0], msg)
        if ack_id is not None:
            client.send(f"43{self._ns()}{ack_id}{_dumps([reply])}")
        for frame in follow:
            client.send(frame)

    def _ns(self) -> str:
        return "" if self.namespace == "/" else self.namespace + ","

    def _event(self, name: str, payload: Any) -> str:
        return event_frame(name, payload, self.namespace)

    def _subscribe(self, client: SimClient, conn: _Conn, event: str,
                   msg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        cid = client.client_id
        if event in ("orderbook", "kline"):
            sym = msg.get("symbol")
            if not isinstance(sym, str):
                return {"ok": False, "code": 400, "message": "symbol missing"}, []
            if sym not in self.market.instruments:
                return {"ok": False, "code": 404, "message": f"unknown symbol {sym}"}, []
            if event == "orderbook":
                conn.subs.add(("orderbook", sym))
                if self.burst_count and sym == self.burst_symbol:
                    self.spawn(client.burst(self._burst), f"burst-{cid}")
                    return {"ok": True}, []
                self.book_subs[sym][cid] = client
                return {"ok": True}, [self._event("orderbook", self._orderbook(sym))]
            iv = msg.get("interval")
            kind, length, offset = "", 0, 0
            if isinstance(iv, str):
                try:
                    kind, length, offset = parse_interval(iv)
                except ValueError:
                    pass
            if kind != "time" or not isinstance(iv, str):
                return {"ok": False, "code": 404, "message": f"unknown interval {iv}"}, []
            ks = self.klines.get((sym, iv))
            if ks is None:
                ks = self.klines[(sym, iv)] = _KlineState(sym, iv, length, offset)
            ks.subscribers[cid] = client
            conn.subs.add(("kline", sym, iv))
            follow = [self._event("kline", encode_candle(sym, iv, ks.current, None))] if ks.current else []
            return {"ok": True}, follow
        if event in ("positions", "openorders"):
            key = msg.get("apiKey")
            if not isinstance(key, str):
                return {"ok": False, "code": 400, "message": "apiKey missing"}, []
            if self.reject_auth or key != self._api_key:
                return {"ok": False, "code": 401, "message": "invalid apiKey"}, []
            self.private_subs[event][cid] = client
            conn.subs.add((event,))
            if event == "positions":
                return {"ok": True}, [self._event("positions", self._positions(self.market_balances()))]
            since = msg.get("since", 0)
            since_ns = since * NS_PER_MS if isinstance(since, int) else 0
            orders = [o for o in self._orders().values() if o.open or self.order_seq.get(o.order_id, (0, 0))[1] >= since_ns]
            return {"ok": True}, [self._event("openorders", self._openorders(orders, snapshot=True))]
        return {"ok": False, "code": 404, "message": f"unknown event {event}"}, []

    # -- payloads ------------------------------------------------------------------------

    def _orders(self) -> dict[int, Order]:
        return getattr(self.market, "orders", {})

    def market_balances(self) -> list[Balance]:
        """Every balance of the market's account."""
        return list(getattr(self.market, "balances", {}).values())

    def _ts_ms(self) -> int:
        return int(getattr(self.market, "ts_ns", 0)) // NS_PER_MS

    def _orderbook(self, sym: str) -> dict[str, Any]:
        bids, asks = self.market.book(sym)
        return encode_orderbook(sym, self.seq[sym], self._ts_ms() * NS_PER_MS, bids, asks,
                                list(self.recent[sym]), self.depth)

    def _positions(self, balances: list[Balance]) -> dict[str, Any]:
        return {"ts": self._ts_ms(), "balances": [
            {"asset": b.asset, "total": format_amount(b.total_units),
             "available": format_amount(b.available_units), "reserved": format_amount(b.reserved_units)}
            for b in balances]}

    def order_item(self, o: Order) -> dict[str, Any]:
        """The ``modify`` item of an order in its current state."""
        seq, ts_ns = self.order_seq.get(o.order_id, (0, o.updated_ts_ns))
        return {"id": f"O-{o.order_id}", "clientId": f"c-{o.client_order_id}", "symbol": o.symbol,
                "side": o.side, "type": o.order_type.lower(), "price": o.price_ticks,
                "state": _STATE[o.status], "resd": o.qty_lots - o.filled_lots, "exec": o.filled_lots,
                "cost": o.cost_units // self._scale[o.symbol], "seq": seq, "ts": ts_ns // NS_PER_MS}

    def _openorders(self, orders: list[Order], snapshot: bool = False) -> dict[str, Any]:
        modify = [self.order_item(o) for o in orders if snapshot or o.status != "Canceled"]
        cancel = [] if snapshot else [
            {"id": f"O-{o.order_id}", "seq": self.order_seq[o.order_id][0],
             "ts": self.order_seq[o.order_id][1] // NS_PER_MS} for o in orders if o.status == "Canceled"]
        return {"ts": self._ts_ms(), "snapshot": snapshot, "modify": modify, "cancel": cancel}

    # -- publishing ---------------------------------------------------------------------

    def advance(self, steps: int = 1) -> int:
        """Step the market ``steps`` times and publish (see the module docstring).
        Returns the number of market events. O(steps x (events + depth))."""
        n = 0
        for _ in range(steps):
            events = self.market.step()
            n += len(events)
            self._publish_step(events)
        return n

    def _publish_step(self, events: list[Any]) -> None:
        books: list[str] = []
        orders: list[Order] = []
        balances: list[Balance] | None = None
        for e in events:
            if isinstance(e, Trade):
                self.recent[e.symbol].append(e)
                self._kline_trade(e)
            elif isinstance(e, (BookDelta, BookSnapshot)):
                if e.symbol not in books:
                    books.append(e.symbol)
            elif isinstance(e, Order):
                self.account_seq += 1
                self.order_seq[e.order_id] = (self.account_seq, e.updated_ts_ns)
                orders.append(e)
            elif isinstance(e, Balances):
                balances = e.balances
        for sym in books:
            self.seq[sym] += 1
            if self._skip[sym]:
                self._skip[sym] -= 1   # the skip-sequence fault: seq consumed, nothing sent
                continue
            subs = self.book_subs[sym]
            if subs:
                frame = self._event("orderbook", self._orderbook(sym))
                for c in list(subs.values()):
                    c.send(frame)
        for ks, is_add in self._touched.values():
            frame = self._event("kline", encode_candle(ks.symbol, ks.interval, ks.current if is_add else None,
                                                       None if is_add else ks.current))
            for c in list(ks.subscribers.values()):
                c.send(frame)
        self._touched.clear()
        if orders and self.private_subs["openorders"]:
            frame = self._event("openorders", self._openorders(orders))
            for c in list(self.private_subs["openorders"].values()):
                c.send(frame)
        if balances is not None and self.private_subs["positions"]:
            frame = self._event("positions", self._positions(balances))
            for c in list(self.private_subs["positions"].values()):
                c.send(frame)

    def _kline_trade(self, t: Trade) -> None:
        for key, ks in self.klines.items():
            if ks.symbol != t.symbol:
                continue
            start = t.ts_ns - (t.ts_ns - ks.offset_ns) % ks.length_ns
            cur = ks.current
            if cur is None or start > cur.open_ts_ns:
                if cur is not None:
                    ks.closed.append(cur)
                ks.current = SimCandle(start, t.price_ticks, t.price_ticks, t.price_ticks, t.price_ticks,
                                       t.qty_lots, t.ts_ns)
                self._touched[key] = (ks, True)
            else:
                cur.high_ticks = max(cur.high_ticks, t.price_ticks)
                cur.low_ticks = min(cur.low_ticks, t.price_ticks)
                cur.close_ticks = t.price_ticks
                cur.volume_lots += t.qty_lots
                cur.update_ts_ns = t.ts_ns
                # A candle opened in this step stays an add (sent with its latest values).
                self._touched[key] = (ks, key in self._touched and self._touched[key][1])

    def candles(self, symbol: str, interval: str) -> list[SimCandle]:
        """Every candle of (symbol, interval) built since its first subscription,
        oldest first, the current one last (copies)."""
        ks = self.klines[(symbol, interval)]
        return [copy.copy(c) for c in ks.closed] + ([copy.copy(ks.current)] if ks.current else [])

    # -- faults -----------------------------------------------------------------------

    def skip_sequence(self, symbol: str, count: int = 1) -> None:
        """The next ``count`` orderbook messages of ``symbol`` consume their ``seq`` but
        are never sent (the client sees a seq jump). ``KeyError`` for an unknown symbol."""
        if symbol not in self._skip:
            raise KeyError(f"unknown instrument {symbol!r}")
        self._skip[symbol] += count
        self.stats["faults"] += 1

    def disconnect(self, client: SimClient | None = None) -> int:
        """Socket.IO server-side disconnect (``41``) of the namespace; the socket stays
        open. Returns how many clients got it."""
        targets = self._targets(client)
        for c in targets:
            c.send("41" + self._ns().rstrip(","))
            c.state.connected = False
            self._unsubscribe_all(c)
        return len(targets)

    def engineio_close(self, client: SimClient | None = None) -> int:
        """Engine.IO close packet ``1`` (the server ends the session)."""
        targets = self._targets(client)
        for c in targets:
            c.send("1")
        return len(targets)

    def stop_pings(self) -> None:
        """Stop sending Engine.IO pings (other traffic continues): the client's ping
        timeout must notice."""
        self.pinging = False
        self.stats["faults"] += 1

    # -- burst mode -------------------------------------------------------------------

    def _prepare_burst(self) -> None:
        sym = self.burst_symbol
        market = copy.deepcopy(self.market)  # the live market stays at its start state
        recent: deque[Trade] = deque(maxlen=self.trades_window)
        frames: list[bytes] = []
        seq = 0
        while len(frames) < self.burst_count:
            events = market.step_book(sym) if isinstance(market, SyntheticMarket) else market.step()
            if not events and getattr(market, "exhausted", False):
                raise ValueError(f"market ran out after {len(frames)} burst messages")
            changed = False
            for e in events:
                if isinstance(e, Trade) and e.symbol == sym:
                    recent.append(e)
                elif isinstance(e, BookDelta) and e.symbol == sym:
                    changed = True
            if changed:
                seq += 1
                bids, asks = market.book(sym)
                frames.append(self._event("orderbook", encode_orderbook(
                    sym, seq, int(getattr(market, "ts_ns", 0)) // NS_PER_MS * NS_PER_MS, bids, asks,
                    list(recent), self.depth)).encode())
        self._burst = encode_burst(frames)
        self.burst_frames = frames
        self.burst_book = market.book(sym)
        self.burst_trades = list(market.trades)
