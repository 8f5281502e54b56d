"""Connection lifecycle shared by every venue: one ``Feed`` per venue connection.

The feed owns the socket (picows, on whatever loop runs it: uvloop by default through
``engine.Engine``, plain asyncio works too), and everything that is the same for every
protocol:

- connect timeout; TLS with certificate verification on by default for ``wss://``
  (``SessionOptions.ssl_context`` to pin a CA, ``verify_tls=False`` only for tests);
- headers and query parameters (values may be ``Secret``);
- a maximum message size per venue (picows closes with 1009 on a bigger frame; the
  feed reconnects with reason "oversize frame");
- heartbeats: the venue's ``heartbeat`` every ``heartbeat_interval_s``, and optional
  WebSocket-level pings (picows auto-ping) for protocols that use them;
- stale-feed detection: no frame for ``stale_after_s`` -> status "stale", reconnect;
- reconnect with exponential backoff, jitter and a cap; the venue resubscribes and
  resyncs in its ``on_open``; terminal errors (bad credentials, permission denied,
  terminal close codes) end the feed in status "failed";
- clean shutdown: ``await feed.close()`` closes the socket and every task it started,
  at once even while a connect or handshake is in flight (abandoned and its socket cut);
- status events: connecting, connected, subscribed, stale, reconnecting, failed,
  closed, each with a reason;
- counters: frames, bytes, decode errors, gaps, resyncs, reconnects, and
  receive-to-callback latency percentiles from a fixed-size ring of samples;
- optional recording of every received frame with its receive time (``recorder``, or
  ``record_path``: appended to, secrets scrubbed).

Secrets never reach logs, reprs or errors: wrap tokens in ``Secret`` (its repr is
masked); every message the feed logs (with its traceback) or puts in a status reason
goes through ``mask_secrets`` which replaces any secret value, raw or percent-encoded
as in a URL, with ``***``.

Hot path (compiled, ``feeds._hotpath``): picows calls ``FrameListener.on_ws_frame`` with
a frame whose payload borrows the read buffer; the listener takes the receive time,
bumps two counters and hands the payload pointer to the venue's ``frame_sink`` (C), or a
memoryview to its ``on_frame``, in the same call. Nothing is copied unless recording is
on. This module (``_Listener`` and ``Feed``) handles everything rare: close frames,
fragments, errors, reconnects.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import random
import socket
import ssl
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import quote, quote_plus, urlencode, urlsplit, urlunsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from engine.errors import DecodeError, FeedError
from feeds._hotpath import FeedCounters, FrameListener, LatencyRing
from feeds._hotpath import time_ns as _time_ns
from feeds.venue import CloseInfo, Reconnect, Terminal, Venue


__all__ = [
    "Feed",
    "FeedCounters",
    "FeedStatus",
    "LatencyRing",
    "Recorder",
    "Secret",
    "SessionOptions",
    "StatusEvent",
    "mask_secrets",
    "mask_secrets_bytes",
]


class Secret:
    """A credential (token, API key) whose repr and str are masked.

    ``reveal()`` returns the value; call it only where the value goes on the wire.
    Every Secret value (4+ characters) is remembered in a process-wide registry, with
    the percent-encoded forms ``urllib.parse.quote``/``quote_plus`` (and so
    ``urlencode``) give it in a URL, so that ``mask_secrets`` can scrub it out of any
    text a library might produce, such as an exception message that echoes a URL with
    a token in its query string. The registry only grows by the number of distinct
    credentials a process uses (at most 5 forms each).

    >>> s = Secret("abc123xyz")
    >>> s, str(s)
    (Secret('***'), '***')
    >>> s.reveal()
    'abc123xyz'
    """

    __slots__ = ("_value",)
    _registry: set[str] = set()
    # Every registered form, longest first: a secret that contains another one is
    # masked whole before the shorter one could split it. Rebuilt on registration.
    _masked: tuple[str, ...] = ()
    _masked_bytes: tuple[bytes, ...] = ()

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret value must be a str")
        self._value = value
        if len(value) >= 4:  # masking 1-3 character strings would scramble ordinary text
            Secret._register(value)

    @classmethod
    def _register(cls, value: str) -> None:
        forms = {value, quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="")}
        if forms <= cls._registry:
            return
        cls._registry |= forms
        cls._masked = tuple(sorted(cls._registry, key=len, reverse=True))
        cls._masked_bytes = tuple(v.encode("utf-8") for v in cls._masked)

    def reveal(self) -> str:
        """The secret itself. O(1)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret cannot be pickled")

    @classmethod
    def wrap(cls, value: "str | Secret | None") -> "Secret | None":
        """``None`` stays None, a Secret stays itself, a str becomes a Secret."""
        if value is None or isinstance(value, Secret):
            return value
        return cls(value)


