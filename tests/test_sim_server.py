"""The simulator base (feeds.sim.server) over real loopback sockets, asyncio and uvloop.

``run_case`` is shared by the other simulator tests: it runs one coroutine in a fresh
event loop of the requested kind with a timeout and asserts nothing leaked (no task
left running in the loop, no socket left open once the loop is closed).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
import uvloop
from picows import (
    WSFrame, WSHandshakeError, WSListener, WSMsgType, WSProtocolError, WSTransport,
    WSUpgradeRequest, WSUpgradeResponse, ws_connect,
)

from feeds.sim.server import SimClient, SimHttpServer, SimServer, encode_burst, refuse_handshake

LOOPS = ["asyncio", "uvloop"]


def _open_sockets() -> set[str]:
    """Open socket file descriptors of this process, as ``fd:socket:[inode]``."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, closed meanwhile
            continue
        if target.startswith("socket:"):
            out.add(f"{name}:{target}")
    return out


def run_case(loop_kind: str, case: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Run ``case()`` in a new ``loop_kind`` loop ("asyncio" | "uvloop") within
    ``timeout`` seconds; fail if a task or a socket outlives it."""
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    leftover: set[asyncio.Task[Any]] = set()

    async def main() -> Any:
        result = await asyncio.wait_for(case(), timeout)
        await asyncio.sleep(0)  # let done-callbacks of finished tasks run
        leftover.update(t for t in asyncio.all_tasks() if t is not asyncio.current_task())
        return result

    before = _open_sockets()
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main())
    assert not leftover, f"tasks left behind: {leftover}"
    leaked = _open_sockets() - before
    assert not leaked, f"sockets left open: {sorted(leaked)}"
    return result


@contextlib.contextmanager
def sim_process(*args: str, stop_signal: int = signal.SIGTERM) -> Iterator[dict[str, Any]]:
    """Run ``python -m feeds.sim ARGS`` in its own process; yield the JSON line it
    announces; on exit send ``stop_signal`` and require a clean exit (code 0)."""
    proc = subprocess.Popen([sys.executable, "-m", "feeds.sim", *args],
                            cwd=Path(__file__).resolve().parents[1], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class Collector(WSListener):
    """Test client: records every data frame and the close frame it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.event = asyncio.Event()
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            code: Any = frame.get_close_code()
            self.close_code = int(code)
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(code)
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.frames.append(frame.get_payload_as_bytes())
        self.event.set()

    async def wait_frames(self, n: int, timeout: float = 5.0) -> None:
        async def loop() -> None:
            while len(self.frames) < n:
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(loop(), timeout)


class EchoSim(SimServer):
    """A minimal venue: echoes every message, counts connects/disconnects."""

    name = "echo"
    path = "/ws"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.connected: list[int] = []
        self.disconnected: list[int] = []

    def on_connect(self, client: SimClient) -> None:
        self.connected.append(client.client_id)
        client.send(b"hello")

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        if payload == b"boom":
            raise RuntimeError("hook failure on purpose")
        client.send(payload, binary=binary)

    def on_disconnect(self, client: SimClient) -> None:
        self.disconnected.append(client.client_id)


async def _connect(url: str, **kw: Any) -> tuple[WSTransport, Collector]:
    transport, listener = await ws_connect(Collector, url, **kw)
    assert isinstance(listener, Collector)
    return transport, listener


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_start_echo_stop(loop_kind: str) -> None:
    async def case() -> None:
        sim = EchoSim()
        port = await sim.start()
        assert port > 0 and sim.url == f"ws://127.0.0.1:{port}/ws"
        t, c = await _connect(sim.url)
        await c.wait_frames(1)
        t.send(WSMsgType.TEXT, b"ping-1")
        t.send(WSMsgType.BINARY, b"\x00\x01")
        await c.wait_frames(3)
        assert c.frames == [b"hello", b"ping-1", b"\x00\x01"]
        assert sim.stats["frames_received"] == 2
        # A failing hook is logged and counted; the connection stays up.
        t.send(WSMsgType.TEXT, b"boom")
        t.send(WSMsgType.TEXT, b"after")
        await c.wait_frames(4)
        assert c.frames[-1] == b"after" and sim.stats["hook_errors"] == 1
        await sim.stop()
        await asyncio.wait_for(t.wait_disconnected(), 5)
        assert c.close_code == 1001 and c.close_reason == "server shutdown"
        assert sim.connected == [1] and sim.disconnected == [1] and sim.clients == []
        await sim.stop()  # idempotent
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_every_runs_periodic_work_and_pauses(loop_kind: str) -> None:
    async def case() -> None:
        sim = EchoSim()
        calls: list[str] = []

        def tick() -> None:
            calls.append("tick")
            if calls.count("tick") == 2:
                raise RuntimeError("a failing tick is counted, the loop goes on")

        with pytest.raises(ValueError, match="interval"):
            sim.every(0, tick, "bad")
        await sim.start()
        sim.every(0.01, tick, "tick")
        sim.every(0.01, lambda: calls.append("beat"), "beat", pausable=False)
        for _ in range(300):
            if calls.count("tick") >= 4:
                break
            await asyncio.sleep(0.01)
        assert calls.count("tick") >= 4 and sim.stats["hook_errors"] == 1
        sim.paused = True
        await asyncio.sleep(0.03)  # a turn already due may still run
        ticks, beats = calls.count("tick"), calls.count("beat")
        await asyncio.sleep(0.1)
        assert calls.count("tick") == ticks and calls.count("beat") > beats
        await sim.stop()  # cancels and awaits both loops (run_case checks no task is left)
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_wrong_path_is_404(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim() as sim:
            with pytest.raises(Exception) as err:
                await ws_connect(Collector, f"ws://127.0.0.1:{sim.port}/other")
            assert "404" in str(err.value)
            assert sim.stats["connections"] == 0
    run_case(loop_kind, case)


class HandshakeAuthSim(EchoSim):
    """A venue that authenticates in the HTTP upgrade (Authorization header)."""

    def accept(self, request: WSUpgradeRequest) -> bool | WSUpgradeResponse:
        if not super().accept(request):
            return False
        if self.reject_auth or request.headers.get("Authorization") != "Bearer good":
            return refuse_handshake(401, b"unauthorized")
        return True


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_accept_can_refuse_the_handshake(loop_kind: str) -> None:
    async def case() -> None:
        async with HandshakeAuthSim() as sim:
            with pytest.raises(WSHandshakeError) as err:
                await ws_connect(Collector, sim.url, extra_headers={"Authorization": "Bearer bad"})
            assert err.value.response is not None and err.value.response.status == 401
            t, c = await _connect(sim.url, extra_headers={"Authorization": "Bearer good"})
            await c.wait_frames(1)
            sim.reject_auth = True
            with pytest.raises(WSHandshakeError):
                await ws_connect(Collector, sim.url, extra_headers={"Authorization": "Bearer good"})
            assert sim.stats["handshakes_refused"] == 2 and sim.stats["connections"] == 1
            t.disconnect()
            await t.wait_disconnected()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_close_with_code_and_drop(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim() as sim:
            t1, c1 = await _connect(sim.url)
            t2, c2 = await _connect(sim.url)
            clients = await sim.wait_for_clients(2)
            assert sim.close(3500, "invalid token", client=clients[0]) == 1
            await asyncio.wait_for(t1.wait_disconnected(), 5)
            assert (c1.close_code, c1.close_reason) == (3500, "invalid token")
            assert clients[0].close_code == 3500
            assert sim.drop() == 1  # only the open one is left
            await asyncio.wait_for(t2.wait_disconnected(), 5)
            assert c2.close_code is None  # no CLOSE frame: a network drop
            with pytest.raises(ValueError, match="1005"):
                sim.close(1005)
            for _ in range(100):
                if not sim.clients:
                    break
                await asyncio.sleep(0.01)
            assert sim.clients == [] and sim.disconnected == [1, 2]
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_malformed_and_oversize(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim() as sim:
            t, c = await _connect(sim.url, max_frame_size=1000)
            await c.wait_frames(1)
            sim.send_malformed()
            sim.send_malformed(b"\xff\xfe not utf8")
            await c.wait_frames(3)
            assert c.frames[1:] == [EchoSim.malformed_payload, b"\xff\xfe not utf8"]
            sim.send_oversize(5000)
            # The client's max frame size (1000) makes picows drop the connection.
            with pytest.raises(WSProtocolError, match="5000 > 1000"):
                await asyncio.wait_for(t.wait_disconnected(), 5)
        t2, c2 = None, None
        async with EchoSim() as sim:
            t2, c2 = await _connect(sim.url)
            await c2.wait_frames(1)
            sim.send_oversize(70_000)
            await c2.wait_frames(2)
            assert len(c2.frames[1]) == 70_000 and c2.frames[1].startswith(b'{"pad":"')
            assert c2.frames[1].endswith(b'"}')
        await asyncio.wait_for(t2.wait_disconnected(), 5)
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stall_queues_then_resumes(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim() as sim:
            t, c = await _connect(sim.url)
            await c.wait_frames(1)
            (client,) = sim.clients
            sim.stall(0.3)
            assert client.stalled
            for i in range(5):
                client.send(f"m{i}")
            await asyncio.sleep(0.15)
            assert len(c.frames) == 1 and client.queued == 5
            await c.wait_frames(6, timeout=2)
            assert c.frames[1:] == [f"m{i}".encode() for i in range(5)]
            assert not client.stalled and client.queued == 0
            # A client that connects during a stall is not stalled.
            sim.stall(5.0)
            t2, c2 = await _connect(sim.url)
            await c2.wait_frames(1)
            with pytest.raises(ValueError):
                client.stall(0)
            t2.disconnect()
            await t2.wait_disconnected()
        await asyncio.wait_for(t.wait_disconnected(), 5)
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_bounded_queue_closes_slow_client(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim(max_queue=10) as sim:
            t, c = await _connect(sim.url)
            await c.wait_frames(1)
            (client,) = sim.clients
            client.stall(5.0)
            sent = [client.send(f"x{i}") for i in range(11)]
            assert sent == [True] * 10 + [False]
            assert sim.stats["slow_clients"] == 1 and client.closed
            await asyncio.wait_for(t.wait_disconnected(), 5)
            assert c.close_code == EchoSim.slow_close_code
            assert c.frames == [b"hello"]  # queued frames are discarded on close
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_burst_delivers_every_frame_in_order(loop_kind: str) -> None:
    n = 20_000
    # Payload lengths cover the three WebSocket length encodings (7, 16 and 64 bit).
    frames = [b'{"seq":%d,"pad":"%s"}' % (i, b"y" * (150 if i % 3 else 40)) for i in range(n)]
    frames[777] = b'{"big":"' + b"z" * 70_000 + b'"}'
    burst = encode_burst(frames, chunk_bytes=64 * 1024)
    assert burst.frames == n and sum(burst.frames_per_chunk) == n and len(burst.chunks) > 10
    assert sum(burst.payload_per_chunk) == sum(map(len, frames))

    async def case() -> None:
        async with EchoSim() as sim:
            t1, c1 = await _connect(sim.url, max_frame_size=1 << 20)
            t2, c2 = await _connect(sim.url, max_frame_size=1 << 20)
            await c1.wait_frames(1)
            await c2.wait_frames(1)
            first, second = sim.clients
            first.send("queued-before-burst")
            assert await sim.burst(burst) == 2 * n  # one Burst, shared by both clients
            await c1.wait_frames(n + 2, timeout=15)
            await c2.wait_frames(n + 1, timeout=15)
            assert c1.frames[1] == b"queued-before-burst"
            assert c1.frames[2:] == frames and c2.frames[1:] == frames
            assert first.frames_sent == n + 2
            assert second.bytes_sent == len(b"hello") + sum(map(len, frames))
            # Plain payload lists are encoded on the fly, text or binary.
            assert await second.burst([b"\x00\x01"], binary=True) == 1
            await c2.wait_frames(n + 2)
            assert c2.frames[-1] == b"\x00\x01"
        for t in (t1, t2):
            await asyncio.wait_for(t.wait_disconnected(), 5)
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_client_close_handshake_and_http(loop_kind: str) -> None:
    async def case() -> None:
        async with EchoSim() as sim:
            t, c = await _connect(sim.url)
            await c.wait_frames(1)
            t.send_close(1000, b"bye")  # type: ignore[arg-type]
            await asyncio.wait_for(t.wait_disconnected(), 5)
            assert c.close_code == 1000  # the server echoed the close
            for _ in range(100):
                if sim.disconnected:
                    break
                await asyncio.sleep(0.01)
            assert sim.disconnected == [1]

        def depth(path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
            return 200, b'{"symbol":"%s"}' % query["symbol"][0].encode()

        http = SimHttpServer({"/api/v3/depth": depth})
        await http.start()
        loop = asyncio.get_running_loop()

        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(http.base_url + path, timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        assert await loop.run_in_executor(None, get, "/api/v3/depth?symbol=BTCUSDT") == (
            200, b'{"symbol":"BTCUSDT"}')
        assert (await loop.run_in_executor(None, get, "/nope"))[0] == 404
        # HTTP/1.0 over raw streams works too.
        r, w = await asyncio.open_connection("127.0.0.1", int(http.base_url.rsplit(":", 1)[1]))
        w.write(b"GET /api/v3/depth?symbol=X HTTP/1.0\r\n\r\n")
        data = await r.read()
        w.close()
        await w.wait_closed()
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b'{"symbol":"X"}')
        assert http.requests == 3
        await http.stop()
    run_case(loop_kind, case)
