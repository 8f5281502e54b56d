"""The Engine: the Python face strategies use.

::

    from engine import Engine, Instrument
    eng = Engine()
    eng.add_instrument(Instrument("BTC-USDT", "0.01", "0.00001"))
    feed = eng.connect("cadenza", url="ws://127.0.0.1:8000/connection/websocket",
                       token="...", instruments=["BTC-USDT"], account_id="A-1")
    eng.on_book(lambda book: ...)            # the OrderBook itself, after the change
    eng.run_forever()                        # uvloop; or `await eng.run()` in a loop

Ownership: the engine owns every instrument, order book, kline aggregator and
account; feeds (``feeds.session.Feed``) own sockets and per-feed counters; venue
adapters decode frames into the engine's objects.

Callback policy (one wrapper, ``Engine._invoke``, calls every user callback):

- callbacks fire after the state change they report, with the core object itself
  (``OrderBook``, ``Trade``, a kline bar, ``Order``, ``Position``...), never a copy: read
  it inside the callback or copy what you keep (``book.bids(10)`` returns a copy);
- a callback that raises is logged with its traceback and counted
  (``Engine.callback_errors`` and the feed's ``callback_errors``); the feed and the state
  are unaffected and the remaining callbacks still run (``feeds._hotpath.invoke_callbacks``
  is the one wrapper; ``_callback_failed`` / ``_callback_result`` are its policy);
- ``async def`` callbacks run as tasks so they never block the receive loop; at most
  ``max_pending_callbacks`` such tasks are alive at once: beyond that a new one is
  dropped (closed without running) and counted in ``Engine.callbacks_dropped``.

Latency: every dispatch (``feeds._hotpath.Dispatch``, compiled) records ``now - recv_ns``
(frame off the socket to the moment callbacks start, wall-clock ns) into the feed's
fixed-size latency ring.

Adding a venue: one entry in ``VENUES`` ("name": "module:Class"); the class implements
``feeds.venue.Venue`` and is built as ``Class(engine, name=..., url=..., token=...,
instruments=[Instrument...], account_id=..., **venue_options)``.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any, Awaitable, Callable, Iterable, NamedTuple, Sequence

from engine._core.book import OrderBook
from engine._core.instrument import Instrument
from engine.errors import EngineError
from feeds._hotpath import Dispatch, FeedCounters, invoke_callbacks
from feeds.session import Feed, FeedStatus, Secret, StatusEvent, options_from
from feeds.venue import Venue

log = logging.getLogger("engine")

#: Venue registry: name -> "module:Class". A later venue joins with one line here.
VENUES: dict[str, str] = {
    "cadenza": "feeds.cadenza:CadenzaVenue",
    "binance": "feeds.binance:BinanceVenue",
    "botplatform": "feeds.botplatform:BotPlatformVenue",
    "prices": "feeds.prices:PricesVenue",
    "realtime": "feeds.realtime:RealtimeVenue",
    "stream": "feeds.stream:StreamVenue",
}

Callback = Callable[[Any], "Awaitable[Any] | Any"]

__all__ = ["BarClose", "Dispatch", "Engine", "Trade", "VENUES", "venue_class"]  # Dispatch lives in feeds._hotpath


def venue_class(name: str) -> type[Venue]:
    """The adapter class registered as ``name``. Raises EngineError for an unknown name."""
    try:
        target = VENUES[name]
    except KeyError:
        raise EngineError(f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}") from None
    module, _, cls = target.partition(":")
    found = getattr(importlib.import_module(module), cls)
    if not (isinstance(found, type) and issubclass(found, Venue)):
        raise EngineError(f"VENUES[{name!r}] = {target!r} is not a Venue subclass")
    return found


class Trade:
    """One public trade as a venue reported it (exact integers).

    Attributes: ``symbol``; ``trade_id`` (venue string); ``price_ticks``; ``qty_lots``;
    ``side`` (+1 taker buy, -1 taker sell); ``ts_ns`` (venue time, ns since the epoch);
    ``recv_ns`` (local receive time, ns since the epoch); ``instrument``."""

    __slots__ = ("symbol", "trade_id", "price_ticks", "qty_lots", "side", "ts_ns", "recv_ns",
                 "instrument")

    def __init__(self, instrument: Instrument, trade_id: str, price_ticks: int, qty_lots: int,
                 side: int, ts_ns: int, recv_ns: int) -> None:
        self.instrument = instrument
        self.symbol: str = instrument.symbol
        self.trade_id = trade_id
        self.price_ticks = price_ticks
        self.qty_lots = qty_lots
        self.side = side
        self.ts_ns = ts_ns
        self.recv_ns = recv_ns

    @property
    def price(self) -> str:
        """The price as an exact decimal string."""
        return self.instrument.ticks_to_price(self.price_ticks)

    @property
    def qty(self) -> str:
        """The size as an exact decimal string."""
        return self.instrument.lots_to_qty(self.qty_lots)

    def __repr__(self) -> str:
        side = "buy" if self.side > 0 else "sell"
        return f"Trade({self.symbol} {self.trade_id} {side} {self.qty}@{self.price} ts={self.ts_ns})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trade):
            return NotImplemented
        return (self.symbol, self.trade_id, self.price_ticks, self.qty_lots, self.side, self.ts_ns) == \
            (other.symbol, other.trade_id, other.price_ticks, other.qty_lots, other.side, other.ts_ns)

    __hash__ = None  # type: ignore[assignment]


class BarClose(NamedTuple):
    """A closed kline bar: ``bar`` is the aggregator's record (numpy.void with the
    fields of ``engine.kline.BAR_DTYPE``: open_ts_ns, open_ticks, ... volume_lots)."""

    symbol: str
    interval: str
    bar: Any


class Engine:
    """Owns instruments, books, kline aggregators, accounts and feeds; runs callbacks.

    Args:
        bar_intervals: kline frames built for every instrument (e.g. ``("1m",)``);
            empty disables aggregation.
        max_pending_callbacks: bound on concurrently running async callback tasks.
        use_uvloop: ``run_forever`` runs on uvloop (default) or plain asyncio.
    """

    def __init__(self, *, bar_intervals: Sequence[str] = ("1m",), max_pending_callbacks: int = 1024,
                 use_uvloop: bool = True) -> None:
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[str, OrderBook] = {}
        self.aggregators: dict[str, Any] = {}
        self.accounts: dict[str, Any] = {}
        self.feeds: dict[str, Feed] = {}
        self.bar_intervals = tuple(bar_intervals)
        self.max_pending_callbacks = max_pending_callbacks
        self.use_uvloop = use_uvloop
        self.callback_errors = 0
        self.callbacks_dropped = 0
        self._callbacks: dict[str, list[Callback]] = {
            k: [] for k in ("book", "trade", "bar", "order", "position", "balance", "status")
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Event | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"Engine(instruments={list(self.instruments)}, feeds={list(self.feeds)})"

    # ---- state ---------------------------------------------------------------------
    def add_instrument(self, instrument: Instrument, *, max_depth: int = 0, window_ticks: int = 4096) -> OrderBook:
        """Register an instrument and create its book (and aggregator). Returns the book.
        ``max_depth`` and ``window_ticks`` go to the ``OrderBook`` (ticks it indexes
        directly at the touch: widen it for instruments whose active book spans more
        ticks, narrow it to save memory across many instruments). Re-adding the same
        symbol with the same tick/lot sizes is a no-op; different sizes raise
        EngineError."""
        old = self.instruments.get(instrument.symbol)
        if old is not None:
            if (old.tick_size, old.lot_size) != (instrument.tick_size, instrument.lot_size):
                raise EngineError(f"instrument {instrument.symbol!r} already added with "
                                  f"tick {old.tick_size} lot {old.lot_size}")
            return self.books[instrument.symbol]
        self.instruments[instrument.symbol] = instrument
        for acct in self.accounts.values():
            acct.add_instrument(instrument)
        book = OrderBook(instrument, max_depth=max_depth, window_ticks=window_ticks)
        self.books[instrument.symbol] = book
        if self.bar_intervals:
            agg = self._make_aggregator(instrument)
            if agg is not None:
                self.aggregators[instrument.symbol] = agg
        return book

    def instrument(self, symbol: str) -> Instrument:
        """The registered instrument; EngineError if unknown."""
        try:
            return self.instruments[symbol]
        except KeyError:
            raise EngineError(f"unknown instrument {symbol!r}") from None

    def book(self, symbol: str) -> OrderBook:
        """The live order book of ``symbol`` (read it any time; ``bids(n)``/``asks(n)``
        return copies). EngineError if unknown."""
        try:
            return self.books[symbol]
        except KeyError:
            raise EngineError(f"unknown instrument {symbol!r}") from None

    def bars(self, symbol: str) -> Any:
        """The KlineAggregator of ``symbol``; EngineError if none."""
        try:
            return self.aggregators[symbol]
        except KeyError:
            raise EngineError(f"no kline aggregator for {symbol!r}") from None

    def account(self, account_id: str) -> Any:
        """The Account ``account_id`` (created on first use with every instrument)."""
        acct = self.accounts.get(account_id)
        if acct is None:
            from engine._core.account import Account
            # feed_mode: a bad venue update is counted (error_count) and refused, never raised
            # into the receive loop; the account stays as it was.
            acct = Account(account_id, feed_mode=True)
            for inst in self.instruments.values():
                acct.add_instrument(inst)
            self.accounts[account_id] = acct
        return acct

    def _make_aggregator(self, instrument: Instrument) -> Any:
        try:
            from engine._core.kline import KlineAggregator
        except ImportError:  # kline module not built: books still work
            log.warning("engine._core.kline unavailable; bars disabled")
            return None
        symbol = instrument.symbol
        cbs = self._callbacks["bar"]

        def closed(interval: str, bar: Any) -> None:
            if cbs:
                self._invoke(cbs, BarClose(symbol, interval, bar), None)

        return KlineAggregator(instrument, self.bar_intervals, on_close=closed)

    def _push_trade(self, agg: Any, trade: Trade, counters: FeedCounters) -> None:
        try:
            agg.add_trade(trade.price_ticks, trade.qty_lots, trade.ts_ns, trade.side)
        except Exception as exc:  # a late/invalid trade for bars must not stop the feed
            counters.decode_errors += 1
            log.warning("kline %s rejected %r: %s", trade.symbol, trade, exc)

    # ---- callbacks -------------------------------------------------------------------
    def _register(self, kind: str, callback: Callback) -> Callback:
        if not callable(callback):
            raise TypeError(f"on_{kind} needs a callable, got {type(callback).__name__}")
        self._callbacks[kind].append(callback)
        return callback

    def on_book(self, callback: Callback) -> Callback:
        """``callback(book: OrderBook)`` after every applied book change. Returns the
        callback (usable as a decorator)."""
        return self._register("book", callback)

    def on_trade(self, callback: Callback) -> Callback:
        """``callback(trade: Trade)`` after every public trade (already in the bars)."""
        return self._register("trade", callback)

    def on_bar(self, callback: Callback) -> Callback:
        """``callback(close: BarClose)`` when a kline bar closes (symbol, interval, bar)."""
        return self._register("bar", callback)

    def on_order(self, callback: Callback) -> Callback:
        """``callback(order: Order)`` after an order changed state."""
        return self._register("order", callback)

    def on_position(self, callback: Callback) -> Callback:
        """``callback(position: Position)`` after a position changed."""
        return self._register("position", callback)

    def on_balance(self, callback: Callback) -> Callback:
        """``callback(balance)`` after a balance changed."""
        return self._register("balance", callback)

    def on_status(self, callback: Callback) -> Callback:
        """``callback(event: StatusEvent)`` on every feed status change."""
        return self._register("status", callback)

    def _invoke(self, cbs: list[Callback], obj: Any, counters: FeedCounters | None) -> None:
        """Run ``cbs`` through the one wrapper (``feeds._hotpath.invoke_callbacks``)."""
        invoke_callbacks(cbs, obj, self, counters)

    def _callback_failed(self, cb: Callback, exc: BaseException) -> None:
        """Policy for a callback that raised (called by the wrapper): log with the
        traceback and count; the feed and the state are unaffected."""
        self.callback_errors += 1
        log.error("callback %s raised; feed and state unaffected",
                  getattr(cb, "__qualname__", repr(cb)), exc_info=exc)

    def _callback_result(self, result: Any, counters: FeedCounters | None) -> None:
        """A callback returned something: a coroutine runs as a task (bounded by
        ``max_pending_callbacks``; beyond it the coroutine is closed and counted in
        ``callbacks_dropped``); any other value is ignored."""
        if not asyncio.iscoroutine(result):
            return
        if len(self._tasks) >= self.max_pending_callbacks:
            result.close()
            self.callbacks_dropped += 1
            if self.callbacks_dropped == 1 or self.callbacks_dropped % 1000 == 0:
                log.warning("%d async callbacks dropped: more than %d pending",
                            self.callbacks_dropped, self.max_pending_callbacks)
            return
        task = asyncio.get_running_loop().create_task(result)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.callback_errors += 1
                if counters is not None:
                    counters.callback_errors += 1
                log.error("async callback raised; feed and state unaffected", exc_info=t.exception())

        task.add_done_callback(done)

    def _status(self, event: StatusEvent) -> None:
        cbs = self._callbacks["status"]
        if cbs:
            feed = self.feeds.get(event.feed)
            self._invoke(cbs, event, feed.counters if feed is not None else None)

    # ---- feeds -------------------------------------------------------------------------
    def connect(self, venue: str, *, url: str, token: "str | Secret | None" = None,
                instruments: Iterable["str | Instrument"] | None = None,
                account_id: str | None = None, name: str | None = None, **opts: Any) -> Feed:
        """Create a feed to ``venue`` (a ``VENUES`` name) and start it when the engine
        runs (at once if it already runs in this loop).

        ``instruments``: symbols or Instruments (added if new); default every registered
        one. ``token`` is wrapped in ``Secret``. ``opts``: ``SessionOptions`` fields
        (timeouts, backoff, ``recorder``...) and venue options. ``name`` defaults to the
        venue name (suffixed ``-2``, ``-3``... for further connections). Raises
        EngineError for an unknown venue or instrument."""
        cls = venue_class(venue)
        insts: list[Instrument] = []
        for item in (self.instruments.values() if instruments is None else instruments):
            if isinstance(item, Instrument):
                self.add_instrument(item)
                insts.append(item)
            else:
                insts.append(self.instrument(item))
        feed_name = name or venue
        n = 2
        while feed_name in self.feeds:
            feed_name = f"{name or venue}-{n}"
            n += 1
        session_opts, venue_opts = options_from(opts)
        adapter = cls(self, name=feed_name, url=url, token=Secret.wrap(token), instruments=insts,
                      account_id=account_id, **venue_opts)
        feed = Feed(adapter, session_opts, on_status=self._status)
        adapter.bind(feed, Dispatch(self, feed_name, feed.counters))
        self.feeds[feed_name] = feed
        if self._started:
            feed.start()
        return feed

    async def start(self) -> None:
        """Start every feed in the running loop (embedding: call, then go on with your
        own code; ``await close()`` at the end). Idempotent."""
        self._started = True
        if self._stop is None:
            self._stop = asyncio.Event()
        for feed in self.feeds.values():
            if not feed.running:
                feed.start()

    async def run(self, seconds: float | None = None) -> None:
        """Start the feeds and run until ``stop()``, until every feed ended (failed or
        closed), or until ``seconds`` have passed since the call (one deadline, however
        many feeds end before it); then close everything."""
        await self.start()
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                feeds = [f._task for f in self.feeds.values() if f._task is not None and not f._task.done()]
                if not feeds:
                    break
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    break
                done, _ = await asyncio.wait([stop_wait, *feeds], timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop_wait in done or not done:
                    break
        finally:
            stop_wait.cancel()
            await self.close()

    def stop(self) -> None:
        """Ask ``run()`` to return (safe from callbacks)."""
        if self._stop is not None:
            self._stop.set()

    async def close(self) -> None:
        """Close every feed and wait for pending async callbacks (cancelled)."""
        await asyncio.gather(*(f.close() for f in self.feeds.values()), return_exceptions=True)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._started = False
        self._stop = None

    def run_forever(self, seconds: float | None = None) -> None:
        """Run the engine on a new event loop (uvloop unless ``use_uvloop=False``) until
        ``stop()`` or every feed ended; blocks."""
        factory = None
        if self.use_uvloop:
            import uvloop
            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self.run(seconds))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per feed: status, reason and counters (with latency percentiles)."""
        out: dict[str, dict[str, Any]] = {}
        for name, feed in self.feeds.items():
            row: dict[str, Any] = {"status": feed.status.value, "reason": feed.status_reason,
                                   "connected": feed.status in (FeedStatus.CONNECTED, FeedStatus.SUBSCRIBED)}
            row.update(feed.counters.as_dict())
            out[name] = row
        return out