def mask_secrets(text: str) -> str:
    """Replace every known secret value, raw or percent-encoded, in ``text`` with
    ``***``. O(len(text) * registered forms)."""
    for value in Secret._masked:
        if value in text:
            text = text.replace(value, "***")
    return text


def mask_secrets_bytes(data: bytes) -> bytes:
    """``mask_secrets`` for raw bytes (UTF-8 forms of every registered secret), used to
    scrub recorded frames. Returns ``data`` itself when it holds no secret.
    O(len(data) * registered forms)."""
    for value in Secret._masked_bytes:
        if value in data:
            data = data.replace(value, b"***")
    return data


def _reveal(value: "str | Secret") -> str:
    return value.reveal() if isinstance(value, Secret) else value


class _MaskingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger adapter that masks secrets in everything it logs: the formatted message
    and, when ``exc_info`` is given, the formatted exception with its traceback (an
    exception message may echo a URL with a token). Handed to picows (URLs on redirect,
    handshake errors) and used for this module's own log lines."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text = f"{text}\n{''.join(traceback.format_exception(*exc_info)).rstrip()}"
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # report the caller, not this adapter
        self.logger.log(level, mask_secrets(text), **kwargs)


# Every line this module logs goes through the masking adapter (message and traceback).
log = _MaskingAdapter(logging.getLogger("feeds.session"), {})


