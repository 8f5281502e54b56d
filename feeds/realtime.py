"""Realtime venue adapter: JSON ``{"type":…}`` messages with JWT auth, market data,
chat, presence, notifications, posts and sessions.

Protocol (v1; the seed names the messages and limits, this module fixes the shapes and
``feeds.sim.realtime`` speaks exactly this). One JSON object per text frame.

Client -> server::

    {"type":"auth","token":"<JWT>"}                                   first, once
    {"type":"subscribe","channel":"chatroom","room":"general"}         one per room
    {"type":"subscribe","channel":"notifications"}
    {"type":"subscribe","channel":"market","symbols":["BTC-USDT","ETH-USDT"]}
    {"type":"ping","ts":<ns>}                                          every ping_interval_s
    {"type":"chat:send","room":"general","text":"hello"}

Server -> client::

    {"type":"auth:ok","userId":"u-1"}
    {"type":"auth:error","message":"invalid token"}     then close 4401 (terminal)
    {"type":"subscribed","channel":"market","symbols":[…]}   ("room" for chatroom)
    {"type":"pong","ts":<the ping's ts>}
    {"type":"error","code":400,"message":"…"}           a refused request; connection kept
    {"type":"market:price","symbol":"BTC-USDT","price":"61837.63","change":"-12.50",
     "changePercent":"-0.020208","ts":<ns>}
    {"type":"trade:created","symbol":"BTC-USDT","id":"T-88","price":"61837.63",
     "qty":"0.01500","side":"buy","ts":<ns>}
    chat:message, user:online, notification:new, post:created, session:started
                                                        (shapes in feeds.realtime_events)

Choices the seed is silent on: one flat object per message (no ``data`` envelope);
decimal strings for prices and sizes, integer ns for ``ts``; changePercent has at most
6 decimals (more is refused: never rounded). ``type`` normally comes first; when it
does not, the hot-message field names (symbol, price, change, changePercent, qty,
side, id) must hold strings and ``ts`` an integer in every message type. The
connection counts as subscribed once every subscription is acknowledged. There is no
sequence number and no replay: trades and events published while disconnected are
lost (counted nowhere, the protocol cannot tell); quotes heal at the next
``market:price`` since each carries the absolute last price, and the server re-sends
the current quote of each symbol after a ``market`` subscription.

Mapping into the engine
-----------------------
- ``market:price`` updates the symbol's :class:`~feeds.realtime_decode.Quote` (exact:
  ``last_price_ticks``, ``change_ticks``, ``change_pct_units`` = changePercent in
  10**-6 %), then ``on_quote`` callbacks. It does NOT touch the order book: a last
  traded price is not a bid or an ask, and writing it as the book top would invent
  liquidity. Read ``venue.quotes[symbol]`` / ``venue.last_price(symbol)`` any time.
- ``trade:created`` becomes an ``engine.Trade`` through the engine's Dispatch: the
  symbol's kline aggregator, then ``Engine.on_trade`` callbacks.
- chat:message, user:online, notification:new, post:created, session:started become
  typed dataclasses (``feeds.realtime_events``) delivered to ``venue.on_event(cb)``
  callbacks (the engine's Dispatch has no generic event kind; the venue calls them
  through the engine's one callback wrapper, ``feeds._hotpath.invoke_callbacks``, so
  errors are logged and counted alike and receive-to-callback latency is recorded).
- ``await venue.send_chat(room, text)`` sends ``chat:send``.

Limits and timing (defaults from the seed; all configurable for tests)
----------------------------------------------------------------------
- Client ``ping`` every ``ping_interval_s`` (30 s); no ``pong`` within
  ``pong_timeout_s`` (default: the ping interval) -> reconnect.
- Reconnect delay min(1 s x 2^n, 30 s), at most 5 attempts, then status "failed":
  applied to the session's backoff options in ``bind`` unless the caller passed other
  values than the SessionOptions defaults (backoff_initial_s=1, backoff_factor=2,
  backoff_max_s=30, jitter=0, max_attempts=5). The attempt count resets once a
  connection is subscribed. After a drop the waits are 1, 2, 4, 8, 16 s and the fifth
  failed attempt reports "failed" at once.
- 64 KB maximum message size (``max_message_bytes``): a bigger incoming message is
  refused by the decoder with a DecodeError naming both sizes (counted; the connection
  survives). Frames above the transport cap (``max_message_size``, 1 MB) make the
  session close with 1009 and reconnect. Outgoing messages above 64 KB raise
  ValueError before anything is sent (the server would close on them).
- 60 s connection timeout (``connect_timeout_s``): the socket handshake, and then
  ``auth`` + every subscription acknowledged, must each finish within it.
- At most ``send_rate`` (100) sent messages per ``send_window_s`` (60 s), enforced on
  the client with a sliding window over every message sent. Protocol messages (auth,
  subscribe, ping) are never delayed but count; user sends (``send_chat``) use at most
  ``send_rate - control_reserve`` slots, wait in a FIFO of at most ``send_queue`` when
  the window is full, and raise :class:`SendQueueFullError` when that queue is full.
  A waiting send whose connection closes raises FeedError (it was not sent).
- Terminal: ``auth:error``, an ``error`` while subscriptions are pending (a refused
  subscription), close codes 4401/4403, HTTP 401/403. Everything else reconnects; an
  ``error`` once subscribed (e.g. a refused chat:send) is counted and logged.

The JWT is a ``Secret``: revealed only into the ``auth`` message, never logged, in a
repr or in an error (the session masks any text that could echo it).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engine._core.instrument import Instrument
from engine.errors import DecodeError, EngineError, FeedError
from feeds._hotpath import invoke_callbacks, time_ns
from feeds.realtime_decode import Quote, RealtimeDecoder
from feeds.realtime_events import EVENT_TYPES, RealtimeEvent, SessionStarted, decode_event, parse_object
from feeds.session import SessionOptions, mask_secrets
from feeds.venue import CloseDecision, CloseInfo, Endpoint, Venue

if TYPE_CHECKING:
    from engine.engine import Dispatch, Engine
    from feeds.session import Feed, Secret

log = logging.getLogger("feeds.realtime")

__all__ = ["RealtimeVenue", "SendRateLimiter", "SendQueueFullError", "TERMINAL_CLOSE_CODES",
           "SESSION_POLICY"]

#: Close codes after which reconnecting cannot help (bad or expired JWT, forbidden).
TERMINAL_CLOSE_CODES = frozenset({4401, 4403})

#: The seed's reconnect/timeout policy, applied to SessionOptions fields left at their
#: defaults: delay min(1 s * 2^n, 30 s), at most 5 attempts, 60 s connection timeout.
SESSION_POLICY: dict[str, Any] = {
    "backoff_initial_s": 1.0, "backoff_factor": 2.0, "backoff_max_s": 30.0, "jitter": 0.0,
    "max_attempts": 5, "connect_timeout_s": 60.0,
}


class SendQueueFullError(EngineError):
    """A send could not even wait: the rate-limit queue is full."""


class SendRateLimiter:
    """Sliding-window send limiter: at most ``rate`` messages per ``window_s`` seconds.

    ``record()`` counts a message sent now (protocol messages: never delayed).
    ``await acquire()`` takes a user slot: at once when fewer than ``rate - reserve``
    messages were sent in the last ``window_s`` and nobody waits; otherwise it waits in
    a FIFO of at most ``max_queue`` (beyond: SendQueueFullError). One loop timer wakes
    the queue when the oldest message leaves the window. O(1) amortized per message.
    ``fail_all(exc)`` ends every waiter with ``exc``; ``close()`` cancels the timer."""

    def __init__(self, rate: int, window_s: float, max_queue: int, reserve: int = 0) -> None:
        if rate <= 0 or window_s <= 0 or max_queue < 0 or not 0 <= reserve < rate:
            raise ValueError(f"bad rate limit: rate={rate} window_s={window_s} max_queue={max_queue} "
                             f"reserve={reserve} (need rate > reserve >= 0, window_s > 0, max_queue >= 0)")
        self.rate = rate
        self.window_s = window_s
        self.max_queue = max_queue
        self.reserve = reserve
        self._sent: deque[float] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.waited = 0   # sends that had to queue

    @property
    def queued(self) -> int:
        """Sends waiting for a slot."""
        return len(self._waiters)

    def in_window(self, now: float | None = None) -> int:
        """Messages sent within the last ``window_s`` (loop time)."""
        self._prune(asyncio.get_running_loop().time() if now is None else now)
        return len(self._sent)

    def _prune(self, now: float) -> None:
        edge = now - self.window_s
        sent = self._sent
        while sent and sent[0] <= edge:
            sent.popleft()

    def record(self) -> None:
        """Count one message sent now."""
        now = asyncio.get_running_loop().time()
        self._prune(now)
        self._sent.append(now)

    def _free(self) -> bool:
        return len(self._sent) < self.rate - self.reserve

    async def acquire(self) -> None:
        """Wait for a user slot (see the class docstring); the slot is counted as sent."""
        loop = asyncio.get_running_loop()
        self._prune(loop.time())
        if not self._waiters and self._free():
            self._sent.append(loop.time())
            return
        if len(self._waiters) >= self.max_queue:
            raise SendQueueFullError(
                f"send queue full: {self.max_queue} messages already wait for the send rate limit "
                f"({self.rate - self.reserve} user messages per {self.window_s:g} s)")
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.waited += 1
        self._arm(loop)
        try:
            await fut
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None or not self._waiters:
            return
        when = self._sent[0] + self.window_s if len(self._sent) >= self.rate - self.reserve and self._sent \
            else loop.time()
        self._timer = loop.call_at(when, self._wake)

    def _wake(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._prune(now)
        while self._waiters and self._free():
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._sent.append(now)
            fut.set_result(None)
        self._arm(loop)

    def fail_all(self, exc: BaseException) -> None:
        """Every waiting send raises ``exc``."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self.close()

    def close(self) -> None:
        """Cancel the wake-up timer (nothing left scheduled on the loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RealtimeVenue(Venue):
    """Realtime adapter (see the module docstring).

    Options: ``rooms`` (chatrooms to join, default ("general",)), ``notifications``
    (subscribe to them, default True), ``ping_interval_s`` (30), ``pong_timeout_s``
    (default = ping interval), ``max_message_bytes`` (65536), ``send_rate`` (100),
    ``send_window_s`` (60), ``send_queue`` (100 waiting sends), ``control_reserve``
    (slots of the window kept for protocol messages, 5).

    State: ``quotes`` (symbol -> Quote), ``user_id`` / ``session_id`` (from the server),
    counters ``events`` (by type), ``server_errors``, ``pongs``, ``chat_sent``.
    """

    name = "realtime"
    max_message_size = 1 << 20   # transport cap; the protocol's 64 KB limit is the decoder's
    stale_after_s = None         # ping/pong detects a dead peer
    heartbeat_interval_s = 1.0   # replaced per instance from ping_interval_s

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 rooms: Sequence[str] = ("general",), notifications: bool = True,
                 ping_interval_s: float = 30.0, pong_timeout_s: float | None = None,
                 max_message_bytes: int = 64 * 1024, send_rate: int = 100, send_window_s: float = 60.0,
                 send_queue: int = 100, control_reserve: int = 5) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        if token is None or not token:
            raise FeedError("realtime needs a JWT (token=...)", terminal=True)
        if isinstance(rooms, str):
            raise TypeError("rooms must be a sequence of room names, not a str")
        if ping_interval_s <= 0:
            raise ValueError(f"ping_interval_s must be positive, got {ping_interval_s}")
        self.rooms = list(dict.fromkeys(rooms))
        self.notifications = notifications
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = ping_interval_s if pong_timeout_s is None else pong_timeout_s
        self.heartbeat_interval_s = min(1.0, ping_interval_s / 4, self.pong_timeout_s / 4)
        self.max_message_bytes = max_message_bytes
        self.limiter = SendRateLimiter(send_rate, send_window_s, send_queue, control_reserve)
        self.quotes: dict[str, Quote] = {inst.symbol: Quote(inst) for inst in self.instruments}
        self.decoder: RealtimeDecoder | None = None
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.events: dict[str, int] = {}
        self.server_errors = 0
        self.last_server_error: tuple[int, str] | None = None
        self.pongs = 0
        self.chat_sent = 0
        self._event_cbs: list[Callable[[Any], Any]] = []
        self._quote_cbs: list[Callable[[Any], Any]] = []
        self._connect_timeout_s = SESSION_POLICY["connect_timeout_s"]
        self._reset_connection()

    def __repr__(self) -> str:
        return (f"RealtimeVenue({self.name!r}, user={self.user_id!r}, symbols={list(self.quotes)}, "
                f"rooms={self.rooms})")

    def _reset_connection(self) -> None:
        self._authed = False
        self._ready = False
        self._pending: set[str] = set()
        self._opened_ns = time.monotonic_ns()
        self._last_ping_ns = 0
        self._ping_outstanding_ns = 0

    # ---- wiring ----------------------------------------------------------------------
    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Apply the seed's session policy (defaults only) and build the decoder."""
        super().bind(feed, dispatch)
        defaults = SessionOptions()
        for field_name, value in SESSION_POLICY.items():
            if getattr(feed.options, field_name) == getattr(defaults, field_name):
                setattr(feed.options, field_name, value)
        self._connect_timeout_s = feed.options.connect_timeout_s
        from engine.engine import Trade
        dec = RealtimeDecoder(self, dispatch, Trade, self.quotes.values(), self.max_message_bytes)
        dec.emit_quotes = bool(self._quote_cbs)
        self.decoder = dec
        # The session's listener hands picows' buffer to the decoder in C.
        self.frame_sink = dec

    def endpoint(self) -> Endpoint:
        """The URL as given; the JWT travels in the ``auth`` message."""
        return Endpoint(self.url)

    # ---- public API ---------------------------------------------------------------------
    def on_event(self, callback: Callable[[RealtimeEvent], Any]) -> Callable[[RealtimeEvent], Any]:
        """``callback(event)`` for every chat:message, user:online, notification:new,
        post:created and session:started (typed dataclasses of feeds.realtime_events).
        Runs through the engine's callback wrapper. Returns the callback."""
        if not callable(callback):
            raise TypeError(f"on_event needs a callable, got {type(callback).__name__}")
        self._event_cbs.append(callback)
        return callback

    def on_quote(self, callback: Callable[[Quote], Any]) -> Callable[[Quote], Any]:
        """``callback(quote)`` after every market:price applied (the Quote itself)."""
        if not callable(callback):
            raise TypeError(f"on_quote needs a callable, got {type(callback).__name__}")
        self._quote_cbs.append(callback)
        if self.decoder is not None:
            self.decoder.emit_quotes = True
        return callback

    def last_price(self, symbol: str) -> str | None:
        """The symbol's last price (exact decimal string; None before the first
        market:price). EngineError for a symbol this feed does not track."""
        return self._quote(symbol).last_price

    def change(self, symbol: str) -> str | None:
        """The symbol's change as the venue reported it (exact decimal string)."""
        return self._quote(symbol).change

    def _quote(self, symbol: str) -> Quote:
        try:
            return self.quotes[symbol]
        except KeyError:
            raise EngineError(f"{self.name}: no quote for {symbol!r}; tracked: {sorted(self.quotes)}") from None

    @property
    def ready(self) -> bool:
        """True while the connection is authenticated and every subscription confirmed."""
        return self._ready

    async def send_chat(self, room: str, text: str) -> None:
        """Send ``chat:send`` to ``room``, within the send rate limit (may wait; see the
        module docstring). Raises ValueError for a message above max_message_bytes,
        SendQueueFullError when too many sends already wait, FeedError when the
        connection is not ready when the message's turn comes (it was not sent)."""
        if not isinstance(room, str) or not isinstance(text, str):
            raise TypeError("send_chat(room, text) takes two strings")
        data = json.dumps({"type": "chat:send", "room": room, "text": text}, separators=(",", ":")).encode()
        if len(data) > self.max_message_bytes:
            raise ValueError(f"chat message of {len(data)} bytes exceeds the maximum message size "
                             f"of {self.max_message_bytes} bytes; not sent")
        await self.limiter.acquire()
        if not self._ready or self.feed is None:
            raise FeedError(f"{self.name}: not connected; chat message not sent")
        self.feed.send_text(data)
        self.chat_sent += 1

    # ---- session hooks -----------------------------------------------------------------
    def _send_control(self, body: dict[str, Any]) -> None:
        assert self.feed is not None
        self.limiter.record()
        self.feed.send_text(json.dumps(body, separators=(",", ":")))

    def on_open(self, feed: "Feed") -> None:
        """Authenticate first; subscriptions follow ``auth:ok``."""
        assert self.token is not None
        self._reset_connection()
        self.limiter.record()
        feed.send_text(json.dumps({"type": "auth", "token": self.token.reveal()}, separators=(",", ":")))

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools, replay): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("realtime venue used before bind()")
        self.decoder.feed(payload, recv_ns)

    def heartbeat(self, now_ns: int) -> None:
        """Ping every ``ping_interval_s``; no pong in time, or not authenticated and
        subscribed within the connection timeout: reconnect."""
        mono = time.monotonic_ns()
        if not self._ready:
            if mono - self._opened_ns > self._connect_timeout_s * 1e9:
                what = "subscriptions" if self._authed else "auth reply"
                raise FeedError(f"connection timeout: no {what} within {self._connect_timeout_s:g} s")
            return
        if self._ping_outstanding_ns and mono - self._ping_outstanding_ns > self.pong_timeout_s * 1e9:
            raise FeedError(f"no pong within {self.pong_timeout_s:g} s")
        if mono - self._last_ping_ns >= self.ping_interval_s * 1e9:
            self._last_ping_ns = mono
            if not self._ping_outstanding_ns:
                self._ping_outstanding_ns = mono
            self._send_control({"type": "ping", "ts": now_ns})

    def on_close(self, close: CloseInfo) -> CloseDecision:
        """auth:error, 4401/4403 and HTTP 401/403 are terminal; the rest reconnects.
        Sends still waiting for the rate limit fail (they were not sent)."""
        self._ready = False
        self.limiter.fail_all(FeedError(f"{self.name}: connection closed ({close.reason}); "
                                        "chat message not sent"))
        return super().on_close(close)

    def is_terminal_close_code(self, code: int) -> bool:
        """4401 and 4403 (see TERMINAL_CLOSE_CODES)."""
        return code in TERMINAL_CLOSE_CODES

    def describe(self) -> dict[str, object]:
        """Quotes, event counts and limiter state (no secrets)."""
        dec = self.decoder
        return {
            "user_id": self.user_id,
            "ready": self._ready,
            "quotes": {s: {"last": q.last_price, "change": q.change, "change_percent": q.change_percent,
                           "updates": q.updates} for s, q in self.quotes.items()},
            "events": dict(self.events),
            "trades": dec.trades if dec else 0,
            "oversize": dec.oversize if dec else 0,
            "server_errors": self.server_errors,
            "pongs": self.pongs,
            "chat_sent": self.chat_sent,
            "send_queue": self.limiter.queued,
        }

    # ---- cold path, called by the decoder ---------------------------------------------------
    def quote_updated(self, quote: Quote, recv_ns: int) -> None:
        """Decoder hook after a market:price was applied (only while quote callbacks
        exist): the venue's ``on_quote`` callbacks."""
        self._emit(self._quote_cbs, quote, recv_ns)

    def on_message(self, kind: str, raw: bytes, recv_ns: int) -> None:
        """Every message that is not market:price / trade:created."""
        if kind in EVENT_TYPES:
            event = decode_event(kind, raw, recv_ns)
            self.events[kind] = self.events.get(kind, 0) + 1
            if isinstance(event, SessionStarted):
                self.session_id = event.session_id
            self._emit(self._event_cbs, event, recv_ns)
            return
        if kind == "pong":
            self.pongs += 1
            self._ping_outstanding_ns = 0
        elif kind == "auth:ok":
            self._on_auth_ok(parse_object(kind, raw))
        elif kind == "auth:error":
            msg = parse_object(kind, raw).get("message", "")
            raise FeedError(f"authentication refused: {mask_secrets(str(msg))}", terminal=True)
        elif kind == "subscribed":
            self._on_subscribed(parse_object(kind, raw))
        elif kind == "error":
            body = parse_object(kind, raw)
            code = body.get("code", 0)
            self.server_errors += 1
            self.last_server_error = (code if isinstance(code, int) else 0, mask_secrets(str(body.get("message", ""))))
            log.warning("%s: server error %s: %s", self.name, *self.last_server_error)
            if self._authed and not self._ready:
                # A subscription was refused (unknown symbol, room not allowed): the same
                # request would be refused again, so reconnecting cannot help.
                raise FeedError("subscription refused: {} {}".format(*self.last_server_error), terminal=True)
        else:
            self.events[kind] = self.events.get(kind, 0) + 1
            log.info("%s: ignored message type %r", self.name, kind)

    def _emit(self, cbs: list[Callable[[Any], Any]], obj: Any, recv_ns: int) -> None:
        counters = self.feed.counters if self.feed is not None else None
        if counters is not None:
            counters.latency.add(time_ns() - recv_ns)
        if cbs:
            invoke_callbacks(cbs, obj, self.engine, counters)

    def _on_auth_ok(self, body: dict[str, Any]) -> None:
        user = body.get("userId")
        if not isinstance(user, str):
            raise DecodeError("realtime auth:ok: field 'userId' missing or not a string")
        self.user_id = user
        self._authed = True
        self._opened_ns = time.monotonic_ns()  # the subscriptions get their own timeout
        self._pending = {f"chatroom:{r}" for r in self.rooms}
        for room in self.rooms:
            self._send_control({"type": "subscribe", "channel": "chatroom", "room": room})
        if self.notifications:
            self._pending.add("notifications")
            self._send_control({"type": "subscribe", "channel": "notifications"})
        if self.quotes:
            self._pending.add("market")
            self._send_control({"type": "subscribe", "channel": "market", "symbols": list(self.quotes)})
        if not self._pending:
            self._set_ready()

    def _on_subscribed(self, body: dict[str, Any]) -> None:
        channel = body.get("channel")
        key = f"chatroom:{body.get('room')}" if channel == "chatroom" else channel
        if not isinstance(key, str) or key not in self._pending:
            log.info("%s: unexpected subscription ack %r", self.name, key)
            return
        self._pending.discard(key)
        if not self._pending:
            self._set_ready()

    def _set_ready(self) -> None:
        assert self.feed is not None
        self._ready = True
        self._last_ping_ns = time.monotonic_ns()
        self.feed.subscribed(f"authenticated as {self.user_id}; {len(self.rooms)} rooms, "
                             f"{len(self.quotes)} symbols")

