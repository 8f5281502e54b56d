"""Cadenza end to end over loopback against feeds.sim.cadenza, under asyncio and uvloop.

The simulator's market moves only when a test calls ``sim.advance(n)``, so every test
knows exactly what was published; after each scenario the engine's books, trades and
account must equal the simulator's state, and no task or socket may be left behind.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

import pytest
import uvloop

from engine import Engine, Instrument
from engine.account import OrderStatus
from engine.engine import Trade
from engine.errors import DecodeError
from feeds.cadenza import CadenzaVenue, is_terminal_close
from feeds.cadenza_decode import KIND_BOOK, KIND_TRADE, CadenzaDecoder, Channel
from feeds.session import Feed, FeedStatus
from feeds.sim.cadenza import CadenzaSim
from loopback import close_code_scenario, oversize_frame_reconnects, step as step_sim, assert_no_tasks_left

TOKEN = "sim-token-7f3a9c"
FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=3, connect_timeout_s=3.0)


class Harness:
    """A simulator, an engine connected to it, and everything the callbacks saw."""

    def __init__(self, sim: CadenzaSim, eng: Engine, feed: Feed) -> None:
        self.sim = sim
        self.eng = eng
        self.feed = feed
        self.trades: list[Trade] = []
        self.statuses: list[Any] = []
        eng.on_trade(self.trades.append)
        eng.on_status(self.statuses.append)

    @property
    def venue(self) -> CadenzaVenue:
        v = self.feed.venue
        assert isinstance(v, CadenzaVenue)
        return v

    async def caught_up(self, timeout: float = 5.0) -> None:
        """Wait until every channel applied up to the simulator's last offset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            done = self.feed.status is FeedStatus.SUBSCRIBED and all(
                ch.offset == self.sim.channels[ch.name].offset for ch in self.venue.channels)
            if done:
                return
            if loop.time() > deadline:
                offs = {ch.name: (ch.offset, self.sim.channels[ch.name].offset) for ch in self.venue.channels}
                raise AssertionError(f"not caught up: {self.feed.status} {offs}")
            await asyncio.sleep(0.005)

    async def status(self, status: FeedStatus, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.feed.status is not status:
            if loop.time() > deadline:
                raise AssertionError(f"status {self.feed.status} ({self.feed.status_reason}), wanted {status}")
            await asyncio.sleep(0.005)

    def assert_books(self) -> None:
        for sym in self.sim.market.instruments:
            bids, asks = self.sim.market.book(sym)
            book = self.eng.book(sym)
            assert [tuple(x) for x in book.bids().tolist()] == bids, sym
            assert [tuple(x) for x in book.asks().tolist()] == asks, sym
            assert book.last_update_id == self.sim.book_seq[sym] or self.sim._skip[sym] == 0

    def assert_trades(self) -> None:
        got = [(t.symbol, t.trade_id, t.price_ticks, t.qty_lots, t.side, t.ts_ns) for t in self.trades]
        want = [(t.symbol, f"T-{t.trade_id}", t.price_ticks, t.qty_lots, 1 if t.side == "buy" else -1, t.ts_ns)
                for t in self.sim.market.trades]
        # Order is per channel: recovery replays each channel's backlog in turn.
        for sym in self.sim.market.instruments:
            assert [g for g in got if g[0] == sym] == [w for w in want if w[0] == sym], sym
        assert len(got) == len(want)

    def assert_account(self, orders: str = "all") -> None:
        acct = self.eng.account("A-1")
        market = self.sim.market
        for o in market.orders.values():
            if orders == "open" and not o.open:
                continue
            mine = acct.order(f"O-{o.order_id}")
            assert OrderStatus(mine.status).name == {
                "New": "NEW", "PartiallyFilled": "PARTIALLY_FILLED", "Filled": "FILLED",
                "Canceled": "CANCELED"}[o.status], o
            assert (mine.qty_lots, mine.filled_lots, mine.price_ticks) == (o.qty_lots, o.filled_lots, o.price_ticks)
        for sym, pos in market.positions.items():
            mine = acct.position(sym)
            assert mine.qty_lots == pos.qty_lots, sym
            if pos.qty_lots:
                assert mine.avg_entry_price == pos.avg_entry_ticks
        for asset, bal in market.balances.items():
            b = acct.balance(asset)
            assert (b.total, b.available, b.reserved) == (bal.total_units, bal.available_units, bal.reserved_units)

    def assert_same_state(self) -> None:
        self.assert_books()
        self.assert_trades()
        self.assert_account()


class open_harness:
    """``async with open_harness(...) as h``: sim + engine, closed cleanly on exit."""

    def __init__(self, token: str = TOKEN, sim_kw: dict[str, Any] | None = None, **connect_kw: Any) -> None:
        self.token = token
        self.sim_kw = dict(seed=11, token=TOKEN, interval_s=None, snapshot_every=0)
        self.sim_kw.update(sim_kw or {})
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Harness:
        self.sim = CadenzaSim(**self.sim_kw)
        await self.sim.start()
        eng = Engine(bar_intervals=("1s",))
        for inst in self.sim.market.instruments.values():
            eng.add_instrument(inst)
        feed = eng.connect("cadenza", url=self.sim.url, token=self.token, account_id="A-1", **self.connect_kw)
        self.h = Harness(self.sim, eng, feed)
        await eng.start()
        return self.h

    async def __aexit__(self, *exc: Any) -> None:
        await self.h.eng.close()
        await self.sim.stop()
        assert all(c.closed for c in self.sim.clients) or not self.sim.clients
        assert_no_tasks_left()


async def step(h: Harness, n: int, chunk: int = 10) -> None:
    await step_sim(h.sim, n, chunk)


def test_end_to_end_state_matches(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 300)
            await h.caught_up()
            h.assert_same_state()
            c = h.feed.counters
            assert c.frames > 0 and c.decode_errors == 0 and c.gaps == 0 and c.reconnects == 0
            assert c.latency.count > 0 and h.eng.callback_errors == 0
            assert len(h.trades) > 20 and h.sim.market.orders  # the scenario exercised trades and orders
            assert {e.status for e in h.statuses} >= {FeedStatus.CONNECTING, FeedStatus.CONNECTED,
                                                       FeedStatus.SUBSCRIBED}
    run(main())


def test_drop_reconnects_and_recovers_everything(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 100)
            await h.caught_up()
            for _ in range(2):
                h.sim.drop()
                await step(h, 60)  # published while the client is away: recovered later
                await h.caught_up()
            h.assert_same_state()
            c = h.feed.counters
            assert c.reconnects == 2 and c.gaps == 0 and c.decode_errors == 0
            assert all(ch.synced for ch in h.venue.channels if ch.kind == KIND_BOOK)
    run(main())


@pytest.mark.parametrize("code,terminal", [(3500, True), (4501, True), (1011, False), (4000, False)])
def test_close_codes(run: Any, code: int, terminal: bool) -> None:
    assert is_terminal_close(code) is terminal

    async def main() -> None:
        async with open_harness() as h:
            await close_code_scenario(h, step, code, terminal, 30)
    run(main())


def test_malformed_frame_is_counted_and_skipped(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 30)
            await h.caught_up()
            h.sim.send_malformed()
            h.sim.send_malformed(b'{"push":{"channel":"market:orderBook:BTC-USDT","pub":{"data":'
                                 b'{"type":"delta","seq":1,"ts":1,"bids":[["1.001","1"]],"asks":[]},"offset":1}}}')
            await step(h, 30)
            await h.caught_up()
            h.assert_same_state()
            assert h.feed.counters.decode_errors == 2 and h.feed.counters.reconnects == 0
    run(main())


def test_skipped_sequence_resyncs_book(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 30)
            await h.caught_up()
            h.sim.skip_sequence("BTC-USDT")
            await step(h, 40)
            await h.caught_up()
            await step(h, 10)
            await h.caught_up()
            h.assert_same_state()
            c = h.feed.counters
            assert c.gaps >= 1 and c.resyncs >= 1 and c.reconnects >= 1
    run(main())


def test_stall_detected_by_missing_ping(run: Any) -> None:
    async def main() -> None:
        # pong=False: the simulator does not close us for a missing pong, so only the
        # client's own no-ping detection can notice the silence.
        async with open_harness(sim_kw=dict(ping_s=1, pong=False), ping_slack_s=0.3) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 20)
            await h.caught_up()
            h.sim.stall(2.5)
            await step(h, 20)
            await h.status(FeedStatus.RECONNECTING, timeout=4)
            assert "no ping" in h.feed.status_reason
            assert any(e.status is FeedStatus.STALE and "no ping" in e.reason for e in h.statuses)
            await step(h, 20)
            await h.caught_up(timeout=6)
            h.assert_same_state()
    run(main())


