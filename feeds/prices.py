"""Prices venue adapter (Tradevest style): whole-book price snapshots per market.

Protocol (v1; the seed gives only the message names, this module fixes the shapes and
``feeds.sim.prices`` sends exactly these)
------------------------------------------------------------------------------------
Every message is one JSON object in one text frame, with a ``type``.

Client -> server, exactly once per connection, right after it opens::

    {"type":"PRICE_SUBSCRIPTION","markets":["BTC-EUR","ETH-EUR"]}
    {"type":"PRICE_SUBSCRIPTION"}                 markets omitted: every EUR pair

Server -> client::

    {"type":"PRICES","prices":{"BTC-EUR":{"asks":[{"price":"61837.64","quantity":"0.50000"},...],
                                          "bids":[{"price":"61837.63","quantity":"0.02000"},...]},
                               "ETH-EUR":{...}}}
    {"type":"PRICES","prices":{"BTC-EUR":{"asks":[],"bids":[]},...}}     keep-alive
    {"type":"ERROR","connectionId":"3f0c9a2e-…","message":"unknown market XRP-EUR"}

- A ``PRICES`` entry carries the market's whole book (the server's depth), asks and
  bids best first (asks strictly ascending, bids strictly descending), prices and
  quantities as decimal strings. It REPLACES that market's book
  (``OrderBook.replace_with``). Markets not in the frame are unchanged.
- Right after the subscription the server sends one ``PRICES`` with every subscribed
  market's book; then a ``PRICES`` with the markets whose book changed.
- Once a second the server sends a ``PRICES`` whose entries have empty ``asks`` and
  ``bids``: "no change". It is a keep-alive and never clears a book (an entry with one
  empty side and one non-empty side is a real book with one empty side).
- ``ERROR`` reports a problem with this connection; the server then closes it. The
  client records it (``errors``, ``last_error`` = (connectionId, message), in
  ``describe()``), logs it, and the reconnect status event names the connection id
  (``"server ERROR (connectionId …): …; retry in …"``). If the server has not closed
  ``error_grace_s`` after an ERROR, the client closes and reconnects itself.
- Authentication (optional): when a token is given it travels in the
  ``Authorization: Bearer …`` header of the upgrade request; a refused token is an
  HTTP 401/403 handshake reply, which is terminal (status "failed").

Choices the seed is silent on
-----------------------------
- Whole frame or nothing: every entry of a ``PRICES`` frame is decoded and validated
  (exact numbers, positive prices, non-negative sizes, best-first order, no market
  twice, no crossed market) before the first book is replaced; a bad frame raises
  DecodeError (counted by the session) and changes no book. Entries for markets the
  client does not apply (not subscribed, or no registered instrument, e.g. an EUR
  pair the engine does not know when subscribed to all) are skipped and counted
  (``unknown_markets``). Message types other than PRICES/ERROR are logged and ignored.
- "Subscribed" (status, backoff reset) is the first ``PRICES`` frame of a connection.
- There is no sequence number: a lost frame heals at the market's next ``PRICES``
  (each is a whole book); reconnects need no resync beyond the first ``PRICES``.
- Liveness: the keep-alive makes silence meaningful: no frame for ``stale_after_s``
  (3 s by default) -> status "stale", reconnect.
- Changing the markets (``await venue.set_markets([...])``): the server takes one
  subscription per connection, so a new connection is needed. The session
  (``feeds.session.Feed``) owns exactly one socket, so the change is made before
  break with a *handover link*: (1) a second connection subscribes to the new set
  and is live once its first PRICES arrived; (2) only then the primary connection is
  closed and reconnects with the new set (the link keeps every new market updating
  meanwhile); (3) once the primary's first PRICES arrived, the link is closed. Both
  connections feed the same books while they overlap (each entry is a whole book, so
  applying the same book twice is harmless). If the link cannot go live within
  ``handover_timeout_s`` nothing changes and ``set_markets`` raises FeedError.
  Markets dropped from the set keep their last book (no longer updated). The
  primary's planned reconnect shows as status "reconnecting" ("markets changed") and
  counts in ``reconnects``; the link shares the feed's counters; ``handovers`` counts
  completed changes.

Hot path: ``feeds.prices_decode.PricesDecoder`` is the session's C-level frame sink
(picows' buffer straight into jscan, no ``json``); ``ERROR`` and unknown types reach the Python methods below.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

from engine._core.instrument import Instrument
from engine.errors import EngineError, FeedError
from feeds.prices_decode import MarketBook, PricesDecoder
from feeds.session import Feed, FeedStatus, Secret, SessionOptions, mask_secrets
from feeds.venue import CloseDecision, CloseInfo, Endpoint, Reconnect, Terminal, Venue

if TYPE_CHECKING:
    from engine.engine import Dispatch, Engine

log = logging.getLogger("feeds.prices")

__all__ = ["PricesVenue", "subscription_message"]


def subscription_message(markets: Sequence[str] | None) -> str:
    """The ``PRICE_SUBSCRIPTION`` text for ``markets`` (None: omitted, every EUR pair)."""
    body: dict[str, Any] = {"type": "PRICE_SUBSCRIPTION"}
    if markets is not None:
        body["markets"] = list(markets)
    return json.dumps(body, separators=(",", ":"))


class _Connection:
    """What one connection (primary or handover link) reports through its decoder."""

    def __init__(self, venue: "PricesVenue", feed: Feed, label: str, primary: bool) -> None:
        self.venue = venue
        self.feed = feed
        self.label = label
        self.primary = primary
        self.error: tuple[str | None, str] | None = None
        self.error_ns = 0

    def on_live(self) -> None:
        """First PRICES of the connection: it is live."""
        self.feed.subscribed(f"{self.label}: first PRICES")
        if self.primary:
            self.venue._primary_live()

    def on_server_error(self, connection_id: str | None, message: str) -> None:
        """ERROR: remember it; the server's close follows (on_close names it)."""
        self.error = (connection_id, message)
        self.error_ns = time.monotonic_ns()
        self.venue.errors += 1
        self.venue.last_error = self.error
        log.warning("%s: %s: server ERROR (connectionId %s): %s", self.venue.name, self.label,
                    connection_id, mask_secrets(message))

    def on_unknown(self, kind: str) -> None:
        """A message type this client does not know: logged, ignored."""
        self.venue.unknown_messages += 1
        log.info("%s: ignored message type %r", self.venue.name, kind)

    def check_error_grace(self, grace_s: float) -> None:
        """The server did not close after its ERROR: close ourselves (reconnect)."""
        if self.error is not None and time.monotonic_ns() - self.error_ns > grace_s * 1e9:
            raise FeedError(f"{self.error_reason()}; server did not close")

    def error_reason(self) -> str:
        assert self.error is not None
        return f"server ERROR (connectionId {self.error[0]}): {self.error[1]}"


