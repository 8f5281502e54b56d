"""Reusable base of the local venue simulators: a picows WebSocket server on loopback.

Every venue simulator (``feeds.sim.cadenza``, ``feeds.sim.binance``, and the later
venues) is a :class:`SimServer` subclass. The base owns everything that is not the
venue's protocol: the listening socket, one :class:`SimClient` per connection with a
bounded send queue, backpressure, tracked background tasks, the fault injectors, burst
mode, and a clean :meth:`SimServer.stop` that closes every connection and task.

How to add a venue simulator
----------------------------
1. Subclass :class:`SimServer` in ``feeds/sim/<venue>.py``; set the class attributes
   ``name`` (the venue name, e.g. ``"prices"``), ``path`` (the WebSocket path the
   venue serves, e.g. ``"/ws"``; other paths get HTTP 404) and, when useful,
   ``malformed_payload`` (a truncated frame in the venue's own dialect) and
   ``slow_close_code`` (the close code the venue uses for a slow consumer).
2. Override the hooks you need; each runs on the event loop and must not block:

   - ``accept(request)``: routing and handshake checks beyond the path (query
     parameters, headers): return True (upgrade), False (HTTP 404) or a
     ``picows.WSUpgradeResponse`` to answer instead of upgrading (e.g.
     ``refuse_handshake(401, b"unauthorized")`` for a venue that authenticates in
     the handshake; honour ``self.reject_auth`` there).
   - ``on_connect(client)``: greet (Engine.IO ``0{...}`` open packet, ...), set
     ``client.state`` to the venue's per-connection state object.
   - ``on_message(client, payload: bytes, binary: bool)``: one complete client
     message; parse it (plain ``json`` is fine here, simulators are not the hot
     path), reply with ``client.send(...)``. Auth steps must honour
     ``self.reject_auth`` (the "reject auth" fault).
   - ``on_disconnect(client)``: forget the client's subscriptions.
   - ``async on_start()`` / ``async on_stop()``: start the venue's periodic work with
     ``self.every(interval_s, fn, name)`` (market ticks, heartbeats; skipped while
     ``self.paused``) or ``self.spawn(coro, name)`` (both tracked: cancelled and
     awaited by ``stop()``) and release what ``on_start`` made. Hook errors are logged with their traceback and
     counted in ``stats["hook_errors"]``; tests assert it stays 0.
3. Publish data by calling ``client.send(payload)`` (str or bytes; text frames by
   default) for each subscribed client. ``send`` never blocks: it writes through
   when the socket accepts data, otherwise queues up to ``max_queue`` frames and then
   closes the client as a slow consumer (``slow_close_code``), as real venues do.
4. Sequence numbers live in each venue's payloads, so the "skip a sequence number"
   fault is a venue method (``CadenzaSim.skip_sequence``, ``BinanceSim.skip_sequence``):
   advance the venue's counter and the state as if a message was sent, but do not
   send it. The other faults are generic and live here: :meth:`SimServer.drop`,
   :meth:`SimServer.close`, :meth:`SimServer.send_malformed`,
   :meth:`SimServer.send_oversize`, :meth:`SimServer.stall`, ``reject_auth``.
5. Burst mode: pre-encode the frames once (``burst = encode_burst(payloads)``: the
   WebSocket wire bytes, shared by every client), then ``await self.burst(burst)``
   (or ``client.burst(burst)``) writes them as fast as the socket takes them.
6. Data: drive the venue from :class:`feeds.sim.market.SyntheticMarket` (seeded
   books, trades, account events in exact integers; format numbers with the
   instrument's ``ticks_to_price`` / ``lots_to_qty`` and ``market.format_amount``) or
   :class:`feeds.sim.market.RecordedMarket` (recorded Binance frames re-shaped).
   Offer ``advance(n)`` (step the market n times and send) and ``interval_s=None``
   (no automatic ticking) so tests are deterministic. A REST endpoint, if the venue
   has one, is a :class:`SimHttpServer` started in ``on_start``.
7. Define ``from_cli(args) -> YourSim`` in your module: ``python -m feeds.sim <venue>``
   finds it by itself (see ``feeds/sim/__main__.py`` for the common options and
   ``--set key=value`` for venue-specific ones). Write ``tests/test_sim_<venue>.py`` (``run_case``, ``Collector`` and
   ``sim_process`` in tests/test_sim_server.py run a case under asyncio and uvloop
   with leak checks), with a real peer client where one exists.

Loopback only: ``host`` defaults to ``127.0.0.1``; ``port=0`` picks a free port.

A minimal venue (clients send ``{"type":"SUBSCRIBE","markets":[...]}``)::

    class PricesSim(SimServer):
        name = "prices"
        path = "/ws"
        malformed_payload = b'{"type":"PRICES","markets":'

        def __init__(self, *, seed: int = 1, interval_s: float | None = 0.01, **kw: Any):
            super().__init__(**kw)
            self.market = SyntheticMarket(seed=seed)
            self.interval_s = interval_s

        async def on_start(self) -> None:
            if self.interval_s is not None:
                self.every(self.interval_s, self.advance, "market")

        def on_connect(self, client: SimClient) -> None:
            client.state = set()                      # subscribed markets

        def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
            msg = json.loads(payload)
            if self.reject_auth:
                client.close(4001, "unauthorized")
            elif msg.get("type") == "SUBSCRIBE":
                client.state.update(msg["markets"])

        def advance(self, steps: int = 1) -> None:
            for _ in range(steps):
                for event in self.market.step():
                    ...  # encode once, client.send(text) to each subscribed client

    async with PricesSim(interval_s=None) as sim:     # start() ... stop()
        ...  # connect a client to sim.url, then sim.advance(100)
        sim.drop(); sim.close(4000, "bye"); sim.stall(2.0); sim.send_malformed()
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, Self, Sequence
from urllib.parse import parse_qs, urlsplit

from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

__all__ = ["Burst", "SimClient", "SimServer", "SimHttpServer", "HttpHandler", "encode_burst",
           "refuse_handshake"]

log = logging.getLogger("feeds.sim")

#: Close codes a server may put on the wire (RFC 6455 7.4: 1000-1014 minus the
#: reserved 1004-1006, and the registered/private range 3000-4999).
_SENDABLE_CLOSE_CODES = frozenset(range(1000, 1015)) - {1004, 1005, 1006}


@dataclass(frozen=True, slots=True)
class Burst:
    """Frames pre-encoded down to the WebSocket wire, for burst mode.

    Server-to-client frames are not masked (RFC 6455 5.1), so the wire bytes of a
    frame are the same for every client: they are built once and written in
    ``chunks`` of about ``chunk_bytes``; chunk i holds ``frames_per_chunk[i]`` frames
    carrying ``payload_per_chunk[i]`` payload bytes. ``frames`` is the total."""
    chunks: tuple[bytes, ...]
    frames_per_chunk: tuple[int, ...]
    payload_per_chunk: tuple[int, ...]
    frames: int


def ws_frame_header(length: int, binary: bool = False) -> bytes:
    """Header of one final, unmasked server frame carrying ``length`` payload bytes."""
    b0 = 0x82 if binary else 0x81
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return bytes((b0, 126)) + length.to_bytes(2, "big")
    return bytes((b0, 127)) + length.to_bytes(8, "big")


def encode_burst(frames: Sequence[bytes], binary: bool = False, chunk_bytes: int = 256 * 1024) -> Burst:
    """Pre-encode ``frames`` (payloads) as WebSocket wire bytes in write-sized chunks.
    O(total bytes); done once, then :meth:`SimClient.burst` only writes."""
    chunks: list[bytes] = []
    counts: list[int] = []
    payloads: list[int] = []
    parts: list[bytes] = []
    size = 0
    for payload in frames:
        parts.append(ws_frame_header(len(payload), binary))
        parts.append(payload)
        size += len(payload)
        if size >= chunk_bytes:
            chunks.append(b"".join(parts))
            counts.append(len(parts) // 2)
            payloads.append(size)
            parts, size = [], 0
    if parts:
        chunks.append(b"".join(parts))
        counts.append(len(parts) // 2)
        payloads.append(size)
    return Burst(tuple(chunks), tuple(counts), tuple(payloads), len(frames))


def refuse_handshake(status: int, body: bytes = b"") -> WSUpgradeResponse:
    """An HTTP response that refuses a WebSocket upgrade (for ``accept`` to return),
    e.g. ``refuse_handshake(401, b"unauthorized")``."""
    response: WSUpgradeResponse = WSUpgradeResponse.create_error_response(status, body)
    return response


def _check_close_code(code: int) -> None:
    if not (code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999):
        raise ValueError(f"close code {code} cannot be sent on the wire (RFC 6455 7.4)")


class SimClient:
    """One connected client, as the simulator sees it.

    ``client_id`` numbers connections from 1 in accept order; ``path`` is the request
    path with its query string; ``query`` its parsed query (``{name: [values]}``);
    ``headers`` the request headers; ``state`` is free for the venue's per-connection
    object. Counters: ``frames_sent``, ``bytes_sent``, ``frames_received``.

    Outgoing frames go straight to the socket while it accepts data; when picows
    signals backpressure (``pause_writing``) or the client is stalled, they wait in a
    FIFO of at most ``max_queue`` frames (O(1) per frame).
    """

    __slots__ = (
        "server", "transport", "client_id", "path", "query", "headers", "state",
        "frames_sent", "bytes_sent", "frames_received", "closed", "close_code",
        "_queue", "_max_queue", "_paused", "_stalled_until", "_stall_handle",
        "_writable", "_drained",
    )

    def __init__(self, server: SimServer, transport: WSTransport, request: WSUpgradeRequest,
                 client_id: int, max_queue: int) -> None:
        self.server = server
        self.transport = transport
        self.client_id = client_id
        self.path: str = request.path.decode("latin-1")
        self.query: dict[str, list[str]] = parse_qs(urlsplit(self.path).query)
        self.headers: dict[str, str] = {k: v for k, v in request.headers.items()}
        self.state: Any = None
        self.frames_sent = 0
        self.bytes_sent = 0
        self.frames_received = 0
        self.closed = False
        #: close code this side sent (``None``: not closed by the simulator, 0: dropped).
        self.close_code: int | None = None
        self._queue: deque[tuple[WSMsgType, bytes]] = deque()
        self._max_queue = max_queue
        self._paused = False
        self._stalled_until = 0.0
        self._stall_handle: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"SimClient(#{self.client_id}, path={urlsplit(self.path).path!r}, closed={self.closed})"

    # -- sending ---------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Frames waiting in the send queue (stalled or socket full). O(1)."""
        return len(self._queue)

    @property
    def stalled(self) -> bool:
        """True while a :meth:`stall` fault holds this client's output."""
        return self._stall_handle is not None

    def send(self, payload: bytes | str, binary: bool = False) -> bool:
        """Send one WebSocket message (text unless ``binary``); never blocks. O(len).

        Returns False when the client is closed or the frame overflowed the queue
        (the client is then closed as a slow consumer, see ``SimServer.on_slow_client``).
        """
        if self.closed:
            return False
        data = payload.encode() if isinstance(payload, str) else payload
        msg_type = WSMsgType.BINARY if binary else WSMsgType.TEXT
        if not self._queue and not self._paused and self._stall_handle is None:
            self._write(msg_type, data)
            return True
        if len(self._queue) >= self._max_queue:
            self.server.stats["slow_clients"] += 1
            self.server._run_hook(self.server.on_slow_client, self)
            return False
        self._queue.append((msg_type, data))
        return True

    def _write(self, msg_type: WSMsgType, data: bytes) -> None:
        self.transport.send(msg_type, data)
        self.frames_sent += 1
        self.bytes_sent += len(data)

    def _flush(self) -> None:
        # Called when the socket drains (resume_writing) or a stall ends.
        q = self._queue
        while q and not self._paused and self._stall_handle is None and not self.closed:
            msg_type, data = q.popleft()
            self._write(msg_type, data)
        if not self._paused and self._stall_handle is None:
            _resolve(self._writable)
            self._writable = None
            if not q:
                _resolve(self._drained)
                self._drained = None

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until the send queue is empty (or the client closed).

        Raises ``TimeoutError`` after ``timeout`` seconds."""
        if self.closed or (not self._queue and not self._paused and self._stall_handle is None):
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(asyncio.shield(self._drained), timeout)

    async def _wait_writable(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._writable)

    async def burst(self, frames: Burst | Sequence[bytes], binary: bool = False) -> int:
        """Write pre-encoded frames as fast as the socket takes them (burst mode).

        ``frames`` is a :class:`Burst` (encoded once, shared by every client) or a
        sequence of payloads (encoded here with ``binary``). Waits for the send queue
        to drain first (order is kept), then writes whole chunks of wire bytes to the
        socket, awaiting only when it signals backpressure or a stall. Returns how
        many frames were written (fewer if the client closed). O(total bytes)."""
        burst = frames if isinstance(frames, Burst) else encode_burst(frames, binary)
        await self.drain(timeout=60.0)
        # The wire bytes bypass picows' framing (already framed) but share its
        # transport, so ordering with frames sent through picows is kept.
        write = self.transport.underlying_transport.write
        n = 0
        for chunk, count, payload in zip(burst.chunks, burst.frames_per_chunk,
                                         burst.payload_per_chunk):
            if self._paused or self._stall_handle is not None:
                await self._wait_writable()
            if self.closed:
                break
            write(chunk)
            n += count
            self.frames_sent += count
            self.bytes_sent += payload
        return n

    # -- faults ----------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a CLOSE frame with ``code``/``reason`` (after queued frames are
        discarded) and close the socket. ``ValueError`` for a code that cannot go on
        the wire. Idempotent."""
        _check_close_code(code)
        if self.closed:
            return
        self._mark_closed(code)
        self.transport.send_close(code, reason.encode())  # type: ignore[arg-type]
        self.transport.disconnect()

    def drop(self) -> None:
        """Abort the TCP connection with no CLOSE frame (a network drop). Idempotent."""
        if self.closed:
            return
        self._mark_closed(0)
        self.transport.disconnect(graceful=False)

    def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket PING control frame (skipped while closed or stalled: a
        frozen server sends nothing)."""
        if not self.closed and self._stall_handle is None:
            self.transport.send_ping(payload)

    def stall(self, seconds: float) -> None:
        """Hold every outgoing frame for ``seconds`` (they queue, bounded), then
        resume. Models a frozen feed: the client should notice the silence. A new
        stall replaces a running one."""
        if seconds <= 0:
            raise ValueError(f"stall seconds must be > 0, got {seconds!r}")
        if self.closed:
            return
        if self._stall_handle is not None:
            self._stall_handle.cancel()
        self._stall_handle = asyncio.get_running_loop().call_later(seconds, self._end_stall)

    def _end_stall(self) -> None:
        self._stall_handle = None
        self._flush()

    def _mark_closed(self, code: int) -> None:
        self.closed = True
        if self.close_code is None:
            self.close_code = code
        self._queue.clear()
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        # Wake burst/drain waiters: they see ``closed`` and return.
        _resolve(self._writable)
        _resolve(self._drained)
        self._writable = self._drained = None


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class _SimListener(WSListener):
    """picows listener for one connection: forwards to the server's hooks."""

    def __init__(self, server: SimServer, request: WSUpgradeRequest) -> None:
        super().__init__()
        self._server = server
        self._request = request
        self.client: SimClient | None = None
        self._fragments: list[bytes] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.client = self._server._attach(transport, self._request)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        client = self.client
        if client is None:
            return
        mt = frame.msg_type
        if mt == WSMsgType.CLOSE:
            # Answer the peer's close handshake, then drop the socket.
            if not client.closed:
                # picows returns the raw code (an int subclass) even outside WSCloseCode.
                code: Any = frame.get_close_code()
                client._mark_closed(int(code))
                transport.send_close(code, frame.get_close_message())
            transport.disconnect()
            return
        if mt == WSMsgType.PING or mt == WSMsgType.PONG:
            return  # picows answers pings itself (enable_auto_pong)
        if mt == WSMsgType.CONTINUATION or not frame.fin:
            # Fragmented message: reassemble (rare from clients; copy is fine here).
            self._fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            payload = b"".join(self._fragments)
            self._fragments.clear()
        else:
            payload = frame.get_payload_as_bytes()
        client.frames_received += 1
        self._server.stats["frames_received"] += 1
        if not client.closed:
            self._server._run_hook(self._server.on_message, client, payload, mt == WSMsgType.BINARY)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.client is not None:
            self._server._detach(self.client)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client._paused = True

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client._paused = False
            self.client._flush()


