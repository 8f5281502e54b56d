"""Realtime venue simulator over loopback (``ws://127.0.0.1:<port>/realtime``).

Speaks exactly the protocol documented in ``feeds.realtime`` and
``feeds.realtime_events``, with market data from a seeded
:class:`~feeds.sim.market.SyntheticMarket` (BTC-USDT, ETH-USDT by default):

- ``auth`` first with the accepted JWT -> ``auth:ok`` then ``session:started``; a wrong
  token (or the ``reject_auth`` fault) -> ``auth:error`` then CLOSE 4401. Anything
  else before auth -> ``error`` 401 then CLOSE 4401.
- ``subscribe`` chatroom (``room``) / notifications / market (``symbols``) ->
  ``subscribed`` echoing the channel (and room/symbols); an unknown symbol -> ``error``
  400 (the connection stays). After a market subscription the current quote of each
  symbol that has one is sent (``market:price``).
- Each market step: every public trade -> ``trade:created`` then ``market:price``
  (price = the trade price, change = price - the symbol's reference price, which is
  the start mid, changePercent = change / reference * 100 truncated to 6 decimals)
  to the symbol's subscribers.
- ``ping`` -> ``pong`` with the same ``ts``. ``chat:send`` in a joined room ->
  ``chat:message`` to every member of the room (sender included); otherwise
  ``error`` 403. Unknown types and non-JSON -> ``error`` 400.
- Limits the real server enforces: client messages above ``max_frame_size``
  (64 KB) are closed with 1009 by picows; more than ``rate_limit`` client messages in
  ``rate_window_s`` -> CLOSE 4429 "rate limit exceeded" (the client must never
  trigger it).
- Server-originated events: :meth:`chat`, :meth:`user_online`, :meth:`notify`,
  :meth:`post`; everything sent is recorded in ``sent_events`` per client id.

Faults: the base ones (drop, close, malformed, oversize, stall, reject_auth); the
protocol has no sequence numbers, so there is no skipped-sequence fault (a lost
market:price is healed by the next one: each carries the absolute last price).
Burst mode (``burst=N``): N pre-encoded trade:created + market:price pairs of
``burst_symbol``, written as fast as the socket takes them after the market
subscription; the quote a client must end with is :attr:`burst_quote`.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine._core.instrument import Instrument
from feeds.sim.market import SyntheticMarket, Trade
from feeds.sim.server import SimClient, SimServer, encode_burst

__all__ = ["RealtimeSim", "CLOSE_UNAUTHORIZED", "CLOSE_RATE_LIMIT"]

CLOSE_UNAUTHORIZED = 4401
CLOSE_RATE_LIMIT = 4429
_PCT_SCALE = 100 * 10 ** 6   # changePercent with 6 decimals


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass
class _Conn:
    authed: bool = False
    rooms: set[str] = field(default_factory=set)
    notifications: bool = False
    symbols: set[str] = field(default_factory=set)
    recv_times: deque[float] = field(default_factory=deque)


class RealtimeSim(SimServer):
    """Realtime venue simulator; see the module docstring.

    Parameters: ``market`` (default ``SyntheticMarket(seed=seed, account_rate=0)``),
    ``jwt`` (the accepted token; never logged), ``user_id``, ``interval_s`` (seconds
    between market steps; None: only :meth:`advance`), ``rate_limit`` /
    ``rate_window_s`` (server-side check of the client's send rate), ``burst`` /
    ``burst_symbol``, plus the :class:`SimServer` parameters (``max_frame_size``
    defaults to 64 KB here).
    """

    name: ClassVar[str] = "realtime"
    path: ClassVar[str] = "/realtime"
    malformed_payload: ClassVar[bytes] = b'{"type":"market:price","symbol":"BTC-USDT","price":"6'

    def __init__(self, market: SyntheticMarket | None = None, *, seed: int = 1, jwt: str = "sim.jwt.token",
                 user_id: str = "u-1", interval_s: float | None = 0.05, rate_limit: int = 100,
                 rate_window_s: float = 60.0, burst: int = 0, burst_symbol: str | None = None,
                 **server_kw: Any) -> None:
        server_kw.setdefault("max_frame_size", 64 * 1024)
        super().__init__(**server_kw)
        self.market = market if market is not None else SyntheticMarket(seed=seed, account_rate=0.0)
        self._jwt = jwt
        self.user_id = user_id
        self.interval_s = None if burst else interval_s
        self.rate_limit = rate_limit
        self.rate_window_s = rate_window_s
        self.instruments: dict[str, Instrument] = dict(self.market.instruments)
        #: Reference price per symbol (start mid, ticks): change is measured from it.
        self.reference: dict[str, int] = {}
        for sym in self.instruments:
            bids, asks = self.market.book(sym)
            self.reference[sym] = (bids[0][0] + asks[0][0]) // 2
        #: Last quote sent per symbol: (price_ticks, change_ticks, pct_units, ts_ns).
        self.quotes: dict[str, tuple[int, int, int, int]] = {}
        self.trades: list[Trade] = []
        #: Every event message sent, per client id, in order (the parsed dicts).
        self.sent_events: dict[int, list[dict[str, Any]]] = {}
        self.chat_log: list[tuple[str, str, str]] = []   # (room, user id, text) received
        self._next_id = 1
        self._session_counter = 0
        self.burst_count = burst
        self.burst_symbol = burst_symbol or next(iter(self.instruments))
        self._burst = encode_burst([])
        #: Burst mode: the 2N messages (trade:created, market:price pairs), as sent.
        self.burst_payloads: list[bytes] = []
        self.burst_quote: tuple[int, int, int, int] | None = None
        self.burst_trades: list[Trade] = []

    def __repr__(self) -> str:  # the JWT never appears
        return f"RealtimeSim(port={self.port}, symbols={list(self.instruments)}, clients={len(self.clients)})"

    # -- encoding --------------------------------------------------------------------
    def _quote_of(self, t: Trade) -> tuple[int, int, int, int]:
        ref = self.reference[t.symbol]
        change = t.price_ticks - ref
        pct = abs(change) * _PCT_SCALE // ref
        return t.price_ticks, change, -pct if change < 0 else pct, t.ts_ns

    def encode_price(self, symbol: str, quote: tuple[int, int, int, int]) -> str:
        """The ``market:price`` message of ``quote``."""
        inst = self.instruments[symbol]
        price, change, pct, ts = quote
        sign = "-" if pct < 0 else ""
        pct_s = f"{sign}{abs(pct) // 10 ** 6}.{abs(pct) % 10 ** 6:06d}"
        return _dumps({"type": "market:price", "symbol": symbol, "price": inst.ticks_to_price(price),
                       "change": inst.ticks_to_price(change), "changePercent": pct_s, "ts": ts})

    def encode_trade(self, t: Trade) -> str:
        """The ``trade:created`` message of a market trade."""
        inst = self.instruments[t.symbol]
        return _dumps({"type": "trade:created", "symbol": t.symbol, "id": f"T-{t.trade_id}",
                       "price": inst.ticks_to_price(t.price_ticks), "qty": inst.lots_to_qty(t.qty_lots),
                       "side": t.side, "ts": t.ts_ns})

    # -- publishing ------------------------------------------------------------------
    def _ready(self) -> list[SimClient]:
        return [c for c in self.clients if not c.closed and c.state.authed]

    def advance(self, steps: int = 1) -> int:
        """Step the market; publish its trades and quotes. Returns trades published."""
        n = 0
        for _ in range(steps):
            for e in self.market.step():
                if isinstance(e, Trade):
                    self.trades.append(e)
                    q = self._quote_of(e)
                    self.quotes[e.symbol] = q
                    trade_msg, price_msg = self.encode_trade(e), self.encode_price(e.symbol, q)
                    for c in self._ready():
                        if e.symbol in c.state.symbols:
                            c.send(trade_msg)
                            c.send(price_msg)
                    n += 1
        return n

    def _event(self, client: SimClient, body: dict[str, Any]) -> None:
        self.sent_events.setdefault(client.client_id, []).append(body)
        client.send(_dumps(body))

    def _next(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}-{self._next_id}"

    def _ts(self) -> int:
        return self.market.ts_ns

    def chat(self, room: str, user_id: str, user: str, text: str) -> int:
        """A chat:message in ``room`` to its members. Returns how many got it."""
        body = {"type": "chat:message", "room": room, "id": self._next("m"), "userId": user_id,
                "user": user, "text": text, "ts": self._ts()}
        targets = [c for c in self._ready() if room in c.state.rooms]
        for c in targets:
            self._event(c, body)
        return len(targets)

    def user_online(self, user_id: str, user: str, online: bool = True) -> int:
        """user:online to every chatroom member."""
        body = {"type": "user:online", "userId": user_id, "user": user, "online": online, "ts": self._ts()}
        targets = [c for c in self._ready() if c.state.rooms]
        for c in targets:
            self._event(c, body)
        return len(targets)

    def notify(self, title: str, body_text: str, level: str = "info") -> int:
        """notification:new to every notifications subscriber."""
        body = {"type": "notification:new", "id": self._next("n"), "title": title, "body": body_text,
                "level": level, "ts": self._ts()}
        targets = [c for c in self._ready() if c.state.notifications]
        for c in targets:
            self._event(c, body)
        return len(targets)

    def post(self, author_id: str, title: str, body_text: str) -> int:
        """post:created to every notifications subscriber."""
        body = {"type": "post:created", "id": self._next("p"), "authorId": author_id, "title": title,
                "body": body_text, "ts": self._ts()}
        targets = [c for c in self._ready() if c.state.notifications]
        for c in targets:
            self._event(c, body)
        return len(targets)

    # -- lifecycle and hooks -------------------------------------------------------------
    async def on_start(self) -> None:
        if self.burst_count:
            self.prepare_burst()
        if self.interval_s is not None:
            self.every(self.interval_s, self.advance, "market")  # skipped while ``paused``

    def on_connect(self, client: SimClient) -> None:
        client.state = _Conn()

    def _error(self, client: SimClient, code: int, message: str) -> None:
        client.send(_dumps({"type": "error", "code": code, "message": message}))

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        conn: _Conn = client.state
        now = asyncio.get_running_loop().time()
        times = conn.recv_times
        times.append(now)
        while times and times[0] <= now - self.rate_window_s:
            times.popleft()
        if len(times) > self.rate_limit:
            client.close(CLOSE_RATE_LIMIT, "rate limit exceeded")
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            self._error(client, 400, "malformed message")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if not conn.authed:
            if kind == "auth" and not self.reject_auth and msg.get("token") == self._jwt:
                conn.authed = True
                client.send(_dumps({"type": "auth:ok", "userId": self.user_id}))
                self._session_counter += 1
                self._event(client, {"type": "session:started", "sessionId": f"s-{self._session_counter}",
                                     "userId": self.user_id, "ts": self._ts()})
            elif kind == "auth":
                client.send(_dumps({"type": "auth:error", "message": "invalid token"}))
                client.close(CLOSE_UNAUTHORIZED, "unauthorized")
            else:
                self._error(client, 401, "not authenticated")
                client.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        if kind == "ping":
            client.send(_dumps({"type": "pong", "ts": msg.get("ts")}))
        elif kind == "subscribe":
            self._subscribe(client, conn, msg)
        elif kind == "chat:send":
            room, text = msg.get("room"), msg.get("text")
            if not isinstance(room, str) or not isinstance(text, str) or room not in conn.rooms:
                self._error(client, 403, f"not a member of room {room!r}")
                return
            self.chat_log.append((room, self.user_id, text))
            self.chat(room, self.user_id, self.user_id, text)
        else:
            self._error(client, 400, f"unknown type {kind!r}")

    def _subscribe(self, client: SimClient, conn: _Conn, msg: dict[str, Any]) -> None:
        channel = msg.get("channel")
        if channel == "chatroom" and isinstance(msg.get("room"), str):
            conn.rooms.add(msg["room"])
            client.send(_dumps({"type": "subscribed", "channel": "chatroom", "room": msg["room"]}))
        elif channel == "notifications":
            conn.notifications = True
            client.send(_dumps({"type": "subscribed", "channel": "notifications"}))
        elif channel == "market" and isinstance(msg.get("symbols"), list):
            symbols = msg["symbols"]
            unknown = [s for s in symbols if s not in self.instruments]
            if unknown:
                self._error(client, 400, f"unknown symbols {unknown}")
                return
            conn.symbols.update(symbols)
            client.send(_dumps({"type": "subscribed", "channel": "market", "symbols": symbols}))
            for s in symbols:
                if s in self.quotes:
                    client.send(self.encode_price(s, self.quotes[s]))
            if self.burst_count and self.burst_symbol in symbols:
                self.spawn(client.burst(self._burst), f"burst-{client.client_id}")
        else:
            self._error(client, 400, f"bad subscription {msg!r}")

    def prepare_burst(self) -> None:
        """Encode the burst (``start`` does it in burst mode): fills
        :attr:`burst_payloads`, :attr:`burst_quote` and :attr:`burst_trades` from a copy
        of the market. Idempotent."""
        if self.burst_payloads:
            return
        sym = self.burst_symbol
        market = copy.deepcopy(self.market)  # the live market stays at its start state
        frames: list[bytes] = []
        while len(frames) < 2 * self.burst_count:
            for e in market.step_book(sym):
                if isinstance(e, Trade) and len(frames) < 2 * self.burst_count:
                    q = self._quote_of(e)
                    frames.append(self.encode_trade(e).encode())
                    frames.append(self.encode_price(sym, q).encode())
                    self.burst_quote = q
                    self.burst_trades.append(e)
        self._burst = encode_burst(frames)
        self.burst_payloads = frames


def from_cli(args: argparse.Namespace) -> RealtimeSim:
    """``python -m feeds.sim realtime``: uses ``--seed --token`` (the accepted JWT)
    ``--interval --burst --burst-symbol --host --port``; ``--set rate_limit=N``,
    ``--set rate_window_s=S``."""
    opts: dict[str, str] = args.options
    return RealtimeSim(seed=args.seed, jwt=args.token,
                       interval_s=0.05 if args.interval is None else args.interval,
                       rate_limit=int(opts.get("rate_limit", "100")),
                       rate_window_s=float(opts.get("rate_window_s", "60")),
                       burst=args.burst, burst_symbol=args.burst_symbol, host=args.host, port=args.port)