class _HandoverLink(Venue):
    """The second connection opened while the set of markets changes (see module
    docstring). Never reconnects: it lives only inside ``PricesVenue.set_markets``."""

    stale_after_s = None
    heartbeat_interval_s = None

    def __init__(self, parent: "PricesVenue", markets: list[str] | None) -> None:
        super().__init__(parent.engine, name=f"{parent.name}~handover", url=parent.url,
                         token=parent.token, instruments=parent.instruments)
        self.parent = parent
        self.markets = markets
        self.max_message_size = parent.max_message_size
        self.decoder: PricesDecoder | None = None
        self.conn: _Connection | None = None

    def bind(self, feed: Feed, dispatch: "Dispatch") -> None:
        super().bind(feed, dispatch)
        self.conn = _Connection(self.parent, feed, "handover link", False)
        self.decoder = PricesDecoder(self.conn, dispatch, self.parent._books_for(self.markets))
        self.frame_sink = self.decoder

    def endpoint(self) -> Endpoint:
        return self.parent.endpoint()

    def on_open(self, feed: Feed) -> None:
        feed.send_text(subscription_message(self.markets))

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("handover link used before bind()")
        self.decoder.feed(payload, recv_ns)

    def on_close(self, close: CloseInfo) -> CloseDecision:
        return Terminal(f"handover link closed: {close.reason}")