class SimServer:
    """Base class of the venue simulators: a picows WebSocket server on loopback.

    Parameters: ``host`` (loopback by default), ``port`` (0 picks a free port),
    ``max_queue`` (frames a client may have waiting before it is closed as a slow
    consumer), ``max_frame_size`` (largest client frame accepted, bytes).

    Lifecycle: ``port = await sim.start()``; ``sim.url``; ``await sim.stop()`` (also an
    async context manager). ``stats`` counts connections, messages, faults and hook
    errors. See the module docstring for how to write a venue on top of it.
    """

    name: ClassVar[str] = "sim"
    path: ClassVar[str] = "/"
    #: Frame sent by :meth:`send_malformed` when no payload is given: truncated JSON.
    malformed_payload: ClassVar[bytes] = b'{"truncated":[1,2'
    #: Close code and reason used when a client's send queue overflows.
    slow_close_code: ClassVar[int] = 1008
    slow_close_reason: ClassVar[str] = "slow consumer"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, max_queue: int = 100_000,
                 max_frame_size: int = 1 << 20) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.host = host
        self._requested_port = port
        self.max_queue = max_queue
        self.max_frame_size = max_frame_size
        #: The "reject auth" fault: venues refuse every credential while True.
        self.reject_auth = False
        #: While True, periodic work started with :meth:`every` skips its turns.
        self.paused = False
        self.stats: dict[str, int] = {
            "connections": 0, "disconnections": 0, "frames_received": 0,
            "slow_clients": 0, "hook_errors": 0, "faults": 0, "handshakes_refused": 0,
        }
        self._server: asyncio.Server | None = None
        self._port = 0
        self._clients: dict[int, SimClient] = {}
        self._next_client_id = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._client_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> int:
        """Start listening; returns the bound port. ``RuntimeError`` if started twice."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} simulator already started")
        self._stopping = False
        self._server = await ws_create_server(
            self._listener_factory, self.host, self._requested_port,
            max_frame_size=self.max_frame_size, enable_auto_pong=True,
            logger_name=f"sim.{self.name}",
        )
        self._port = self._server.sockets[0].getsockname()[1]
        try:
            await self.on_start()
        except BaseException:
            await self.stop()
            raise
        return self._port

    async def stop(self, code: int = 1001, reason: str = "server shutdown",
                   timeout: float = 2.0) -> None:
        """Close every connection (CLOSE ``code``), cancel and await every tracked task,
        stop listening. Safe to call twice. Sockets still open after ``timeout``
        seconds are aborted."""
        if self._server is None:
            return
        self._stopping = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.on_stop()
        except Exception:
            self.stats["hook_errors"] += 1
            log.exception("%s simulator: on_stop failed", self.name)
        clients = list(self._clients.values())
        for c in clients:
            c.close(code, reason)
        for c in clients:
            try:
                await asyncio.wait_for(c.transport.wait_disconnected(), timeout)
            except (asyncio.TimeoutError, Exception):
                c.transport.disconnect(graceful=False)
        # A message that arrived while closing may have spawned a task (a burst...).
        while self._tasks:
            late = list(self._tasks)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for _, fut in self._client_waiters:
            if not fut.done():
                fut.cancel()
        self._client_waiters.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """Bound TCP port (0 before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port/path`` of the WebSocket endpoint. ``RuntimeError`` before start."""
        if self._server is None:
            raise RuntimeError(f"{self.name} simulator is not started")
        return f"ws://{self.host}:{self._port}{self.path}"

    @property
    def clients(self) -> list[SimClient]:
        """Connected clients, oldest first (a new list)."""
        return list(self._clients.values())

    async def wait_for_clients(self, n: int = 1, timeout: float = 5.0) -> list[SimClient]:
        """Wait until at least ``n`` clients are connected; ``TimeoutError`` after
        ``timeout`` seconds."""
        if len(self._clients) < n:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, fut)
            self._client_waiters.append(entry)
            try:
                await asyncio.wait_for(fut, timeout)
            finally:
                if entry in self._client_waiters:
                    self._client_waiters.remove(entry)
        return self.clients

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task: cancelled and awaited by :meth:`stop`.
        An exception other than cancellation is logged and counted in
        ``stats["hook_errors"]``."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(f"sim.{self.name}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def every(self, interval_s: float, fn: Callable[[], object], name: str,
              pausable: bool = True) -> asyncio.Task[Any]:
        """Call ``fn()`` every ``interval_s`` seconds in a tracked task (a market
        tick, a heartbeat), skipping turns while ``paused`` when ``pausable``. An
        exception from ``fn`` is logged and counted in ``stats["hook_errors"]`` and
        the loop goes on. ``ValueError`` for a non-positive interval."""
        if interval_s <= 0:
            raise ValueError(f"{name}: interval must be > 0 s, got {interval_s!r}")

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                if not (pausable and self.paused):
                    self._run_hook(fn)

        return self.spawn(loop(), name)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["hook_errors"] += 1
            log.error("%s simulator task %s failed", self.name, task.get_name(),
                      exc_info=task.exception())

    # -- hooks (override in a venue) ---------------------------------------------------

    def accept(self, request: WSUpgradeRequest) -> bool | WSUpgradeResponse:
        """Routing: True upgrades the connection, False answers HTTP 404, a
        ``WSUpgradeResponse`` (status other than 101) is sent instead of upgrading.
        Default: upgrade when the request path equals ``path``."""
        return urlsplit(request.path.decode("latin-1")).path == self.path

    def on_connect(self, client: SimClient) -> None:
        """A client completed the WebSocket handshake."""

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        """One complete message from ``client`` (``payload`` is a private copy)."""

    def on_disconnect(self, client: SimClient) -> None:
        """``client``'s socket is closed; it is no longer in :attr:`clients`."""

    def on_slow_client(self, client: SimClient) -> None:
        """``client``'s send queue overflowed. Default: close it with
        ``slow_close_code`` / ``slow_close_reason``."""
        client.close(self.slow_close_code, self.slow_close_reason)

    async def on_start(self) -> None:
        """Called once the socket listens: start the venue's tasks with :meth:`spawn`."""

    async def on_stop(self) -> None:
        """Called by :meth:`stop` after tracked tasks are cancelled, before sockets close."""

    def _run_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            self.stats["hook_errors"] += 1
            log.exception("%s simulator: %s failed", self.name, getattr(hook, "__name__", hook))

    # -- faults (default target: every connected client) -----------------------------

    def fault_targets(self, client: SimClient | None = None) -> list[SimClient]:
        """Clients a fault applies to: ``client`` if given and open, else every open
        client. Counts one fault in ``stats["faults"]``; for venue fault methods."""
        self.stats["faults"] += 1
        if client is not None:
            return [client] if not client.closed else []
        return [c for c in self._clients.values() if not c.closed]

    _targets = fault_targets  # the name venue simulators used first

    def drop(self, client: SimClient | None = None) -> int:
        """Abort the connection(s) with no CLOSE frame. Returns how many were dropped."""
        targets = self.fault_targets(client)
        for c in targets:
            c.drop()
        return len(targets)

    def close(self, code: int, reason: str = "", client: SimClient | None = None) -> int:
        """Close the connection(s) with ``code``/``reason``. Returns how many."""
        _check_close_code(code)
        targets = self.fault_targets(client)
        for c in targets:
            c.close(code, reason)
        return len(targets)

    def send_malformed(self, payload: bytes | None = None, client: SimClient | None = None) -> int:
        """Send a frame that is not valid for the venue (default ``malformed_payload``)."""
        data = self.malformed_payload if payload is None else payload
        targets = self.fault_targets(client)
        for c in targets:
            c.send(data)
        return len(targets)

    def send_oversize(self, size_bytes: int, client: SimClient | None = None) -> int:
        """Send one syntactically valid JSON text frame of exactly ``size_bytes`` bytes
        (meant to exceed the client's maximum message size)."""
        if size_bytes < 16:
            raise ValueError(f"oversize frame must be >= 16 bytes, got {size_bytes!r}")
        data = b'{"pad":"' + b"x" * (size_bytes - 10) + b'"}'
        targets = self.fault_targets(client)
        for c in targets:
            c.send(data)
        return len(targets)

    def stall(self, seconds: float, client: SimClient | None = None) -> int:
        """Stop sending to the connected client(s) for ``seconds`` (frames queue,
        bounded). Clients that connect later are not stalled."""
        targets = self.fault_targets(client)
        for c in targets:
            c.stall(seconds)
        return len(targets)

    async def burst(self, frames: Burst | Sequence[bytes], client: SimClient | None = None,
                    binary: bool = False) -> int:
        """Burst mode: write pre-encoded frames (a :class:`Burst`, or payloads encoded
        once here) to the client(s) as fast as the sockets take them. Returns the
        total number of frames written."""
        burst = frames if isinstance(frames, Burst) else encode_burst(frames, binary)
        targets = [client] if client is not None else self.clients
        counts = await asyncio.gather(*(c.burst(burst) for c in targets if not c.closed))
        return sum(counts)

    # -- internals -------------------------------------------------------------------

    def _listener_factory(self, request: WSUpgradeRequest
                          ) -> WSListener | WSUpgradeResponseWithListener | None:
        if self._stopping:
            return None
        try:
            verdict = self.accept(request)
        except Exception:
            self.stats["hook_errors"] += 1
            log.exception("%s simulator: accept failed", self.name)
            verdict = False
        if isinstance(verdict, WSUpgradeResponse):
            self.stats["handshakes_refused"] += 1
            return WSUpgradeResponseWithListener(verdict, None)
        return _SimListener(self, request) if verdict else None

    def _attach(self, transport: WSTransport, request: WSUpgradeRequest) -> SimClient:
        client = SimClient(self, transport, request, self._next_client_id, self.max_queue)
        self._next_client_id += 1
        self._clients[client.client_id] = client
        self.stats["connections"] += 1
        if self._stopping:
            client.close(1001, "server shutdown")
            return client
        self._run_hook(self.on_connect, client)
        for n, fut in self._client_waiters:
            if len(self._clients) >= n and not fut.done():
                fut.set_result(None)
        return client

    def _detach(self, client: SimClient) -> None:
        if not client.closed:
            client._mark_closed(0)
        if self._clients.pop(client.client_id, None) is not None:
            self.stats["disconnections"] += 1
            self._run_hook(self.on_disconnect, client)


#: An HTTP route handler: (path, query) -> (status, JSON/text body bytes).
HttpHandler = Callable[[str, dict[str, list[str]]], tuple[int, bytes]]


class SimHttpServer:
    """A tiny HTTP/1.0-1.1 GET server on loopback for REST endpoints (depth snapshots).

    ``routes`` maps a path (``"/api/v3/depth"``) to an :data:`HttpHandler`. Each
    request is answered and the connection closed (``Connection: close``), so no
    keep-alive state exists. Unknown paths get 404, non-GET 405, handler errors 500.
    ``delay_s`` holds every response that long (a slow REST fault); ``requests``
    counts answered requests. Built on ``asyncio.start_server``: no dependencies.
    """

    def __init__(self, routes: dict[str, HttpHandler], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.routes = dict(routes)
        self.host = host
        self._requested_port = port
        self._port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.delay_s = 0.0
        self.requests = 0

    async def start(self) -> int:
        """Listen; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("HTTP simulator already started")
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self._port

    async def stop(self) -> None:
        """Stop listening and cancel requests in flight. Safe to call twice."""
        if self._server is None:
            return
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"http://{self.host}:{self._port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # asyncio.start_server always runs the handler in a task
            self._conns.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                status, body = 400, b'{"error":"bad request line"}'
            elif parts[0] != "GET":
                status, body = 405, b'{"error":"method not allowed"}'
            else:
                url = urlsplit(parts[1])
                handler = self.routes.get(url.path)
                if handler is None:
                    status, body = 404, b'{"error":"not found"}'
                else:
                    try:
                        status, body = handler(url.path, parse_qs(url.query))
                    except Exception:
                        log.exception("HTTP simulator route %s failed", url.path)
                        status, body = 500, b'{"error":"internal"}'
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                      429: "Too Many Requests", 500: "Internal Server Error",
                      503: "Service Unavailable"}.get(status, "Status")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            self.requests += 1
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass
            if task is not None:
                self._conns.discard(task)
