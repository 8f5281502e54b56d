"""Binance live adapter: combined streams over picows + REST depth snapshot for sync.

Connection: ``{url}/stream?streams=<sym>@depth@100ms/<sym>@trade/...`` (Binance's
combined-stream endpoint; ``url`` is e.g. ``wss://stream.binance.com:9443``). Every
frame is ``{"stream":"btcusdt@depth@100ms","data":{...}}``; it is routed by the stream
name to the instrument's ``feeds.binance_sync.BinanceBookSync``, which decodes it in
place (``feeds.binance_decode``, jscan) and applies depth diffs to the engine's
OrderBook with Binance's sync rules (buffer diffs, snapshot, drop ``u <=
lastUpdateId``, bridge ``U <= lastUpdateId + 1 <= u``, then ``U == prev u + 1``).

Snapshot: on every (re)connect, and whenever the sync reports a gap, the adapter
fetches ``GET {rest_url}/api/v3/depth?symbol=SYM&limit=N`` with a tiny HTTP/1.1 client
on plain asyncio streams (TLS verified for https) and feeds the body to the sync.
HTTP 418/429 (rate limits) and 5xx retry with backoff; 4xx other than those is
terminal (a bad symbol will not get better).

Heartbeats: Binance pings every 20 s at the WebSocket level; picows answers. No frame
for ``stale_after_s`` (default 30 s): reconnect. A malformed frame raises DecodeError
(counted, nothing applied).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlencode, urlsplit

from engine._core.instrument import Instrument
from engine.errors import DecodeError, FeedError
from feeds.binance_sync import BinanceBookSync
from feeds.venue import Endpoint, Venue

if TYPE_CHECKING:
    from engine.engine import Dispatch, Engine
    from feeds.session import Feed, Secret

log = logging.getLogger("feeds.binance")

__all__ = ["BinanceVenue", "HttpError", "http_get"]

_STREAM_KEY = b'"stream":"'


class HttpError(FeedError):
    """A REST request failed; ``status`` is the HTTP status (0: no response)."""

    def __init__(self, reason: str, status: int, terminal: bool = False) -> None:
        super().__init__(reason, terminal)
        self.status = status


async def http_get(url: str, *, timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                   max_bytes: int = 32 << 20, headers: dict[str, str] | None = None) -> bytes:
    """GET ``url`` over HTTP/1.1 on plain asyncio streams; return the body.

    TLS for https with verification on (``ssl_context`` to override). Handles
    Content-Length, chunked and read-to-close bodies. Raises HttpError for a non-2xx
    status (``terminal`` for 4xx other than 418/429), a malformed reply, a body past
    ``max_bytes`` or the timeout. O(body)."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ctx = (ssl_context or ssl.create_default_context()) if secure else None

    async def run() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                       server_hostname=host if secure else None)
        try:
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json",
                     "Connection: close", "User-Agent: ticklot"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            fields = status_line.split(" ", 2)
            if len(fields) < 2 or not fields[1].isdigit():
                raise HttpError(f"malformed HTTP status line from {host}", 0)
            status = int(fields[1])
            hdrs = {}
            for line in header_lines:
                if ":" in line:
                    k, _, v = line.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
            if hdrs.get("transfer-encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    if len(body) + size > max_bytes:
                        raise HttpError(f"HTTP body from {host} exceeds {max_bytes} bytes", status)
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
                data = bytes(body)
            elif "content-length" in hdrs:
                length = int(hdrs["content-length"])
                if length < 0:
                    raise HttpError(f"malformed Content-Length from {host}", 0)
                if length > max_bytes:
                    raise HttpError(f"HTTP body from {host} exceeds {max_bytes} bytes", status)
                data = await reader.readexactly(length)
            else:
                # No length (HTTP/1.0 or Connection: close): the body ends at EOF. One
                # read returns only what is buffered, so read until the server closes.
                body = bytearray()
                while True:
                    part = await reader.read(min(1 << 16, max_bytes + 1 - len(body)))
                    if not part:
                        break
                    body += part
                    if len(body) > max_bytes:
                        raise HttpError(f"HTTP body from {host} exceeds {max_bytes} bytes", status)
                data = bytes(body)
            if not 200 <= status < 300:
                terminal = 400 <= status < 500 and status not in (418, 429)
                raise HttpError(f"HTTP {status} from {host}{parts.path}", status, terminal)
            return data
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    try:
        return await asyncio.wait_for(run(), timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        raise HttpError(f"HTTP GET {host}{parts.path} timed out after {timeout_s:g} s", 0) from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise HttpError(f"HTTP GET {host}{parts.path} failed: {type(exc).__name__}", 0) from None


class BinanceVenue(Venue):
    """Binance combined-stream adapter (see the module docstring).

    Options: ``rest_url`` (default ``https://api.binance.com``), ``market`` ("spot",
    "usdm", "coinm"), ``depth_limit`` (REST snapshot levels, default 5000, Binance's most),
    ``streams`` (per-symbol stream suffixes, default ``("depth@100ms", "trade")``),
    ``snapshot_retries`` (attempts per snapshot before the connection is recycled)."""

    name = "binance"
    max_message_size = 4 << 20
    stale_after_s = 30.0

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 rest_url: str = "https://api.binance.com", market: str = "spot",
                 depth_limit: int = 5000, streams: Sequence[str] = ("depth@100ms", "trade"),
                 snapshot_retries: int = 5, api_key: "Secret | str | None" = None) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        if not self.instruments:
            raise FeedError("binance needs at least one instrument", terminal=True)
        self.rest_url = rest_url.rstrip("/")
        self.market = market
        self.depth_limit = depth_limit
        self.streams = tuple(streams)
        self.snapshot_retries = snapshot_retries
        from feeds.session import Secret as _Secret
        self.api_key = _Secret.wrap(api_key)
        self.syncs: dict[str, BinanceBookSync] = {}
        self._by_stream: dict[bytes, BinanceBookSync] = {}
        self._single: BinanceBookSync | None = None
        self._snapshot_tasks: dict[str, asyncio.Task[Any]] = {}
        self._needs_resync: set[str] = set()
        self._recv_ns = 0
        self.snapshots = 0

    def bind(self, feed: "Feed", dispatch: "Dispatch") -> None:
        """Create one BinanceBookSync per instrument on the engine's books."""
        super().bind(feed, dispatch)
        from engine.engine import Trade
        for inst in self.instruments:
            book = self.engine.book(inst.symbol)
            sync = BinanceBookSync(book, self.market, on_gap=self._on_gap, on_trade=self._make_on_trade(inst, Trade))
            self.syncs[inst.symbol] = sync
            self._by_stream[inst.symbol.lower().encode()] = sync
        self._single = next(iter(self.syncs.values())) if len(self.syncs) == 1 else None

    def _make_on_trade(self, inst: Instrument, trade_type: Any) -> Any:
        def on_trade(sync: BinanceBookSync, price_ticks: int, qty_lots: int, taker_side: int,
                     trade_id: int, ts_ns: int) -> None:
            assert self.dispatch is not None
            # taker_side is SIDE_BID (0) when the buyer took liquidity.
            self.dispatch.trade(trade_type(inst, str(trade_id), price_ticks, qty_lots,
                                           1 if taker_side == 0 else -1, ts_ns, self._recv_ns), self._recv_ns)
        return on_trade

    def endpoint(self) -> Endpoint:
        """``{url}/stream?streams=...`` for every instrument and stream suffix."""
        base = self.url.rstrip("/")
        if base.endswith("/stream"):
            base = base[: -len("/stream")]
        names = "/".join(f"{inst.symbol.lower()}@{s}" for inst in self.instruments for s in self.streams)
        return Endpoint(f"{base}/stream?streams={names}")

    def on_open(self, feed: "Feed") -> None:
        """Mark every book out of sync (diffs buffer) and fetch the snapshots."""
        for sym, sync in self.syncs.items():
            sync.reset()
            self._request_snapshot(sym, resync=False)

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Route the frame to its symbol's sync; report the book after an applied diff."""
        self._recv_ns = recv_ns
        sync = self._single
        if sync is None:
            sync = self._route(payload)
            if sync is None:
                return
        book = sync.book
        version = book.version
        sync.feed(payload)
        if book.version != version:
            assert self.dispatch is not None
            self.dispatch.book(book, recv_ns)

    def _route(self, payload: memoryview) -> BinanceBookSync | None:
        head = bytes(payload[:64])
        i = head.find(_STREAM_KEY)
        if i < 0:
            if head.lstrip().startswith(b'{"result"') or b'"id"' in head:
                return None  # reply to a live SUBSCRIBE
            raise DecodeError("binance: frame without a stream name", 0)
        start = i + len(_STREAM_KEY)
        end = head.find(b"@", start)
        sync = self._by_stream.get(head[start:end]) if end > 0 else None
        if sync is None:
            raise DecodeError(f"binance: unknown stream {head[start:end]!r}", start)
        return sync

    def _on_gap(self, sync: BinanceBookSync, reason: str) -> None:
        assert self.feed is not None
        self.feed.count_gap()
        log.warning("%s: %s out of sync: %s", self.name, sync.book.instrument.symbol, reason)
        self._request_snapshot(sync.book.instrument.symbol, resync=True)

    def _request_snapshot(self, symbol: str, resync: bool) -> None:
        task = self._snapshot_tasks.get(symbol)
        if task is not None and not task.done():
            return
        assert self.feed is not None
        if resync:
            self._needs_resync.add(symbol)
        self._snapshot_tasks[symbol] = self.feed.spawn(self._fetch_snapshot(symbol), f"snapshot-{symbol}")

    async def _fetch_snapshot(self, symbol: str) -> None:
        query = urlencode({"symbol": symbol, "limit": self.depth_limit})
        url = f"{self.rest_url}/api/v3/depth?{query}"
        headers = {"X-MBX-APIKEY": self.api_key.reveal()} if self.api_key else None
        delay = 0.05
        for attempt in range(1, self.snapshot_retries + 1):
            try:
                body = await http_get(url, headers=headers)
                break
            except HttpError as exc:
                if exc.terminal or attempt == self.snapshot_retries:
                    raise
                log.warning("%s: snapshot %s: %s; retry %d", self.name, symbol, exc, attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        sync = self.syncs[symbol]
        book = sync.book
        version = book.version
        try:
            sync.feed(body)
        except DecodeError as exc:
            raise FeedError(f"binance snapshot {symbol} malformed: {exc}") from None
        self.snapshots += 1
        assert self.feed is not None and self.dispatch is not None
        if symbol in self._needs_resync:
            self._needs_resync.discard(symbol)
            self.feed.count_resync()
        if all(s.in_sync for s in self.syncs.values()) or all(
                t.done() or t is asyncio.current_task() for t in self._snapshot_tasks.values()):
            self.feed.subscribed(f"{len(self.syncs)} books synced from snapshots")
        if book.version != version:
            self.dispatch.book(book, time.time_ns())

    def describe(self) -> dict[str, object]:
        """Sync state and counters per symbol."""
        return {sym: {"state": s.state_name, **s.counters()} for sym, s in self.syncs.items()}