def test_oversize_frame_reconnects(run: Any) -> None:
    async def main() -> None:
        async with open_harness(max_message_size=256 * 1024) as h:
            await oversize_frame_reconnects(h, step, 20, 300 * 1024)
    run(main())


def test_auth_rejected_is_terminal_and_secret_free(run: Any, caplog: Any) -> None:
    async def main() -> None:
        async with open_harness(token="wrong-token-SHOULD-NOT-LEAK") as h:
            await h.status(FeedStatus.FAILED)
            await asyncio.sleep(0.1)
            assert h.feed.counters.reconnects == 0
            assert "101" in h.feed.status_reason or "3500" in h.feed.status_reason
            for e in h.statuses:
                assert "SHOULD-NOT-LEAK" not in e.reason
            assert "SHOULD-NOT-LEAK" not in repr(h.feed) + repr(h.venue.token)
    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "SHOULD-NOT-LEAK" not in caplog.text


def test_unrecoverable_history_resyncs_from_fresh_state(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 50)
            await h.caught_up()
            h.sim.drop()
            h.sim.reset_history()
            await step(h, 30)
            await h.caught_up()
            h.assert_books()
            h.assert_account(orders="open")
            c = h.feed.counters
            assert c.resyncs >= 1 and c.reconnects == 1
    run(main())


