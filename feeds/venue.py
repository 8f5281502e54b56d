"""The venue adapter interface: what every venue protocol implements.

A *venue adapter* (``Venue`` subclass) knows one wire protocol. The *session*
(``feeds.session.Feed``) owns everything protocol-independent: the socket, connect
timeout, TLS, reconnects with backoff, stale-feed detection, counters, recording,
shutdown. The two talk through the small surface below; nothing else.

Lifecycle of one connection attempt, as the session drives it::

    url, headers = venue.endpoint()          # may embed Secret tokens (masked in logs)
    ... socket connects ...                  # status "connecting" -> "connected"
    await venue.on_open(feed)                # send auth / subscribe / fetch REST snapshot
    venue.on_frame(payload, recv_ns)         # every text/binary message (HOT PATH)
    venue.heartbeat(now_ns)                  # every ``heartbeat_interval_s`` seconds
    ... socket closes (either side) ...
    decision = venue.on_close(close)         # Reconnect or Terminal
    # Reconnect: backoff, new attempt, on_open again (the venue resubscribes, asks
    # for recovery, resyncs its books). Terminal: status "failed", no more attempts.

Rules for implementers (four more venues are built on this: prices, stream, realtime,
botplatform):

- ``on_frame`` is the hot path. ``payload`` is a read-only memoryview that BORROWS
  picows' read buffer: it is valid only until ``on_frame`` returns. Faster: set
  ``frame_sink`` to a compiled decoder (a ``feeds._hotpath.FrameSink`` subclass; cimport
  it from ``feeds/_hotpath.pxd``) whose ``on_frame_c(const char* buf, n, recv_ns)`` gets
  picows' buffer with no Python frame in between (``feeds.cadenza`` does). Decode it in place
  (a Cython decoder over ``engine._core.jscan``) and copy out only what must live on.
  No ``json.loads`` for books, trades, klines or order updates; rare messages
  (notifications, chat, presence) may use a JSON library.
- Errors inside ``on_frame``: raise ``engine.errors.DecodeError`` for a bad frame (the
  session counts it in ``decode_errors`` and logs it; the connection stays up, since a
  decoder applies frames whole or not at all, no state was changed). Raise
  ``engine.errors.FeedError(reason, terminal)`` when the connection must go: terminal
  errors (bad credentials, permission denied) stop the feed, others reconnect.
  Use ``feed.resync(reason)`` for a sequence gap that needs a fresh connection.
- Report protocol progress through the feed: ``feed.subscribed(reason)`` once the
  subscriptions are confirmed (also resets the backoff), ``feed.count_gap()``,
  ``feed.count_resync()``, and ``feed.send_text(...)`` for replies (pongs, pings).
- State changes first, callbacks after: a venue updates the core objects, then calls
  the ``feeds._hotpath.Dispatch`` it was built with (``dispatch.book(book, recv_ns)``,
  ``.trade``, ``.order``, ``.position``, ``.balance``; bars come from the aggregators
  the engine feeds with trades); the one wrapper
  invokes user callbacks and catches their errors. The venue never calls user code.
- Secrets: take tokens as ``feeds.session.Secret`` and call ``.reveal()`` only where the
  value goes on the wire. Never put a secret in an exception message or a log line.
- ``on_close`` must not raise; it classifies the close. Per-connection state (pending
  command ids, "awaiting snapshot" flags) is reset in ``on_open``; state that must
  survive reconnects (recovery offsets, last sequence numbers) stays on the venue.

A venue joins the engine with one line in ``engine.engine.VENUES`` and the demo with
one entry in ``engine.demo.DEMO_VENUES``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Mapping, Sequence

if TYPE_CHECKING:
    from engine._core.instrument import Instrument
    from engine.engine import Engine
    from feeds._hotpath import Dispatch
    from feeds.session import Feed, Secret


@dataclass(frozen=True)
class CloseInfo:
    """How a connection ended, as the session saw it.

    ``code`` is the WebSocket close code the peer sent (0 when the socket dropped with no
    close frame), ``reason`` its close text or the local cause ("stale", "oversize
    frame", "connect timeout", ...). ``by_peer`` is True when the peer sent the close.
    ``error`` is the FeedError a venue raised to force the close, if any."""

    code: int
    reason: str
    by_peer: bool
    error: BaseException | None = None


@dataclass(frozen=True)
class Reconnect:
    """``on_close`` decision: try again after the backoff delay."""

    reason: str


@dataclass(frozen=True)
class Terminal:
    """``on_close`` decision: stop; the feed ends in status "failed" with ``reason``."""

    reason: str


CloseDecision = Reconnect | Terminal


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect. ``headers`` and ``params`` values may be ``Secret``;
    the session reveals them only when building the request and masks them in every
    log line, repr and error."""

    url: str
    headers: Mapping[str, "str | Secret"] = field(default_factory=dict)
    params: Mapping[str, "str | Secret"] = field(default_factory=dict)


class Venue(abc.ABC):
    """Base class of a venue protocol adapter. See the module docstring for the
    contract. Class attributes are the venue's defaults; the session options override
    them per connection.

    Attributes:
        name: the feed name ("cadenza", "binance", "cadenza-2"...), used in logs, status
            events and the demo's JSON output.
        max_message_size: largest frame accepted, bytes; a bigger frame closes the
            connection (status "reconnecting", reason "oversize frame").
        stale_after_s: no frame at all for this long -> status "stale" and reconnect.
            None disables it (then the venue's heartbeat must detect a dead peer).
        heartbeat_interval_s: how often ``heartbeat`` runs while connected; None: never.
        ws_ping_interval_s: if set, the session sends WebSocket PING frames at this
            interval (protocols that rely on transport-level pings, e.g. Binance).
        frame_sink: a compiled decoder taking frames at C level (see above).
    """

    name: str = "venue"
    #: Optional C-level decoder (a ``feeds._hotpath.FrameSink``): when set, the session
    #: hands it picows' payload pointer directly (no memoryview, no Python frame) and
    #: ``on_frame`` is only used by tools. Set it in ``bind``.
    frame_sink: Any = None
    max_message_size: int = 1 << 20
    stale_after_s: float | None = 30.0
    heartbeat_interval_s: float | None = None
    ws_ping_interval_s: float | None = None

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence["Instrument"] = (), account_id: str | None = None,
                 **options: Any) -> None:
        """Every venue is built by ``Engine.connect`` with these arguments. ``token`` is
        already a Secret. Unknown ``options`` must raise TypeError (typos are bugs)."""
        if options:
            raise TypeError(f"{type(self).__name__}: unknown options {sorted(options)}")
        self.engine = engine
        self.name = name
        self.url = url
        self.token = token
        self.instruments = list(instruments)
        self.account_id = account_id
        self.feed: "Feed | None" = None
        self.dispatch: "Dispatch | None" = None

    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Called once by the engine after the Feed exists: the session handle and the
        callback dispatcher this venue reports to."""
        self.feed = feed
        self.dispatch = dispatch

    @abc.abstractmethod
    def endpoint(self) -> Endpoint:
        """The URL, headers and query parameters for the next connection attempt.
        Called before every attempt (a venue may rotate URLs or refresh tokens)."""

    @abc.abstractmethod
    def on_open(self, feed: "Feed") -> Awaitable[None] | None:
        """The socket is connected: authenticate, subscribe, request snapshots.

        May be a coroutine (e.g. to fetch a REST snapshot); frames that arrive while it
        runs are still delivered to ``on_frame``. Raising FeedError closes the
        connection (terminal or not, as the error says)."""

    @abc.abstractmethod
    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Decode one complete WebSocket message. HOT PATH.

        ``payload`` borrows the socket's read buffer: valid only during this call.
        ``recv_ns`` is ``time.time_ns()`` taken when the frame came off the socket; pass
        it on to the engine's dispatch so receive-to-callback latency is measured.
        Raise DecodeError for a bad frame (counted, connection kept) or FeedError to
        close the connection."""

    def replay_frame(self, feed: "Feed", payload: memoryview, recv_ns: int) -> None:
        """Apply one recorded frame of this venue (``python -m engine replay``; no socket).

        A recording holds what the venue sent, so replaying it through ``on_frame``
        rebuilds the same state. A venue whose decoding also depends on what the client
        sent (command ids, say) overrides this to re-create that state from the frames
        themselves; the default is ``on_frame``."""
        self.on_frame(payload, recv_ns)

    def heartbeat(self, now_ns: int) -> None:
        """Called every ``heartbeat_interval_s`` while connected: send protocol-level
        pings and check the peer's ones (raise FeedError("no ping ...") to reconnect)."""

    def is_terminal_close_code(self, code: int) -> bool:
        """Whether a close code the peer sent means "do not reconnect" on this venue.
        Default: none does."""
        return False

    def on_close(self, close: CloseInfo) -> CloseDecision:
        """Classify a closed connection. Default: a venue FeedError decides by its
        ``terminal`` flag; otherwise a close code from the peer that
        ``is_terminal_close_code`` names stops; anything else reconnects. Must not raise."""
        if close.error is not None:
            terminal = getattr(close.error, "terminal", False)
            return Terminal(close.reason) if terminal else Reconnect(close.reason)
        if close.by_peer and self.is_terminal_close_code(close.code):
            return Terminal(close.reason)
        return Reconnect(close.reason)

    def describe(self) -> dict[str, object]:
        """Venue-specific state for status displays and the demo summary (no secrets)."""
        return {}
