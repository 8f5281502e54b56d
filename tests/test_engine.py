"""Engine API: registration, callback policy, async callbacks, run/stop/embedding."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from engine import Engine, EngineError, Instrument, OrderBook
from engine.engine import VENUES, Trade, venue_class
from feeds.cadenza import CadenzaVenue
from feeds.session import FeedStatus
from feeds.sim.cadenza import CadenzaSim

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=1)


def btc() -> Instrument:
    return Instrument("BTC-USDT", "0.01", "0.00001")


def test_instruments_and_books() -> None:
    eng = Engine()
    book = eng.add_instrument(btc())
    assert isinstance(book, OrderBook) and eng.book("BTC-USDT") is book
    assert eng.add_instrument(btc()) is book  # same sizes: no-op
    with pytest.raises(EngineError, match="already added"):
        eng.add_instrument(Instrument("BTC-USDT", "0.1", "0.00001"))
    with pytest.raises(EngineError, match="unknown instrument"):
        eng.book("NOPE")
    assert "BTC-USDT" in eng.aggregators and eng.bars("BTC-USDT") is eng.aggregators["BTC-USDT"]
    acct = eng.account("A-1")
    assert eng.account("A-1") is acct and acct.position("BTC-USDT").qty_lots == 0
    assert acct.account_id == "A-1" and acct.feed_mode and eng.account("B-2").account_id == "B-2"
    eth = eng.add_instrument(Instrument("ETH-USDT", "0.01", "0.0001"), max_depth=50, window_ticks=512)
    assert acct.position("ETH-USDT").qty_lots == 0  # later instruments reach existing accounts
    assert (eth.max_depth, eth.window_ticks) == (50, 512) and book.window_ticks == 4096


def test_registry_and_connect_validation() -> None:
    assert venue_class("cadenza") is CadenzaVenue
    assert set(VENUES) >= {"cadenza", "binance"}
    eng = Engine()
    eng.add_instrument(btc())
    with pytest.raises(EngineError, match="unknown venue"):
        eng.connect("nope", url="ws://x")
    with pytest.raises(EngineError, match="unknown instrument"):
        eng.connect("cadenza", url="ws://127.0.0.1:1/x", token="t", instruments=["ETH-USDT"])
    with pytest.raises(TypeError, match="no_such_option"):
        eng.connect("cadenza", url="ws://127.0.0.1:1/x", token="t", no_such_option=1)
    with pytest.raises(TypeError):
        eng.on_book(42)  # type: ignore[arg-type]
    a = eng.connect("cadenza", url="ws://127.0.0.1:1/x", token="t")
    b = eng.connect("cadenza", url="ws://127.0.0.1:1/x", token="t")
    assert (a.name, b.name) == ("cadenza", "cadenza-2") and set(eng.feeds) == {"cadenza", "cadenza-2"}


def test_trade_object() -> None:
    t = Trade(btc(), "T-1", 6183763, 1500, 1, 10, 20)
    assert (t.price, t.qty) == ("61837.63", "0.01500")
    assert "buy" in repr(t) and t == Trade(btc(), "T-1", 6183763, 1500, 1, 10, 99)


async def _connected(sim: CadenzaSim, **kw: Any) -> Engine:
    eng = Engine(**kw)
    for inst in sim.market.instruments.values():
        eng.add_instrument(inst)
    eng.connect("cadenza", url=sim.url, token="sim-token", account_id="A-1", **FAST)
    return eng


def test_callback_errors_are_contained_and_async_callbacks_run(caplog: Any) -> None:
    async def main() -> None:
        async with CadenzaSim(seed=2, interval_s=None, token="sim-token") as sim:
            eng = await _connected(sim, max_pending_callbacks=4)
            seen: list[int] = []
            done: list[int] = []
            gate = asyncio.Event()

            def bad(book: Any) -> None:
                raise RuntimeError("strategy bug")

            def good(book: Any) -> None:
                # the core object itself, already updated
                assert isinstance(book, OrderBook) and book.best_bid() is not None
                seen.append(book.version)

            async def slow(book: Any) -> None:
                await gate.wait()
                done.append(1)

            eng.on_book(bad)
            eng.on_book(good)
            eng.on_book(slow)
            await eng.start()
            await eng.feeds["cadenza"].wait_subscribed(5)
            for _ in range(20):
                sim.advance(1)
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)
            feed = eng.feeds["cadenza"]
            assert feed.status is FeedStatus.SUBSCRIBED and feed.counters.reconnects == 0
            assert len(seen) > 5 and eng.callback_errors == len(seen) == feed.counters.callback_errors
            assert len(eng._tasks) == 4 and eng.callbacks_dropped == len(seen) - 4  # bounded
            gate.set()
            await asyncio.sleep(0.01)
            assert len(done) == 4 and not eng._tasks
            # the books are right despite the failing callback
            for sym in sim.market.instruments:
                assert [tuple(x) for x in eng.book(sym).bids().tolist()] == sim.market.book(sym)[0]
            await eng.close()
            assert not {t for t in asyncio.all_tasks()
                        if t is not asyncio.current_task() and not t.get_name().startswith("sim.")}
    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "strategy bug" in caplog.text and "Traceback" in caplog.text


def test_run_for_seconds_and_stop_from_callback() -> None:
    async def main() -> None:
        async with CadenzaSim(seed=3, interval_s=0.005, token="sim-token") as sim:
            eng = await _connected(sim)
            statuses: list[str] = []
            eng.on_status(lambda e: statuses.append(e.status.value))
            await eng.run(seconds=0.3)
            assert statuses[:3] == ["connecting", "connected", "subscribed"] and statuses[-1] == "closed"
            assert eng.stats()["cadenza"]["frames"] > 0
            # stop() from a callback ends run()
            eng2 = await _connected(sim)
            eng2.on_book(lambda book: eng2.stop())
            await asyncio.wait_for(eng2.run(), 5)
            assert eng2.feeds["cadenza"].status is FeedStatus.CLOSED
    asyncio.run(main())


def test_run_for_seconds_is_one_deadline_when_a_feed_ends_early() -> None:
    """A feed that fails halfway must not restart the ``seconds`` wait."""
    async def main() -> None:
        async with CadenzaSim(seed=3, interval_s=0.01, token="sim-token") as sim:
            eng = await _connected(sim)
            # Refused at once, retried once after 0.5 s, then failed: ends at ~0.5 s.
            dead = eng.connect("cadenza", url="ws://127.0.0.1:9/x", token="t", name="dead",
                               **dict(FAST, backoff_initial_s=0.5, backoff_max_s=0.5, jitter=0.0,
                                        max_attempts=2))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await eng.run(seconds=1.0)
            elapsed = loop.time() - t0
            assert dead.status is FeedStatus.FAILED and "gave up after 2" in dead.status_reason
            assert eng.feeds["cadenza"].status is FeedStatus.CLOSED
            assert 0.95 <= elapsed < 1.3, elapsed  # the old restarted wait took ~1.5 s
    asyncio.run(main())


def test_run_returns_when_every_feed_failed() -> None:
    async def main() -> None:
        async with CadenzaSim(seed=3, interval_s=None, token="sim-token") as sim:
            eng = Engine()
            for inst in sim.market.instruments.values():
                eng.add_instrument(inst)
            eng.connect("cadenza", url=sim.url, token="wrong", **FAST)
            await asyncio.wait_for(eng.run(), 5)
            assert eng.stats()["cadenza"]["status"] == "failed"
    asyncio.run(main())


def test_run_forever_on_uvloop() -> None:
    import threading
    sim_ready = threading.Event()
    stop_sim = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def go() -> None:
            async with CadenzaSim(seed=4, interval_s=0.005, token="sim-token") as sim:
                box["url"] = sim.url
                box["instruments"] = list(sim.market.instruments.values())
                sim_ready.set()
                while not stop_sim.is_set():
                    await asyncio.sleep(0.01)
        asyncio.run(go())

    th = threading.Thread(target=serve)
    th.start()
    try:
        assert sim_ready.wait(5)
        eng = Engine()
        for inst in box["instruments"]:
            eng.add_instrument(inst)
        eng.connect("cadenza", url=box["url"], token="sim-token", **FAST)
        loops: list[str] = []
        eng.on_book(lambda b: loops.append(type(asyncio.get_running_loop()).__module__))
        eng.run_forever(seconds=0.5)
        assert loops and loops[0].startswith("uvloop")
        assert eng.stats()["cadenza"]["status"] == "closed"
    finally:
        stop_sim.set()
        th.join(5)
