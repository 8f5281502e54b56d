"""Bot platform venue adapter: positions, their orders, NFT energy, notifications and
the symbol registry, over JSON text frames (picows).

Wire protocol (v1; the seed gives the envelope, the rest is this client's choice)
---------------------------------------------------------------------------------
One JSON object per WebSocket text frame. Every frame is an envelope whose ``event``
names the stream; the message itself is ``data``, discriminated by ``data.type``::

    {"event":"User","user_id":"U-1","seq":42,"data":{"type":"PositionUpdate",...}}
    {"event":"Symbol","data":{"type":"SymbolUpdate",...}}
    {"event":"Auth","data":{"type":"AuthOk","user_id":"U-1"}}
    {"event":"Heartbeat","ts":1723161600123000000}

Numbers: quantities and prices are decimal STRINGS converted exactly with the
instrument's tick and lot size (a value that is not a whole number of ticks/lots is a
bad frame); times ``ts``/``list_time``/``exp_time`` are integer ns since the epoch.
Field names are snake_case, as in the seed (``user_id``, ``can_trade``...).

Authentication and subscription (the seed is silent; chosen here). The token never
travels in the URL (URLs end up in proxy and server logs) and is not tied to one
HTTP stack's header API; it is the first message on the socket::

    client: {"event":"Auth","data":{"token":"<token>"}}
    server: {"event":"Auth","data":{"type":"AuthOk","user_id":"U-1"}}
        or: {"event":"Auth","data":{"type":"AuthError","code":401,"message":"invalid token"}}
            followed by CLOSE 4001
    client: {"event":"Subscribe","data":{"topics":["User","Symbol"]}}
    server: the Symbol list, then the User Snapshot, then live messages.

The client sends both messages at once on connect (the server handles them in order).

User messages (``event`` "User"; ``seq`` is per user, +1 per message)::

    PositionCreate / PositionUpdate (the full position object every time):
      {"type":"PositionUpdate","id":"P-7","symbol":"BTC-USDT","side":"Long"|"Short",
       "status":"Created"|"InProgress"|"Finishing"|"Completed"|"Failed",
       "qty":"0.01500","entry_price":"61837.63"|null,"realized_pnl":"-1.2345000"|null,
       "ts":1723161600123000000}
      qty is unsigned (side gives the direction); entry_price is the average entry,
      required when qty is not zero; realized_pnl is the position's realized PnL in
      the quote currency and must be a whole number of quote units (tick x lot, see
      engine.Position).
    PositionOrderCreate / PositionOrderUpdate (the full order object every time):
      {"type":"PositionOrderUpdate","id":"O-19","position_id":"P-7","client_id":"c-19"|null,
       "symbol":"BTC-USDT","side":"Buy"|"Sell",
       "order_type":"Limit"|"Market"|"Stop"|"StopMarket"|"TakeProfit"|"TakeProfitMarket"|
                    "TrailingStopMarket",
       "status":"New"|"PartiallyFilled"|"Filled"|"Expired"|"Canceled",
       "qty":"0.01500","filled_qty":"0.00500","price":"61830.00"|null,
       "stop_price":"61700.00"|null,"ts":1723161600124000000}
    NftEnergyUpdate:
      {"type":"NftEnergyUpdate","energy":1250000000,"ts":...}   energy / 100,000,000
    Notification (cold: JSON library):
      {"type":"Notification","id":"N-3","level":"info"|"warning"|"error",
       "title":"...","message":"...","ts":...}
    Snapshot (first User message of every connection; seq = the last seq it includes):
      {"type":"Snapshot","positions":[position objects],"orders":[order objects],
       "energy":1250000000|null,"ts":...}
      Every position and order of the session, in creation order.

Symbol messages (``event`` "Symbol"; no seq: full objects, idempotent; cold)::

    {"type":"Symbol","symbols":[{"symbol":"BTC-USDT","can_trade":true,"is_active":true,
                                  "list_time":1700000000000000000,"exp_time":null},...]}
        the whole list (replaces the registry; sent after every Subscribe)
    {"type":"SymbolUpdate","symbol":"BTC-USDT","can_trade":false,"is_active":true,
     "list_time":1700000000000000000,"exp_time":null}
        one symbol, full object

Heartbeat: the server sends ``{"event":"Heartbeat","ts":...}`` every few seconds
(default 5 s). No frame at all for ``stale_after_s`` (default 15 s): the session
reconnects.

Sequence and resync rules (state in ``BotPlatformDecoder``)
-----------------------------------------------------------
- On every connection, User messages are applied only after that connection's
  ``Snapshot``, which sets ``last_seq``; earlier ones are dropped (``unsynced_dropped``).
- A User message with ``seq == last_seq + 1`` is applied; ``seq <= last_seq`` is stale
  (skipped, ``stale_messages``); a jump is a gap: ``feed.count_gap()`` and a reconnect,
  whose Snapshot brings the account back to the venue's state exactly.
- A malformed frame (DecodeError, counted in ``decode_errors`` by the session) does
  not consume its seq, so the next message shows whether something was lost.
- Snapshot application: a position the client never created is created; the live one
  of its symbol is updated; earlier ones of the same symbol are already final and
  skipped. Orders are created or updated (the Account treats a known id as an update).
- A User frame for another ``user_id`` than the one AuthOk named (or before AuthOk) is
  a bad frame. Unknown events and unknown User types are skipped and counted
  (``unknown_messages``; an unknown User type still consumes its seq), so a newer
  server does not break this client. Notifications are validated before their seq is
  applied, like every other message.

Mapping into the engine (``engine.Account`` of ``account_id``, feed mode)
-------------------------------------------------------------------------
Positions -> ``on_position_create`` / ``on_position_update`` (the Account nets by
instrument: one live bot position per symbol, a new one may start when the previous
is Completed or Failed; an update for a position replaced by a newer one on the same
symbol is ignored and counted in ``superseded``). Orders ->
``on_position_order_create`` / ``on_position_order_update``. Energy ->
``on_nft_energy_update`` (balance "NFT_ENERGY", 8 decimals, exact). An update the
state machine refuses (e.g. an order going Filled -> New, a position going Completed
-> InProgress, a filled quantity above the order's) changes nothing: the Account
counts it (``error_count``) and hands the error to its ``on_error`` callback; the
venue counts it in ``rejected`` and logs it. Objects for symbols the engine does not
track are skipped and counted (``unknown_symbol``).

Callbacks: engine ``on_position`` / ``on_order`` / ``on_balance`` after each applied
change; ``venue.on_energy(cb)`` receives :class:`NftEnergy`, ``venue.on_notification(cb)``
:class:`Notification` (both through the engine's one callback wrapper);
``venue.symbols.on_change(cb)`` receives ``feeds.symbols.SymbolChange``. Strategies ask
``venue.symbols.tradable(symbol)`` (or ``.require``) before acting: the registry is
updated before the frame's callbacks run.

Close codes: 4000-4499 are terminal (4001 invalid token, 4003 forbidden, 4400 bad
request: reconnecting cannot help); every other close reconnects with backoff.

Hot path: the decoder (``feeds.botplatform_decode``, the venue's ``frame_sink``) gets
picows' buffer in C and scans User frames with jscan (no ``json.loads``), then makes
one Account call per object with exact integers; Auth, Symbol and Notification
messages (rare) go through ``json`` into typed dataclasses.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engine._core.instrument import Instrument
from engine.errors import DecodeError, FeedError
from feeds.botplatform_decode import BotPlatformDecoder
from feeds.symbols import SymbolInfo, SymbolRegistry
from feeds.venue import Endpoint, Venue

if TYPE_CHECKING:
    from engine.engine import Engine
    from feeds._hotpath import Dispatch
    from feeds.session import Feed, Secret

log = logging.getLogger("feeds.botplatform")

__all__ = ["BotPlatformVenue", "ENERGY_DECIMALS", "NftEnergy", "Notification", "is_terminal_close",
           "parse_symbol"]

#: NFT energy is sent as an integer count of 10**-ENERGY_DECIMALS.
ENERGY_DECIMALS = 8
ENERGY_ASSET = "NFT_ENERGY"


def is_terminal_close(code: int) -> bool:
    """Close codes 4000-4499 (invalid token, forbidden, bad request) mean "do not
    reconnect"; every other code reconnects."""
    return 4000 <= code <= 4499


