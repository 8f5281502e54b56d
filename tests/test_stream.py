"""Stream venue (Socket.IO) end to end over loopback against feeds.sim.stream, under
asyncio and uvloop, plus the decoder and the Socket.IO framing on their own.

The simulator's market moves only when a test calls ``sim.advance(n)``; after each
scenario the engine's books, trades, venue candles, orders, positions and balances
must equal the simulator's state, and no task or socket may be left behind.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Instrument
from engine.account import OrderStatus
from engine.engine import Trade
from engine.errors import DecodeError, FeedError
from feeds.session import Feed, FeedStatus
from feeds.sim.stream import NS_PER_MS, StreamSim
from feeds.socketio import (
    ENGINEIO_PARAMS, SocketIOClient, decode_packet, encode_event, encode_packet, is_auth_error,
    parse_open, socketio_url,
)
from feeds.stream import StreamVenue
from feeds.stream_decode import StreamDecoder, StreamSymbol
from loopback import oversize_frame_reconnects, close_engine_and_sim, step as step_sim

KEY = "stream-key-SHOULD-NOT-LEAK-42"
FAST: dict[str, Any] = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=3, connect_timeout_s=3.0)
STATES = {"New": "NEW", "PartiallyFilled": "PARTIALLY_FILLED", "Filled": "FILLED", "Canceled": "CANCELED"}


class Harness:
    """A simulator, an engine connected to it, and what the callbacks saw."""

    def __init__(self, sim: StreamSim, eng: Engine, feed: Feed) -> None:
        self.sim = sim
        self.eng = eng
        self.feed = feed
        self.trades: list[Trade] = []
        self.statuses: list[Any] = []
        self.orders: list[Any] = []
        self.balances: list[Any] = []
        eng.on_trade(self.trades.append)
        eng.on_status(self.statuses.append)
        eng.on_order(self.orders.append)
        eng.on_balance(self.balances.append)

    @property
    def venue(self) -> StreamVenue:
        v = self.feed.venue
        assert isinstance(v, StreamVenue)
        return v

    def mismatches(self, orders: bool = True) -> list[str]:
        """Every difference between the engine's state and the simulator's."""
        out: list[str] = []
        market = self.sim.market
        for sym in market.instruments:
            bids, asks = market.book(sym)
            book = self.eng.book(sym)
            if [tuple(x) for x in book.bids().tolist()] != bids or [tuple(x) for x in book.asks().tolist()] != asks:
                out.append(f"book {sym}")
            got = [(t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) for t in self.trades if t.symbol == sym]
            want = [(str(t.trade_id), t.price_ticks, t.qty_lots, 1 if t.side == "buy" else -1, t.ts_ns)
                    for t in market.trades if t.symbol == sym]
            if got != want:
                out.append(f"trades {sym}: {len(got)} vs {len(want)}")
            for (ksym, iv), ks in self.sim.klines.items():
                if ksym != sym:
                    continue
                agg = self.eng.bars(sym)
                mine = [tuple(int(b[k]) for k in ("open_ts_ns", "open_ticks", "high_ticks", "low_ticks",
                                                  "close_ticks", "volume_lots", "last_trade_ts_ns"))
                        for b in agg.bars(iv, venue=True)]
                cur = agg.current(iv, venue=True)
                if cur is not None:
                    mine.append(tuple(int(cur[k]) for k in ("open_ts_ns", "open_ticks", "high_ticks", "low_ticks",
                                                            "close_ticks", "volume_lots", "last_trade_ts_ns")))
                theirs = [(c.open_ts_ns, c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots,
                           c.update_ts_ns) for c in self.sim.candles(sym, iv)]
                if mine != theirs[-len(mine):] or len(mine) < min(len(theirs), 2):
                    out.append(f"klines {sym} {iv}: {len(mine)} vs {len(theirs)}")
        if self.venue.account is None:
            return out
        acct = self.eng.account("A-1")
        if orders:
            for o in market.orders.values():  # type: ignore[attr-defined]
                try:
                    mine = acct.order(f"O-{o.order_id}")
                except Exception:
                    out.append(f"order O-{o.order_id} missing")
                    continue
                if (OrderStatus(mine.status).name, mine.qty_lots, mine.filled_lots, mine.price_ticks) != \
                        (STATES[o.status], o.qty_lots, o.filled_lots, o.price_ticks):
                    out.append(f"order O-{o.order_id}")
            for sym, pos in market.positions.items():  # type: ignore[attr-defined]
                if acct.position(sym).qty_lots != pos.qty_lots:
                    out.append(f"position {sym}")
        for asset, bal in market.balances.items():  # type: ignore[attr-defined]
            b = acct.balance(asset)
            if (b.total, b.available, b.reserved) != (bal.total_units, bal.available_units, bal.reserved_units):
                out.append(f"balance {asset}")
        return out

    async def caught_up(self, timeout: float = 5.0, orders: bool = True) -> None:
        """Wait until subscribed and the engine's state equals the simulator's."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            bad = self.mismatches(orders) if self.feed.status is FeedStatus.SUBSCRIBED else ["not subscribed"]
            if not bad:
                return
            if loop.time() > deadline:
                raise AssertionError(f"not caught up ({self.feed.status.value}: {self.feed.status_reason}): {bad}")
            await asyncio.sleep(0.005)

    async def status(self, status: FeedStatus, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.feed.status is not status:
            if loop.time() > deadline:
                raise AssertionError(f"status {self.feed.status} ({self.feed.status_reason}), wanted {status}")
            await asyncio.sleep(0.005)


class open_harness:
    """``async with open_harness(...) as h``: sim + engine, closed cleanly on exit."""

    def __init__(self, key: str | None = KEY, sim_kw: dict[str, Any] | None = None, **connect_kw: Any) -> None:
        self.key = key
        self.sim_kw: dict[str, Any] = dict(seed=11, api_key=KEY, interval_s=None, account_rate=None)
        self.sim_kw.update(sim_kw or {})
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Harness:
        from feeds.sim.market import SyntheticMarket
        kw = dict(self.sim_kw)
        rate = kw.pop("account_rate")
        if "market" not in kw:
            kw["market"] = SyntheticMarket(seed=kw.pop("seed"), account_rate=0.3 if rate is None else rate)
        else:
            kw.pop("seed")
        self.sim = StreamSim(**kw)
        await self.sim.start()
        eng = Engine(bar_intervals=("1s",))
        for inst in self.sim.market.instruments.values():
            eng.add_instrument(inst)
        feed = eng.connect("stream", url=f"ws://127.0.0.1:{self.sim.port}", token=self.key,
                           account_id="A-1" if self.key else None, **self.connect_kw)
        self.h = Harness(self.sim, eng, feed)
        await eng.start()
        return self.h

    async def __aexit__(self, *exc: Any) -> None:
        await close_engine_and_sim(self.h.eng, self.sim)


async def step(h: Harness, n: int, chunk: int = 10) -> None:
    await step_sim(h.sim, n, chunk)


# --- end to end ---------------------------------------------------------------------------

def test_end_to_end_state_matches(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 400)
            await h.caught_up()
            c = h.feed.counters
            assert c.frames > 0 and c.decode_errors == 0 and c.gaps == 0 and c.reconnects == 0
            assert c.latency.count > 0 and h.eng.callback_errors == 0
            dec = h.venue.decoder
            assert dec is not None and dec.duplicate_trades > 0  # the trade windows overlapped
            assert len(h.trades) > 50 and h.sim.market.orders and h.orders and h.balances  # type: ignore[attr-defined]
            btc = dec.symbol("BTC-USDT")
            assert btc.last_seq == h.sim.seq["BTC-USDT"] == h.eng.book("BTC-USDT").last_update_id
            assert btc.klines > 0 and h.sim.candles("BTC-USDT", "1s")
            # The venue's candles are built from the same trades as the local bars.
            stats = h.eng.bars("BTC-USDT").stats("1s")
            assert stats["venue_matched"] > 0 and stats["venue_diverged"] == 0, stats
            assert {e.status for e in h.statuses} >= {FeedStatus.CONNECTING, FeedStatus.CONNECTED,
                                                       FeedStatus.SUBSCRIBED}
            assert h.venue.describe()["acked"] == len(h.venue.subscriptions) == 6
    run(main())


def test_public_only_without_key(run: Any) -> None:
    async def main() -> None:
        async with open_harness(key=None) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 100)
            await h.caught_up()
            assert h.venue.account is None and len(h.venue.subscriptions) == 4
    run(main())


