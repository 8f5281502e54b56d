"""Session layer over real loopback sockets, under asyncio and uvloop.

A tiny picows server (defined here, scripted per test) plays the venue; a minimal
``Venue`` subclass records what the session hands it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import pytest
import uvloop
from picows import WSCloseCode, WSListener, WSMsgType, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from engine.errors import DecodeError, FeedError
from feeds.session import Feed, FeedStatus, LatencyRing, Secret, SessionOptions, StatusEvent, mask_secrets
from feeds.venue import CloseInfo, Endpoint, Reconnect, Terminal, Venue
from loopback import tasks_left


class ServerConn(WSListener):
    def __init__(self, server: "Server") -> None:
        super().__init__()
        self.server = server
        self.transport: Any = None

    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        self.server.conns.append(self)
        self.server.on_connect(self)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.server.received.append(frame.get_payload_as_bytes())

    def send(self, data: bytes) -> None:
        self.transport.send(WSMsgType.TEXT, data)


class Server:
    """Loopback picows server; ``on_connect(conn)`` scripts each connection."""

    def __init__(self, on_connect: Callable[[ServerConn], None], reject_status: int = 0) -> None:
        self.on_connect = on_connect
        self.reject_status = reject_status
        self.conns: list[ServerConn] = []
        self.received: list[bytes] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.srv: Any = None

    async def __aenter__(self) -> "Server":
        def factory(request: Any) -> Any:
            self.paths.append(request.path.decode() if isinstance(request.path, bytes) else str(request.path))
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            if self.reject_status:
                return WSUpgradeResponseWithListener(
                    WSUpgradeResponse.create_error_response(self.reject_status), None)
            return ServerConn(self)
        self.srv = await ws_create_server(factory, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.srv.sockets[0].getsockname()[1]}/ws"

    async def __aexit__(self, *exc: Any) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.disconnect(False)
        self.srv.close()
        await self.srv.wait_closed()


class EchoVenue(Venue):
    """Records frames; b"bad" raises DecodeError, b"fatal" a terminal FeedError."""

    name = "echo"
    stale_after_s = None

    def __init__(self, url: str, token: Secret | None = None, **kw: Any) -> None:
        super().__init__(None, name="echo", url=url, token=token)  # type: ignore[arg-type]
        self.frames: list[tuple[bytes, int]] = []
        self.opens = 0
        self.closes: list[CloseInfo] = []
        self.heartbeats = 0
        for k, v in kw.items():
            setattr(self, k, v)

    def endpoint(self) -> Endpoint:
        params = {"token": self.token} if self.token is not None else {}
        return Endpoint(self.url, headers={"X-Api-Key": self.token} if self.token else {}, params=params)

    def on_open(self, feed: Feed) -> None:
        self.opens += 1
        feed.send_text(b"hello")
        feed.subscribed("echo ready")

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        data = bytes(payload)
        if data == b"bad":
            raise DecodeError("bad frame", 0)
        if data == b"fatal":
            raise FeedError("permission denied", terminal=True)
        self.frames.append((data, recv_ns))

    def heartbeat(self, now_ns: int) -> None:
        self.heartbeats += 1

    def on_close(self, close: CloseInfo) -> Reconnect | Terminal:
        self.closes.append(close)
        if 3500 <= close.code <= 3999:
            return Terminal(close.reason)
        return super().on_close(close)


FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=1, connect_timeout_s=2.0)


async def wait_for(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def test_secret_is_masked() -> None:
    s = Secret("tok-SUPERSECRET-1")
    assert repr(s) == "Secret('***')" and str(s) == "***" and f"{s}" == "***"
    assert s.reveal() == "tok-SUPERSECRET-1"
    assert mask_secrets("url ws://h/?token=tok-SUPERSECRET-1 x") == "url ws://h/?token=*** x"
    assert Secret.wrap(None) is None and Secret.wrap(s) is s
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(s)


def test_latency_ring_is_fixed_size() -> None:
    ring = LatencyRing(8)
    for v in range(1, 101):
        ring.add(v)
    assert ring.count == 100
    assert ring.samples() == list(range(93, 101))
    p = ring.percentiles()
    assert p["p50"] == 96 and p["max"] == 100 and p["p99"] == 100
    ring.add(-5)
    assert ring.samples()[-1] == 0
    with pytest.raises(ValueError):
        LatencyRing(0)


def test_frames_reach_venue_and_close_is_clean(run: Any) -> None:
    async def main() -> None:
        def script(conn: ServerConn) -> None:
            for i in range(50):
                conn.send(b"frame-%d" % i)
            conn.send(b"bad")
            conn.send(b"after-bad")
        async with Server(script) as srv:
            venue = EchoVenue(srv.url, token=Secret("hdr-token-123456"))
            events: list[StatusEvent] = []
            feed = Feed(venue, SessionOptions(**FAST), on_status=events.append)
            feed.start()
            await feed.wait_subscribed(2.0)
            await wait_for(lambda: len(venue.frames) == 51)
            assert [f for f, _ in venue.frames][:2] == [b"frame-0", b"frame-1"]
            assert venue.frames[-1][0] == b"after-bad"
            assert feed.counters.frames == 52 and feed.counters.decode_errors == 1
            assert feed.counters.bytes == sum(len(f) for f, _ in venue.frames) + 3
            await wait_for(lambda: srv.received == [b"hello"])
            # token sent as query param and header, revealed only on the wire
            assert "token=hdr-token-123456" in srv.paths[0]
            assert srv.headers[0]["x-api-key"] == "hdr-token-123456"
            await feed.close()
            assert feed.status is FeedStatus.CLOSED
            assert [e.status for e in events][:3] == [FeedStatus.CONNECTING, FeedStatus.CONNECTED,
                                                      FeedStatus.SUBSCRIBED]
            assert events[-1].status is FeedStatus.CLOSED
            assert all("hdr-token-123456" not in e.reason for e in events)
            assert "hdr-token" not in repr(feed) + repr(venue.token)
            assert not tasks_left()
    run(main())


def test_drop_reconnects_with_backoff(run: Any) -> None:
    async def main() -> None:
        def script(conn: ServerConn) -> None:
            conn.send(b"x%d" % len(srv.conns))
            if len(srv.conns) < 3:
                asyncio.get_running_loop().call_later(0.01, conn.transport.disconnect, False)
        async with Server(script) as srv:
            venue = EchoVenue(srv.url)
            events: list[StatusEvent] = []
            feed = Feed(venue, SessionOptions(**FAST), on_status=events.append)
            feed.start()
            await wait_for(lambda: len(srv.conns) == 3 and len(venue.frames) == 3 and venue.opens == 3)
            assert feed.counters.reconnects == 2 and venue.opens == 3
            assert [f for f, _ in venue.frames] == [b"x1", b"x2", b"x3"]
            assert sum(e.status is FeedStatus.RECONNECTING for e in events) == 2
            assert all(c.reason == "connection dropped" for c in venue.closes)
            await feed.close()
            assert not tasks_left()
    run(main())


def test_terminal_close_code_stops(run: Any) -> None:
    async def main() -> None:
        def script(conn: ServerConn) -> None:
            conn.transport.send_close(3500, b"invalid token")  # type: ignore[arg-type]
            conn.transport.disconnect()
        async with Server(script) as srv:
            venue = EchoVenue(srv.url)
            feed = Feed(venue, SessionOptions(**FAST))
            feed.start()
            await asyncio.wait_for(feed.wait_closed(), 3)
            assert feed.status is FeedStatus.FAILED
            assert venue.closes[-1].code == 3500 and "invalid token" in feed.status_reason
            assert len(srv.conns) == 1 and feed.counters.reconnects == 0
            await feed.close()
            assert not tasks_left()
    run(main())


def test_venue_feed_error_terminal_and_http_401(run: Any) -> None:
    async def main() -> None:
        async with Server(lambda c: c.send(b"fatal")) as srv:
            feed = Feed(EchoVenue(srv.url), SessionOptions(**FAST))
            feed.start()
            await asyncio.wait_for(feed.wait_closed(), 3)
            assert feed.status is FeedStatus.FAILED and "permission denied" in feed.status_reason
        async with Server(lambda c: None, reject_status=401) as srv:
            feed = Feed(EchoVenue(srv.url, token=Secret("tok-in-query-987")), SessionOptions(**FAST))
            feed.start()
            with pytest.raises(FeedError) as err:
                await feed.wait_subscribed(3)
            assert err.value.terminal and "401" in str(err.value)
            assert "tok-in-query-987" not in str(err.value) + feed.status_reason
            await feed.close()
        async with Server(lambda c: None, reject_status=503) as srv:
            feed = Feed(EchoVenue(srv.url), SessionOptions(**dict(FAST, max_attempts=3)))
            feed.start()
            await asyncio.wait_for(feed.wait_closed(), 3)
            assert feed.status is FeedStatus.FAILED and "gave up after 3" in feed.status_reason
            assert len(srv.paths) == 3
        assert not tasks_left()
    run(main())


def test_stale_and_heartbeat(run: Any) -> None:
    async def main() -> None:
        async with Server(lambda c: c.send(b"one")) as srv:
            venue = EchoVenue(srv.url)
            events: list[StatusEvent] = []
            feed = Feed(venue, SessionOptions(**dict(FAST, stale_after_s=0.1, heartbeat_interval_s=0.02)),
                        on_status=events.append)
            feed.start()
            await wait_for(lambda: len(srv.conns) >= 2)
            assert any(e.status is FeedStatus.STALE for e in events)
            assert venue.heartbeats >= 2 and feed.counters.reconnects >= 1
            assert "stale" in venue.closes[0].reason
            await feed.close()
            assert not tasks_left()
    run(main())


def test_oversize_frame_reconnects(run: Any) -> None:
    async def main() -> None:
        def script(conn: ServerConn) -> None:
            conn.send(b"ok")
            if len(srv.conns) == 1:
                conn.send(b"y" * 5000)
        async with Server(script) as srv:
            venue = EchoVenue(srv.url)
            feed = Feed(venue, SessionOptions(**dict(FAST, max_message_size=1000)))
            feed.start()
            await wait_for(lambda: len(venue.frames) == 2)
            assert venue.closes[0].reason == "oversize frame"
            assert all(len(f) < 1000 for f, _ in venue.frames)
            await feed.close()
            assert not tasks_left()
    run(main())


def test_connect_refused_backs_off_then_gives_up(run: Any, caplog: Any) -> None:
    async def main() -> None:
        feed = Feed(EchoVenue("ws://127.0.0.1:9/ws", token=Secret("never-log-me-42")),
                    SessionOptions(**dict(FAST, max_attempts=2)))
        feed.start()
        await asyncio.wait_for(feed.wait_closed(), 5)
        assert feed.status is FeedStatus.FAILED
        assert not tasks_left()
    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "never-log-me-42" not in caplog.text


def test_record_path_writes_every_frame(run: Any, tmp_path: Any) -> None:
    from feeds.recording import read_lines
    path = tmp_path / "echo.rec.gz"

    async def main() -> None:
        def script(conn: ServerConn) -> None:
            for i in range(20):
                conn.send(b'{"n":%d}' % i)
            conn.send(b"line1\nline2")  # several messages in one frame survive recording
        async with Server(script) as srv:
            venue = EchoVenue(srv.url)
            feed = Feed(venue, SessionOptions(**dict(FAST, record_path=str(path))))
            feed.start()
            await wait_for(lambda: len(venue.frames) == 21)
            await feed.close()
            assert feed.options.recorder is None  # closed with the feed
            got = [(r.payload, r.recv_ns) for r in read_lines(path)]
            assert got == venue.frames
    run(main())


def test_backoff_grows_with_jitter_and_cap() -> None:
    feed = Feed(EchoVenue("ws://127.0.0.1:9/ws"),
                SessionOptions(backoff_initial_s=0.1, backoff_factor=2.0, backoff_max_s=1.0, jitter=0.5, seed=4))
    delays = []
    for failures in range(1, 8):
        feed._failures = failures
        delays.append(feed._backoff_s())
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert all(b * 0.5 <= d <= b for d, b in zip(delays, bases)), delays
    assert len(set(delays)) == len(delays)  # jittered


def _self_signed(tmp_path: Any) -> tuple[str, str] | None:
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        return None
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                           "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
    return (cert, key) if proc.returncode == 0 else None


def test_tls_verification_is_on_by_default(run: Any, tmp_path: Any) -> None:
    import ssl
    pair = _self_signed(tmp_path)
    if pair is None:
        pytest.skip("openssl CLI not available")
    cert, key = pair

    async def main() -> None:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        srv = await ws_create_server(lambda request: ServerConn(server), "127.0.0.1", 0, ssl=server_ctx)
        server = Server(lambda c: c.send(b"secure"))
        url = f"wss://127.0.0.1:{srv.sockets[0].getsockname()[1]}/ws"
        try:
            # Untrusted self-signed certificate: refused, never connected.
            feed = Feed(EchoVenue(url), SessionOptions(**dict(FAST, max_attempts=2)))
            events: list[StatusEvent] = []
            feed._on_status = events.append
            feed.start()
            await asyncio.wait_for(feed.wait_closed(), 5)
            assert feed.status is FeedStatus.FAILED and not feed.connected_once
            assert any("CERTIFICATE_VERIFY_FAILED" in e.reason or "SSL" in e.reason for e in events)
            # Trusting that certificate explicitly: connects and receives.
            trust = ssl.create_default_context(cafile=cert)
            venue = EchoVenue(url)
            feed = Feed(venue, SessionOptions(**dict(FAST, ssl_context=trust)))
            feed.start()
            await wait_for(lambda: venue.frames[:1] == [(b"secure", venue.frames[0][1])] if venue.frames else False)
            await feed.close()
        finally:
            for c in server.conns:
                c.transport.disconnect(False)
            srv.close()
            await srv.wait_closed()
    run(main())


def test_backoff_doubles_from_the_first_retry_and_gives_up_without_waiting(run: Any) -> None:
    """min(initial * 2^n, cap): 1x, 2x, 4x after a drop (not 1x, 1x, 2x), and the
    last allowed attempt reports "failed" at once."""
    async def main() -> None:
        def script(conn: ServerConn) -> None:
            if len(srv.conns) == 1:
                conn.send(b"hello")      # subscribes, then the server drops it
                conn.transport.disconnect(graceful=False)
        async with Server(script) as srv:
            events: list[StatusEvent] = []
            opts = SessionOptions(**dict(FAST, backoff_initial_s=0.01, backoff_factor=2.0, backoff_max_s=1.0,
                                         jitter=0.0, max_attempts=3))
            feed = Feed(EchoVenue(srv.url), opts, on_status=events.append)
            feed.start()
            await wait_for(lambda: len(srv.conns) >= 1)
            srv.reject_status = 503  # every reconnect is refused from now on
            await asyncio.wait_for(feed.wait_closed(), 3)
            retries = [e.reason.rsplit("retry in ", 1)[1] for e in events if e.status is FeedStatus.RECONNECTING]
            assert retries == ["0.01 s", "0.02 s", "0.04 s"]
            assert feed.status is FeedStatus.FAILED and "gave up after 3" in feed.status_reason
            assert events[-1].status is FeedStatus.FAILED
            assert events[-2].status is not FeedStatus.RECONNECTING or "retry in 0.04" in events[-2].reason
        assert not tasks_left()
    run(main())


class SilentServer:
    """Loopback TCP server that accepts and never answers (a handshake that hangs);
    ``eofs`` counts connections whose client side was cut."""

    def __init__(self) -> None:
        self.accepted = 0
        self.eofs = 0
        self.srv: Any = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.read()  # the HTTP upgrade request arrives; read until the client cuts
            self.eofs += 1
        finally:
            writer.close()

    async def __aenter__(self) -> "SilentServer":
        self.srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.srv.sockets[0].getsockname()[1]}/ws"

    async def __aexit__(self, *exc: Any) -> None:
        self.srv.close()
        await self.srv.wait_closed()


def test_close_during_a_hanging_handshake_returns_at_once(run: Any) -> None:
    """close() abandons a connect in flight (connect_timeout_s=10) instead of waiting it
    out; the socket is cut (the server sees EOF) and no task is left."""
    async def main() -> None:
        async with SilentServer() as srv:
            feed = Feed(EchoVenue(srv.url), SessionOptions(**dict(FAST, connect_timeout_s=10.0)))
            feed.start()
            await wait_for(lambda: srv.accepted == 1)
            await asyncio.sleep(0.05)  # the upgrade request is out; no reply comes
            assert feed.status is FeedStatus.CONNECTING
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await feed.close()
            assert loop.time() - t0 < 1.0
            assert feed.status is FeedStatus.CLOSED and not feed.running and not feed.connected_once
            await wait_for(lambda: srv.eofs == 1, timeout=1.0)
            assert not tasks_left(lambda t: t.get_coro().__qualname__.startswith("start_server")
                                  or "SilentServer" in t.get_coro().__qualname__)
    run(main())


def test_engine_close_during_a_hanging_handshake(run: Any) -> None:
    from engine import Engine, Instrument

    async def main() -> None:
        async with SilentServer() as srv:
            eng = Engine(bar_intervals=())
            eng.add_instrument(Instrument("BTC-USDT", "0.01", "0.00001"))
            eng.connect("cadenza", url=srv.url, token="tok-hanging-1", connect_timeout_s=10.0)
            await eng.start()
            await wait_for(lambda: srv.accepted == 1)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await eng.close()
            assert loop.time() - t0 < 1.0
            assert eng.stats()["cadenza"]["status"] == "closed"
            await wait_for(lambda: srv.eofs == 1, timeout=1.0)
            assert not tasks_left(lambda t: "SilentServer" in t.get_coro().__qualname__)
    run(main())


def test_connect_timeout_cuts_the_socket(run: Any) -> None:
    async def main() -> None:
        async with SilentServer() as srv:
            events: list[StatusEvent] = []
            feed = Feed(EchoVenue(srv.url), SessionOptions(**dict(FAST, connect_timeout_s=0.2, max_attempts=1)),
                        on_status=events.append)
            feed.start()
            await asyncio.wait_for(feed.wait_closed(), 3)
            assert feed.status is FeedStatus.FAILED and "connect timeout" in feed.status_reason
            await wait_for(lambda: srv.eofs == 1, timeout=1.0)
            assert not tasks_left(lambda t: "SilentServer" in t.get_coro().__qualname__)
    run(main())


def test_percent_encoded_secrets_are_masked() -> None:
    from urllib.parse import quote, quote_plus, urlencode
    raw = "k3y/with+odd chars&=?"
    Secret(raw)
    for form in (raw, quote(raw), quote(raw, safe=""), quote_plus(raw), urlencode({"t": raw})[2:]):
        assert form not in mask_secrets(f"GET /x?t={form} failed"), form
        assert mask_secrets(f"GET /x?t={form} failed") == "GET /x?t=*** failed"
    # A secret holding another one is masked whole, whatever the registration order.
    Secret("inner-tok-5")
    Secret("outer-inner-tok-5-tail")
    assert mask_secrets("a outer-inner-tok-5-tail b inner-tok-5") == "a *** b ***"


def test_masking_adapter_masks_tracebacks(caplog: Any) -> None:
    from feeds.session import _MaskingAdapter
    Secret("tb-secret-9981")
    adapter = _MaskingAdapter(logging.getLogger("feeds.test.masking"), {})
    with caplog.at_level(logging.DEBUG):
        try:
            raise RuntimeError("handshake to ws://h/?token=tb-secret-9981 failed")
        except RuntimeError as exc:
            adapter.exception("connect failed for %s", "tb-secret-9981")
            adapter.error("again", exc_info=exc)
            adapter.warning("tuple", exc_info=(type(exc), exc, exc.__traceback__))
    assert "tb-secret-9981" not in caplog.text
    assert caplog.text.count("RuntimeError: handshake to ws://h/?token=*** failed") == 3
    assert "Traceback" in caplog.text and all(r.exc_info is None for r in caplog.records)
    assert {r.funcName for r in caplog.records} == {"test_masking_adapter_masks_tracebacks"}


def test_recording_appends_across_restarts_and_scrubs_secrets(run: Any, tmp_path: Any) -> None:
    from feeds.recording import read_lines
    path = tmp_path / "echo.rec.gz"
    Secret("rec-api-key-77")

    async def main() -> None:
        def script(conn: ServerConn) -> None:
            conn.send(b'{"n":%d,"apiKey":"rec-api-key-77"}' % len(srv.conns))
        async with Server(script) as srv:
            venue = EchoVenue(srv.url)
            feed = Feed(venue, SessionOptions(**dict(FAST, record_path=str(path))))
            for n in (1, 2):
                feed.start()
                await wait_for(lambda: len(venue.frames) == n)
                await feed.close()
            # The venue saw the real frames; the file holds both runs, secrets scrubbed.
            assert [f for f, _ in venue.frames] == [b'{"n":1,"apiKey":"rec-api-key-77"}',
                                                    b'{"n":2,"apiKey":"rec-api-key-77"}']
            got = [r.payload for r in read_lines(path)]
            assert got == [b'{"n":1,"apiKey":"***"}', b'{"n":2,"apiKey":"***"}']
            raw = tmp_path / "raw.rec"
            feed = Feed(venue, SessionOptions(**dict(FAST, record_path=str(raw), record_scrub_secrets=False)))
            feed.start()
            await wait_for(lambda: len(venue.frames) == 3)
            await feed.close()
            assert [r.payload for r in read_lines(raw)] == [b'{"n":3,"apiKey":"rec-api-key-77"}']
    run(main())


def test_close_during_a_slow_async_on_open(run: Any) -> None:
    """An async on_open (a REST fetch, say) is abandoned by close(), not waited for."""
    class SlowOpen(EchoVenue):
        async def on_open(self, feed: Feed) -> None:  # type: ignore[override]
            self.opens += 1
            await asyncio.sleep(10)

    async def main() -> None:
        async with Server(lambda c: None) as srv:
            venue = SlowOpen(srv.url)
            feed = Feed(venue, SessionOptions(**FAST))
            feed.start()
            await wait_for(lambda: venue.opens == 1 and feed.status is FeedStatus.CONNECTED)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await feed.close()
            assert loop.time() - t0 < 1.0 and feed.status is FeedStatus.CLOSED
            assert not tasks_left()
    run(main())