def test_subscribe_errors(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            h.sim.fail_next("subscribe", 100, "internal", temporary=True)
            await h.feed.wait_subscribed(5)
            assert h.feed.counters.reconnects == 1
        async with open_harness() as h:
            h.sim.fail_next("subscribe", 103)
            await h.status(FeedStatus.FAILED)
            assert "103" in h.feed.status_reason
    run(main())


def test_ping_is_answered(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(ping_s=1, pong_timeout_s=0.3)) as h:
            await h.feed.wait_subscribed(5)
            await asyncio.sleep(2.3)  # two pings; a missing pong would close with 3012
            assert h.feed.counters.reconnects == 0 and h.venue.decoder is not None
            assert h.venue.decoder.pings >= 2
    run(main())


# --- decoder unit tests: bad input changes nothing ------------------------------------

class _Venue:
    def __init__(self) -> None:
        self.gaps: list[str] = []

    def on_gap(self, ch: Any, reason: str, book: bool) -> None:
        self.gaps.append(reason)

    def on_resynced(self, ch: Any) -> None:
        pass

    def on_ping(self) -> None:
        pass

    def begin_list(self) -> None:
        self.list_open = True

    def end_list(self, applied: bool, recv_ns: int) -> None:
        self.list_open = False
        self.lists = getattr(self, "lists", []) + [applied]


class _Seen:
    def __init__(self, eng: Engine) -> None:
        self.books = 0
        self.trades: list[Trade] = []
        eng.on_book(self.on_book)
        eng.on_trade(self.trades.append)

    def on_book(self, book: Any) -> None:
        self.books += 1


def _decoder() -> tuple[CadenzaDecoder, Any, _Seen, _Venue]:
    from feeds._hotpath import Dispatch, FeedCounters
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    book = eng.add_instrument(inst)
    venue, dispatch = _Venue(), _Seen(eng)
    dec = CadenzaDecoder(venue, Dispatch(eng, "t", FeedCounters()), Trade, {"BTC-USDT": inst})
    for name, kind in (("market:orderBook:BTC-USDT", KIND_BOOK), ("market:trade:BTC-USDT", KIND_TRADE)):
        ch = dec.add_channel(Channel(name, kind, inst, book if kind == KIND_BOOK else None))
        ch.live = True
    return dec, book, dispatch, venue


def _push(channel: str, data: str, offset: int) -> bytes:
    return f'{{"push":{{"channel":"{channel}","pub":{{"data":{data},"offset":{offset}}}}}}}'.encode()


def test_decoder_applies_batched_frames_and_rejects_bad_ones_whole() -> None:
    dec, book, dispatch, venue = _decoder()
    snap = '{"type":"snapshot","seq":1,"ts":5,"bids":[["100.00","1.00000"]],"asks":[["100.02","0.50000"]]}'
    delta = '{"ts":6,"bids":[["100.01","0.00100"]],"asks":[["100.02","0"]],"type":"delta","seq":2}'
    trade = '{"id":"T-1","price":"100.01","qty":"0.00100","side":"sell","ts":7}'
    frame = b"\n".join([_push("market:orderBook:BTC-USDT", snap, 1), _push("market:orderBook:BTC-USDT", delta, 2),
                        _push("market:trade:BTC-USDT", trade, 1), b"{}"])
    dec.feed(memoryview(frame), 123)
    assert book.bids().tolist() == [(10001, 100), (10000, 100000)] and book.asks().tolist() == []
    assert book.last_update_id == 2 and dispatch.books == 2 and dec.pings == 1
    assert dispatch.trades == [Trade(book.instrument, "T-1", 10001, 100, -1, 7, 123)]
    version = book.version
    bad = [
        '{"type":"delta","seq":3,"ts":8,"bids":[["100.001","1"]],"asks":[]}',
        '{"type":"delta","seq":3,"ts":8,"bids":[["100.00","1"],["99.00"]],"asks":[]}',
        '{"type":"delta","seq":3,"ts":8,"bids":[["100.00","-1"]],"asks":[]}',
        '{"type":"weird","seq":3,"ts":8,"bids":[],"asks":[]}',
        '{"type":"delta","ts":8,"bids":[],"asks":[]}',
    ]
    for data in bad:
        # Each on a decoder in the same state: a refused publication at the next offset
        # changes no book, but consumes its offset and asks for a fresh snapshot.
        d2, book2, seen2, venue2 = _decoder()
        d2.feed(memoryview(frame), 123)
        version2 = book2.version
        with pytest.raises(DecodeError):
            d2.feed(_push("market:orderBook:BTC-USDT", data, 3), 1)
        ch2 = d2.channel_list[0]
        assert book2.version == version2 and book2.last_update_id == 2 and seen2.books == 2
        assert ch2.offset == 3 and ch2.need_fresh and not ch2.synced and len(venue2.gaps) == 1
        assert d2.rejected_publications == 1
    with pytest.raises(DecodeError) as err:
        dec.feed(b'{"push":{"channel":"market:orderBook:BTC-USDT","pub":{"data":{"type":"delta","seq":', 1)
    assert err.value.offset > 0
    # A seq jump is a gap: not applied, reported once, book waits for a snapshot.
    dec.feed(_push("market:orderBook:BTC-USDT", '{"type":"delta","seq":9,"ts":9,"bids":[],"asks":[]}', 3), 1)
    assert venue.gaps and book.version == version
    dec.feed(_push("market:orderBook:BTC-USDT", '{"type":"delta","seq":10,"ts":9,"bids":[],"asks":[]}', 4), 1)
    assert dec.dropped_unsynced == 1 and book.version == version
    # An offset jump is a gap too; an old offset is ignored.
    dec.feed(_push("market:trade:BTC-USDT", trade, 1), 1)
    assert dec.stale_publications == 1 and len(dispatch.trades) == 1
    dec.feed(_push("market:trade:BTC-USDT", trade, 5), 1)
    assert len(venue.gaps) == 2 and len(dispatch.trades) == 1


def test_decoder_account_messages() -> None:
    from feeds._hotpath import Dispatch, FeedCounters
    from feeds.cadenza_decode import KIND_ACCOUNT
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    eng.add_instrument(inst)

    class Venue(_Venue):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[Any, ...]] = []

        def on_order(self, *args: Any) -> None:
            self.calls.append(("order", *args))

        def on_fill(self, *args: Any) -> None:
            self.calls.append(("fill", *args))

        def on_position(self, *args: Any) -> None:
            self.calls.append(("position", *args))

        def on_balance(self, *args: Any) -> None:
            self.calls.append(("balance", *args))

    venue = Venue()
    dec = CadenzaDecoder(venue, Dispatch(eng, "t", FeedCounters()), Trade, {"BTC-USDT": inst})
    ch = dec.add_channel(Channel("tradingAccount:A-1", KIND_ACCOUNT))
    ch.live = True
    order = ('{"type":"order","order":{"id":"O-17","clientId":"c-17","instrumentId":"BTC-USDT","side":"buy",'
             '"orderType":"Limit","status":"New","price":"61830.00","stopPrice":null,"qty":"0.10000",'
             '"filledQty":"0.00000","cost":"0.00","createdTs":5,"updatedTs":6,"seq":55}}')
    dec.feed(_push("tradingAccount:A-1", order, 1), 9)
    assert venue.calls[-1] == ("order", "O-17", "c-17", inst, "buy", "Limit", "New", 6183000, 0, 10000, 0,
                               "0.00", 5, 6, 55, 9)
    fill = ('{"type":"fill","fill":{"orderId":"O-17","tradeId":"F-1","instrumentId":"BTC-USDT","side":"buy",'
            '"price":"61830.00","qty":"0.05000","fee":"0.0309","feeAsset":"USDT","ts":7,"seq":56}}')
    dec.feed(_push("tradingAccount:A-1", fill, 2), 9)
    assert venue.calls[-1] == ("fill", "O-17", "F-1", inst, "buy", 6183000, 5000, "0.0309", "USDT", 7, 56, 9)
    port = '{"type":"portfolio","positions":[{"instrumentId":"BTC-USDT","qty":"-0.05000","avgEntryPrice":"61830.00","realizedPnl":"0.00","seq":57}]}'
    dec.feed(_push("tradingAccount:A-1", port, 3), 9)
    assert venue.calls[-1] == ("position", inst, -5000, {"avgEntryPrice": "61830.00", "realizedPnl": "0.00"}, 57, 9)
    bal = '{"type":"balances","balances":[{"asset":"USDT","total":"1.5","available":"1","reserved":"0.5"}],"seq":58}'
    dec.feed(_push("tradingAccount:A-1", bal, 4), 9)
    assert venue.calls[-1] == ("balance", {"asset": "USDT", "total": "1.5", "available": "1", "reserved": "0.5"}, 58, 9)
    n = len(venue.calls)
    bad = [
        order.replace('"qty":"0.10000"', '"qty":"0.100001"'),                 # not a whole lot
        order.replace('"side":"buy",', '"side":"buy","side":"sell",'),         # duplicate field
        order.replace('"status":"New",', ''),                                  # missing field
        port.replace('"qty":"-0.05000"', '"qty":5'),                           # wrong type
    ]
    for offset, data in enumerate(bad, 5):
        with pytest.raises(DecodeError):
            dec.feed(_push("tradingAccount:A-1", data, offset), 9)
        # A refused publication at the next offset is consumed (recovery must not
        # replay it forever) and counted; the venue saw nothing of it.
        assert ch.offset == offset and ch.publications == 4
    assert len(venue.calls) == n and dec.rejected_publications == len(bad)
    dec.feed(_push("tradingAccount:A-1", bad[0], 3), 9)   # an old offset: skipped, account data unread
    assert ch.offset == 8 and dec.rejected_publications == len(bad) and dec.stale_publications == 1
    dec.feed(_push("tradingAccount:A-1", fill, 9), 9)   # the channel goes on
    assert venue.calls[-1][0] == "fill" and ch.offset == 9