def test_no_subscriptions_is_still_subscribed(run: Any) -> None:
    async def main() -> None:
        sim = StreamSim(seed=2, interval_s=None)
        await sim.start()
        try:
            eng = Engine(bar_intervals=())
            feed = eng.connect("stream", url=sim.url, instruments=[], **FAST)
            await eng.start()
            await feed.wait_subscribed(5)
            assert feed.status_reason == "no subscriptions" and sim.stats["frames_received"] == 1  # "40"
            await eng.close()
        finally:
            await sim.stop()
    run(main())


def test_drop_reconnects_and_recovers_everything(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 100)
            await h.caught_up()
            for _ in range(2):
                h.sim.drop()
                await step(h, 30)  # orders filled/canceled while away come back via `since`
                await h.caught_up()
            c = h.feed.counters
            assert c.reconnects == 2 and c.decode_errors == 0
            # The recovery snapshots repeated orders already applied: recognised as stale.
            assert h.venue.account.stale_count > 0 and h.venue.account_errors == 0
            assert h.venue.orders_since_ms > 0
    run(main())


@pytest.mark.parametrize("code", [1000, 1001, 1011, 4000])
def test_close_codes_reconnect(run: Any, code: int) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 30)
            await h.caught_up()
            h.sim.close(code, "test close")
            await step(h, 30)
            await h.caught_up()
            assert h.feed.counters.reconnects == 1
            reasons = [e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING]
            assert any(str(code) in r for r in reasons), reasons
    run(main())


def test_server_disconnect_and_engineio_close_reconnect(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 20)
            await h.caught_up()
            h.sim.disconnect()
            await step(h, 20)
            await h.caught_up()
            assert h.feed.counters.reconnects == 1
            h.sim.engineio_close()
            await step(h, 20)
            await h.caught_up()
            assert h.feed.counters.reconnects == 2
            reasons = " | ".join(e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING)
            assert "disconnected the namespace" in reasons and "Engine.IO session" in reasons
    run(main())


