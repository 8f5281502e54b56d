"""Socket.IO v4 client framing (Socket.IO protocol v5 over Engine.IO v4), WebSocket only.

What a Socket.IO server puts on a WebSocket, and what this module answers:

- URL: ``ws[s]://host:port/socket.io/?EIO=4&transport=websocket`` (``socketio_url`` adds
  the path, ``ENGINEIO_PARAMS`` the query). The connection starts directly on the
  WebSocket transport (no HTTP long-polling first), which every Engine.IO v4 server
  accepts; there is no transport upgrade.
- Engine.IO packets, one per WebSocket message (no ``\\x1e`` batching on WebSocket): the
  first character is the packet type.

  ============  ======================================================================
  ``0{...}``    open (server, first frame): ``sid``, ``upgrades``, ``pingInterval`` and
                ``pingTimeout`` (ms), ``maxPayload`` (bytes)
  ``1``         close: the server ends the session (reconnect)
  ``2`` / ``3`` ping (server) / pong (client, sent at once); a ``2probe`` is answered
                ``3probe``
  ``4...``      message: a Socket.IO packet follows
  ``6``         noop (ignored)
  ============  ======================================================================

- Socket.IO packets (after the ``4``): type digit, then ``/namespace,`` unless the
  namespace is ``/``, then an optional ack id (digits), then JSON.

  ================================  ==================================================
  ``40`` / ``40{"token":..}``       namespace connect (client), optional auth object
  ``40{"sid":"..."}``               connect accepted (server)
  ``41``                            disconnect (either side)
  ``42["event",arg...]``            event; ``42<id>[...]`` asks for an ack
  ``43<id>[arg...]``                ack of the client's event ``<id>``
  ``44{"message":..,"data":..}``    connect refused
  ``45`` / ``46``                   binary event / ack (not supported: DecodeError)
  ================================  ==================================================

Client rules implemented by :class:`SocketIOClient` (choices where the protocol leaves
room are marked *policy*):

- After ``0{...}`` the client sends ``40`` for its namespace. No open packet within
  ``open_timeout_s`` of the socket connecting, or no ``40{"sid"}`` within
  ``open_timeout_s`` after it: the connection is dropped and retried.
- Every ``2`` is answered ``3`` immediately. No ping for ``pingInterval + pingTimeout``
  (counted from the open packet, then from each ping): the server is gone, reconnect
  (what socket.io-client does).
- ``44`` (connect refused) is terminal when it is an auth error (*policy*: ``data.code``
  401 or 403, or a message naming auth, token, API key, credentials, permission or
  forbidden); otherwise the client reconnects with backoff.
- ``41`` from the server: reconnect (*policy*; socket.io-client stays disconnected after
  a server-side disconnect, but a market-data client wants its data back; set
  ``reconnect_on_disconnect=False`` to stop instead). ``1`` (Engine.IO close): reconnect.
- Emits that want an ack get increasing ids per connection; an ack not received within
  ``ack_timeout_s`` drops the connection (the server is not processing our requests).
- Secrets: emit arguments may hold :class:`feeds.session.Secret` values; they are
  revealed only while encoding the frame and never appear in errors or logs.

The hot path (``42`` events of subscribed market data) never comes here: the venue's
Cython decoder checks the prefix of each frame in place and decodes the event payload
from picows' buffer; only control packets (open, ping, connect, ack, disconnect,
errors: a few per minute) reach :meth:`SocketIOClient.on_packet`, as text.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import urlsplit, urlunsplit

from engine.errors import DecodeError, FeedError
from feeds.session import Secret

__all__ = [
    "ENGINEIO_PARAMS", "OpenInfo", "Packet", "SocketIOClient", "SocketIOHandler",
    "decode_packet", "encode_packet", "encode_event", "is_auth_error", "parse_open", "socketio_url",
    "EIO_OPEN", "EIO_CLOSE", "EIO_PING", "EIO_PONG", "EIO_MESSAGE", "EIO_NOOP",
    "SIO_CONNECT", "SIO_DISCONNECT", "SIO_EVENT", "SIO_ACK", "SIO_CONNECT_ERROR",
]

# Engine.IO v4 packet types (first character of every WebSocket message).
EIO_OPEN = "0"
EIO_CLOSE = "1"
EIO_PING = "2"
EIO_PONG = "3"
EIO_MESSAGE = "4"
EIO_UPGRADE = "5"
EIO_NOOP = "6"

# Socket.IO v5 packet types (the digit after the Engine.IO "4").
SIO_CONNECT = 0
SIO_DISCONNECT = 1
SIO_EVENT = 2
SIO_ACK = 3
SIO_CONNECT_ERROR = 4
SIO_BINARY_EVENT = 5
SIO_BINARY_ACK = 6

#: Query parameters of the Engine.IO v4 WebSocket transport.
ENGINEIO_PARAMS: Mapping[str, str] = {"EIO": "4", "transport": "websocket"}

_AUTH_WORDS = re.compile(r"auth|token|api ?key|credential|permission|forbidden|denied", re.I)


def socketio_url(url: str, path: str = "/socket.io/") -> str:
    """``url`` with the Socket.IO ``path`` when it has none (``ws://h:8000`` ->
    ``ws://h:8000/socket.io/``); a URL that already has a path is kept. ``http(s)``
    schemes become ``ws(s)``. The Engine.IO query (``ENGINEIO_PARAMS``) is added by the
    session from the endpoint's params."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    p = parts.path if parts.path not in ("", "/") else path
    return urlunsplit(parts._replace(scheme=scheme, path=p))


@dataclass(frozen=True)
class OpenInfo:
    """The Engine.IO open packet: session id, ping contract (ms), largest payload."""

    sid: str
    ping_interval_ms: int
    ping_timeout_ms: int
    max_payload: int
    upgrades: tuple[str, ...] = ()


@dataclass(frozen=True)
class Packet:
    """One decoded Socket.IO packet: ``type`` (SIO_*), ``namespace``, ``ack_id`` (None
    when absent) and ``data`` (the parsed JSON; None when the packet has none)."""

    type: int
    namespace: str
    ack_id: int | None
    data: Any


def _json_default(obj: object) -> object:
    if isinstance(obj, Secret):
        return obj.reveal()  # on the wire only; the frame text is never logged
    raise TypeError(f"cannot encode {type(obj).__name__} in a Socket.IO packet")


def encode_packet(sio_type: int, namespace: str = "/", data: Any = None, ack_id: int | None = None) -> str:
    """Engine.IO message text of one Socket.IO packet (``"4" + type + ...``). ``data``
    is JSON-encoded compactly (Secret values revealed). O(len)."""
    out = [EIO_MESSAGE, str(sio_type)]
    if namespace and namespace != "/":
        out.append(namespace + ",")
    if ack_id is not None:
        out.append(str(ack_id))
    if data is not None:
        out.append(json.dumps(data, separators=(",", ":"), default=_json_default))
    return "".join(out)


def encode_event(name: str, *args: Any, namespace: str = "/", ack_id: int | None = None) -> str:
    """``42["name",args...]`` (with namespace and ack id when given)."""
    return encode_packet(SIO_EVENT, namespace, [name, *args], ack_id)


def parse_open(text: str) -> OpenInfo:
    """Parse ``0{...}``. DecodeError naming the field when it is not a valid open packet."""
    try:
        body = json.loads(text[1:])
    except ValueError:
        raise DecodeError(f"socket.io: open packet is not JSON: {text[:80]!r}", 1) from None
    if not isinstance(body, dict):
        raise DecodeError("socket.io: open packet is not an object", 1)
    sid = body.get("sid")
    interval = body.get("pingInterval")
    timeout = body.get("pingTimeout")
    # python-engineio advertises int(seconds) * 1000, so a fractional interval below 1 s
    # arrives as 0: accepted (the deadline is then pingTimeout alone).
    for name, v, low in (("pingInterval", interval, 0), ("pingTimeout", timeout, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise DecodeError(f"socket.io: open packet {name} must be an integer >= {low} (ms), got {v!r}", 1)
    if not isinstance(sid, str) or not sid:
        raise DecodeError(f"socket.io: open packet sid must be a non-empty string, got {sid!r}", 1)
    max_payload = body.get("maxPayload", 0)
    if not isinstance(max_payload, int) or isinstance(max_payload, bool):
        max_payload = 0
    ups = body.get("upgrades") or ()
    return OpenInfo(sid, int(interval), int(timeout), int(max_payload),  # type: ignore[arg-type]
                    tuple(str(u) for u in ups) if isinstance(ups, list) else ())


def decode_packet(text: str) -> Packet:
    """Parse one Socket.IO packet ``text`` (without the Engine.IO ``4``). DecodeError
    for a malformed one. O(len)."""
    if not text or not text[0].isdigit():
        raise DecodeError(f"socket.io: bad packet type in {text[:40]!r}", 0)
    kind = int(text[0])
    if kind > SIO_BINARY_ACK:
        raise DecodeError(f"socket.io: unknown packet type {kind}", 0)
    i = 1
    namespace = "/"
    if i < len(text) and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            namespace, i = text[i:], len(text)
        else:
            namespace, i = text[i:comma], comma + 1
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    ack_id = int(text[i:j]) if j > i else None
    data: Any = None
    if j < len(text):
        try:
            data = json.loads(text[j:])
        except ValueError:
            raise DecodeError(f"socket.io: packet data is not JSON: {text[:80]!r}", j) from None
    return Packet(kind, namespace, ack_id, data)


def is_auth_error(data: Any) -> bool:
    """True when a connect error (``44`` data) or error payload says the credentials
    were refused (see the module docstring's policy)."""
    if isinstance(data, Mapping):
        extra = data.get("data")
        code = data.get("code", extra.get("code") if isinstance(extra, Mapping) else None)
        if code in (401, 403, "401", "403"):
            return True
        return bool(_AUTH_WORDS.search(str(data.get("message", ""))))
    return isinstance(data, str) and bool(_AUTH_WORDS.search(data))


class SocketIOHandler(Protocol):
    """What :class:`SocketIOClient` reports to (the venue adapter)."""

    def send_text(self, text: str) -> None: ...
    def on_sio_connected(self, sid: str) -> None: ...
    def on_sio_event(self, name: str, args: list[Any]) -> None: ...


AckCallback = Callable[[list[Any]], None]


class SocketIOClient:
    """Protocol state of one Socket.IO client across its connections (see the module
    docstring). Cold path only: the venue's decoder hands it every frame that is not a
    subscribed ``42`` event. Times are ns (``time.time_ns()``).

    Counters: ``pings`` answered, ``connects`` accepted namespace connects, ``acks``
    received."""

    def __init__(self, handler: SocketIOHandler, *, namespace: str = "/", auth: Any = None,
                 open_timeout_s: float = 10.0, ack_timeout_s: float = 10.0,
                 reconnect_on_disconnect: bool = True) -> None:
        if not namespace.startswith("/"):
            raise ValueError(f"namespace must start with '/', got {namespace!r}")
        self.handler = handler
        self.namespace = namespace
        self.auth = auth
        self.open_timeout_s = open_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.reconnect_on_disconnect = reconnect_on_disconnect
        self.open_info: OpenInfo | None = None
        self.sid = ""
        self.connected = False
        self.pings = 0
        self.connects = 0
        self.acks = 0
        self._t0_ns = 0
        self._last_ping_ns = 0
        self._next_ack = 1
        self._pending: dict[int, tuple[str, int, AckCallback | None]] = {}

    # ---- per connection ----------------------------------------------------------------
    def reset(self, now_ns: int) -> None:
        """A new WebSocket connection: forget the previous session."""
        self.open_info = None
        self.sid = ""
        self.connected = False
        self._t0_ns = now_ns
        self._last_ping_ns = now_ns
        self._next_ack = 1
        self._pending.clear()

    def started(self, now_ns: int) -> None:
        """The socket is handed to the client: the open deadline counts from now
        unless the open packet already came."""
        if self.open_info is None:
            self._t0_ns = now_ns
            self._last_ping_ns = now_ns

    @property
    def pending_acks(self) -> int:
        """Emits still waiting for their ack."""
        return len(self._pending)

    def emit(self, name: str, *args: Any, on_ack: AckCallback | None = None, ack: bool = False) -> int | None:
        """Send ``42["name",args...]``; with ``on_ack`` or ``ack`` the packet carries an
        ack id (returned) and must be acknowledged within ``ack_timeout_s``."""
        ack_id = None
        if on_ack is not None or ack:
            ack_id = self._next_ack
            self._next_ack += 1
            self._pending[ack_id] = (name, time.time_ns(), on_ack)
        self.handler.send_text(encode_event(name, *args, namespace=self.namespace, ack_id=ack_id))
        return ack_id

    # ---- incoming control packets ---------------------------------------------------------
    def on_ping(self, recv_ns: int) -> None:
        """Engine.IO ping ``2``: answer ``3`` at once."""
        self.pings += 1
        self._last_ping_ns = recv_ns
        self.handler.send_text(EIO_PONG)

    def on_packet(self, text: str, recv_ns: int) -> None:
        """Any frame that is not a subscribed event (open, ping, connect, ack, errors...).
        Raises DecodeError for a malformed packet, FeedError when the connection must end
        (terminal for refused credentials)."""
        if not text:
            raise DecodeError("socket.io: empty frame", 0)
        kind = text[0]
        if kind == EIO_PING:
            if len(text) == 1:
                self.on_ping(recv_ns)
            else:  # "2probe" (upgrade probe; not expected on a websocket-only session)
                self._last_ping_ns = recv_ns
                self.handler.send_text(EIO_PONG + text[1:])
            return
        if kind == EIO_OPEN:
            if self.open_info is not None:
                raise DecodeError("socket.io: second open packet", 0)
            self.open_info = parse_open(text)
            self._last_ping_ns = recv_ns
            self._t0_ns = recv_ns
            self.handler.send_text(encode_packet(SIO_CONNECT, self.namespace, self.auth))
            return
        if kind == EIO_MESSAGE:
            self._on_message(decode_packet(text[1:]), recv_ns)
            return
        if kind == EIO_CLOSE:
            raise FeedError("socket.io: server closed the Engine.IO session")
        if kind in (EIO_NOOP, EIO_PONG):
            return
        raise DecodeError(f"socket.io: unknown Engine.IO packet type {kind!r}", 0)

    def _on_message(self, pkt: Packet, recv_ns: int) -> None:
        if pkt.namespace != self.namespace:
            return  # another namespace multiplexed on this connection: not ours
        if pkt.type == SIO_CONNECT:
            sid = pkt.data.get("sid") if isinstance(pkt.data, dict) else None
            if not isinstance(sid, str):
                raise DecodeError(f"socket.io: connect reply without sid: {pkt.data!r}", 0)
            self.sid = sid
            self.connected = True
            self.connects += 1
            self.handler.on_sio_connected(sid)
        elif pkt.type == SIO_EVENT:
            if not isinstance(pkt.data, list) or not pkt.data or not isinstance(pkt.data[0], str):
                raise DecodeError(f"socket.io: event without a name: {str(pkt.data)[:80]!r}", 0)
            self.handler.on_sio_event(pkt.data[0], pkt.data[1:])
        elif pkt.type == SIO_ACK:
            if pkt.ack_id is None:
                raise DecodeError("socket.io: ack without id", 0)
            entry = self._pending.pop(pkt.ack_id, None)
            if entry is None:
                return  # an ack for an emit of an earlier connection or a duplicate: ignored
            self.acks += 1
            cb = entry[2]
            if cb is not None:
                cb(pkt.data if isinstance(pkt.data, list) else [pkt.data])
        elif pkt.type == SIO_DISCONNECT:
            self.connected = False
            raise FeedError("socket.io: server disconnected the namespace",
                            terminal=not self.reconnect_on_disconnect)
        elif pkt.type == SIO_CONNECT_ERROR:
            msg = pkt.data.get("message") if isinstance(pkt.data, dict) else pkt.data
            raise FeedError(f"socket.io: connect refused: {msg}", terminal=is_auth_error(pkt.data))
        else:
            raise DecodeError(f"socket.io: binary packets (type {pkt.type}) are not supported", 0)

    # ---- liveness (venue heartbeat) -------------------------------------------------------
    def check_alive(self, now_ns: int) -> None:
        """Raise FeedError (reconnect) when the server missed the open, connect, ping or
        ack deadlines described in the module docstring. O(pending acks)."""
        info = self.open_info
        if info is None:
            if now_ns - self._t0_ns > self.open_timeout_s * 1e9:
                raise FeedError(f"socket.io: no open packet within {self.open_timeout_s:g} s")
            return
        if not self.connected and now_ns - self._t0_ns > self.open_timeout_s * 1e9:
            raise FeedError(f"socket.io: namespace {self.namespace} not connected within {self.open_timeout_s:g} s")
        limit_ns = (info.ping_interval_ms + info.ping_timeout_ms) * 1_000_000
        if now_ns - self._last_ping_ns > limit_ns:
            raise FeedError(f"socket.io: no ping for {limit_ns / 1e9:g} s (pingInterval + pingTimeout)")
        for ack_id, (name, sent_ns, _) in self._pending.items():
            if now_ns - sent_ns > self.ack_timeout_s * 1e9:
                raise FeedError(f"socket.io: no ack for {name!r} (id {ack_id}) within {self.ack_timeout_s:g} s")