def test_refused_new_order_adds_nothing() -> None:
    """A new order whose update the state machine refuses (Filled with quantity left)
    leaves the account exactly as it was: no phantom NEW order, no callback; counted."""
    from engine.account import OrderStatus
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    eng.add_instrument(inst)
    seen: list[Any] = []
    eng.on_order(seen.append)
    feed = eng.connect("cadenza", url="ws://127.0.0.1:1/x", token="t", account_id="A-1")
    venue = feed.venue
    assert isinstance(venue, CadenzaVenue)
    acct = eng.account("A-1")

    def order(oid: str, status: str, qty: int, filled: int, seq: int) -> None:
        venue.on_order(oid, "c-" + oid, inst, "buy", "Limit", status, 6183000, 0, qty, filled, None,
                       5, 6 + seq, seq, 9)

    with pytest.raises(DecodeError, match="O-1"):
        order("O-1", "Filled", 10000, 4000, 1)
    assert acct.order_count == 0 and len(acct.orders()) == 0 and not seen
    assert venue.account_errors == 1 and acct.error_count == 0
    with pytest.raises(DecodeError, match="O-1"):
        order("O-1", "Bogus", 10000, 0, 1)                      # unknown status: nothing either
    assert acct.order_count == 0 and venue.account_errors == 2
    # The same id, now valid, is a new order like any other.
    order("O-1", "PartiallyFilled", 10000, 4000, 2)
    o = acct.order("O-1")
    assert (OrderStatus(o.status), o.filled_lots, o.client_id) == (OrderStatus.PARTIALLY_FILLED, 4000, "c-O-1")
    assert acct.order_count == 1 and len(seen) == 1
    # A refused update of a known order: refused by the account (feed mode), counted, unchanged.
    order("O-1", "Filled", 10000, 5000, 3)
    assert acct.order("O-1").filled_lots == 4000 and acct.error_count == 1
    assert venue.account_errors == 3 and feed.counters.decode_errors == 1 and len(seen) == 1
    order("O-1", "Filled", 10000, 10000, 4)
    assert OrderStatus(acct.order("O-1").status) is OrderStatus.FILLED and acct.order_count == 1
    order("O-1", "Filled", 10000, 10000, 4)                     # a repeat changes nothing, calls nobody
    assert len(seen) == 2 and seen[-1].filled_lots == 10000
    assert not hasattr(venue, "_known_orders")  # the account is the one record of known orders