def test_malformed_frames_are_counted_and_change_nothing(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 30)
            await h.caught_up()
            version = h.eng.book("BTC-USDT").version
            bad = [
                None,  # the simulator's truncated orderbook
                b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":200,"lots":1}],'
                b'"asks":[{"ticks":100,"lots":1}]}]',                                # crossed
                b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":100,"lots":-1}],"asks":[]}]',
                b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],'
                b'"trades":[{"id":1,"ticks":1,"lots":1,"side":"up","ts":1}]}]',
                b'42["kline",{"symbol":"BTC-USDT","interval":"1s","add":{"created":1723161600001,'
                b'"o":1,"h":1,"l":1,"c":1,"v":1}}]',                                  # not an interval start
                b'42["positions",{"ts":1,"balances":[{"asset":"USDT","total":"x","available":"1"}]}]',
                b'42["openorders",{"ts":1,"modify":[{"id":"O-999999","state":"open"}]}]',
                b'4{not json',
            ]
            for frame in bad:
                h.sim.send_malformed(frame)
            await step(h, 30)
            await h.caught_up()
            assert h.feed.counters.decode_errors == len(bad) and h.feed.counters.reconnects == 0
            assert h.eng.book("BTC-USDT").version > version  # later frames still applied
    run(main())


def test_skipped_sequence_is_a_counted_gap_and_heals(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 30)
            await h.caught_up()
            h.sim.skip_sequence("BTC-USDT", 3)
            await step(h, 40)
            await h.caught_up()  # full snapshots + the trade window: nothing lost
            c = h.feed.counters
            assert c.gaps >= 1 and c.reconnects == 0 and c.decode_errors == 0
            assert h.venue.decoder is not None and h.venue.decoder.seq_gaps >= 1
    run(main())


def test_stall_detected_by_missing_ping(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(ping_interval_ms=200, ping_timeout_ms=200)) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 20)
            await h.caught_up()
            h.sim.stall(1.5)
            await step(h, 20)
            await h.status(FeedStatus.RECONNECTING, timeout=4)
            assert "no ping" in h.feed.status_reason
            await step(h, 20)
            await h.caught_up(timeout=6)
    run(main())


def test_missing_pings_alone_reconnect(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(ping_interval_ms=150, ping_timeout_ms=150)) as h:
            await h.feed.wait_subscribed(5)
            h.sim.stop_pings()
            for _ in range(20):  # data keeps flowing; only the ping contract can notice
                await step(h, 2, chunk=2)
                await asyncio.sleep(0.03)
            await h.status(FeedStatus.RECONNECTING, timeout=4)
            assert "no ping" in h.feed.status_reason
    run(main())


def test_ping_is_answered_and_keeps_the_connection(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(ping_interval_ms=100, ping_timeout_ms=80)) as h:
            await h.feed.wait_subscribed(5)
            await asyncio.sleep(1.0)  # ~10 pings; a missing pong closes after 80 ms
            assert h.feed.counters.reconnects == 0 and h.venue.sio.pings >= 5
            await step(h, 20)
            await h.caught_up()
    run(main())


def test_oversize_frame_reconnects(run: Any) -> None:
    async def main() -> None:
        async with open_harness(max_message_size=128 * 1024) as h:
            await oversize_frame_reconnects(h, step, 20, 200 * 1024, same_state=False)
    run(main())


def test_auth_rejected_is_terminal_and_secret_free(run: Any, caplog: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict()) as h:
            h.sim.reject_auth = True
            await h.status(FeedStatus.FAILED)
            await asyncio.sleep(0.05)
            assert h.feed.counters.reconnects == 0 and "unauthorized" in h.feed.status_reason
        async with open_harness(key="wrong-key-SHOULD-NOT-LEAK") as h:
            await h.status(FeedStatus.FAILED)
            assert "401" in h.feed.status_reason and h.feed.counters.reconnects == 0
            for e in h.statuses:
                assert "SHOULD-NOT-LEAK" not in e.reason
            assert "SHOULD-NOT-LEAK" not in repr(h.feed) + repr(h.venue.token) + repr(h.sim)
    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "SHOULD-NOT-LEAK" not in caplog.text


def test_unknown_symbol_subscription_is_terminal(run: Any) -> None:
    async def main() -> None:
        sim = StreamSim(seed=2, interval_s=None)
        await sim.start()
        try:
            eng = Engine(bar_intervals=())
            eng.add_instrument(Instrument("DOGE-USDT", "0.0001", "1"))
            feed = eng.connect("stream", url=sim.url, **FAST)
            await eng.start()
            with pytest.raises(FeedError) as err:
                await feed.wait_subscribed(5)
            assert err.value.terminal and "404" in str(err.value)
            await eng.close()
        finally:
            await sim.stop()
    run(main())


def test_burst_mode_book_and_trades(run: Any) -> None:
    async def main() -> None:
        async with open_harness(key=None, sim_kw=dict(burst=3000, burst_symbol="BTC-USDT")) as h:
            await h.feed.wait_subscribed(5)
            sim = h.sim
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            dec = h.venue.decoder
            assert dec is not None
            while dec.symbol("BTC-USDT").last_seq < 3000:
                assert loop.time() < deadline, dec.symbol("BTC-USDT")
                await asyncio.sleep(0.01)
            bids, asks = sim.burst_book
            book = h.eng.book("BTC-USDT")
            assert [tuple(x) for x in book.bids().tolist()] == bids
            assert [tuple(x) for x in book.asks().tolist()] == asks
            got = [(int(t.trade_id), t.price_ticks, t.qty_lots) for t in h.trades]
            assert got == [(t.trade_id, t.price_ticks, t.qty_lots) for t in sim.burst_trades]
            assert h.feed.counters.decode_errors == 0
    run(main())


# --- decoder on its own: bad input changes nothing ----------------------------------------