class FeedStatus(str, enum.Enum):
    """Lifecycle states reported through status callbacks."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class StatusEvent:
    """One status change: ``feed`` is the venue name, ``ts_ns`` wall-clock ns."""

    feed: str
    status: FeedStatus
    reason: str
    ts_ns: int


class Recorder(Protocol):
    """What a frame recorder offers the feed (``feeds.recording`` implements it)."""

    def write(self, recv_ns: int, payload: memoryview) -> None: ...  # pragma: no cover


@dataclass
class SessionOptions:
    """Connection options; venue class attributes give the defaults for ``None``.

    Times are seconds. After the n-th consecutive failure (a close that is not
    terminal; n resets once a connection subscribes) the feed waits
    ``backoff_initial_s * backoff_factor ** (n - 1)``, capped at ``backoff_max_s`` and
    scaled by a uniform factor in ``[1 - jitter, 1]``: 1, 2, 4, 8, 16 s for an initial
    1 s and factor 2. ``max_attempts``: connection attempts since the last subscribed
    connection before giving up ("failed" at once, with no further wait); None
    retries forever. ``seed`` makes the jitter reproducible. ``read_buffer_size``: picows'
    initial read buffer; it bounds how much one socket read takes in, so a bigger one
    means fewer reads (and event-loop wake-ups) during bursts. ``recorder`` (any object
    with ``write(recv_ns, payload)``) or ``record_path`` (a ``feeds.recording``
    lines file, gzip when it ends in ``.gz``; opened on ``start``, closed when the feed
    stops) records every received message with its receive time for ``python -m engine
    replay``. ``record_path`` is appended to, never truncated (a restarted feed adds to
    it), and registered ``Secret`` values are scrubbed from the recorded frames unless
    ``record_scrub_secrets=False`` (see ``feeds.recording.RecordingWriter``); a custom
    ``recorder`` gets the raw frames."""

    connect_timeout_s: float = 10.0
    verify_tls: bool = True
    ssl_context: ssl.SSLContext | None = None
    max_message_size: int | None = None
    stale_after_s: float | None = None
    heartbeat_interval_s: float | None = None
    ws_ping_interval_s: float | None = None
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 15.0
    backoff_factor: float = 2.0
    jitter: float = 0.3
    max_attempts: int | None = None
    seed: int | None = None
    latency_capacity: int = 4096
    read_buffer_size: int = 256 * 1024
    recorder: Recorder | None = None
    record_path: str | None = None
    record_scrub_secrets: bool = True


_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class _Listener(FrameListener):
    """picows listener for one connection attempt. The hot path (complete text/binary
    messages) is ``FrameListener.on_ws_frame`` in C; the rare paths live here."""

    def __init__(self, feed: "Feed") -> None:
        venue = feed.venue
        super().__init__(feed.counters, venue.on_frame, venue.frame_sink, feed._max_message_size,
                         feed.options.recorder)
        self.feed = feed
        self.fragments: bytearray | None = None
        self.peer_close: tuple[int, str] | None = None
        self.transport: WSTransport | None = None
        self.disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.last_frame_ns = _time_ns()

    def on_other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """CLOSE, fragments, PING/PONG (picows answers pings itself)."""
        msg_type = frame.msg_type
        if msg_type is _CLOSE:
            self._on_close_frame(frame)
        elif msg_type is _TEXT or msg_type is _BINARY or msg_type is _CONT:
            assembled = self._on_fragment(frame)
            if assembled is not None:
                self._deliver(transport, assembled)

    def _deliver(self, transport: WSTransport, data: bytearray) -> None:
        # An assembled fragmented message: same accounting as the C path.
        recv_ns = _time_ns()
        self.counters.frames += 1
        self.counters.bytes += len(data)
        if self.recorder is not None:
            self.recorder.write(recv_ns, memoryview(data))
        try:
            venue = self.feed.venue
            if venue.frame_sink is not None:
                venue.frame_sink.feed(data, recv_ns)
            else:
                venue.on_frame(memoryview(data), recv_ns)
        except DecodeError as exc:
            self.counters.decode_errors += 1
            self.on_decode_error(exc)
        except FeedError as exc:
            self.on_feed_error(transport, exc)
        except Exception as exc:
            self.counters.decode_errors += 1
            self.on_decoder_bug(exc)

    def on_oversize(self, transport: WSTransport) -> None:
        """A message above the venue's maximum size: close and reconnect."""
        self.feed._abort(FeedError("oversize frame"), WSCloseCode.MESSAGE_TOO_BIG, transport, self)

    def on_decode_error(self, exc: Exception) -> None:
        """A bad frame (already counted): logged; the connection stays."""
        log.warning("%s: dropped a bad frame: %s", self.feed.name, mask_secrets(str(exc)))

    def on_feed_error(self, transport: WSTransport, exc: FeedError) -> None:
        """The venue wants the connection closed (terminal or not)."""
        self.feed._abort(exc, transport=transport, listener=self)

    def on_decoder_bug(self, exc: Exception) -> None:
        """An unexpected exception from a decoder (already counted): logged with traceback."""
        log.error("%s: decoder raised %s", self.feed.name, mask_secrets(repr(exc)), exc_info=exc)

    def _on_fragment(self, frame: WSFrame) -> bytearray | None:
        # Fragmented messages are rare on market feeds; assemble them into an owned
        # buffer (the frames' payloads die with each callback) bounded by max_size.
        if frame.msg_type is not _CONT:
            self.fragments = bytearray()
        if self.fragments is None:
            self.feed._abort(FeedError("continuation frame without a start"), transport=self.transport,
                             listener=self)
            return None
        self.fragments += frame.get_payload_as_memoryview()
        if len(self.fragments) > self.max_size:
            self.fragments = None
            self.feed._abort(FeedError("oversize frame"), WSCloseCode.MESSAGE_TOO_BIG, self.transport, self)
            return None
        if not frame.fin:
            return None
        done, self.fragments = self.fragments, None
        return done

    def _on_close_frame(self, frame: WSFrame) -> None:
        raw = frame.get_payload_as_bytes()
        code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else 0
        reason = raw[2:].decode("utf-8", "replace")
        self.peer_close = (code, mask_secrets(reason))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)


