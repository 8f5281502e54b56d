"""Cadenza venue adapter: the Centrifugo client protocol (JSON v2) over picows.

Protocol (what this client does)
--------------------------------
- One WebSocket text frame may hold several JSON messages separated by ``\\n``.
- connect first: ``{"id":1,"connect":{"token":"…","name":"ticklot"}}``; the reply gives
  ``ping`` (seconds) and ``pong``. Then one ``subscribe`` per channel, with
  ``recover:true, offset, epoch`` when this client already applied publications of
  the channel (after a reconnect), so missed publications are replayed and nothing is
  lost.
- Server ping ``{}`` every ``ping`` s, answered with ``{}`` when ``pong`` is true. No
  frame at all for ``ping + ping_slack_s`` (default: max(3 s, ping/2)): reconnect.
- Error replies: 101 unauthorized / 103 permission denied / 102 unknown channel / 107
  bad request / 109 token expired are terminal (bad credentials or configuration);
  112 unrecoverable position resubscribes without recovery; the rest (100 internal,
  111 too many requests, ``temporary``) reconnect.
- Close codes (and ``disconnect`` pushes) 3500-3999 and 4500-4999 are terminal: the
  feed fails and does not reconnect. Any other close reconnects with backoff.
- Offsets: every publication's ``offset`` must be the channel's last + 1. A jump is a
  gap: the client reconnects and recovers from its last offset. A recovery the server
  cannot serve (``recovered:false``, new epoch) resyncs: books take the snapshot the
  server publishes first after such a subscribe; lost trade/account publications are
  counted as a gap and the account rebuilds from the fresh state the server sends.

Channel payload schemas (v1, ``data`` of each publication; decimal STRINGS, integer ns)
---------------------------------------------------------------------------------------
``market:orderBook:{instrumentId}``::

    {"type":"snapshot","seq":1041,"ts":1723161600123000000,
     "bids":[["61837.63","0.02000"],...],   best first, at most `depth` levels
     "asks":[["61837.64","1.50000"],...]}
    {"type":"delta","seq":1042,"ts":...,
     "bids":[["61837.62","0"]], "asks":[["61838.00","0.35000"]]}   qty "0" deletes

  ``seq`` is per instrument and +1 per publication (snapshot or delta). A delta whose
  seq is not last + 1 is a gap: the book is out of sync until a snapshot; the client
  resubscribes without recovery (the server sends a snapshot first after every
  subscribe that is not a successful recovery, and every ``snapshot_every``
  publications). A snapshot replaces the book whole; a delta applies whole or not at
  all (OrderBook.apply_updates).

``market:trade:{instrumentId}``::

    {"id":"T-88213","price":"61837.63","qty":"0.01500","side":"buy","ts":1723161600124000000}

  ``side`` is the taker side. Decoded into ``engine.Trade`` (price_ticks, qty_lots,
  side +1/-1), fed to the kline aggregator, then ``on_trade``.

``tradingAccount:{accountId}`` (one of)::

    {"type":"order","order":{"id":"O-17","clientId":"c-17","instrumentId":"BTC-USDT",
       "side":"buy","orderType":"Limit","status":"New"|"PartiallyFilled"|"Filled"|
       "Canceled"|"Expired"|"Rejected","price":"61830.00","stopPrice":null,
       "qty":"0.10000","filledQty":"0.00000","cost":"0.00","createdTs":...,
       "updatedTs":...,"seq":55}}
    {"type":"fill","fill":{"orderId":"O-17","tradeId":"F-9001","instrumentId":"BTC-USDT",
       "side":"buy","price":"61830.00","qty":"0.05000","fee":"0.0309","feeAsset":"USDT",
       "ts":...,"seq":56}}
    {"type":"portfolio","positions":[{"instrumentId":"BTC-USDT","qty":"0.05000",
       "avgEntryPrice":"61830.00","realizedPnl":"0.00","seq":57}]}      qty signed
    {"type":"balances","balances":[{"asset":"USDT","total":"100000.00",
       "available":"96908.50","reserved":"3091.50"}],"seq":58}

  ``seq`` is per account, +1 per publication. Mapping into ``engine.Account``: order
  objects are absolute (``apply_order_snapshot``: status, quantity, filled quantity;
  an order the account does not know is validated whole before it is added, so a
  refused object leaves no trace);
  positions come from ``portfolio`` (absolute quantity and entry price); balances from
  ``balances``; ``fill`` messages are reported (``fills`` counter, ``on_fill``
  callbacks of the venue) but not folded again, since the order and portfolio
  messages that accompany them already carry their effect.

Envelope: push ``{"push":{"channel":"…","pub":{"data":{…},"offset":N}}}``; subscribe
reply ``{"id":N,"subscribe":{"recoverable":true,"epoch":"…","offset":N,
"recovered":bool,"publications":[{"data":{…},"offset":k},…]}}``.

Hot path: book and trade publications are decoded by ``feeds.cadenza_decode``
straight from picows' buffer with the jscan scanner (no ``json.loads``); only the
connect reply (once per connection) goes through ``json``.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Sequence

from engine._core.instrument import Instrument
from engine._core.orders import Order
from engine.errors import DecodeError, EngineError, FeedError, OrderInputError
from feeds.cadenza_decode import KIND_ACCOUNT as CH_ACCOUNT
from feeds.cadenza_decode import KIND_BOOK as CH_BOOK
from feeds.cadenza_decode import KIND_TRADE as CH_TRADE
from feeds.cadenza_decode import CadenzaDecoder, Channel
from feeds.venue import Endpoint, Venue

if TYPE_CHECKING:
    from engine.engine import Dispatch, Engine
    from feeds.session import Feed, Secret

log = logging.getLogger("feeds.cadenza")

__all__ = ["CadenzaVenue", "is_terminal_close", "TERMINAL_ERRORS"]

#: Centrifugo error codes after which reconnecting cannot help.
TERMINAL_ERRORS = frozenset({101, 102, 103, 107, 109})
ERR_UNRECOVERABLE = 112
ERR_ALREADY_SUBSCRIBED = 105
_OS_NEW = 1  # engine.account.OrderStatus.NEW: an order the venue reports is acknowledged


def is_terminal_close(code: int) -> bool:
    """Centrifugo: close/disconnect codes 3500-3999 and 4500-4999 mean "do not reconnect"."""
    return 3500 <= code <= 3999 or 4500 <= code <= 4999


class CadenzaVenue(Venue):
    """Cadenza adapter (see the module docstring). Options: ``client_name`` (sent in
    connect), ``ping_slack_s`` (extra time past the server ping interval before the
    connection counts as dead), ``recover`` (False: never ask for recovery)."""

    name = "cadenza"
    max_message_size = 4 << 20  # recovery replies carry up to history_size publications
    stale_after_s = None  # the server ping contract detects dead peers (heartbeat below)
    heartbeat_interval_s = 0.5

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 client_name: str = "ticklot", ping_slack_s: float | None = None,
                 recover: bool = True) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        if token is None:
            raise FeedError("cadenza needs a token", terminal=True)
        self.client_name = client_name
        self.ping_slack_s = ping_slack_s
        self.recover = recover
        self.decoder: CadenzaDecoder | None = None
        self.channels: list[Channel] = []
        self.account: Any = engine.account(account_id) if account_id is not None else None
        self.fills = 0
        self.account_errors = 0
        self.connected_client = ""
        self._next_id = 1
        self._connect_id = 0
        self._ping_s = 0.0
        self._pong = False
        self._live = 0
        self._position_rounds: dict[str, int] = {}
        # While the decoder applies a portfolio/balances list: callbacks held until the
        # Account batch commits, and the round counters to restore if it rolls back.
        self._list_pending: list[tuple[str, str]] | None = None
        self._rounds_before: dict[str, int] = {}

    # ---- wiring ----------------------------------------------------------------------
    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Build the decoder and the channel table once the engine wired us."""
        super().bind(feed, dispatch)
        from engine.engine import Trade
        dec = CadenzaDecoder(self, dispatch, Trade, {i.symbol: i for i in self.engine.instruments.values()})
        for inst in self.instruments:
            self.channels.append(dec.add_channel(Channel(f"market:orderBook:{inst.symbol}", CH_BOOK, inst,
                                                         self.engine.book(inst.symbol))))
            self.channels.append(dec.add_channel(Channel(f"market:trade:{inst.symbol}", CH_TRADE, inst)))
        if self.account_id is not None:
            self.channels.append(dec.add_channel(Channel(f"tradingAccount:{self.account_id}", CH_ACCOUNT)))
        self.decoder = dec
        # The session's listener hands picows' buffer to the decoder in C.
        self.frame_sink = dec

    def endpoint(self) -> Endpoint:
        """The URL as given; the token travels in the connect command, not the URL."""
        return Endpoint(self.url)

    def _send(self, method: str, body: dict[str, Any]) -> int:
        cmd_id = self._next_id
        self._next_id += 1
        assert self.feed is not None
        self.feed.send_text(json.dumps({"id": cmd_id, method: body}, separators=(",", ":")))
        return cmd_id

    # ---- session hooks -----------------------------------------------------------------
    def on_open(self, feed: "Feed") -> None:
        """Send connect; subscriptions follow its reply."""
        assert self.decoder is not None and self.token is not None
        self._next_id = 1
        self._ping_s = 0.0
        self._live = 0
        self.decoder.pending.clear()
        for ch in self.channels:
            ch.live = False
        self._connect_id = self._send("connect", {"token": self.token.reveal(), "name": self.client_name})

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools, replay): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("cadenza venue used before bind()")
        self.decoder.feed(payload, recv_ns)

    def replay_frame(self, feed: "Feed", payload: memoryview, recv_ns: int) -> None:
        """Replay: replies are matched to the client's own command ids, which a recording
        (received frames only) does not hold. Each connection's first received frame is
        the reply to its connect command (id 1), so ``on_open`` is re-run there: it
        resets the ids and re-registers the connect, and the recorded replies that follow
        match the subscriptions it sends, as they did live."""
        if bytes(payload[:7]) == b'{"id":1':
            first = bytes(payload).split(b"\n", 1)[0]
            if b'"connect"' in first and "connect" in json.loads(first):
                self.feed = feed
                self.on_open(feed)
        self.on_frame(payload, recv_ns)

    def heartbeat(self, now_ns: int) -> None:
        """No frame (not even a ping) for ping + slack seconds: the connection is dead."""
        if self._ping_s <= 0:
            return
        assert self.feed is not None
        slack = self.ping_slack_s if self.ping_slack_s is not None else max(3.0, self._ping_s / 2)
        if now_ns - self.feed.last_frame_ns > (self._ping_s + slack) * 1e9:
            raise FeedError(f"no ping from server for {self._ping_s + slack:g} s")

    def is_terminal_close_code(self, code: int) -> bool:
        """See the module's ``is_terminal_close``."""
        return is_terminal_close(code)

    def describe(self) -> dict[str, object]:
        """Channel offsets and decoder counters (no secrets)."""
        dec = self.decoder
        return {
            "channels": {ch.name: {"offset": ch.offset, "epoch": ch.epoch, "live": ch.live,
                                   "synced": ch.synced, "publications": ch.publications}
                         for ch in self.channels},
            "pings": dec.pings if dec else 0,
            "fills": self.fills,
            "account_errors": self.account_errors,
            "stale_publications": dec.stale_publications if dec else 0,
            "dropped_unsynced": dec.dropped_unsynced if dec else 0,
        }

    # ---- rare-path handlers called by the decoder -----------------------------------------
    def on_ping(self) -> None:
        """Server ping ``{}``: answer ``{}`` when the connect reply asked for pongs."""
        if self._pong and self.feed is not None:
            self.feed.send_text(b"{}")

    def on_connect_reply(self, cmd_id: int, raw: bytes) -> None:
        """Connect accepted: note ping/pong, then subscribe every channel."""
        body = json.loads(raw)
        self._ping_s = float(body.get("ping", 0) or 0)
        self._pong = bool(body.get("pong", False))
        self.connected_client = str(body.get("client", ""))
        assert self.decoder is not None
        for ch in self.channels:
            sub: dict[str, Any] = {"channel": ch.name}
            if self.recover and ch.offset >= 0 and ch.epoch and not ch.need_fresh:
                sub.update(recover=True, offset=ch.offset, epoch=ch.epoch)
            self.decoder.pending[self._next_id] = ch
            self._send("subscribe", sub)

    def on_error_reply(self, cmd_id: int, code: int, message: str, temporary: bool,
                       channel: Channel | None) -> None:
        """An error reply to connect or subscribe (see the module docstring)."""
        what = f"{'connect' if cmd_id == self._connect_id else 'subscribe ' + (channel.name if channel else '?')}"
        if code == ERR_ALREADY_SUBSCRIBED and channel is not None:
            return
        if code == ERR_UNRECOVERABLE and channel is not None:
            channel.need_fresh = True
            channel.offset = -1
            raise FeedError(f"{what}: unrecoverable position, resubscribing fresh")
        terminal = code in TERMINAL_ERRORS and not temporary
        raise FeedError(f"{what} refused: {code} {message}", terminal=terminal)

    def on_reply(self, cmd_id: int, method: str) -> None:
        """Replies without a payload of interest (unsubscribe...)."""

    def on_subscribed(self, ch: Channel, recovered: bool, lost: bool) -> None:
        """A subscribe reply was applied; when every channel is live: "subscribed"."""
        assert self.feed is not None
        if lost and ch.kind != CH_BOOK:
            # Publications we never saw and the server no longer has. The account
            # rebuilds from the fresh state the server publishes after this reply.
            self.feed.count_gap()
            self.feed.count_resync()
            log.warning("%s: %s could not be recovered", self.name, ch.name)
        self._live += 1
        if self._live == len(self.channels):
            n_rec = sum(1 for c in self.channels if c.live)
            self.feed.subscribed(f"{n_rec} channels")

    def on_gap(self, ch: Channel, reason: str, book: bool) -> None:
        """Offset or seq gap: count it and reconnect (recovery or a fresh snapshot)."""
        assert self.feed is not None
        self.feed.count_gap()
        log.warning("%s: gap: %s", self.name, reason)
        self.feed.resync(f"gap: {reason}")

    def on_resynced(self, ch: Channel) -> None:
        """A book came back in sync from a snapshot."""
        assert self.feed is not None
        self.feed.count_resync()

    def on_push_disconnect(self, code: int, reason: str) -> None:
        """Server ``disconnect`` push: terminal codes stop the feed."""
        raise FeedError(f"server disconnect {code} {reason}", terminal=is_terminal_close(code))

    def on_push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        """Server unsubscribed us from a channel: reconnect to get it back."""
        raise FeedError(f"server unsubscribed {channel}: {code} {reason}")

    def on_unknown_account(self, kind: str) -> None:
        """An account publication type this client does not know: logged, skipped."""
        log.info("%s: unknown account publication type %r", self.name, kind)

    def on_unknown_instrument(self, symbol: str) -> None:
        """An account publication for an instrument the engine does not track."""
        log.info("%s: account update for unknown instrument %r skipped", self.name, symbol)

    # ---- account mapping -------------------------------------------------------------------
    def _account_call(self, fn: Any, *args: Any, **kw: Any) -> bool:
        before = self.account.error_count
        ok = bool(fn(*args, **kw))
        if self.account.error_count != before:
            self.account_errors += 1
            if self.feed is not None:
                self.feed.counters.decode_errors += 1
        return ok

    def on_order(self, order_id: str, client_id: str | None, inst: Instrument, side: str,
                 order_type: str | None, status: str, price_ticks: int, stop_ticks: int,
                 qty_lots: int, filled_lots: int, cost: str | None, created_ns: int,
                 updated_ns: int, seq: int, recv_ns: int) -> None:
        """A full order object, applied absolutely, whole or not at all: an order the
        account does not know yet is first validated with the whole update on a
        standalone ``Order`` (the same state machine the account runs), so a refused
        update adds nothing; a known order's refused update is counted by the account
        (feed mode) and changes nothing. Known orders are looked up in the account
        itself: no shadow set here to drift from it or to grow."""
        from engine.account import parse_order_status, parse_order_type, parse_side
        acct = self.account
        if acct is None:
            return
        try:
            status_code = int(parse_order_status(status))
            side_code = int(parse_side(side))
            type_code = int(parse_order_type(order_type or "Limit"))
        except Exception as exc:
            self.account_errors += 1
            raise DecodeError(f"cadenza order {order_id}: {exc}") from None
        added = False
        try:
            acct.order_slot(order_id)
        except OrderInputError:  # unknown id: a new order
            try:
                probe = Order(order_id, side_code, qty_lots, price_ticks, order_type=type_code,
                              stop_price_ticks=stop_ticks, status=_OS_NEW, client_id=client_id or "",
                              instrument=inst, ts_ns=created_ns)
                probe.apply_snapshot(status_code, qty_lots, filled_lots, price_ticks, stop_ticks, -1,
                                     updated_ns, seq)
                # Both steps below repeat what the probe just accepted, so neither refuses.
                acct.add_order(order_id, inst.symbol, side_code, qty_lots, price_ticks,
                               order_type=type_code, stop_price_ticks=stop_ticks, status=_OS_NEW,
                               client_id=client_id or "", ts_ns=created_ns)
            except EngineError as exc:
                self.account_errors += 1
                raise DecodeError(f"cadenza order {order_id}: {exc}") from None
            added = True
        changed = self._account_call(acct.apply_order_snapshot, order_id, status_code, qty_lots, filled_lots,
                                     price_ticks, stop_ticks, -1, updated_ns, seq, False)
        assert self.dispatch is not None
        # Callbacks report changes: a repeated, stale or refused update calls nobody.
        if (added or changed) and self.dispatch.wants("order"):
            self.dispatch.order(acct.order(order_id), recv_ns)

    def on_fill(self, order_id: str, trade_id: str, inst: Instrument, side: str, price_ticks: int,
                qty_lots: int, fee: str | None, fee_asset: str | None, ts_ns: int, seq: int,
                recv_ns: int) -> None:
        """A fill report (its effect arrives as order/portfolio/balances updates)."""
        self.fills += 1

    def on_position(self, inst: Instrument, qty_lots: int, fields: dict[str, str], seq: int,
                    recv_ns: int) -> None:
        """Absolute netting position of one instrument (``portfolio`` entry)."""
        acct = self.account
        if acct is None:
            return
        sym = inst.symbol
        cur = acct.position(sym)
        entry = fields.get("avgEntryPrice")
        qty = inst.lots_to_qty(qty_lots)
        open_now = cur.qty_lots != 0 or cur.status == 1
        if qty_lots != 0 and not open_now:
            n = self._position_rounds.get(sym, 0) + 1
            self._position_rounds[sym] = n
            self._account_call(acct.on_position_create, f"{sym}#{n}", sym, "InProgress", qty, entry)
        elif sym in self._position_rounds:
            status = "InProgress" if qty_lots != 0 else "Completed"
            self._account_call(acct.on_position_update, f"{sym}#{self._position_rounds[sym]}", sym, status,
                               qty, entry if qty_lots != 0 else None)
        else:
            return  # flat and never opened: nothing to record
        self._notify("position", sym, recv_ns)

    def on_balance(self, fields: dict[str, str], seq: int, recv_ns: int) -> None:
        """One asset balance (decimal strings at the asset's scale, default 8)."""
        acct = self.account
        if acct is None:
            return
        self._account_call(acct.on_balances, [fields])
        self._notify("balance", fields["asset"], recv_ns)

    def begin_list(self) -> None:
        """The decoder starts applying a portfolio or balances list (one Account batch):
        callbacks wait for ``end_list``, and the position-round bookkeeping can be undone."""
        self._list_pending = []
        self._rounds_before = dict(self._position_rounds)

    def end_list(self, applied: bool, recv_ns: int) -> None:
        """The list is committed (``applied``: callbacks now, once per changed record) or
        rolled back (no callbacks; bookkeeping restored)."""
        pending, self._list_pending = self._list_pending, None
        if not applied:
            self._position_rounds = self._rounds_before
            return
        for kind, key in dict.fromkeys(pending or ()):
            self._notify(kind, key, recv_ns)

    def _notify(self, kind: str, key: str, recv_ns: int) -> None:
        if self._list_pending is not None:
            self._list_pending.append((kind, key))
            return
        acct, dispatch = self.account, self.dispatch
        assert acct is not None and dispatch is not None
        if kind == "position" and dispatch.wants("position"):
            dispatch.position(acct.position(key), recv_ns)
        elif kind == "balance" and dispatch.wants("balance"):
            dispatch.balance(acct.balance(key), recv_ns)