class _Venue:
    def __init__(self) -> None:
        self.control: list[str] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.pings = 0
        self.orders: list[Any] = []
        self.balances: list[Any] = []

    def on_control(self, text: str, recv_ns: int) -> None:
        self.control.append(text)

    def on_ping(self, recv_ns: int) -> None:
        self.pings += 1

    def on_seq_gap(self, symbol: str, seq: int, last: int) -> None:
        self.gaps.append((symbol, seq, last))

    def on_openorders(self, cancel: Any, modify: Any, symbol: Any, ts_ns: int, recv_ns: int) -> None:
        self.orders.append((cancel, modify, symbol, ts_ns))

    def on_balances(self, items: Any, ts_ns: int, recv_ns: int) -> None:
        self.balances.append((items, ts_ns))


class _Seen:
    """What the engine's callbacks saw through the real (compiled) Dispatch."""

    def __init__(self, eng: Engine) -> None:
        self.books = 0
        self.trades: list[Trade] = []
        eng.on_book(self.on_book)
        eng.on_trade(self.trades.append)

    def on_book(self, book: Any) -> None:
        self.books += 1


def _decoder(namespace: str = "/") -> tuple[StreamDecoder, Any, Any, _Seen, _Venue]:
    from engine._core.kline import KlineAggregator
    from feeds._hotpath import Dispatch, FeedCounters
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    book = eng.add_instrument(inst)
    agg = KlineAggregator(inst, ("1s", "1m"))
    venue, seen = _Venue(), _Seen(eng)
    dec = StreamDecoder(venue, Dispatch(eng, "t", FeedCounters()), Trade, namespace)
    dec.add_symbol(StreamSymbol(inst, book, agg, ["1m"]))
    return dec, book, agg, seen, venue


def _ob(seq: int, bids: list[tuple[int, int]], asks: list[tuple[int, int]], trades: list[Any] = (),  # type: ignore[assignment]
        prefix: str = "42") -> bytes:
    body = {"symbol": "BTC-USDT", "seq": seq, "ts": 1723161600000 + seq,
            "bids": [{"ticks": p, "lots": q, "count": 1} for p, q in bids],
            "asks": [{"ticks": p, "lots": q} for p, q in asks],
            "trades": [{"id": i, "ticks": p, "lots": q, "side": s, "ts": 1723161600000 + i} for i, p, q, s in trades]}
    return (prefix + json.dumps(["orderbook", body])).encode()


def test_decoder_orderbook_replaces_and_dedupes_trades() -> None:
    dec, book, agg, dispatch, venue = _decoder()
    dec.feed(memoryview(_ob(1, [(100, 5), (99, 1)], [(101, 2)], [(7, 100, 1, "buy"), (5, 99, 2, "sell")])), 11)
    assert book.bids().tolist() == [(100, 5), (99, 1)] and book.asks().tolist() == [(101, 2)]
    assert book.last_update_id == 1 and book.event_ts_ns == 1723161600001 * NS_PER_MS
    # Newest-first input is applied oldest first.
    assert [(t.trade_id, t.side, t.ts_ns) for t in dispatch.trades] == [
        ("5", -1, 1723161600005 * NS_PER_MS), ("7", 1, 1723161600007 * NS_PER_MS)]
    # Overlapping window: 7 again, 9 is new; the book is replaced, not merged.
    dec.feed(_ob(2, [(98, 3)], [(102, 4)], [(7, 100, 1, "buy"), (9, 101, 3, "buy")]), 12)
    assert book.bids().tolist() == [(98, 3)] and book.asks().tolist() == [(102, 4)]
    assert [t.trade_id for t in dispatch.trades] == ["5", "7", "9"] and dec.duplicate_trades == 1
    dec.feed(_ob(5, [(98, 3)], [(102, 4)]), 13)  # seq jump: counted, still applied
    assert venue.gaps == [("BTC-USDT", 5, 2)] and dec.seq_gaps == 1 and book.last_update_id == 5
    dec.feed(_ob(5, [(98, 3)], [(102, 4)]), 13)  # the same snapshot again: no gap
    assert dec.seq_gaps == 1 and dec.seq_resets == 0
    dec.feed(_ob(1, [(98, 3)], [(102, 4)]), 13)  # venue restart
    assert dec.seq_resets == 1
    assert dispatch.books == 5