# --- refused publications, message and frame boundaries --------------------------------

class _SubVenue(_Venue):
    def __init__(self) -> None:
        super().__init__()
        self.subscribed: list[tuple[str, bool]] = []

    def on_subscribed(self, ch: Any, recovered: bool, lost: bool) -> None:
        self.subscribed.append((ch.name, recovered))


def _trade_decoder(counters: Any = None) -> tuple[CadenzaDecoder, Any, _Seen, _SubVenue]:
    from feeds._hotpath import Dispatch, FeedCounters
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    eng.add_instrument(inst)
    venue, seen = _SubVenue(), _Seen(eng)
    dec = CadenzaDecoder(venue, Dispatch(eng, "t", counters or FeedCounters()), Trade, {"BTC-USDT": inst})
    ch = dec.add_channel(Channel("market:trade:BTC-USDT", KIND_TRADE, inst))
    dec.pending[1] = ch
    dec.feed(b'{"id":1,"subscribe":{"offset":0,"epoch":"e1"}}', 1)
    assert ch.live and ch.offset == 0
    return dec, ch, seen, venue


def _trade(offset: int, qty: str = "0.00100", price: str = "100.01") -> str:
    return (f'{{"data":{{"id":"T-{offset}","price":"{price}","qty":"{qty}","side":"buy","ts":7}},'
            f'"offset":{offset}}}')