class PricesVenue(Venue):
    """Prices adapter (see the module docstring).

    Options: ``markets`` (market names to subscribe, each a registered instrument's
    symbol; None, the default: omit them and apply every EUR pair the server sends that
    is among ``instruments``); ``error_grace_s`` (seconds to wait for the server's close
    after an ERROR, default 2); ``handover_timeout_s`` (default for ``set_markets``).

    Public state: ``markets`` (current set or None), ``books`` (market -> MarketBook),
    ``errors`` / ``last_error`` (server ERROR messages, (connectionId, message)),
    ``unknown_messages``, ``handovers``.
    """

    name = "prices"
    max_message_size = 4 << 20   # an all-EUR-pairs snapshot holds every market's book
    stale_after_s = 3.0          # keep-alive every second
    heartbeat_interval_s = 0.5   # ERROR grace check

    def __init__(self, engine: "Engine", *, name: str, url: str, token: "Secret | None" = None,
                 instruments: Sequence[Instrument] = (), account_id: str | None = None,
                 markets: Sequence[str] | None = None, error_grace_s: float = 2.0,
                 handover_timeout_s: float = 10.0) -> None:
        super().__init__(engine, name=name, url=url, token=token, instruments=instruments,
                         account_id=account_id)
        self.error_grace_s = error_grace_s
        self.handover_timeout_s = handover_timeout_s
        self.books: dict[str, MarketBook] = {
            inst.symbol: MarketBook(inst.symbol, inst, engine.book(inst.symbol)) for inst in self.instruments}
        self.markets: list[str] | None = self._check_markets(markets)
        self.errors = 0
        self.last_error: tuple[str | None, str] | None = None
        self.unknown_messages = 0
        self.handovers = 0
        self.decoder: PricesDecoder | None = None
        self._conn: _Connection | None = None
        self._conn_gen = 0
        self._live_gen = 0
        self._live_event: asyncio.Event | None = None
        self._handover_lock: asyncio.Lock | None = None

    def _check_markets(self, markets: Sequence[str] | None) -> list[str] | None:
        if markets is None:
            return None
        if isinstance(markets, str):
            raise TypeError("markets must be a sequence of market names, not a str")
        out = list(dict.fromkeys(markets))
        unknown = [m for m in out if m not in self.books]
        if unknown:
            raise EngineError(f"{self.name}: markets {unknown} are not among this feed's instruments "
                              f"{sorted(self.books)}")
        return out

    def _books_for(self, markets: list[str] | None) -> list[MarketBook]:
        return list(self.books.values()) if markets is None else [self.books[m] for m in markets]

    # ---- session hooks -----------------------------------------------------------------
    def bind(self, feed: Feed, dispatch: "Dispatch") -> None:
        """Build the decoder once the engine wired us (reset on every connection)."""
        super().bind(feed, dispatch)
        self._conn = _Connection(self, feed, "primary", True)
        self.decoder = PricesDecoder(self._conn, dispatch, self._books_for(self.markets))
        # The session's listener hands picows' buffer to the decoder in C.
        self.frame_sink = self.decoder

    def endpoint(self) -> Endpoint:
        """The URL as given; the token (if any) as a masked ``Authorization`` header."""
        if self.token:
            return Endpoint(self.url, headers={"Authorization": Secret("Bearer " + self.token.reveal())})
        return Endpoint(self.url)

    def on_open(self, feed: Feed) -> None:
        """Fresh per-connection decoder (live flag, error state), then the subscription."""
        assert self.decoder is not None
        self._conn_gen += 1
        self._conn = _Connection(self, feed, "primary", True)
        self.decoder.reset(self._conn, self._books_for(self.markets))
        feed.send_text(subscription_message(self.markets))

    def on_frame(self, payload: memoryview, recv_ns: int) -> None:
        """Python entry (tools, replay): the session uses ``frame_sink`` directly."""
        if self.decoder is None:
            raise FeedError("prices venue used before bind()")
        self.decoder.feed(payload, recv_ns)

    def heartbeat(self, now_ns: int) -> None:
        """Close the connection if the server did not close it after an ERROR."""
        if self._conn is not None:
            self._conn.check_error_grace(self.error_grace_s)

    def on_close(self, close: CloseInfo) -> CloseDecision:
        """Terminal only for a terminal error (HTTP 401/403 at the handshake); every other
        close reconnects, naming the server's ERROR (connectionId) when one came first."""
        conn = self._conn
        if close.error is not None and getattr(close.error, "terminal", False):
            return Terminal(close.reason)
        if conn is not None and conn.error is not None and conn.error_reason() not in close.reason:
            return Reconnect(f"{conn.error_reason()}; {close.reason}")
        return Reconnect(close.reason)

    def describe(self) -> dict[str, object]:
        """Per-market counters, server errors, handovers (no secrets)."""
        dec = self.decoder
        return {
            "markets": self.markets if self.markets is not None else "all EUR pairs",
            "books": {m: {"replaces": b.replaces, "keepalives": b.keepalives} for m, b in self.books.items()},
            "errors": self.errors,
            "last_error": list(self.last_error) if self.last_error else None,
            "unknown_markets": dec.unknown_markets if dec else 0,
            "unknown_messages": self.unknown_messages,
            "handovers": self.handovers,
        }

    # ---- changing markets ----------------------------------------------------------------
    def _primary_live(self) -> None:
        self._live_gen = self._conn_gen
        if self._live_event is not None:
            self._live_event.set()

    async def set_markets(self, markets: Sequence[str] | None, *, timeout: float | None = None) -> None:
        """Switch the subscription to ``markets`` (None: every EUR pair) with no market
        going dark: make before break (module docstring). Returns once the primary
        connection is live on the new set. Raises EngineError for an unknown market,
        FeedError when the new connection cannot go live within ``timeout`` (default
        ``handover_timeout_s``; nothing changed then) or the feed stopped meanwhile,
        TimeoutError when the primary does not come back in time (the feed keeps
        reconnecting on the new set). Calls are serialized."""
        new = self._check_markets(markets)
        timeout = self.handover_timeout_s if timeout is None else timeout
        feed = self.feed
        if feed is None or self.dispatch is None:
            raise FeedError(f"{self.name}: set_markets before the feed was bound")
        if self._handover_lock is None:
            self._handover_lock = asyncio.Lock()
        async with self._handover_lock:
            if new == self.markets:
                return
            if not feed.running or self.decoder is None or not self.decoder.live:
                # Nothing live to keep: the next connection subscribes to the new set.
                self.markets = new
                if feed.status in (FeedStatus.CONNECTED, FeedStatus.SUBSCRIBED):
                    feed.resync("markets changed")
                return
            await self._handover(feed, new, timeout)

    async def _handover(self, feed: Feed, new: list[str] | None, timeout: float) -> None:
        assert self.dispatch is not None
        link = _HandoverLink(self, new)
        opts = SessionOptions(connect_timeout_s=timeout, max_attempts=1, verify_tls=feed.options.verify_tls,
                              ssl_context=feed.options.ssl_context,
                              max_message_size=feed.options.max_message_size)
        bridge = Feed(link, opts)
        bridge.counters = feed.counters  # one set of counters for the venue
        link.bind(bridge, self.dispatch)
        self._live_event = asyncio.Event()
        try:
            bridge.start()
            try:
                await bridge.wait_subscribed(timeout)
            except (FeedError, TimeoutError) as exc:
                raise FeedError(f"{self.name}: new connection for markets {new} did not go live: "
                                f"{mask_secrets(str(exc))}") from None
            # The link is live: now the primary may go. It reconnects with the new set.
            self.markets = new
            gen = self._conn_gen
            self._live_event.clear()
            feed.resync("markets changed")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._live_gen <= gen:
                if not feed.running:
                    raise FeedError(f"{self.name}: feed stopped during the market change "
                                    f"({feed.status.value}: {feed.status_reason})")
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: primary connection not live on markets {new} "
                                       f"after {timeout} s")
                try:
                    await asyncio.wait_for(self._live_event.wait(), min(left, 0.05))
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                self._live_event.clear()
            self.handovers += 1
        finally:
            self._live_event = None
            await bridge.close("handover done")