def test_decoder_compact_fast_path_matches_generic_path() -> None:
    """Compact frames (the fast path) and spaced / reordered ones (the generic path)
    decode to the same book and trades; near-misses fall back and fail the same way."""
    levels = [(6183763 - i, 1 + i * 7) for i in range(30)]
    asks = [(6183764 + i, 10**17 + i) for i in range(30)]
    trades = [(i, 6183763, 5 + i, "buy" if i % 2 else "sell") for i in range(1, 20)]
    body = {"symbol": "BTC-USDT", "seq": 1, "ts": 1723161600000,
            "bids": [{"ticks": p, "lots": q, "count": 3} for p, q in levels],
            "asks": [{"ticks": p, "lots": q} for p, q in asks],
            "trades": [{"id": i, "ticks": p, "lots": q, "side": sd, "ts": 1723161600000 + i} for i, p, q, sd in trades]}
    reordered = dict(body, bids=[{"count": 3, "lots": q, "ticks": p} for p, q in levels],
                     trades=[{"ts": 1723161600000 + i, "side": sd, "lots": q, "ticks": p, "id": i} for i, p, q, sd in trades])
    results = []
    for b, seps in ((body, (",", ":")), (body, (", ", ": ")), (reordered, (",", ":"))):
        dec, book, agg, seen, venue = _decoder()
        dec.feed(("42" + json.dumps(["orderbook", b], separators=seps)).encode(), 1)
        results.append((book.bids().tolist(), book.asks().tolist(),
                        [(t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) for t in seen.trades]))
    assert results[0] == results[1] == results[2]
    assert results[0][0] == levels and results[0][1] == asks and len(results[0][2]) == 19
    near_misses = [
        b'{"ticks":0100,"lots":1}', b'{"ticks":1,"lots":0}', b'{"ticks":1,"lots":1,"count":-1}',
        b'{"ticks":1,"lots":12345678901234567890}', b'{"ticks":1,"lots":1,"count":1',
    ]
    for lv in near_misses:
        dec, book, agg, seen, venue = _decoder()
        with pytest.raises(DecodeError):
            dec.feed(b'42["orderbook",{"symbol":"BTC-USDT","bids":[' + lv + b'],"asks":[]}]', 1)
        assert book.version == 0
    dec, book, agg, seen, venue = _decoder()
    dec.feed(b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":1234567890123456789,"lots":1}],"asks":[]}]', 1)
    assert book.bids().tolist() == [(1234567890123456789, 1)]  # 19 digits: the generic path reads it
    for tr in (b'{"id":1,"ticks":1,"lots":1,"side":"buy","ts":99999999999999}',
               b'{"id":1,"ticks":1,"lots":1,"side":"Buy","ts":1}', b'{"id":1,"ticks":1,"lots":0,"side":"buy","ts":1}'):
        dec, book, agg, seen, venue = _decoder()
        with pytest.raises(DecodeError):
            dec.feed(b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],"trades":[' + tr + b']}]', 1)
        assert not seen.trades and book.version == 0


def test_decoder_many_trades_in_any_order() -> None:
    import random
    dec, book, agg, seen, venue = _decoder()
    ids = list(range(1, 5001))
    random.Random(4).shuffle(ids)
    dec.feed(_ob(1, [(100, 5)], [(101, 2)], [(i, 100, 1 + i % 3, "buy") for i in ids]), 1)
    assert [t.trade_id for t in seen.trades] == [str(i) for i in range(1, 5001)]
    dec.feed(_ob(2, [(100, 5)], [(101, 2)], [(i, 100, 1, "sell") for i in (4999, 5003, 5000, 5001, 5001)]), 1)
    assert [t.trade_id for t in seen.trades[5000:]] == ["5001", "5003"] and dec.duplicate_trades == 3


@pytest.mark.parametrize("frame", [
    _ob(9, [(100, 1)], [(100, 1)]),                                      # crossed
    _ob(9, [(100, 1), (100, 2)], [(101, 1)]),                            # repeated price
    _ob(9, [(100, 0)], [(101, 1)]),                                      # zero lots
    _ob(9, [(100, 1)], [(101, 1)], [(3, 100, 0, "buy")]),                # zero trade lots
    _ob(9, [(100, 1)], [(101, 1)], [(3, 100, 1, "hold")]),               # bad side
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":1.5,"lots":1}],"asks":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"ticks":"1","lots":1}],"asks":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[{"lots":1}],"asks":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],"bids":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","ts":99999999999999999,"bids":[],"asks":[]}]',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[]}] x',
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[]}',
    b'42["orderbook"]',
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161600000,"o":5,"h":4,"l":1,"c":2,"v":1}}]',
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161600000,"o":1,"h":1,"l":1,"c":1,"v":-1}}]',
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161601000,"o":1,"h":1,"l":1,"c":1,"v":1}}]',
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"o":1,"h":1,"l":1,"c":1,"v":1}}]',
    b'42["kline",{"symbol":"BTC-USDT","add":null}]',
    b'42["positions",{"ts":1}]',
    b'42["openorders",{"modify":[{"id":"x","nested":{"a":1}}]}]',
    # Trade prices must be positive (the compact path has no sign; the generic one does).
    b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],"trades":[{"ts":1,"id":3,"ticks":-100,"lots":1,"side":"buy"}]}]',
    _ob(9, [(100, 1)], [(101, 1)], [(3, 0, 1, "buy")]),
    # A candle past the aggregator's 2**62 ns bound beside one that would apply: neither.
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":4611686040000,"o":1,"h":1,"l":1,"c":1,"v":1},'
    b'"modify":{"created":1723161600000,"o":1,"h":2,"l":1,"c":2,"v":5}}]',
])
def test_decoder_rejects_bad_frames_whole(frame: bytes) -> None:
    dec, book, agg, dispatch, venue = _decoder()
    dec.feed(_ob(1, [(100, 5)], [(101, 2)], [(1, 100, 1, "buy")]), 1)
    dec.feed(b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161600000,'
             b'"o":1,"h":2,"l":1,"c":2,"v":3,"m":1723161600005}}]', 1)
    version, klines, events = book.version, agg.current("1m", venue=True), dec.events
    with pytest.raises(DecodeError):
        dec.feed(frame, 2)
    assert book.version == version and book.bids().tolist() == [(100, 5)] and book.last_update_id == 1
    assert agg.current("1m", venue=True) == klines and len(dispatch.trades) == 1
    assert dec.events == events and not venue.orders and not venue.balances and not venue.control