@dataclass(frozen=True, slots=True)
class NftEnergy:
    """An ``NftEnergyUpdate`` as applied: ``energy_units`` is the venue's integer
    (the energy times 10**8), ``ts_ns`` the venue time, ``recv_ns`` the local receive
    time, ``changed`` whether the account's NFT_ENERGY balance changed."""

    user_id: str
    energy_units: int
    ts_ns: int
    recv_ns: int
    changed: bool

    @property
    def energy(self) -> Decimal:
        """The energy as an exact Decimal (energy_units / 10**8)."""
        return Decimal(self.energy_units).scaleb(-ENERGY_DECIMALS)


@dataclass(frozen=True, slots=True)
class Notification:
    """A general ``Notification`` of the user (cold message, decoded with ``json``).
    ``extra`` holds any further fields the venue sent."""

    user_id: str
    notification_id: str
    level: str
    title: str
    message: str
    ts_ns: int
    recv_ns: int
    seq: int
    extra: dict[str, Any] = field(default_factory=dict)


def _bad(what: str, detail: str) -> DecodeError:
    return DecodeError(f"botplatform {what}: {detail}")


def _opt_time(obj: dict[str, Any], key: str, what: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _bad(what, f"{key} must be an integer ns time or null, got {value!r}")
    return value


def parse_symbol(obj: Any) -> SymbolInfo:
    """One symbol object of a ``Symbol``/``SymbolUpdate`` message -> SymbolInfo.
    DecodeError naming the field and value when it does not follow the schema."""
    if not isinstance(obj, dict):
        raise _bad("symbol", f"expected an object, got {obj!r}")
    sym = obj.get("symbol")
    if not isinstance(sym, str) or not sym:
        raise _bad("symbol", f"symbol must be a non-empty string, got {sym!r}")
    flags = {}
    for key in ("can_trade", "is_active"):
        value = obj.get(key)
        if type(value) is not bool:
            raise _bad(f"symbol {sym}", f"{key} must be true or false, got {value!r}")
        flags[key] = value
    return SymbolInfo(sym, flags["can_trade"], flags["is_active"],
                      _opt_time(obj, "list_time", f"symbol {sym}"), _opt_time(obj, "exp_time", f"symbol {sym}"))


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:  # jscan validated the bytes already; defensive
        raise _bad(what, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _bad(what, "data must be an object")
    return obj


class BotPlatformVenue(Venue):
    """Bot platform adapter (protocol in the module docstring).

    Extra options: ``symbols`` (a SymbolRegistry to keep up to date, e.g. shared with
    other code; default a new one, ``venue.symbols``). ``account_id`` names the engine
    account the User stream updates (default: the feed name). A token is required."""

    name = "botplatform"
    max_message_size = 4 << 20  # a Snapshot lists every position and order of the session
    stale_after_s = 15.0        # the server heartbeats every 5 s
    heartbeat_interval_s = None

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 symbols: SymbolRegistry | None = None) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        if token is None:
            raise FeedError("botplatform needs a token", terminal=True)
        self.symbols = symbols if symbols is not None else SymbolRegistry()
        self.account: Any = engine.account(account_id or name)
        self.decoder: BotPlatformDecoder | None = None
        self.energy: NftEnergy | None = None
        self.notifications = 0
        self.gaps = 0
        self._energy_cbs: list[Callable[[NftEnergy], Any]] = []
        self._notification_cbs: list[Callable[[Notification], Any]] = []

    # ---- wiring ----------------------------------------------------------------------
    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Build the decoder once the engine wired us."""
        super().bind(feed, dispatch)
        dec = BotPlatformDecoder(self, self.account, dispatch, self.instruments)
        self.decoder = dec
        # The session's listener hands picows' buffer to the decoder in C.
        self.frame_sink = dec

    def on_energy(self, callback: Callable[[NftEnergy], Any]) -> Callable[[NftEnergy], Any]:
        """``callback(NftEnergy)`` after every applied NftEnergyUpdate (and the energy
        of each Snapshot). Returns the callback."""
        if not callable(callback):
            raise TypeError(f"on_energy needs a callable, got {type(callback).__name__}")
        self._energy_cbs.append(callback)
        return callback

    def on_notification(self, callback: Callable[[Notification], Any]) -> Callable[[Notification], Any]:
        """``callback(Notification)`` for every user Notification. Returns the callback."""
        if not callable(callback):
            raise TypeError(f"on_notification needs a callable, got {type(callback).__name__}")
        self._notification_cbs.append(callback)
        return callback

    def endpoint(self) -> Endpoint:
        """The URL as given: the token goes in the first message, never in the URL."""
        return Endpoint(self.url)

    # ---- session hooks -----------------------------------------------------------------
    def on_open(self, feed: "Feed") -> None:
        """Authenticate and subscribe; the Snapshot that follows marks "subscribed"."""
        assert self.decoder is not None and self.token is not None
        self.decoder.reset_connection()
        feed.send_text(json.dumps({"event": "Auth", "data": {"token": self.token.reveal()}},
                                  separators=(",", ":")))
        feed.send_text(b'{"event":"Subscribe","data":{"topics":["User","Symbol"]}}')

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools, replay): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("botplatform venue used before bind()")
        self.decoder.feed(payload, recv_ns)

    def is_terminal_close_code(self, code: int) -> bool:
        """See the module's ``is_terminal_close``."""
        return is_terminal_close(code)

    def describe(self) -> dict[str, object]:
        """Sequence state and decoder counters (no secrets)."""
        dec = self.decoder
        out: dict[str, object] = {"symbols": len(self.symbols),
                                  "tradable": len(self.symbols.tradable_symbols()),
                                  "notifications": self.notifications}
        if dec is not None:
            out.update(user_id=dec.user_id, last_seq=dec.last_seq, synced=dec.synced,
                       applied=dec.applied, rejected=dec.rejected, stale=dec.stale_messages,
                       unsynced_dropped=dec.unsynced_dropped, superseded=dec.superseded,
                       unknown_symbol=dec.unknown_symbol, heartbeats=dec.heartbeats)
        if self.energy is not None:
            out["energy"] = str(self.energy.energy)
        return out

    # ---- handlers called by the decoder (after it applied the state) --------------------
    def on_auth(self, raw: bytes) -> None:
        """AuthOk: remember the user id. AuthError: terminal (bad credentials)."""
        obj = _load(raw, "Auth")
        kind = obj.get("type")
        if kind == "AuthOk":
            user_id = obj.get("user_id")
            if not isinstance(user_id, str) or not user_id:
                raise _bad("AuthOk", f"user_id must be a non-empty string, got {user_id!r}")
            assert self.decoder is not None
            self.decoder.user_id = user_id
            return
        if kind == "AuthError":
            raise FeedError(f"auth rejected: {obj.get('code')} {obj.get('message')}", terminal=True)
        raise _bad("Auth", f"unknown type {kind!r}")

    def on_symbols(self, raw: bytes, recv_ns: int) -> None:
        """``Symbol`` (whole list) or ``SymbolUpdate`` (one symbol): validated whole, then
        the registry changes and its callbacks run."""
        obj = _load(raw, "Symbol")
        kind = obj.get("type")
        if kind == "SymbolUpdate":
            self.symbols.update(parse_symbol(obj))
        elif kind == "Symbol":
            items = obj.get("symbols")
            if not isinstance(items, list):
                raise _bad("Symbol", f"symbols must be a list, got {type(items).__name__}")
            infos = [parse_symbol(x) for x in items]
            try:
                self.symbols.replace_all(infos)
            except ValueError as exc:
                raise _bad("Symbol", str(exc)) from None
        else:
            self.on_unknown(f"Symbol/{kind}", None)

    def on_synced(self, seq: int) -> None:
        """The connection's Snapshot was applied: the feed is live."""
        assert self.feed is not None
        self.feed.subscribed(f"snapshot at seq {seq}")

    def on_gap(self, expected: int, got: int) -> None:
        """A User seq jump: count it and reconnect (the new Snapshot resyncs)."""
        assert self.feed is not None
        self.gaps += 1
        self.feed.count_gap()
        self.feed.count_resync()
        log.warning("%s: seq gap: expected %d, got %d; resyncing", self.name, expected, got)
        self.feed.resync(f"seq gap: expected {expected}, got {got}")

    def on_energy_applied(self, energy_units: int, ts_ns: int, changed: bool, recv_ns: int) -> None:
        """NftEnergyUpdate (or a Snapshot's energy) was applied to the account."""
        user_id = self.decoder.user_id if self.decoder is not None else ""
        self.energy = NftEnergy(user_id, energy_units, ts_ns, recv_ns, changed)
        assert self.dispatch is not None
        if changed and self.dispatch.wants("balance"):
            self.dispatch.balance(self.account.balance(ENERGY_ASSET), recv_ns)
        if self._energy_cbs:
            self.engine._invoke(self._energy_cbs, self.energy, self._counters())

    def parse_user_message(self, kind: str, raw: bytes, seq: int, recv_ns: int) -> Notification | None:
        """Cold User messages, parsed before anything is applied: a Notification (typed;
        DecodeError naming the field when it breaks the schema), None for other types
        (logged and skipped)."""
        if kind != "Notification":
            self.on_unknown(f"User/{kind}", None)
            return None
        obj = _load(raw, "Notification")
        note_id, ts = obj.pop("id", None), obj.pop("ts", 0)
        texts = {k: obj.pop(k, default) for k, default in (("level", "info"), ("title", ""), ("message", ""))}
        if not isinstance(note_id, str) or not note_id:
            raise _bad("Notification", f"id must be a non-empty string, got {note_id!r}")
        if type(ts) is not int:
            raise _bad(f"Notification {note_id}", f"ts must be an integer ns time, got {ts!r}")
        for key, value in texts.items():
            if not isinstance(value, str):
                raise _bad(f"Notification {note_id}", f"{key} must be a string, got {value!r}")
        obj.pop("type", None)
        return Notification(self.decoder.user_id if self.decoder is not None else "", note_id,
                            texts["level"], texts["title"], texts["message"], ts, recv_ns, seq, obj)

    def on_notification_applied(self, note: Notification) -> None:
        """A Notification's seq was applied: count it and run the callbacks."""
        self.notifications += 1
        if self._notification_cbs:
            self.engine._invoke(self._notification_cbs, note, self._counters())

    def on_refused(self, what: str, object_id: str | None) -> None:
        """The Account refused a well-formed update (already counted and reported)."""
        log.warning("%s: %s %s refused by the account (state unchanged)", self.name, what, object_id)

    def on_superseded(self, position_id: str, symbol: str) -> None:
        """An update for an earlier position of ``symbol``: ignored."""
        log.info("%s: update for superseded position %s on %s ignored", self.name, position_id, symbol)

    def on_unknown(self, kind: str | None, symbol: str | None) -> None:
        """An event/type this client does not know, or an untracked symbol: skipped."""
        if kind is not None:
            log.info("%s: unknown message %r skipped", self.name, kind)
        else:
            log.debug("%s: update for untracked symbol %r skipped", self.name, symbol)

    def _counters(self) -> Any:
        return self.feed.counters if self.feed is not None else None