def _trade_push(offset: int, qty: str = "0.00100", price: str = "100.01") -> bytes:
    return f'{{"push":{{"channel":"market:trade:BTC-USDT","pub":{_trade(offset, qty, price)}}}}}'.encode()


def test_refused_publication_consumes_its_offset_and_recovery_goes_on() -> None:
    """A publication whose offset is next but whose payload is refused consumes its
    offset: the next one is no gap. A refused publication replayed in a subscribe reply
    does not abort the reply: the rest applies, the channel is live, on_subscribed runs."""
    dec, ch, seen, venue = _trade_decoder()
    with pytest.raises(DecodeError, match="qty must be positive"):
        dec.feed(_trade_push(1, qty="0"), 1)
    assert ch.offset == 1 and dec.rejected_publications == 1 and seen.trades == []
    dec.feed(_trade_push(2), 1)
    assert ch.offset == 2 and venue.gaps == [] and [t.trade_id for t in seen.trades] == ["T-2"]
    # Reconnect and recover 3 (refused) and 4 (fine).
    ch.live = False
    dec.pending[2] = ch
    reply = ('{"id":2,"subscribe":{"recovered":true,"offset":4,"epoch":"e1","publications":['
             + _trade(3, qty="0") + "," + _trade(4) + "]}}")
    with pytest.raises(DecodeError, match="publication 3"):
        dec.feed(reply.encode(), 1)
    assert ch.live and ch.epoch == "e1" and ch.offset == 4 and venue.gaps == []
    assert venue.subscribed == [("market:trade:BTC-USDT", False), ("market:trade:BTC-USDT", True)]
    assert [t.trade_id for t in seen.trades] == ["T-2", "T-4"] and dec.rejected_messages == 2
    dec.feed(_trade_push(5), 1)
    assert ch.offset == 5 and [t.trade_id for t in seen.trades][-1] == "T-5"