class Feed:
    """One venue connection, kept alive across reconnects until closed or failed.

    Created by ``engine.Engine.connect``; start it with ``start()`` (inside a running
    loop) and stop it with ``await close()``. ``counters`` and ``status`` may be read at
    any time. Venues use ``send_text``, ``subscribed``, ``count_gap``, ``count_resync``,
    ``resync`` and ``fail`` (see ``feeds.venue``)."""

    def __init__(self, venue: Venue, options: SessionOptions | None = None,
                 on_status: Callable[[StatusEvent], None] | None = None) -> None:
        self.venue = venue
        self.name = venue.name
        self.options = options or SessionOptions()
        self.counters = FeedCounters(self.options.latency_capacity)
        self.status = FeedStatus.CLOSED
        self.status_reason = "not started"
        self.connected_once = False
        self._on_status = on_status
        o = self.options
        self._max_message_size = o.max_message_size or venue.max_message_size
        self._stale_after_s = o.stale_after_s if o.stale_after_s is not None else venue.stale_after_s
        self._heartbeat_s = (o.heartbeat_interval_s if o.heartbeat_interval_s is not None
                             else venue.heartbeat_interval_s)
        self._ws_ping_s = o.ws_ping_interval_s if o.ws_ping_interval_s is not None else venue.ws_ping_interval_s
        self._rng = random.Random(o.seed)
        self._task: asyncio.Task[None] | None = None
        self._transport: WSTransport | None = None
        self._listener: _Listener | None = None
        self._closing = False
        self._abort_error: BaseException | None = None
        self._attempt = 0
        self._failures = 0
        self._subscribed_evt: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._aux_tasks: set[asyncio.Task[Any]] = set()
        self._owned_recorder: Any = None
        self._connecting: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        return f"Feed({self.name!r}, status={self.status.value!r}, {self.counters!r})"

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the running loop (idempotent). Returns at once."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        if self.options.record_path is not None and self._owned_recorder is None:
            from feeds.recording import RecordingWriter
            self._owned_recorder = RecordingWriter(self.options.record_path,
                                                   scrub_secrets=self.options.record_scrub_secrets)
            self.options.recorder = self._owned_recorder
        self._subscribed_evt = asyncio.Event()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"feed:{self.name}")

    @property
    def last_frame_ns(self) -> int:
        """``time.time_ns()`` when the current connection last received a frame (its
        connect time before the first one); 0 when not connected."""
        listener = self._listener
        return listener.last_frame_ns if listener is not None and self._transport is not None else 0

    @property
    def running(self) -> bool:
        """True while the connect/reconnect loop is alive."""
        return self._task is not None and not self._task.done()

    async def wait_subscribed(self, timeout: float | None = None) -> None:
        """Wait until the current connection reported ``subscribed``. Raises FeedError if
        the feed fails or is closed first, TimeoutError after ``timeout`` seconds."""
        if self._subscribed_evt is None or self._task is None:
            raise FeedError("feed not started")
        waiter = asyncio.ensure_future(self._subscribed_evt.wait())
        try:
            done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if waiter in done or self._subscribed_evt.is_set():
            return
        if self._task in done:
            raise FeedError(f"{self.name}: {self.status.value}: {self.status_reason}",
                            terminal=self.status is FeedStatus.FAILED)
        raise TimeoutError(f"{self.name}: not subscribed after {timeout} s "
                           f"(status {self.status.value}: {self.status_reason})")

    async def close(self, reason: str = "closed by user") -> None:
        """Close the socket and stop every task of this feed; status "closed".
        Idempotent; safe to call from callbacks (it only schedules work there)."""
        self._closing = True
        self._close_reason = reason
        if self._wake is not None:
            self._wake.set()
        if self._connecting is not None:
            self._connecting.cancel()  # a handshake in flight is abandoned, not waited for
        transport = self._transport
        if transport is not None and not transport.is_disconnected:
            try:
                transport.send_close(WSCloseCode.OK, b"client closing")
            except Exception:
                pass
            transport.disconnect()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        await self._cancel_aux()

    async def wait_closed(self) -> None:
        """Wait until the feed stopped (closed by the user or failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # ---- API for venues ------------------------------------------------------------
    def send_text(self, data: bytes | str) -> None:
        """Send one text message on the current connection (dropped with a debug log
        when not connected: the venue resends its state in ``on_open``)."""
        transport = self._transport
        if transport is None or transport.is_disconnected:
            log.debug("%s: send while disconnected dropped", self.name)
            return
        transport.send(WSMsgType.TEXT, data.encode() if isinstance(data, str) else data)

    def subscribed(self, reason: str = "subscribed") -> None:
        """The venue confirmed its subscriptions: status "subscribed", backoff reset."""
        self._attempt = 0
        self._failures = 0
        if self._subscribed_evt is not None:
            self._subscribed_evt.set()
        self._set_status(FeedStatus.SUBSCRIBED, reason)

    def count_gap(self) -> None:
        """A sequence/offset gap was detected (the venue resyncs)."""
        self.counters.gaps += 1

    def count_resync(self) -> None:
        """A book/channel was rebuilt from a snapshot after a gap."""
        self.counters.resyncs += 1

    def resync(self, reason: str) -> None:
        """Drop the connection and reconnect (the venue resyncs in ``on_open``)."""
        self._abort(FeedError(reason, terminal=False))

    def fail(self, reason: str) -> None:
        """Stop for good: close the connection; status "failed" with ``reason``."""
        self._abort(FeedError(reason, terminal=True))

    def spawn(self, coro: Any, name: str) -> "asyncio.Task[Any]":
        """Run a helper coroutine owned by this feed (cancelled when the connection
        closes); its exception, if any, aborts the connection."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._aux_tasks.add(task)
        task.add_done_callback(self._aux_done)
        return task

    # ---- internals -------------------------------------------------------------------
    def _aux_done(self, task: "asyncio.Task[Any]") -> None:
        self._aux_tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, FeedError):
                log.error("%s: %s failed: %s", self.name, task.get_name(), mask_secrets(repr(exc)))
                exc = FeedError(f"{task.get_name()} failed: {type(exc).__name__}")
            self._abort(exc)

    async def _cancel_aux(self) -> None:
        tasks = list(self._aux_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._aux_tasks.clear()

    def _abort(self, error: BaseException, code: WSCloseCode = WSCloseCode.GOING_AWAY,
               transport: WSTransport | None = None, listener: "_Listener | None" = None) -> None:
        # `transport`/`listener` are given by the listener: a frame can arrive in the same
        # read as the handshake reply, before ws_connect returned and self._transport was set.
        if self._abort_error is None:
            self._abort_error = error
        listener = listener or self._listener
        if listener is not None:
            listener.dead = True
        if transport is None:
            transport = self._transport
        if transport is not None and not transport.is_disconnected:
            try:
                transport.send_close(code, b"")
            except Exception:
                pass
            transport.disconnect()

    def _set_status(self, status: FeedStatus, reason: str) -> None:
        reason = mask_secrets(reason)
        self.status = status
        self.status_reason = reason
        log.info("%s: %s (%s)", self.name, status.value, reason)
        if self._on_status is not None:
            self._on_status(StatusEvent(self.name, status, reason, _time_ns()))

    def _ssl_context(self, url: str) -> ssl.SSLContext | None:
        if not url.lower().startswith("wss://"):
            return None
        if self.options.ssl_context is not None:
            return self.options.ssl_context
        if self.options.verify_tls:
            return ssl.create_default_context()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("%s: TLS certificate verification is OFF", self.name)
        return ctx

    def _backoff_s(self) -> float:
        o = self.options
        base = min(o.backoff_max_s, o.backoff_initial_s * (o.backoff_factor ** max(self._failures - 1, 0)))
        return base * (1.0 - o.jitter * self._rng.random())

    async def _run(self) -> None:
        reason = "start"
        try:
            while not self._closing:
                self._attempt += 1
                o = self.options
                decision = await self._one_connection()
                if self._closing:
                    break
                if isinstance(decision, Terminal):
                    self._set_status(FeedStatus.FAILED, decision.reason)
                    return
                reason = decision.reason
                self._failures += 1
                # _attempt is 0 here when this connection had subscribed (then dropped).
                if o.max_attempts is not None and self._attempt >= o.max_attempts:
                    self._set_status(FeedStatus.FAILED,
                                     f"gave up after {self._attempt} attempts: {reason}")
                    return
                self.counters.reconnects += 1
                delay = self._backoff_s()
                self._set_status(FeedStatus.RECONNECTING, f"{reason}; retry in {delay:.2f} s")
                assert self._wake is not None
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
        finally:
            await self._cancel_aux()
            transport, self._transport = self._transport, None
            if transport is not None and not transport.is_disconnected:
                transport.disconnect(graceful=False)
            if self._owned_recorder is not None:
                self._owned_recorder.close()
                self.options.recorder = self._owned_recorder = None
            if self.status is not FeedStatus.FAILED:
                self._set_status(FeedStatus.CLOSED, getattr(self, "_close_reason", "closed"))

    async def _one_connection(self) -> Reconnect | Terminal:
        """One attempt: connect, open, pump frames until the socket closes; classify."""
        self._abort_error = None
        if self._subscribed_evt is not None:
            self._subscribed_evt.clear()
        self._set_status(FeedStatus.CONNECTING, f"attempt {self._attempt}")
        try:
            endpoint = self.venue.endpoint()
            url = endpoint.url
            if endpoint.params:
                parts = urlsplit(url)
                query = urlencode({k: _reveal(v) for k, v in endpoint.params.items()})
                url = urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))
            headers = {k: _reveal(v) for k, v in endpoint.headers.items()}
            connected = await self._connect(url, headers)
        except WSInvalidStatusError as exc:
            status = exc.response.status if exc.response is not None else 0
            info = CloseInfo(int(status), f"handshake rejected: HTTP {int(status)}", True,
                             FeedError(f"HTTP {int(status)}", terminal=int(status) in (401, 403)))
            return self._decide(info)
        except (OSError, WSError, asyncio.TimeoutError, TimeoutError) as exc:
            kind = "connect timeout" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else \
                f"connect failed: {type(exc).__name__}: {mask_secrets(str(exc))}"
            return self._decide(CloseInfo(0, kind, False, None))
        if connected is None:
            return Reconnect("closing")
        transport, listener = connected
        if self._closing:
            transport.disconnect(graceful=False)
            return Reconnect("closing")
        assert isinstance(listener, _Listener)
        self._transport = transport
        self._listener = listener
        self.connected_once = True
        self._set_status(FeedStatus.CONNECTED, endpoint_label(endpoint.url))
        watchdog = asyncio.get_running_loop().create_task(self._watch(listener), name=f"{self.name}:watch")
        try:
            try:
                opened = self.venue.on_open(self)
                if opened is not None:
                    await self._open_until_disconnected(opened, listener)
            except FeedError as exc:
                self._abort(exc)
            except Exception as exc:
                log.error("%s: on_open failed", self.name, exc_info=True)
                self._abort(FeedError(f"on_open failed: {type(exc).__name__}"))
            await listener.disconnected
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            await self._cancel_aux()
            if not transport.is_disconnected:
                transport.disconnect(graceful=False)
            self._transport = None
        return self._classify(transport, listener)

    async def _connect(self, url: str, headers: dict[str, str]) -> tuple[WSTransport, Any] | None:
        """``ws_connect`` bounded by ``connect_timeout_s`` (raises TimeoutError) and
        abandoned at once by ``close()`` (returns None). An abandoned attempt leaves
        nothing behind: the connect task is awaited, and its socket, which picows would
        keep until its own handshake timeout, is shut down (its transport then sees EOF
        and closes)."""
        loop = asyncio.get_running_loop()
        timeout = self.options.connect_timeout_s
        handed_over: list[socket.socket] = []

        async def open_socket(parsed: Any) -> socket.socket:
            # Our own socket: picows gives no handle on the connection before the
            # handshake completes, and an abandoned handshake must be cut.
            infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
            error = OSError(f"no address for {parsed.host}:{parsed.port}")
            for family, kind, proto, _, addr in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, addr)
                except BaseException as exc:  # also CancelledError: close() abandoned it
                    sock.close()
                    if not isinstance(exc, OSError):
                        raise
                    error = exc
                    continue
                # From here the socket belongs to the transport picows creates around it.
                handed_over.append(sock)
                return sock
            raise error

        task = loop.create_task(
            ws_connect(
                lambda: _Listener(self), url,
                ssl_context=self._ssl_context(url),
                websocket_handshake_timeout=timeout,
                max_frame_size=self._max_message_size,
                extra_headers=headers or None,
                enable_auto_ping=self._ws_ping_s is not None,
                auto_ping_idle_timeout=self._ws_ping_s or 10.0,
                auto_ping_reply_timeout=self._ws_ping_s or 10.0,
                logger_name=_MaskingAdapter(logging.getLogger(f"feeds.picows.{self.name}"), {}),
                max_redirects=0,
                read_buffer_init_size=self.options.read_buffer_size,
                socket_factory=open_socket,
            ),
            name=f"{self.name}:connect",
        )
        self._connecting = task
        try:
            await asyncio.wait({task}, timeout=timeout)
        finally:
            self._connecting = None
            if not task.done():
                task.cancel()
            await asyncio.wait({task})  # picows unwinds at once when cancelled
        if not task.cancelled():
            return task.result()  # raises what ws_connect raised
        # Cancelled by close() or by the timeout above: cut the half-open connection.
        for sock in handed_over:
            if sock.fileno() != -1:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._closing:
            return None
        raise TimeoutError(f"no WebSocket handshake within {timeout:g} s")

    async def _open_until_disconnected(self, opened: Any, listener: _Listener) -> None:
        # An async on_open (e.g. a REST fetch) must not hold up close(): close() drops
        # the connection, and that abandons the open.
        opening = asyncio.ensure_future(opened)
        try:
            await asyncio.wait({opening, listener.disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not opening.done():
                opening.cancel()
                await asyncio.wait({opening})
        if not opening.cancelled():
            opening.result()

    def _classify(self, transport: WSTransport, listener: _Listener) -> Reconnect | Terminal:
        error = self._abort_error
        hs = transport.close_handshake
        # picows closed first (protocol error, oversize frame): the peer's CLOSE that
        # follows is only the echo of ours.
        local = hs is not None and hs.sent is not None and not hs.recv_then_sent
        if error is not None:
            info = CloseInfo(0, mask_secrets(str(error)), False, error)
        elif listener.peer_close is not None and not local:
            code, text = listener.peer_close
            info = CloseInfo(code, f"closed by peer: {code} {text}".rstrip(), True, None)
        else:
            sent = hs.sent if hs is not None else None
            if sent is not None and sent.code == WSCloseCode.MESSAGE_TOO_BIG:
                info = CloseInfo(int(WSCloseCode.MESSAGE_TOO_BIG.value), "oversize frame", False, None)
            elif sent is not None:
                info = CloseInfo(int(sent.code.value), f"protocol error ({sent.code.value})", False, None)
            else:
                info = CloseInfo(0, "connection dropped", True, None)
        return self._decide(info)

    def _decide(self, info: CloseInfo) -> Reconnect | Terminal:
        try:
            return self.venue.on_close(info)
        except Exception:
            log.error("%s: on_close raised; reconnecting", self.name, exc_info=True)
            return Reconnect(info.reason)

    async def _watch(self, listener: _Listener) -> None:
        """Stale detection and venue heartbeats for one connection."""
        stale_s = self._stale_after_s
        hb_s = self._heartbeat_s
        ticks = [x for x in (stale_s, hb_s) if x]
        if not ticks:
            return
        tick = max(0.01, min(ticks) / 4.0)
        next_hb = time.monotonic() + (hb_s or 0.0)
        while True:
            await asyncio.sleep(tick)
            now_ns = _time_ns()
            if stale_s and now_ns - listener.last_frame_ns > stale_s * 1e9:
                self._set_status(FeedStatus.STALE, f"no frame for {stale_s:g} s")
                self._abort(FeedError(f"stale: no frame for {stale_s:g} s"))
                return
            if hb_s and time.monotonic() >= next_hb:
                next_hb += hb_s
                try:
                    self.venue.heartbeat(now_ns)
                except FeedError as exc:
                    # A heartbeat failure is a liveness failure (e.g. no server ping).
                    self._set_status(FeedStatus.STALE, str(exc))
                    self._abort(exc)
                    return


def endpoint_label(url: str) -> str:
    """``scheme://host:port/path`` without query or credentials (safe to log)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def options_from(mapping: Mapping[str, Any]) -> tuple[SessionOptions, dict[str, Any]]:
    """Split keyword options into SessionOptions fields and the rest (venue options)."""
    names = set(SessionOptions.__dataclass_fields__)
    known = {k: v for k, v in mapping.items() if k in names}
    rest = {k: v for k, v in mapping.items() if k not in names}
    return SessionOptions(**known), rest
