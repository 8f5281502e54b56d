"""Cadenza simulator: a Centrifugo client-protocol server (JSON v2) over loopback.

Speaks what the official ``centrifuge-python`` client speaks (tests/test_sim_cadenza.py
proves it with that client) and sends exactly the payloads of /tmp/team/CADENZA.md
("Cadenza channel payload schemas v1"), built from a :class:`~feeds.sim.market.MarketSource`
(the seeded :class:`~feeds.sim.market.SyntheticMarket` by default).

Protocol, as served at ``ws://127.0.0.1:<port>/connection/websocket``:

- Frames are text; one frame may hold several JSON objects separated by ``\\n`` (both
  ways). Replies to the commands of one client frame go out in one frame; pushes
  produced by one market step go out in one frame per client (split past
  ``max_batch_bytes``).
- ``connect`` first: ``{"id":1,"connect":{"token":..,"name":..}}`` ->
  ``{"id":1,"connect":{"client":uuid,"version":"cadenza-sim 1.0","ping":P,"pong":true}}``.
  A wrong token (or the ``reject_auth`` fault) -> ``{"id":1,"error":{"code":101,
  "message":"unauthorized"}}`` then CLOSE 3500 "invalid token". Any other command
  before connect, a second connect, a command without ``id`` or a frame that is not
  JSON -> CLOSE 3501 "bad request".
- Server ping ``{}`` every ``ping_s`` seconds; with ``pong`` the client must answer
  ``{}`` within ``pong_timeout_s`` or is closed with 3012 "no pong".
- ``subscribe`` / ``unsubscribe`` for ``market:orderBook:{instrumentId}``,
  ``market:trade:{instrumentId}``, ``tradingAccount:{accountId}``. Errors: 107 bad
  request (no channel), 102 unknown channel, 103 permission denied (another account),
  105 already subscribed, 112 unrecoverable position (recovery failed and the client
  set flag bit 2, as centrifuge-python does with ``get_state``). ``publish`` -> 103;
  ``presence``/``presence_stats``/``history`` -> 108 not available; other methods
  -> 104 method not found. ``send`` (no reply) is ignored.
- Every channel keeps ``history_size`` publications with an epoch and offsets. A
  subscribe with ``recover:true`` and the channel's epoch whose offset is still in
  history gets ``recovered:true`` and the missed ``publications``; otherwise
  ``recovered:false`` (and the client resyncs).
- Resync content: every subscribe that is not a successful recovery makes the
  channel publish fresh state to all its subscribers right after the reply: a book
  ``snapshot`` on ``market:orderBook:*``, and on ``tradingAccount:*`` a ``portfolio``
  (every position), a ``balances`` and one ``order`` per open order. Book channels
  also publish a snapshot every ``snapshot_every`` publications.
- ``seq``: per instrument on book channels (+1 per publication, snapshot or delta),
  per account on the account channel (+1 per publication).

Number formats: prices and sizes with the instrument's tick/lot decimals
(``Instrument.ticks_to_price`` / ``lots_to_qty``; a deleted level's size is ``"0"``);
``cost``, ``fee``, ``realizedPnl`` and balances with 8 decimals (QUOTE_DECIMALS);
``avgEntryPrice`` is the cost basis per unit truncated to a whole tick; timestamps
are integer ns of the market's synthetic clock.

A client whose bounded send queue overflows (stalled, or not reading) is closed with
3008 "slow", like Centrifugo's DisconnectSlow.

Faults beyond the base ones (drop, close, malformed, oversize, stall, reject_auth):
:meth:`CadenzaSim.skip_sequence` (a book delta is applied and its ``seq`` consumed
but never published), :meth:`CadenzaSim.reset_history` (new epoch: recovery fails),
:meth:`CadenzaSim.fail_next` (error reply with any code to the next command of a
method). Burst mode (``burst=N``): see :class:`CadenzaSim`.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine._core.instrument import Instrument
from feeds.sim.market import (
    Balances, BookDelta, BookSnapshot, Fill, MarketEvent, MarketSource, Order, Portfolio,
    SyntheticMarket, Trade, format_amount,
)
from feeds.sim.server import SimClient, SimServer, encode_burst

__all__ = [
    "CadenzaSim", "BOOK_PREFIX", "TRADE_PREFIX", "ACCOUNT_PREFIX", "encode_book",
    "encode_trade", "encode_account", "from_cli",
]

BOOK_PREFIX = "market:orderBook:"
TRADE_PREFIX = "market:trade:"
ACCOUNT_PREFIX = "tradingAccount:"

# Centrifugo error codes (client protocol) and disconnect codes used here.
ERR_INTERNAL = 100
ERR_UNAUTHORIZED = 101
ERR_UNKNOWN_CHANNEL = 102
ERR_PERMISSION_DENIED = 103
ERR_METHOD_NOT_FOUND = 104
ERR_ALREADY_SUBSCRIBED = 105
ERR_BAD_REQUEST = 107
ERR_NOT_AVAILABLE = 108
ERR_UNRECOVERABLE_POSITION = 112
CLOSE_NO_PONG = 3012
CLOSE_INVALID_TOKEN = 3500
CLOSE_BAD_REQUEST = 3501
FLAG_REJECT_UNRECOVERED = 2

_ERROR_MESSAGES = {
    100: "internal server error", 101: "unauthorized", 102: "unknown channel",
    103: "permission denied", 104: "method not found", 105: "already subscribed",
    106: "limit exceeded", 107: "bad request", 108: "not available", 109: "token expired",
    110: "expired", 111: "too many requests", 112: "unrecoverable position",
}


_TEMPORARY_ERRORS = frozenset({100, 111})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def encode_book(inst: Instrument, event: BookSnapshot | BookDelta, seq: int) -> str:
    """``data`` JSON of a ``market:orderBook`` publication (snapshot or delta)."""
    def side(levels: list[tuple[int, int]]) -> list[list[str]]:
        return [[inst.ticks_to_price(p), inst.lots_to_qty(q) if q else "0"] for p, q in levels]
    kind = "snapshot" if isinstance(event, BookSnapshot) else "delta"
    return _dumps({"type": kind, "seq": seq, "ts": event.ts_ns,
                   "bids": side(event.bids), "asks": side(event.asks)})


def encode_trade(inst: Instrument, t: Trade) -> str:
    """``data`` JSON of a ``market:trade`` publication."""
    return _dumps({"id": f"T-{t.trade_id}", "price": inst.ticks_to_price(t.price_ticks),
                   "qty": inst.lots_to_qty(t.qty_lots), "side": t.side, "ts": t.ts_ns})


def encode_account(instruments: dict[str, Instrument], quote_asset: str,
                   event: Order | Fill | Portfolio | Balances, seq: int) -> str:
    """``data`` JSON of a ``tradingAccount`` publication (order, fill, portfolio or
    balances). ``KeyError`` for an instrument missing from ``instruments``."""
    if isinstance(event, Order):
        inst = instruments[event.symbol]
        return _dumps({"type": "order", "order": {
            "id": f"O-{event.order_id}", "clientId": f"c-{event.client_order_id}",
            "instrumentId": event.symbol, "side": event.side, "orderType": event.order_type,
            "status": event.status, "price": inst.ticks_to_price(event.price_ticks),
            "stopPrice": None, "qty": inst.lots_to_qty(event.qty_lots),
            "filledQty": inst.lots_to_qty(event.filled_lots),
            "cost": format_amount(event.cost_units), "createdTs": event.created_ts_ns,
            "updatedTs": event.updated_ts_ns, "seq": seq}})
    if isinstance(event, Fill):
        inst = instruments[event.symbol]
        return _dumps({"type": "fill", "fill": {
            "orderId": f"O-{event.order_id}", "tradeId": f"F-{event.fill_id}",
            "instrumentId": event.symbol, "side": event.side,
            "price": inst.ticks_to_price(event.price_ticks), "qty": inst.lots_to_qty(event.qty_lots),
            "fee": format_amount(event.fee_units), "feeAsset": quote_asset, "ts": event.ts_ns,
            "seq": seq}})
    if isinstance(event, Portfolio):
        return _dumps({"type": "portfolio", "positions": [
            {"instrumentId": p.symbol, "qty": instruments[p.symbol].lots_to_qty(p.qty_lots),
             "avgEntryPrice": instruments[p.symbol].ticks_to_price(p.avg_entry_ticks),
             "realizedPnl": format_amount(p.realized_pnl_units), "seq": seq}
            for p in event.positions]})
    return _dumps({"type": "balances", "balances": [
        {"asset": b.asset, "total": format_amount(b.total_units),
         "available": format_amount(b.available_units), "reserved": format_amount(b.reserved_units)}
        for b in event.balances], "seq": seq})


@dataclass
class _Channel:
    name: str
    kind: str  # "book" | "trade" | "account"
    key: str  # instrument symbol or account id
    epoch: str
    history: deque[tuple[int, str]]
    offset: int = 0
    subscribers: dict[int, SimClient] = field(default_factory=dict)
    publications: int = 0


@dataclass
class _Conn:
    connected: bool = False
    client_uuid: str = ""
    name: str = ""
    subs: set[str] = field(default_factory=set)
    pong_timer: asyncio.TimerHandle | None = None


class CadenzaSim(SimServer):
    """Cadenza venue simulator (Centrifugo JSON v2); see the module docstring.

    Parameters: ``market`` (a MarketSource; default ``SyntheticMarket(seed=seed)``),
    ``token`` (the one accepted connect token; never logged), ``ping_s`` (int seconds
    >= 1), ``pong``, ``pong_timeout_s`` (default ``ping_s / 3``), ``interval_s``
    (seconds between market steps; ``None``: the market moves only on
    :meth:`advance`), ``history_size`` (publications kept per channel),
    ``snapshot_every`` (book publications between periodic snapshots; 0: never),
    ``max_batch_bytes``, ``burst`` and ``burst_symbol`` (burst mode), plus the
    :class:`SimServer` parameters. Set ``paused`` to stop the market's own ticking
    (``advance`` still works).

    Burst mode (``burst=N``): the market does not tick. At start the simulator encodes
    from a copy of the market one snapshot and N deltas of ``burst_symbol``'s book
    channel (epoch ``"burst"``, offsets 1..N+1, seq 1..N+1). Every subscribe to that
    channel gets its reply and then those exact frames as fast as the socket takes
    them (same bytes for every client, so competitors get identical work). The book a
    client must end with is :attr:`burst_book`.
    """

    name: ClassVar[str] = "cadenza"
    path: ClassVar[str] = "/connection/websocket"
    malformed_payload: ClassVar[bytes] = (
        b'{"push":{"channel":"market:orderBook:BTC-USDT","pub":{"data":{"type":"delta","seq":')
    slow_close_code: ClassVar[int] = 3008  # Centrifugo DisconnectSlow
    slow_close_reason: ClassVar[str] = "slow"
    version: ClassVar[str] = "cadenza-sim 1.0"

    def __init__(self, market: MarketSource | None = None, *, seed: int = 1,
                 token: str = "sim-token", ping_s: int = 25, pong: bool = True,
                 pong_timeout_s: float | None = None, interval_s: float | None = 0.01,
                 history_size: int = 1000, snapshot_every: int = 100,
                 max_batch_bytes: int = 64 * 1024, burst: int = 0,
                 burst_symbol: str | None = None, **server_kw: Any) -> None:
        super().__init__(**server_kw)
        if not isinstance(ping_s, int) or ping_s < 1:
            raise ValueError(f"ping_s must be an int >= 1 (Centrifugo sends whole seconds), got {ping_s!r}")
        if history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {history_size!r}")
        self.market: MarketSource = market if market is not None else SyntheticMarket(seed=seed)
        self._token = token
        self.ping_s = ping_s
        self.pong = pong
        self.pong_timeout_s = ping_s / 3 if pong_timeout_s is None else pong_timeout_s
        self.interval_s = None if burst else interval_s
        self.history_size = history_size
        self.snapshot_every = snapshot_every
        self.max_batch_bytes = max_batch_bytes
        self.quote_asset = getattr(self.market, "quote_asset", "USDT")
        self._epoch_counter = 0
        self.channels: dict[str, _Channel] = {}
        for sym in self.market.instruments:
            self._add_channel(BOOK_PREFIX + sym, "book", sym)
            self._add_channel(TRADE_PREFIX + sym, "trade", sym)
        if self.market.account_id is not None:
            self._add_channel(ACCOUNT_PREFIX + self.market.account_id, "account",
                              self.market.account_id)
        #: Last ``seq`` used per instrument (book channels) and for the account.
        self.book_seq: dict[str, int] = {sym: 0 for sym in self.market.instruments}
        self.account_seq = 0
        self._skip: dict[str, int] = {sym: 0 for sym in self.market.instruments}
        self._fail_next: dict[str, tuple[int, str, bool]] = {}
        self._pending: dict[int, tuple[SimClient, list[str]]] = {}
        self.burst_count = burst
        self.burst_symbol = burst_symbol or next(iter(self.market.instruments))
        self._burst = encode_burst([])
        #: Burst mode: the snapshot + N delta push messages, as sent (after ``start``).
        self.burst_payloads: list[bytes] = []
        self.burst_book: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])

    def __repr__(self) -> str:  # the token never appears
        return f"CadenzaSim(port={self.port}, channels={len(self.channels)}, clients={len(self.clients)})"

    # -- channels and publishing ----------------------------------------------------

    def _new_epoch(self) -> str:
        self._epoch_counter += 1
        return f"e{self._epoch_counter}"

    def _add_channel(self, name: str, kind: str, key: str) -> None:
        self.channels[name] = _Channel(name, kind, key, self._new_epoch(),
                                       deque(maxlen=self.history_size))

    def _publish(self, ch: _Channel, data: str) -> None:
        ch.offset += 1
        ch.publications += 1
        ch.history.append((ch.offset, data))
        if ch.subscribers:
            push = f'{{"push":{{"channel":"{ch.name}","pub":{{"data":{data},"offset":{ch.offset}}}}}}}'
            for c in ch.subscribers.values():
                entry = self._pending.get(c.client_id)
                if entry is None:
                    self._pending[c.client_id] = (c, [push])
                else:
                    entry[1].append(push)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for client, lines in pending.values():
            self._send_lines(client, lines)

    def _send_lines(self, client: SimClient, lines: list[str]) -> None:
        batch: list[str] = []
        size = 0
        for line in lines:
            if batch and size + len(line) + 1 > self.max_batch_bytes:
                client.send("\n".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            client.send("\n".join(batch))

    def _publish_book(self, sym: str, event: BookSnapshot | BookDelta) -> None:
        ch = self.channels[BOOK_PREFIX + sym]
        self.book_seq[sym] += 1
        if isinstance(event, BookDelta) and self._skip[sym]:
            self._skip[sym] -= 1  # the skip-sequence fault: seq consumed, nothing sent
            return
        self._publish(ch, encode_book(self.market.instruments[sym], event, self.book_seq[sym]))
        if (isinstance(event, BookDelta) and self.snapshot_every
                and ch.publications % self.snapshot_every == 0):
            self._publish_book(sym, self.market.snapshot(sym))

    def _publish_event(self, event: MarketEvent) -> None:
        if isinstance(event, (BookDelta, BookSnapshot)):
            self._publish_book(event.symbol, event)
        elif isinstance(event, Trade):
            self._publish(self.channels[TRADE_PREFIX + event.symbol],
                          encode_trade(self.market.instruments[event.symbol], event))
        else:
            if self.market.account_id is None:
                return
            self.account_seq += 1
            self._publish(self.channels[ACCOUNT_PREFIX + self.market.account_id],
                          encode_account(self.market.instruments, self.quote_asset, event,
                                         self.account_seq))

    def advance(self, steps: int = 1) -> int:
        """Step the market ``steps`` times, publish every event and flush the pushes.
        Returns the number of events published. O(steps x events)."""
        n = 0
        for _ in range(steps):
            for event in self.market.step():
                self._publish_event(event)
                n += 1
        self._flush()
        return n

    # -- faults ---------------------------------------------------------------------

    def skip_sequence(self, symbol: str, count: int = 1) -> None:
        """The next ``count`` book deltas of ``symbol`` are applied to the market and
        consume a ``seq`` but are never published (a lost message: the client sees
        a seq gap and must resync). ``KeyError`` for an unknown symbol."""
        if symbol not in self._skip:
            raise KeyError(f"unknown instrument {symbol!r}")
        self._skip[symbol] += count
        self.stats["faults"] += 1

    def reset_history(self, channel: str | None = None) -> None:
        """Forget the history of ``channel`` (default: every channel) and start a new
        epoch at offset 0, as Centrifugo does when history is lost: the next
        recovery attempt gets ``recovered:false``."""
        for ch in ([self.channels[channel]] if channel else self.channels.values()):
            ch.epoch = self._new_epoch()
            ch.offset = 0
            ch.history.clear()
        self.stats["faults"] += 1

    def fail_next(self, method: str, code: int, message: str | None = None,
                  temporary: bool | None = None) -> None:
        """Answer the next ``method`` command ("connect", "subscribe", ...) of any
        client with error ``code`` instead of processing it. ``message`` and
        ``temporary`` default to Centrifugo's (100 and 111 are temporary)."""
        if temporary is None:
            temporary = code in _TEMPORARY_ERRORS
        self._fail_next[method] = (code, message or _ERROR_MESSAGES.get(code, "error"), temporary)
        self.stats["faults"] += 1

    # -- lifecycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        if self.burst_count:
            self.prepare_burst()
        if self.interval_s is not None:
            self.every(self.interval_s, self.advance, "market")
        self.every(self.ping_s, self._ping, "ping", pausable=False)

    def _ping(self) -> None:
        loop = asyncio.get_running_loop()
        for c in self.clients:
            conn: _Conn = c.state
            if not conn.connected or c.closed:
                continue
            c.send("{}")
            if self.pong and conn.pong_timer is None:
                conn.pong_timer = loop.call_later(self.pong_timeout_s, self._no_pong, c)

    def _no_pong(self, client: SimClient) -> None:
        conn: _Conn = client.state
        conn.pong_timer = None
        client.close(CLOSE_NO_PONG, "no pong")

    def on_connect(self, client: SimClient) -> None:
        client.state = _Conn()

    def on_disconnect(self, client: SimClient) -> None:
        conn: _Conn = client.state
        if conn.pong_timer is not None:
            conn.pong_timer.cancel()
            conn.pong_timer = None
        for name in conn.subs:
            self.channels[name].subscribers.pop(client.client_id, None)
        conn.subs.clear()
        self._pending.pop(client.client_id, None)

    # -- commands -------------------------------------------------------------------

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        conn: _Conn = client.state
        replies: list[str] = []
        try:
            commands = [json.loads(line) for line in payload.split(b"\n") if line.strip()]
        except ValueError:
            client.close(CLOSE_BAD_REQUEST, "bad request")
            return
        for cmd in commands:
            if client.closed:
                return
            if not isinstance(cmd, dict):
                client.close(CLOSE_BAD_REQUEST, "bad request")
                return
            if not cmd:  # {} is the pong
                if conn.pong_timer is not None:
                    conn.pong_timer.cancel()
                    conn.pong_timer = None
                continue
            methods = [k for k in cmd if k != "id"]
            if len(methods) != 1:
                client.close(CLOSE_BAD_REQUEST, "bad request")
                return
            method = methods[0]
            if method == "send":
                continue  # async message: no reply
            cmd_id = cmd.get("id")
            if not isinstance(cmd_id, int) or cmd_id <= 0:
                client.close(CLOSE_BAD_REQUEST, "bad request")
                return
            body = cmd[method] if isinstance(cmd[method], dict) else {}
            if method != "connect" and not conn.connected:
                client.close(CLOSE_BAD_REQUEST, "bad request")
                return
            failure = self._fail_next.pop(method, None)
            if failure is not None:
                replies.append(_error(cmd_id, *failure))
                continue
            if method == "connect":
                if conn.connected:
                    client.close(CLOSE_BAD_REQUEST, "bad request")
                    return
                if self.reject_auth or body.get("token") != self._token:
                    replies.append(_error(cmd_id, ERR_UNAUTHORIZED, "unauthorized"))
                    self._send_lines(client, replies)
                    client.close(CLOSE_INVALID_TOKEN, "invalid token")
                    return
                conn.connected = True
                conn.client_uuid = str(uuid.uuid4())
                conn.name = str(body.get("name", ""))
                replies.append(_dumps({"id": cmd_id, "connect": {
                    "client": conn.client_uuid, "version": self.version, "ping": self.ping_s,
                    "pong": self.pong}}))
            elif method == "subscribe":
                replies.append(self._subscribe(client, conn, cmd_id, body))
            elif method == "unsubscribe":
                name = body.get("channel")
                if isinstance(name, str) and name in conn.subs:
                    conn.subs.discard(name)
                    self.channels[name].subscribers.pop(client.client_id, None)
                replies.append(_dumps({"id": cmd_id, "unsubscribe": {}}))
            elif method == "publish":
                replies.append(_error(cmd_id, ERR_PERMISSION_DENIED))
            elif method in ("presence", "presence_stats", "history"):
                replies.append(_error(cmd_id, ERR_NOT_AVAILABLE))
            else:
                replies.append(_error(cmd_id, ERR_METHOD_NOT_FOUND))
        if replies and not client.closed:
            self._send_lines(client, replies)
        # Fresh state published by subscribes goes out after the replies.
        self._flush()

    def _subscribe(self, client: SimClient, conn: _Conn, cmd_id: int, body: dict[str, Any]) -> str:
        name = body.get("channel")
        if not isinstance(name, str) or not name:
            return _error(cmd_id, ERR_BAD_REQUEST)
        ch = self.channels.get(name)
        if ch is None:
            if name.startswith(ACCOUNT_PREFIX):
                return _error(cmd_id, ERR_PERMISSION_DENIED)
            return _error(cmd_id, ERR_UNKNOWN_CHANNEL)
        if name in conn.subs:
            return _error(cmd_id, ERR_ALREADY_SUBSCRIBED)
        if self.burst_count and ch.kind == "book" and ch.key == self.burst_symbol:
            return self._subscribe_burst(client, conn, cmd_id, ch)
        recover = bool(body.get("recover"))
        recovered = False
        pubs: list[tuple[int, str]] = []
        if recover:
            since = body.get("offset", 0)
            oldest = ch.history[0][0] if ch.history else ch.offset + 1
            if (body.get("epoch") == ch.epoch and isinstance(since, int)
                    and oldest - 1 <= since <= ch.offset):
                recovered = True
                pubs = [(o, d) for o, d in ch.history if o > since]
            elif int(body.get("flag", 0) or 0) & FLAG_REJECT_UNRECOVERED:
                return _error(cmd_id, ERR_UNRECOVERABLE_POSITION)
        reply: dict[str, Any] = {"recoverable": True, "epoch": ch.epoch, "offset": ch.offset}
        if recover:
            reply["was_recovering"] = True
            reply["recovered"] = recovered
        # Publications are spliced in as raw JSON: no re-encoding of stored data.
        text = _dumps({"id": cmd_id, "subscribe": reply})
        if pubs:
            items = ",".join(f'{{"data":{d},"offset":{o}}}' for o, d in pubs)
            text = text[:-2] + f',"publications":[{items}]}}}}'
        conn.subs.add(name)
        ch.subscribers[client.client_id] = client
        if not recovered:
            self._publish_fresh_state(ch)
        return text

    def _publish_fresh_state(self, ch: _Channel) -> None:
        if ch.kind == "book":
            self._publish_book(ch.key, self.market.snapshot(ch.key))
        elif ch.kind == "account":
            for event in self.market.account_snapshot():
                self._publish_event(event)

    # -- burst mode -----------------------------------------------------------------

    def prepare_burst(self) -> None:
        """Encode the burst (``start`` does it in burst mode): fills
        :attr:`burst_payloads` (the push messages) and :attr:`burst_book` (the book
        after them) from a copy of the market. O(burst x depth); idempotent."""
        if self.burst_payloads:
            return
        sym = self.burst_symbol
        inst = self.market.instruments[sym]
        market = copy.deepcopy(self.market)  # the live market stays at its start state
        ch_name = BOOK_PREFIX + sym
        frames: list[bytes] = []
        seq = 1
        data = encode_book(inst, market.snapshot(sym), seq)
        frames.append(f'{{"push":{{"channel":"{ch_name}","pub":{{"data":{data},"offset":1}}}}}}'.encode())
        while len(frames) <= self.burst_count:
            # Only the burst book moves when the market allows it (several times faster).
            events = market.step_book(sym) if isinstance(market, SyntheticMarket) else market.step()
            if not events and getattr(market, "exhausted", False):
                raise ValueError(f"market ran out after {len(frames) - 1} burst deltas")
            for e in events:
                if isinstance(e, BookDelta) and e.symbol == sym and len(frames) <= self.burst_count:
                    seq += 1
                    data = encode_book(inst, e, seq)
                    frames.append(
                        f'{{"push":{{"channel":"{ch_name}","pub":{{"data":{data},"offset":{seq}}}}}}}'.encode())
        self._burst = encode_burst(frames)
        self.burst_payloads = frames
        self.burst_book = market.book(sym)

    _prepare_burst = prepare_burst  # the name benchmarks/feed.py used first

    def _subscribe_burst(self, client: SimClient, conn: _Conn, cmd_id: int, ch: _Channel) -> str:
        conn.subs.add(ch.name)
        self.spawn(client.burst(self._burst), f"burst-{client.client_id}")
        return _dumps({"id": cmd_id, "subscribe": {"recoverable": False, "epoch": "burst", "offset": 0}})


def _error(cmd_id: int, code: int, message: str | None = None, temporary: bool = False) -> str:
    err: dict[str, Any] = {"code": code, "message": message or _ERROR_MESSAGES.get(code, "error")}
    if temporary:
        err["temporary"] = True
    return _dumps({"id": cmd_id, "error": err})


def from_cli(args: argparse.Namespace) -> CadenzaSim:
    """``python -m feeds.sim cadenza``: uses ``--seed --token --ping --interval
    --burst --burst-symbol --host --port`` (see ``feeds.sim.__main__``)."""
    return CadenzaSim(seed=args.seed, token=args.token,
                      ping_s=25 if args.ping is None else args.ping,
                      interval_s=0.01 if args.interval is None else args.interval,
                      burst=args.burst, burst_symbol=args.burst_symbol,
                      host=args.host, port=args.port)