def test_refused_book_snapshot_resubscribes_fresh_instead_of_replaying() -> None:
    dec, book, seen, venue = _decoder()
    ch = dec.channel_list[0]
    crossed = '{"type":"snapshot","seq":1,"ts":5,"bids":[["100.03","1"]],"asks":[["100.02","1"]]}'
    with pytest.raises(DecodeError, match="snapshot seq 1 rejected"):
        dec.feed(_push("market:orderBook:BTC-USDT", crossed, 1), 1)
    assert ch.offset == 1 and ch.need_fresh and not ch.synced and len(venue.gaps) == 1
    assert seen.books == 0 and book.bids().tolist() == []


def test_push_is_applied_only_after_its_whole_message_validates() -> None:
    dec, ch, seen, venue = _trade_decoder()
    for bad in (_trade_push(1)[:-1] + b',"x":}', _trade_push(1)[:-1] + b',"push":{}}',
                _trade_push(1) + b"garbage"):
        with pytest.raises(DecodeError):
            dec.feed(bad, 1)
        assert ch.offset == 0 and ch.publications == 0 and seen.trades == []
    # Field order does not matter: pub before channel, offset before data.
    dec.feed(b'{"push":{"pub":{"offset":1,"data":{"id":"T-1","price":"100.01","qty":"0.00100",'
             b'"side":"sell","ts":7}},"channel":"market:trade:BTC-USDT"}}', 1)
    assert ch.offset == 1 and [t.side for t in seen.trades] == [-1]


