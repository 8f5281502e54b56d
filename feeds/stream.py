"""Stream venue adapter (JayX style): Socket.IO v4 over WebSocket, via picows.

Transport and framing are ``feeds.socketio`` (Engine.IO v4 / Socket.IO protocol v5,
WebSocket transport only, URL ``/socket.io/?EIO=4&transport=websocket``). The
connection goes: ``0{...}`` open -> client ``40`` -> server ``40{"sid":..}`` -> the
client emits one subscription per stream, each with an ack id -> the server acks
each (status "subscribed" once all are acked) and pushes ``42["<event>",{...}]``.

Subscriptions (client emits; ``apiKey`` only in the private ones, a Secret revealed on
the wire only)::

    42<id>["orderbook",{"symbol":"BTC-USDT"}]
    42<id>["kline",{"symbol":"BTC-USDT","interval":"1m"}]      one per interval kept
    42<id>["positions",{"apiKey":"…"}]
    42<id>["openorders",{"apiKey":"…","since":1723161600120}]

Ack (``43<id>[...]``): ``[{"ok":true}]`` (or an empty ack) confirms;
``[{"ok":false,"code":401,"message":"invalid apiKey"}]`` refuses: codes 400, 401, 403
and 404 are terminal (bad credentials or configuration), others reconnect. A server
``error`` event ``42["error",{"code":..,"message":..}]`` is handled the same way.

Event payloads (v1, what this client decodes and ``feeds.sim.stream`` sends). All
prices are integer ticks and sizes integer lots of the instrument (whose tick and lot
sizes must be the venue's); times are integer ms since the epoch (converted to ns
exactly); unknown fields are ignored; a field of the wrong type, a missing required
field, a negative size or a crossed book rejects the whole frame (DecodeError,
counted, nothing applied)::

    42["orderbook",{"symbol":"BTC-USDT","seq":1042,"ts":1723161600120,
        "bids":[{"ticks":6183763,"lots":2000,"count":3},...],     best first (any order ok)
        "asks":[{"ticks":6183764,"lots":150000,"count":1},...],
        "trades":[{"id":88213,"ticks":6183763,"lots":1500,"side":"buy","ts":1723161600118},...]}]

  The book is REPLACED by ``bids``/``asks`` (whole or nothing, ``OrderBook.replace_with``;
  ``lots`` > 0, ``count`` >= 0 is the number of orders and is not kept). ``seq`` is
  per symbol, +1 per orderbook message: a jump is counted as a gap (``gaps``) but
  needs no resync since every message is a full snapshot; ``book.last_update_id`` is
  ``seq``. ``trades`` are the venue's most recent trades of the symbol (``side`` is
  the taker side), repeated across consecutive snapshots. Dedupe rule: trade ``id``\\ s
  are integers that increase with time per symbol; trades are applied in ascending
  id order and only those with an id above the highest one already applied, so each
  trade reaches the kline aggregator and ``on_trade`` exactly once (also across
  reconnects; trades older than the window of a reconnect's first snapshot are lost).
  On the first snapshot every listed trade is applied.

::

    42["kline",{"symbol":"BTC-USDT","interval":"1m",
        "add":{"created":1723161600000,"o":6183763,"h":6183770,"l":6183760,"c":6183765,
               "v":41000,"m":1723161600118},
        "modify":null}]

  ``add`` opens a new venue candle, ``modify`` replaces the values of the current one
  (either may be absent or null; both may come together). ``created`` is the candle's
  open time (an interval start), ``m`` its last change, ``o/h/l/c`` ticks, ``v`` lots.
  They feed ``KlineAggregator.venue_add``/``venue_modify`` of the engine's aggregator
  (the interval must be one of its time frames). Policy: each candle is keyed by
  ``created`` against the current venue candle K: later than K (or none yet) opens a
  candle, equal to K replaces it, earlier is stale (counted, skipped), whatever the
  message named it; so the ``add`` a server repeats after a resubscribe is harmless.

::

    42["positions",{"ts":1723161600120,"balances":[
        {"asset":"USDT","total":"100000.00000000","available":"96908.50000000",
         "reserved":"3091.50000000"},...]}]

  Balances as decimal strings at the asset's decimals (``Account.set_asset_decimals``,
  default 8), into ``Account.on_balances`` (validated whole, exact); every message
  lists every asset of the account.

::

    42["openorders",{"symbol":"BTC-USDT","ts":1723161600120,"snapshot":false,
        "modify":[{"id":"O-17","clientId":"c-17","symbol":"BTC-USDT","side":"buy",
                   "type":"limit","price":6183000,"state":"partial","resd":1500,
                   "exec":500,"cost":3091500000,"seq":55,"ts":1723161600120}],
        "cancel":[{"id":"O-12","seq":56,"ts":1723161600120}]}]

  ``modify`` items are full order objects: ``state`` (open, partial, filled,
  cancelled, expired, rejected), ``resd`` remaining and ``exec`` executed lots,
  ``cost`` the executed notional in quote units of the instrument (ticks x lots,
  i.e. ``price_ticks * qty_lots`` summed over fills), ``price`` ticks, ``seq`` a
  per-account counter (+1 per order change; a repeat is stale and ignored); ``cancel``
  names orders the venue canceled. They feed ``Account.on_openorders`` (whole or
  nothing; newly executed lots are folded into the position at the cost difference).
  Recovery: the client subscribes with ``since`` = the ``ts`` of the last openorders
  message it applied (0 at first); the server answers with one message
  (``"snapshot":true``) holding every open order and every order changed at or after
  ``since`` in its latest state (closed ones included), so orders filled or canceled
  while the client was away are not lost. Repeats are stale (same ``seq``).

A market-data event the server sends with an ack id (``42<id>[...]``) is decoded but
not acknowledged (data streams need no receipts); other events (``error`` aside) are
counted and ignored.

Liveness: Engine.IO pings answered at once; no ping for pingInterval + pingTimeout:
reconnect (``heartbeat``). Closes: ``44`` connect refused is terminal for auth errors;
``41``/``1`` and socket drops reconnect with the session's backoff; every subscription
is re-emitted on each connection.

Hot path: ``feeds.stream_decode.StreamDecoder`` is the venue's ``frame_sink``: the
session's compiled listener calls it with picows' buffer; it decodes the four events above from picows' buffer (no ``json.loads``) and hands the
rest (a few control packets a minute) to :class:`feeds.socketio.SocketIOClient`.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engine._core.instrument import Instrument
from engine.errors import DecodeError, FeedError
from feeds.socketio import ENGINEIO_PARAMS, SocketIOClient, is_auth_error, socketio_url
from feeds.stream_decode import StreamDecoder, StreamSymbol
from feeds.venue import CloseDecision, CloseInfo, Endpoint, Reconnect, Terminal, Venue

if TYPE_CHECKING:
    from engine.engine import Engine
    from feeds._hotpath import Dispatch
    from feeds.session import Feed, Secret

log = logging.getLogger("feeds.stream")

__all__ = ["StreamVenue", "TERMINAL_ACK_CODES"]

#: Subscription refusals after which reconnecting cannot help.
TERMINAL_ACK_CODES = frozenset({400, 401, 403, 404})


class StreamVenue(Venue):
    """Stream venue adapter (see the module docstring).

    Options: ``namespace`` (Socket.IO namespace, default "/"), ``path`` (default
    "/socket.io/", used when the URL has no path), ``kline_intervals`` (venue candles
    to keep; default every time frame of the engine's aggregators; ``()`` for none),
    ``orderbook`` (subscribe to books, default True), ``ack_timeout_s``,
    ``open_timeout_s``, ``reconnect_on_disconnect`` (after a server ``41``).
    With a ``token`` (the venue API key) the private streams ``positions`` and
    ``openorders`` are subscribed for ``account_id`` (default: the feed name)."""

    name = "stream"
    max_message_size = 1 << 20
    stale_after_s = None   # the Engine.IO ping contract detects a dead peer (heartbeat)
    heartbeat_interval_s = 0.25

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 namespace: str = "/", path: str = "/socket.io/",
                 kline_intervals: Sequence[str] | None = None, orderbook: bool = True,
                 ack_timeout_s: float = 10.0, open_timeout_s: float = 10.0,
                 reconnect_on_disconnect: bool = True) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        self.path = path
        self.namespace = namespace
        self.orderbook = orderbook
        self.kline_intervals = kline_intervals
        self.sio = SocketIOClient(self, namespace=namespace, open_timeout_s=open_timeout_s,
                                  ack_timeout_s=ack_timeout_s,
                                  reconnect_on_disconnect=reconnect_on_disconnect)
        self.account: Any = None
        if token is not None:
            self.account_id = account_id or name
            self.account = engine.account(self.account_id)
        self.decoder: StreamDecoder | None = None
        self.subscriptions: list[tuple[str, dict[str, Any]]] = []
        self.orders_since_ms = 0
        self.acked = 0
        self.account_errors = 0
        self.server_errors = 0
        self.other_events = 0
        self._outbox: list[str] | None = []

    # ---- wiring ----------------------------------------------------------------------
    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Build the decoder, its symbols and the subscription list."""
        super().bind(feed, dispatch)
        from engine.engine import Trade
        dec = StreamDecoder(self, dispatch, Trade, self.namespace)
        subs: list[tuple[str, dict[str, Any]]] = []
        for inst in self.instruments:
            agg = self.engine.aggregators.get(inst.symbol)
            if self.kline_intervals is None:
                from engine._core.kline import parse_interval
                wanted = [iv for iv in (agg.intervals if agg is not None else ())
                          if parse_interval(iv)[0] == "time"]
            else:
                wanted = list(self.kline_intervals)
            dec.add_symbol(StreamSymbol(inst, self.engine.book(inst.symbol), agg, wanted))
            if self.orderbook:
                subs.append(("orderbook", {"symbol": inst.symbol}))
            subs.extend(("kline", {"symbol": inst.symbol, "interval": iv}) for iv in wanted)
        if self.token is not None:
            subs.append(("positions", {"apiKey": self.token}))
            subs.append(("openorders", {"apiKey": self.token}))
        self.subscriptions = subs
        self.decoder = dec
        # The session's listener hands picows' buffer to the decoder in C.
        self.frame_sink = dec

    def endpoint(self) -> Endpoint:
        """The Socket.IO URL with the Engine.IO WebSocket query."""
        return Endpoint(socketio_url(self.url, self.path), params=dict(ENGINEIO_PARAMS))

    # ---- session hooks -----------------------------------------------------------------
    def on_open(self, feed: "Feed") -> None:
        """The server speaks first (``0{...}``); its open packet may even arrive with
        the handshake reply, before the session can send: replies made by then were
        kept in the outbox and go out now."""
        self.sio.started(time.time_ns())
        outbox, self._outbox = self._outbox, None
        for text in outbox or ():
            feed.send_text(text)

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools, replay): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("stream venue used before bind()")
        self.decoder.feed(payload, recv_ns)

    def heartbeat(self, now_ns: int) -> None:
        """Open/connect/ping/ack deadlines of the Socket.IO client."""
        self.sio.check_alive(now_ns)

    def on_close(self, close: CloseInfo) -> CloseDecision:
        """Terminal errors (refused credentials or configuration) stop; all else
        reconnects (Socket.IO servers close with 1000/1001 on restarts)."""
        self._new_connection()
        if close.error is not None and getattr(close.error, "terminal", False):
            return Terminal(close.reason)
        return Reconnect(close.reason)

    def describe(self) -> dict[str, object]:
        """Per-symbol progress and the protocol counters (no secrets)."""
        dec = self.decoder
        return {
            "symbols": {s.symbol: {"last_seq": s.last_seq, "last_trade_id": s.last_trade_id,
                                   "books": s.books, "klines": s.klines, "trades": s.trades}
                        for s in (dec.symbol_list if dec else [])},
            "sid": self.sio.sid,
            "pings": self.sio.pings,
            "acked": self.acked,
            "subscriptions": len(self.subscriptions),
            "duplicate_trades": dec.duplicate_trades if dec else 0,
            "stale_candles": dec.stale_candles if dec else 0,
            "account_errors": self.account_errors,
        }

    def _new_connection(self) -> None:
        # Per-connection state is reset when a connection ends, not in on_open: frames
        # of the next connection can arrive before on_open runs.
        self.acked = 0
        self._outbox = []
        self.sio.reset(time.time_ns())

    # ---- SocketIOHandler ---------------------------------------------------------------
    def send_text(self, text: str) -> None:
        """Socket.IO client output: on the current connection, or kept until
        ``on_open`` when the connection is not handed to the venue yet."""
        if self._outbox is not None:
            self._outbox.append(text)
            return
        assert self.feed is not None
        self.feed.send_text(text)

    def on_sio_connected(self, sid: str) -> None:
        """Namespace connected: emit every subscription, each with an ack."""
        if not self.subscriptions and self.feed is not None:
            self.feed.subscribed("no subscriptions")
        for event, message in self.subscriptions:
            if event == "openorders":
                message = dict(message, since=self.orders_since_ms)
            self.sio.emit(event, message, on_ack=self._acker(event, message.get("symbol")))

    def _acker(self, event: str, symbol: object) -> Any:
        def on_ack(args: list[Any]) -> None:
            reply = args[0] if args else {}
            if isinstance(reply, Mapping) and reply.get("ok") is False:
                self._refused(f"subscribe {event}{' ' + str(symbol) if symbol else ''}", reply)
            self.acked += 1
            if self.acked == len(self.subscriptions) and self.feed is not None:
                self.feed.subscribed(f"{self.acked} subscriptions")
        return on_ack

    def _refused(self, what: str, reply: Mapping[str, Any]) -> None:
        code = reply.get("code")
        self.server_errors += 1
        terminal = code in TERMINAL_ACK_CODES or is_auth_error(reply)
        raise FeedError(f"{what} refused: {code} {reply.get('message', '')}".rstrip(), terminal=terminal)

    def on_sio_event(self, name: str, args: list[Any]) -> None:
        """Events the hot decoder does not handle: ``error`` (see the module
        docstring); anything else is counted and ignored."""
        if name == "error":
            reply = args[0] if args and isinstance(args[0], Mapping) else {"message": str(args)}
            self._refused("server error", reply)
        self.other_events += 1
        log.debug("%s: ignored event %r", self.name, name)

    # ---- cold handlers called by the decoder --------------------------------------------
    def on_ping(self, recv_ns: int) -> None:
        """Engine.IO ping: pong at once."""
        self.sio.on_ping(recv_ns)

    def on_control(self, text: str, recv_ns: int) -> None:
        """Every frame that is not a market-data event."""
        self.sio.on_packet(text, recv_ns)

    def on_seq_gap(self, symbol: str, seq: int, last: int) -> None:
        """An orderbook ``seq`` jumped: counted (the snapshot itself is complete)."""
        assert self.feed is not None
        self.feed.count_gap()
        log.info("%s: %s orderbook seq %d after %d", self.name, symbol, seq, last)

    def on_openorders(self, cancel: list[dict[str, Any]], modify: list[dict[str, Any]],
                      symbol: str | None, ts_ns: int, recv_ns: int) -> None:
        """Apply an ``openorders`` message to the account (whole or nothing), then
        report changed orders and positions."""
        acct = self.account
        if acct is None:
            return
        before = acct.error_count
        acct.on_openorders(cancel, modify, symbol, ts_ns)
        if acct.error_count != before:
            self.account_errors += 1
            raise DecodeError("stream openorders: refused by the account, nothing applied "
                              f"({len(modify)} modify, {len(cancel)} cancel)")
        self.orders_since_ms = max(self.orders_since_ms, ts_ns // 1_000_000)
        dispatch = self.dispatch
        assert dispatch is not None
        if dispatch.wants("order"):
            for item in (*modify, *cancel):
                dispatch.order(acct.order(item["id"]), recv_ns)
        if dispatch.wants("position"):
            for sym in {acct.order(item["id"]).symbol for item in modify if item.get("exec")}:
                dispatch.position(acct.position(sym), recv_ns)

    def on_balances(self, items: list[dict[str, Any]], ts_ns: int, recv_ns: int) -> None:
        """Apply a ``positions`` message (balances) to the account."""
        acct = self.account
        if acct is None:
            return
        before = acct.error_count
        acct.on_balances(items, ts_ns)
        if acct.error_count != before:
            self.account_errors += 1
            raise DecodeError(f"stream positions: refused by the account ({len(items)} balances)")
        dispatch = self.dispatch
        assert dispatch is not None
        if dispatch.wants("balance"):
            for item in items:
                dispatch.balance(acct.balance(item["asset"]), recv_ns)