def test_decoder_klines_keyed_by_open_time() -> None:
    dec, book, agg, dispatch, venue = _decoder()
    t0 = 1723161600000

    def kl(**kw: Any) -> bytes:
        body = {"symbol": "BTC-USDT", "interval": "1m"}
        for k, (created, o, h, low, c, v) in kw.items():
            body[k] = {"created": created, "o": o, "h": h, "l": low, "c": c, "v": v, "m": created + 1}  # type: ignore[assignment]
        return ("42" + json.dumps(["kline", body])).encode()

    dec.feed(kl(modify=(t0, 5, 5, 5, 5, 1)), 1)  # no candle yet: opens one
    dec.feed(kl(add=(t0, 5, 6, 5, 6, 2)), 1)     # the same open time again: replaces
    cur = agg.current("1m", venue=True)
    assert (int(cur["open_ts_ns"]), int(cur["close_ticks"]), int(cur["volume_lots"])) == (t0 * NS_PER_MS, 6, 2)
    # Both in one message: the final values of the current candle, then the next one.
    dec.feed(kl(add=(t0 + 60000, 7, 7, 7, 7, 1), modify=(t0, 5, 8, 4, 8, 9)), 1)
    bars = agg.bars("1m", venue=True)
    assert [(int(b["open_ts_ns"]) // NS_PER_MS, int(b["high_ticks"]), int(b["volume_lots"])) for b in bars] == [
        (t0, 8, 9)]
    assert int(agg.current("1m", venue=True)["open_ts_ns"]) == (t0 + 60000) * NS_PER_MS
    dec.feed(kl(modify=(t0, 5, 8, 4, 8, 10)), 1)  # older than the current one: stale
    assert dec.stale_candles == 1 and len(agg.bars("1m", venue=True)) == 1
    dec.feed(b'42["kline",{"symbol":"BTC-USDT","interval":"5m","add":null}]', 1)  # not kept
    dec.feed(b'42["kline",{"symbol":"ETH-USDT","interval":"1m","add":null}]', 1)
    assert dec.unknown_symbol == 2


def test_decoder_routes_control_frames_namespaces_and_acks() -> None:
    dec, book, agg, dispatch, venue = _decoder("/market")
    dec.feed(b"2", 1)
    assert venue.pings == 1 and dec.pings == 1
    # Other namespace, default namespace, control packets: all to the cold path.
    for f in (b'0{"sid":"x","pingInterval":1,"pingTimeout":1}', b'40/market,{"sid":"a"}', b'42["orderbook",{}]',
              b'42/other,["orderbook",{}]', b'42/market,["news",{"a":1}]', b"3", b"6"):
        dec.feed(f, 1)
    assert len(venue.control) == 7 and dec.events == 0
    dec.feed(_ob(1, [(100, 1)], [(101, 1)], prefix="42/market,17"), 1)  # namespace + ack id
    assert book.bids().tolist() == [(100, 1)] and dec.events == 1
    dec.feed(b'42/market,["positions",{"ts":5,"balances":[{"asset":"USDT","total":"1.5","available":"1.5"}]},"extra"]', 1)
    assert venue.balances == [([{"asset": "USDT", "total": "1.5", "available": "1.5"}], 5 * NS_PER_MS)]
    dec.feed(b'42/market,["openorders",{"symbol":"BTC-USDT","ts":7,"modify":[{"id":"O-1","state":"open",'
             b'"resd":5,"exec":0,"cost":0,"side":"buy","price":100,"seq":1,"ts":7,"flag":true,"x":null}],'
             b'"cancel":null}]', 1)
    cancel, modify, symbol, ts_ns = venue.orders[0]
    assert cancel == [] and symbol == "BTC-USDT" and ts_ns == 7 * NS_PER_MS
    assert modify == [{"id": "O-1", "state": "open", "resd": 5, "exec": 0, "cost": 0, "side": "buy", "price": 100,
                       "seq": 1, "ts": 7 * NS_PER_MS, "flag": True, "x": None}]


_VALID = [
    _ob(2, [(100, 5), (99, 1)], [(101, 2)], [(7, 100, 1, "buy"), (8, 99, 2, "sell")]),
    b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161660000,"o":1,"h":3,"l":1,"c":2,'
    b'"v":3,"m":1723161660005},"modify":{"created":1723161600000,"o":1,"h":2,"l":1,"c":2,"v":4,"m":1}}]',
    b'42["positions",{"ts":5,"balances":[{"asset":"USDT","total":"1.5","available":"1.5"}]}]',
]


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(0, 400))
def test_decoder_fuzz_bad_frames_change_nothing(frame: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    """Mutated and truncated frames: DecodeError (or the cold path) and never a partial
    change; whatever decodes cleanly is a valid frame and may apply."""
    dec, book, agg, seen, venue = _decoder()
    dec.feed(_ob(1, [(100, 5)], [(101, 2)], [(1, 100, 1, "buy")]), 1)
    dec.feed(b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":1723161600000,'
             b'"o":1,"h":2,"l":1,"c":2,"v":3,"m":1723161600005}}]', 1)
    data = bytearray(frame)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = data[: max(1, len(data) - cut % len(data))]
    before = (book.version, book.bids().tolist(), book.asks().tolist(), len(seen.trades),
              agg.current("1m", venue=True), len(agg.bars("1m", venue=True)), dec.events)
    try:
        dec.feed(bytes(data), 2)
    except DecodeError:
        after = (book.version, book.bids().tolist(), book.asks().tolist(), len(seen.trades),
                 agg.current("1m", venue=True), len(agg.bars("1m", venue=True)), dec.events)
        assert after == before and not venue.balances
        return
    assert dec.events in (before[-1], before[-1] + 1)


# --- Socket.IO framing ------------------------------------------------------------------

class _Handler:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.connected: list[str] = []
        self.events: list[Any] = []

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def on_sio_connected(self, sid: str) -> None:
        self.connected.append(sid)

    def on_sio_event(self, name: str, args: list[Any]) -> None:
        self.events.append((name, args))


def test_socketio_packets_roundtrip() -> None:
    from feeds.session import Secret
    assert encode_event("kline", {"symbol": "X"}) == '42["kline",{"symbol":"X"}]'
    assert encode_event("e", 1, namespace="/ns", ack_id=12) == '42/ns,12["e",1]'
    assert encode_packet(0) == "40" and encode_packet(0, "/ns", {"t": 1}) == '40/ns,{"t":1}'
    assert encode_event("p", {"apiKey": Secret("abcdef")}) == '42["p",{"apiKey":"abcdef"}]'
    p = decode_packet('3/ns,7[{"ok":true}]')
    assert (p.type, p.namespace, p.ack_id, p.data) == (3, "/ns", 7, [{"ok": True}])
    p = decode_packet("1")
    assert (p.type, p.namespace, p.ack_id, p.data) == (1, "/", None, None)
    for bad in ("", "x", "9", '2["a"'):
        with pytest.raises(DecodeError):
            decode_packet(bad)
    info = parse_open('0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}')
    assert (info.sid, info.ping_interval_ms, info.ping_timeout_ms, info.max_payload) == ("s", 25000, 20000, 1000000)
    for bad in ('0{"sid":"s","pingInterval":-1,"pingTimeout":1}', '0{"sid":"s","pingInterval":1,"pingTimeout":0}', '0{"pingInterval":1,"pingTimeout":1}', "0[", "0[]"):
        with pytest.raises(DecodeError):
            parse_open(bad)
    assert socketio_url("ws://h:1") == "ws://h:1/socket.io/" and socketio_url("https://h/x/") == "wss://h/x/"
    assert dict(ENGINEIO_PARAMS) == {"EIO": "4", "transport": "websocket"}
    assert is_auth_error({"message": "unauthorized"}) and is_auth_error({"message": "x", "data": {"code": 403}})
    assert is_auth_error({"message": "Invalid API key"}) and not is_auth_error({"message": "Invalid namespace"})


def test_socketio_client_state_machine() -> None:
    h = _Handler()
    sio = SocketIOClient(h, namespace="/", open_timeout_s=1.0, ack_timeout_s=1.0)
    sio.reset(0)
    sio.check_alive(900_000_000)
    with pytest.raises(FeedError, match="no open packet"):
        sio.check_alive(1_100_000_000)
    sio.on_packet('0{"sid":"s","upgrades":[],"pingInterval":300,"pingTimeout":200}', 1_000_000_000)
    assert h.sent == ["40"]
    with pytest.raises(FeedError, match="not connected"):
        sio.check_alive(2_100_000_000)
    sio.on_packet('40{"sid":"abc"}', 1_100_000_000)
    assert h.connected == ["abc"] and sio.connected
    sio.on_packet("2", 1_400_000_000)
    assert h.sent[-1] == "3" and sio.pings == 1
    sio.check_alive(1_899_000_000)
    with pytest.raises(FeedError, match="no ping"):
        sio.check_alive(1_901_000_000)
    sio.on_packet("2", 1_901_000_000)
    acks: list[Any] = []
    ack_id = sio.emit("kline", {"s": 1}, on_ack=acks.append)
    assert ack_id == 1 and h.sent[-1] == '421["kline",{"s":1}]' and sio.pending_acks == 1
    sio.on_packet('431[{"ok":true}]', 1)
    sio.on_packet('431[{"ok":true}]', 1)  # duplicate: ignored
    assert acks == [[{"ok": True}]] and sio.pending_acks == 0
    sio.emit("x", ack=True)
    import time
    later = time.time_ns() + 2_000_000_000
    sio.on_packet("2", later)
    with pytest.raises(FeedError, match="no ack"):
        sio.check_alive(later)
    sio.on_packet('42["error",{"code":1}]', 1)
    assert h.events == [("error", [{"code": 1}])]
    sio.on_packet('42/other,["error",{}]', 1)  # other namespace: ignored
    sio.on_packet("6", 1)
    with pytest.raises(FeedError) as err:
        sio.on_packet("41", 1)
    assert not err.value.terminal
    with pytest.raises(FeedError) as err:
        sio.on_packet('44{"message":"unauthorized"}', 1)
    assert err.value.terminal
    with pytest.raises(FeedError) as err:
        sio.on_packet('44{"message":"server busy"}', 1)
    assert not err.value.terminal
    with pytest.raises(FeedError):
        sio.on_packet("1", 1)
    for bad in ("", "9", "4x", '451-["a",{"_placeholder":true,"num":0}]', '40{"nosid":1}', "42[1]"):
        with pytest.raises(DecodeError):
            sio.on_packet(bad, 1)


@pytest.mark.parametrize("frame", [
    b'42["positions",{"ts":1,"balances":[{"asset":"USDT","total":"1"}],"balances":[]}]',
    b'42["openorders",{"modify":[],"cancel":null,"modify":[{"id":"O-1"}]}]',
])
def test_decoder_repeated_list_field_is_a_duplicate_field(frame: bytes) -> None:
    """A list field given twice is refused as a duplicate field (every decoder's rule),
    not misreported as JSON syntax."""
    dec, book, agg, seen, venue = _decoder()
    with pytest.raises(DecodeError, match="duplicate field") as err:
        dec.feed(frame, 1)
    # At the repeated key (offsets count from the event array, after the "42" prefix).
    assert err.value.offset == frame.rindex(b'"balances"' if b"positions" in frame else b'"modify"') + 1 - 2
    assert not venue.balances and not venue.orders and dec.events == 0


def test_decoder_refuses_a_frame_fed_from_its_own_trade_callback() -> None:
    """A trade callback feeding the decoder (which would grow the scratch its trades are
    read from) is refused with RuntimeError, counted as a callback error; every trade of
    the frame being applied is still delivered, in order."""
    from feeds._hotpath import Dispatch, FeedCounters
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    book = eng.add_instrument(inst)
    counters = FeedCounters()
    dec = StreamDecoder(_Venue(), Dispatch(eng, "t", counters), Trade)
    dec.add_symbol(StreamSymbol(inst, book))
    big = _ob(2, [(99, 1)], [(101, 1)], [(1000, 100, 1, "buy")])[:-2] + b',"pad":"' + b"x" * 200000 + b'"}]'
    order: list[str] = []
    errors: list[BaseException] = []

    def on_trade(trade: Trade) -> None:
        order.append(trade.trade_id)
        if len(order) == 1:
            try:
                dec.feed(big, 1)
            except RuntimeError as exc:
                errors.append(exc)
                raise

    eng.on_trade(on_trade)
    dec.feed(_ob(1, [(99, 1)], [(101, 1)], [(1, 100, 1, "buy"), (2, 100, 1, "buy"), (3, 100, 1, "buy")]), 1)
    assert order == ["1", "2", "3"] and book.last_update_id == 1
    assert len(errors) == 1 and "from a callback" in str(errors[0]) and counters.callback_errors == 1
    assert dec.duplicate_trades == 0
    dec.feed(big, 1)   # usable again afterwards
    assert order[-1] == "1000" and book.last_update_id == 2


def test_decoder_kline_callbacks_run_after_both_candles_applied() -> None:
    """A message's two candles are applied before any aggregator callback runs: a
    divergence found by the first (the previous candle became final) is delivered once
    the second is in place too."""
    dec, book, agg, seen, venue = _decoder()
    t0 = 1723161600000
    agg.add_trade(5, 1, (t0 - 1000) * NS_PER_MS, 1)        # the first local bar is partial
    agg.add_trade(5, 1, (t0 + 1000) * NS_PER_MS, 1)        # local 1m bar [t0, t0+60s): o=h=l=c=5 v=1
    agg.add_trade(5, 1, (t0 + 130000) * NS_PER_MS, 1)      # closes it locally
    dec.feed(b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":%d,"o":9,"h":9,"l":9,"c":9,"v":9}}]'
             % t0, 1)
    current_at_callback: list[int] = []
    agg.on_divergence = lambda name, local, venue_bar: current_at_callback.append(
        int(agg.current("1m", venue=True)["close_ticks"]))
    # add t0+60s (makes the t0 candle final: it differs from the local bar), then modify it.
    dec.feed(b'42["kline",{"symbol":"BTC-USDT","interval":"1m","add":{"created":%d,"o":1,"h":1,"l":1,"c":1,"v":1},'
             b'"modify":{"created":%d,"o":1,"h":2,"l":1,"c":2,"v":2}}]' % (t0 + 60000, t0 + 60000), 1)
    assert current_at_callback == [2] and dec.stale_candles == 0


def test_trades_reach_the_bars_without_trade_objects_when_nobody_listens() -> None:
    """With no trade callback, a trade goes to the kline aggregator by its C entry: no
    Trade object is built; with one, each new trade is built once."""
    from feeds._hotpath import Dispatch, FeedCounters
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=("1m",))
    book = eng.add_instrument(inst)
    built: list[Trade] = []

    def trade_type(*args: Any) -> Trade:
        built.append(Trade(*args))
        return built[-1]

    dec = StreamDecoder(_Venue(), Dispatch(eng, "t", FeedCounters()), trade_type)
    dec.add_symbol(StreamSymbol(inst, book))
    dec.feed(_ob(1, [(99, 1)], [(101, 1)], [(1, 100, 1, "buy"), (2, 100, 2, "sell")]), 1)
    agg = eng.aggregators["BTC-USDT"]
    assert agg.trades_applied == 2 and built == []
    seen: list[Trade] = []
    eng.on_trade(seen.append)
    dec.feed(_ob(2, [(99, 1)], [(101, 1)], [(2, 100, 2, "sell"), (3, 101, 1, "buy")]), 1)
    assert agg.trades_applied == 3 and built == seen and [t.trade_id for t in seen] == ["3"]


def test_compact_numbers_of_19_digits_go_to_the_generic_reader() -> None:
    """The compact reader takes 1-18 digits and stops before a 19th (it used to add the
    19th digit first: signed overflow, undefined in C); the generic reader then reads
    an in-range value exactly and refuses one past int64."""
    dec, book, agg, seen, venue = _decoder()
    dec.feed(b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],"trades":['
             b'{"id":1000000000000000000,"ticks":9223372036854775807,"lots":1,"side":"buy","ts":1}]}]', 1)
    assert [(t.trade_id, t.price_ticks) for t in seen.trades] == [("1000000000000000000", 2**63 - 1)]
    with pytest.raises(DecodeError, match="int64|overflow|range"):
        dec.feed(b'42["orderbook",{"symbol":"BTC-USDT","bids":[],"asks":[],"trades":['
                 b'{"id":1000000000000000001,"ticks":9999999999999999999,"lots":1,"side":"buy","ts":1}]}]', 1)
    assert len(seen.trades) == 1