def test_bad_message_in_a_frame_does_not_drop_the_later_ones() -> None:
    from feeds._hotpath import FeedCounters
    counters = FeedCounters()
    dec, ch, seen, venue = _trade_decoder(counters)
    frame = b"\n".join([_trade_push(1), b'{"push":', _trade_push(2), b'{"id":}', _trade_push(3)])
    with pytest.raises(DecodeError, match="cadenza push: truncated") as err:   # the first refusal
        dec.feed(frame, 1)
    assert err.value.offset == 8
    assert [t.trade_id for t in seen.trades] == ["T-1", "T-2", "T-3"] and ch.offset == 3
    # Two messages refused: the raised one is counted by the caller (the listener), the
    # other one here.
    assert dec.rejected_messages == 2 and counters.decode_errors == 1


def test_negative_or_zero_trade_price_is_refused() -> None:
    dec, ch, seen, venue = _trade_decoder()
    for offset, price in ((1, "-5.00"), (2, "0.00")):
        with pytest.raises(DecodeError, match="price must be positive"):
            dec.feed(_trade_push(offset, price=price), 1)
        assert ch.offset == offset and seen.trades == []
    dec.feed(_trade_push(3), 1)
    assert [t.price_ticks for t in seen.trades] == [10001]


def test_balance_and_portfolio_lists_apply_whole_or_not_at_all() -> None:
    """A balances (or portfolio) publication is one Account batch: an item the Account
    refuses leaves every other item of the list unapplied too."""
    from engine.account import Account
    from feeds._hotpath import Dispatch, FeedCounters
    from feeds.cadenza_decode import KIND_ACCOUNT
    inst = Instrument("BTC-USDT", "0.01", "0.00001")
    eng = Engine(bar_intervals=())
    acct = Account("A-1", [inst], feed_mode=True)
    notified: list[str] = []
    acct.set_callbacks(on_balance=lambda asset, b: notified.append(asset))

    class Venue(_Venue):
        account = acct

        def on_balance(self, fields: dict[str, str], seq: int, recv_ns: int) -> None:
            # What CadenzaVenue.on_balance does to the account.
            acct.on_balances([fields])
            notified.append("venue:" + fields["asset"])

    venue = Venue()
    dec = CadenzaDecoder(venue, Dispatch(eng, "t", FeedCounters()), Trade, {"BTC-USDT": inst})
    ch = dec.add_channel(Channel("tradingAccount:A-1", KIND_ACCOUNT))
    ch.live = True
    bal = ('{"type":"balances","seq":1,"balances":[{"asset":"USDT","total":"10","available":"10","reserved":"0"},'
           '{"asset":"BTC","total":"%s","available":"1","reserved":"0"}]}')
    dec.feed(_push("tradingAccount:A-1", bal % "1", 1), 1)
    assert acct.balance("USDT").total == 10 * 10**8 and acct.balance("BTC").total == 10**8
    # Every venue call ran before any Account notification (those come at the commit).
    assert notified == ["venue:USDT", "venue:BTC", "USDT", "BTC"]
    assert venue.lists == [True]  # the venue's held callbacks run after the commit
    notified.clear()
    too_big = "9" * 30
    dec.feed(_push("tradingAccount:A-1", bal.replace('"10"', '"20"') % too_big, 2), 1)
    assert acct.balance("USDT").total == 10 * 10**8 and acct.balance("BTC").total == 10**8
    assert acct.error_count == 1 and dec.rejected_publications == 1 and ch.offset == 2
    assert "USDT" not in notified and "BTC" not in notified
    assert venue.lists == [True, False]  # rolled back: the venue notifies nobody
