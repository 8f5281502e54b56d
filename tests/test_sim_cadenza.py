"""Cadenza simulator (feeds.sim.cadenza): Centrifugo JSON v2 over loopback sockets.

Raw-protocol tests use a small picows client; the REAL PEER test drives the official
``centrifuge-python`` client against the simulator. Every test runs under asyncio and
uvloop and checks that no task or socket outlives it (``run_case``).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from picows import WSMsgType, WSTransport, ws_connect

from engine._core.instrument import Instrument
from feeds.sim.cadenza import ACCOUNT_PREFIX, BOOK_PREFIX, TRADE_PREFIX, CadenzaSim
from feeds.sim.market import (
    QUOTE_DECIMALS, BookDelta, BookState, Fill, Order, RecordedBinance, RecordedMarket,
    SyntheticMarket,
)
from test_sim_server import LOOPS, Collector, run_case, sim_process

ROOT = Path(__file__).resolve().parents[1]
BOOK = BOOK_PREFIX + "BTC-USDT"
BOOK_ETH = BOOK_PREFIX + "ETH-USDT"
TRADES = TRADE_PREFIX + "BTC-USDT"
ACCOUNT = ACCOUNT_PREFIX + "A-1"
_AMOUNT = Instrument("AMOUNT", "0." + "0" * (QUOTE_DECIMALS - 1) + "1", "1")


class Raw:
    """A bare Centrifugo JSON client over picows: commands by id, pushes by channel."""

    def __init__(self) -> None:
        self.c: Collector
        self.t: WSTransport
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        self.pings = 0
        self.frames_seen = 0
        self.next_id = 1

    @classmethod
    async def open(cls, url: str) -> Raw:
        self = cls()
        self.t, listener = await ws_connect(Collector, url)
        assert isinstance(listener, Collector)
        self.c = listener
        return self

    def _drain(self) -> None:
        for frame in self.c.frames[self.frames_seen:]:
            for line in frame.split(b"\n"):
                msg = json.loads(line)
                if "id" in msg:
                    self.replies[msg["id"]] = msg
                elif "push" in msg:
                    self.pushes.append(msg["push"])
                elif msg == {}:
                    self.pings += 1
        self.frames_seen = len(self.c.frames)

    def send(self, *commands: dict[str, Any]) -> list[int]:
        ids = []
        lines = []
        for cmd in commands:
            if cmd:
                cmd = {"id": self.next_id, **cmd}
                ids.append(self.next_id)
                self.next_id += 1
            lines.append(json.dumps(cmd))
        self.t.send(WSMsgType.TEXT, "\n".join(lines).encode())
        return ids

    async def call(self, method: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        (cid,) = self.send({method: body})
        return await self.reply(cid, timeout)

    async def reply(self, cid: int, timeout: float = 5.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                self._drain()
                if cid in self.replies:
                    return self.replies.pop(cid)
                self.c.event.clear()
                await self.c.event.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def settle(self, quiet_s: float = 0.05) -> None:
        """Wait until no frame arrived for ``quiet_s`` seconds, then parse them."""
        n = -1
        while n != len(self.c.frames):
            n = len(self.c.frames)
            await asyncio.sleep(quiet_s)
        self._drain()

    async def close(self) -> None:
        self.t.disconnect()
        await asyncio.wait_for(self.t.wait_disconnected(), 5)

    def pubs(self, channel: str) -> list[dict[str, Any]]:
        return [p["pub"] for p in self.pushes if p.get("channel") == channel]


class Mirror:
    """What a correct client ends with, rebuilt only from the published JSON."""

    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.inst = instruments
        self.books: dict[str, BookState] = {}
        self.book_seq: dict[str, int] = {}
        self.trades: list[tuple[str, int, int, str, int]] = []
        self.orders: dict[int, tuple[Any, ...]] = {}
        self.positions: dict[str, tuple[int, int, int]] = {}
        self.balances: dict[str, tuple[int, int, int]] = {}
        self.account_seq = 0

    def levels(self, sym: str, rows: list[list[str]]) -> list[tuple[int, int]]:
        i = self.inst[sym]
        return [(i.price_to_ticks(p), i.qty_to_lots(q)) for p, q in rows]

    def book(self, sym: str, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            self.books[sym] = BookState()
            self.books[sym].replace(self.levels(sym, data["bids"]), self.levels(sym, data["asks"]))
        else:
            assert data["seq"] == self.book_seq[sym] + 1, "seq gap"
            self.books[sym].apply(self.levels(sym, data["bids"]), self.levels(sym, data["asks"]))
        self.book_seq[sym] = data["seq"]

    def trade(self, sym: str, d: dict[str, Any]) -> None:
        i = self.inst[sym]
        self.trades.append((sym, int(d["id"][2:]), i.price_to_ticks(d["price"]),
                            d["side"], i.qty_to_lots(d["qty"])))

    def account(self, d: dict[str, Any]) -> None:
        if d["type"] == "portfolio":
            seq = d["positions"][0]["seq"]
            assert all(p["seq"] == seq for p in d["positions"])
        else:
            seq = d["seq"] if "seq" in d else d[d["type"]]["seq"]
        # The first publication seen sets the start; then +1 each.
        assert self.account_seq == 0 or seq == self.account_seq + 1, (seq, self.account_seq)
        self.account_seq = seq
        if d["type"] == "order":
            o = d["order"]
            i = self.inst[o["instrumentId"]]
            self.orders[int(o["id"][2:])] = (o["status"], i.price_to_ticks(o["price"]),
                                             i.qty_to_lots(o["qty"]), i.qty_to_lots(o["filledQty"]),
                                             _AMOUNT.price_to_ticks(o["cost"]), o["side"])
        elif d["type"] == "portfolio":
            for p in d["positions"]:
                i = self.inst[p["instrumentId"]]
                self.positions[p["instrumentId"]] = (
                    i.qty_to_lots(p["qty"]), i.price_to_ticks(p["avgEntryPrice"]),
                    _AMOUNT.price_to_ticks(p["realizedPnl"]))
        elif d["type"] == "balances":
            for b in d["balances"]:
                self.balances[b["asset"]] = tuple(  # type: ignore[assignment]
                    _AMOUNT.price_to_ticks(b[k]) for k in ("total", "available", "reserved"))

    def feed(self, channel: str, data: dict[str, Any]) -> None:
        if channel.startswith(BOOK_PREFIX):
            self.book(channel[len(BOOK_PREFIX):], data)
        elif channel.startswith(TRADE_PREFIX):
            self.trade(channel[len(TRADE_PREFIX):], data)
        else:
            self.account(data)

    def assert_equals(self, market: SyntheticMarket, trade_symbols: set[str],
                      trades_from: int = 0) -> None:
        for sym, b in self.books.items():
            assert b.levels() == market.book(sym), sym
        assert self.trades == [(t.symbol, t.trade_id, t.price_ticks, t.side, t.qty_lots)
                               for t in market.trades[trades_from:] if t.symbol in trade_symbols]
        # A fresh subscriber learns open orders and every change after it subscribed.
        expected = {o.order_id: (o.status, o.price_ticks, o.qty_lots, o.filled_lots,
                                 o.cost_units, o.side) for o in market.orders.values()}
        assert self.orders == {oid: expected[oid] for oid in self.orders}
        assert {o.order_id for o in market.open_orders()} <= set(self.orders)
        assert self.positions == {s: (p.qty_lots, p.avg_entry_ticks, p.realized_pnl_units)
                                  for s, p in market.positions.items()}
        assert self.balances == {a: (b.total_units, b.available_units, b.reserved_units)
                                 for a, b in market.balances.items()}


def _manual(**kw: Any) -> CadenzaSim:
    return CadenzaSim(seed=kw.pop("seed", 11), interval_s=None, **kw)


async def _connected(sim: CadenzaSim) -> Raw:
    raw = await Raw.open(sim.url)
    rep = await raw.call("connect", {"token": "sim-token", "name": "test"})
    assert rep["connect"]["version"] == "cadenza-sim 1.0"
    return raw


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_connect_auth_and_error_replies(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual() as sim:
            raw = await Raw.open(sim.url)
            rep = await raw.call("connect", {"token": "sim-token", "name": "ticklot"})
            c = rep["connect"]
            assert c["ping"] == 25 and c["pong"] is True and len(c["client"]) == 36
            # Several commands in one frame: the replies share one frame, in order.
            n = len(raw.c.frames)
            ids = raw.send({"subscribe": {}}, {"subscribe": {"channel": "market:orderBook:NOPE"}},
                           {"subscribe": {"channel": ACCOUNT_PREFIX + "B-2"}},
                           {"subscribe": {"channel": TRADES}}, {"subscribe": {"channel": TRADES}},
                           {"publish": {"channel": TRADES, "data": {}}}, {"rpc": {"method": "x"}},
                           {"history": {"channel": TRADES}}, {"unsubscribe": {"channel": TRADES}})
            codes = [(await raw.reply(i)).get("error", {}).get("code") for i in ids]
            assert codes == [107, 102, 103, None, 105, 103, 104, 108, None]
            assert len(raw.c.frames) == n + 1
            sim.fail_next("subscribe", 100)
            rep = await raw.call("subscribe", {"channel": TRADES})
            assert rep["error"] == {"code": 100, "message": "internal server error", "temporary": True}
            sim.fail_next("subscribe", 109)
            rep = await raw.call("subscribe", {"channel": TRADES})
            assert rep["error"] == {"code": 109, "message": "token expired"}
            await raw.close()

            bad = await Raw.open(sim.url)
            rep = await bad.call("connect", {"token": "wrong"})
            assert rep["error"] == {"code": 101, "message": "unauthorized"}
            await asyncio.wait_for(bad.t.wait_disconnected(), 5)
            assert (bad.c.close_code, bad.c.close_reason) == (3500, "invalid token")
            assert "sim-token" not in repr(sim)

            sim.reject_auth = True
            bad = await Raw.open(sim.url)
            rep = await bad.call("connect", {"token": "sim-token"})
            assert rep["error"]["code"] == 101
            await asyncio.wait_for(bad.t.wait_disconnected(), 5)
            assert bad.c.close_code == 3500
            sim.reject_auth = False

            for payload in (b'{"id":1,"subscribe":{"channel":"x"}}', b"not json", b'{"connect":{}}'):
                early = await Raw.open(sim.url)
                early.t.send(WSMsgType.TEXT, payload)
                await asyncio.wait_for(early.t.wait_disconnected(), 5)
                assert (early.c.close_code, early.c.close_reason) == (3501, "bad request"), payload
            assert sim.stats["hook_errors"] == 0
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_ping_and_pong_tracking(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual(ping_s=1, pong_timeout_s=0.3) as sim:
            good = await _connected(sim)
            silent = await _connected(sim)
            answered = 0
            for _ in range(150):  # up to 3 s: the first ping comes after 1 s
                good._drain()
                while answered < good.pings:  # one pong {} per ping {}
                    good.send({})
                    answered += 1
                if answered >= 1 and silent.t.is_disconnected:
                    break
                await asyncio.sleep(0.02)
            await asyncio.wait_for(silent.t.wait_disconnected(), 3)
            assert (silent.c.close_code, silent.c.close_reason) == (3012, "no pong")
            assert good.pings >= 1 and not good.t.is_disconnected
            await good.close()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_publications_follow_the_contract_and_equal_the_market(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual(snapshot_every=50) as sim:
            market = sim.market
            assert isinstance(market, SyntheticMarket)
            sim.advance(200)  # history exists before anyone subscribes
            raw = await _connected(sim)
            reply_offsets = {}
            for ch in (BOOK, BOOK_ETH, TRADES, ACCOUNT):
                rep = await raw.call("subscribe", {"channel": ch})
                sub = rep["subscribe"]
                assert sub["recoverable"] is True and sub["epoch"] == sim.channels[ch].epoch
                reply_offsets[ch] = sub["offset"]
            trades_before = len(market.trades)
            for _ in range(20):
                sim.advance(25)
                await asyncio.sleep(0)
            await raw.settle()
            mirror = Mirror(market.instruments)
            for ch in (BOOK, BOOK_ETH, TRADES, ACCOUNT):
                pubs = raw.pubs(ch)
                offsets = [p["offset"] for p in pubs]
                # Every publication after the subscribe reply's offset, in order.
                assert offsets == list(range(reply_offsets[ch] + 1, sim.channels[ch].offset + 1))
                for p in pubs:
                    mirror.feed(ch, p["data"])
            first = raw.pubs(BOOK)[0]["data"]
            assert first["type"] == "snapshot" and len(first["bids"]) == market.depth
            kinds = [p["data"]["type"] for p in raw.pubs(BOOK)]
            assert kinds.count("snapshot") >= 2  # the fresh one and periodic ones
            acct = [p["data"]["type"] for p in raw.pubs(ACCOUNT)]
            assert acct[:2] == ["portfolio", "balances"] and {"order", "fill"} <= set(acct)
            assert raw.pubs(ACCOUNT)[0]["data"]["positions"]  # never an empty portfolio
            mirror.assert_equals(market, {"BTC-USDT"}, trades_from=trades_before)
            assert mirror.book_seq["BTC-USDT"] == sim.book_seq["BTC-USDT"]
            assert mirror.account_seq == sim.account_seq
            # Exact decimal strings with the instrument's decimals; deletes are "0".
            some = next(p["data"] for p in raw.pubs(BOOK) if p["data"]["type"] == "delta")
            assert all(len(px.split(".")[1]) == 2 for px, _ in some["bids"] + some["asks"])
            assert all(q == "0" or len(q.split(".")[1]) == 5 for _, q in some["bids"] + some["asks"])
            order = next(p["data"]["order"] for p in raw.pubs(ACCOUNT) if p["data"]["type"] == "order")
            assert set(order) == {"id", "clientId", "instrumentId", "side", "orderType", "status",
                                  "price", "stopPrice", "qty", "filledQty", "cost", "createdTs",
                                  "updatedTs", "seq"}
            await raw.close()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_recovery_gap_and_resync(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual(history_size=40) as sim:
            raw = await _connected(sim)
            await raw.call("subscribe", {"channel": BOOK})
            sim.advance(10)
            await raw.settle()
            last = raw.pubs(BOOK)[-1]["offset"]
            epoch = sim.channels[BOOK].epoch
            await raw.close()
            sim.advance(20)  # missed while disconnected, still in history
            raw = await _connected(sim)
            rep = (await raw.call("subscribe", {"channel": BOOK, "recover": True,
                                                "epoch": epoch, "offset": last}))["subscribe"]
            assert rep["recovered"] is True and rep["was_recovering"] is True
            got = [p["offset"] for p in rep["publications"]]
            assert got == list(range(last + 1, sim.channels[BOOK].offset + 1))
            await raw.settle()
            assert raw.pubs(BOOK) == []  # no fresh snapshot after a good recovery
            await raw.call("unsubscribe", {"channel": BOOK})
            # Too far behind: history (40) cannot fill the gap.
            sim.advance(100)
            rep = (await raw.call("subscribe", {"channel": BOOK, "recover": True,
                                                "epoch": epoch, "offset": last}))["subscribe"]
            assert rep["recovered"] is False and "publications" not in rep
            await raw.settle()
            (snap,) = raw.pubs(BOOK)
            assert snap["data"]["type"] == "snapshot" and snap["offset"] == rep["offset"] + 1
            await raw.call("unsubscribe", {"channel": BOOK})
            # Epoch changed (history lost) -> not recovered; flag 2 -> error 112.
            top = sim.channels[BOOK].offset
            sim.reset_history(BOOK)
            rep = (await raw.call("subscribe", {"channel": BOOK, "recover": True,
                                                "epoch": epoch, "offset": top}))["subscribe"]
            assert rep["recovered"] is False and rep["epoch"] != epoch and rep["offset"] == 0
            await raw.call("unsubscribe", {"channel": BOOK})
            rep = await raw.call("subscribe", {"channel": BOOK, "recover": True, "epoch": "old",
                                               "offset": 1, "flag": 2})
            assert rep["error"]["code"] == 112
            await raw.close()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_skip_sequence_then_resubscribe_resyncs(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual(snapshot_every=0) as sim:
            raw = await _connected(sim)
            await raw.call("subscribe", {"channel": BOOK})
            sim.advance(5)
            sim.skip_sequence("BTC-USDT")
            sim.advance(30)
            await raw.settle()
            seqs = [p["data"]["seq"] for p in raw.pubs(BOOK)]
            gaps = [b - a for a, b in zip(seqs, seqs[1:]) if b - a != 1]
            assert gaps == [2]
            offsets = [p["offset"] for p in raw.pubs(BOOK)]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))  # offsets stay whole
            # The client resubscribes without recovery: a fresh snapshot equals the market.
            await raw.call("unsubscribe", {"channel": BOOK})
            raw.pushes.clear()
            await raw.call("subscribe", {"channel": BOOK})
            await raw.settle()
            (snap,) = raw.pubs(BOOK)
            mirror = Mirror(sim.market.instruments)
            mirror.book("BTC-USDT", snap["data"])
            assert mirror.books["BTC-USDT"].levels() == sim.market.book("BTC-USDT")
            assert snap["data"]["seq"] == sim.book_seq["BTC-USDT"]
            await raw.close()
            with pytest.raises(KeyError):
                sim.skip_sequence("NOPE")
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_stalled_client_that_overflows_is_closed_slow(loop_kind: str) -> None:
    async def case() -> None:
        async with _manual(max_queue=20) as sim:
            raw = await _connected(sim)
            await raw.call("subscribe", {"channel": BOOK})
            sim.stall(10.0)
            for _ in range(100):
                sim.advance(1)  # one push frame per step at most
                if sim.stats["slow_clients"]:
                    break
            await asyncio.wait_for(raw.t.wait_disconnected(), 5)
            assert (raw.c.close_code, raw.c.close_reason) == (3008, "slow")
            assert sim.stats["slow_clients"] == 1
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_burst_mode_frames_rebuild_the_burst_book(loop_kind: str) -> None:
    n = 3000

    async def case() -> None:
        async with CadenzaSim(seed=5, burst=n) as sim:
            for _ in range(2):  # every subscriber gets the same frames
                raw = await _connected(sim)
                rep = await raw.call("subscribe", {"channel": BOOK})
                assert rep["subscribe"]["epoch"] == "burst"
                await raw.c.wait_frames(2 + n + 1, timeout=10)
                assert raw.c.frames[2:] == sim.burst_payloads  # the very same bytes
                raw._drain()
                mirror = Mirror(sim.market.instruments)
                for p in raw.pubs(BOOK):
                    mirror.feed(BOOK, p["data"])
                assert len(raw.pubs(BOOK)) == n + 1
                assert mirror.books["BTC-USDT"].levels() == sim.burst_book
                await raw.close()
    run_case(loop_kind, case)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_recorded_binance_source(loop_kind: str) -> None:
    rec = RecordedBinance.load(ROOT / "tests/data/binance_spot_btcusdt_20240808_head1500.gz",
                               Instrument("BTCUSDT", "0.01", "0.00001"))

    async def case() -> None:
        market = RecordedMarket(rec, symbol="BTC-USDT")
        async with CadenzaSim(market, interval_s=None) as sim:
            assert ACCOUNT not in sim.channels
            raw = await _connected(sim)
            await raw.call("subscribe", {"channel": BOOK})
            await raw.call("subscribe", {"channel": TRADES})
            while not market.exhausted:
                sim.advance(50)
                await asyncio.sleep(0)
            await raw.settle()
            mirror = Mirror(market.instruments)
            for ch in (BOOK, TRADES):
                for p in raw.pubs(ch):
                    mirror.feed(ch, p["data"])
            assert mirror.books["BTC-USDT"].levels() == market.book("BTC-USDT")
            assert len(mirror.trades) == len(market.trades) > 100
            assert len(raw.pubs(BOOK)[0]["data"]["bids"]) == 1000
            await raw.close()
    run_case(loop_kind, case)


def test_synthetic_market_invariants() -> None:
    """Seeded stress of the market the Cadenza simulator publishes: books, orders,
    positions and balances stay consistent with the events, step after step."""
    m = SyntheticMarket(seed=9, depth=12)
    books = {sym: BookState() for sym in m.instruments}
    for sym, (bids, asks) in m.books().items():
        books[sym].replace(bids, asks)
    initial = m.balances["USDT"].total_units
    fills_by_order: dict[int, int] = {}
    net_lots: dict[str, int] = {}
    fees = 0
    last_status: dict[int, str] = {}
    legal = {None: {"New"}, "New": {"PartiallyFilled", "Filled", "Canceled"},
             "PartiallyFilled": {"PartiallyFilled", "Filled", "Canceled"}}
    for _ in range(5000):
        for e in m.step():
            if isinstance(e, BookDelta):
                books[e.symbol].apply(e.bids, e.asks)
            elif isinstance(e, Order):
                assert e.status in legal[last_status.get(e.order_id)], (last_status.get(e.order_id), e)
                last_status[e.order_id] = e.status
                assert 0 <= e.filled_lots <= e.qty_lots
            elif isinstance(e, Fill):
                fills_by_order[e.order_id] = fills_by_order.get(e.order_id, 0) + e.qty_lots
                signed = e.qty_lots if e.side == "buy" else -e.qty_lots
                net_lots[e.symbol] = net_lots.get(e.symbol, 0) + signed
                fees += e.fee_units
        for sym, b in books.items():
            bids, asks = m.book(sym)
            assert b.levels() == (bids, asks)
            assert len(bids) == len(asks) == 12 and bids[0][0] < asks[0][0]
    assert all(m.orders[oid].filled_lots == lots for oid, lots in fills_by_order.items())
    assert {s: p.qty_lots for s, p in m.positions.items()} == net_lots
    realized = sum(p.realized_pnl_units for p in m.positions.values())
    bal = m.balances["USDT"]
    assert bal.total_units == initial + realized - fees
    # 1e-8 quote units per tick x lot: BTC 0.01 x 0.00001 -> 10, ETH 0.01 x 0.0001 -> 100.
    unit = {"BTC-USDT": 10, "ETH-USDT": 100}
    reserved = sum((o.qty_lots - o.filled_lots) * o.price_ticks * unit[o.symbol]
                   for o in m.open_orders())
    assert bal.reserved_units == reserved and bal.available_units == bal.total_units - reserved
    assert len(fills_by_order) > 100 and "Canceled" in last_status.values()
    with pytest.raises(ValueError, match="decimals"):
        SyntheticMarket([Instrument("X-Y", "0.00001", "0.00001")])
    with pytest.raises(ValueError, match="depth"):
        SyntheticMarket(depth=1)


def test_same_seed_same_publications() -> None:
    def run(seed: int) -> list[str]:
        sim = _manual(seed=seed)
        sim.advance(300)
        return [d for ch in sim.channels.values() for _, d in ch.history]
    assert run(3) == run(3)
    assert run(3) != run(4)


# -- the REAL PEER: the official centrifuge-python client -------------------------------

@pytest.mark.parametrize("loop_kind", LOOPS)
def test_real_peer_centrifuge_python(loop_kind: str) -> None:
    from centrifuge import (
        Client, ClientEventHandler, ClientState, ConnectedContext, PublicationContext,
        SubscribedContext, SubscriptionEventHandler,
    )

    async def case() -> None:
        async with CadenzaSim(seed=21, interval_s=0.005, history_size=10_000) as sim:
            received: dict[str, list[tuple[int, dict[str, Any]]]] = {}
            subscribed: list[tuple[str, bool, bool]] = []
            connects: list[str] = []

            class SubEvents(SubscriptionEventHandler):  # type: ignore[misc]
                def __init__(self, channel: str) -> None:
                    self.channel = channel

                async def on_publication(self, ctx: PublicationContext) -> None:
                    received.setdefault(self.channel, []).append((ctx.pub.offset, ctx.pub.data))

                async def on_subscribed(self, ctx: SubscribedContext) -> None:
                    subscribed.append((self.channel, ctx.was_recovering, ctx.recovered))

            class ClientEvents(ClientEventHandler):  # type: ignore[misc]
                async def on_connected(self, ctx: ConnectedContext) -> None:
                    connects.append(ctx.client)

            client = Client(sim.url, token="sim-token", name="ticklot", events=ClientEvents(),
                            min_reconnect_delay=0.05, max_reconnect_delay=0.2)
            channels = (BOOK, TRADES, ACCOUNT)
            subs = [client.new_subscription(ch, events=SubEvents(ch), recoverable=True)
                    for ch in channels]
            await client.connect()
            for s in subs:
                await s.subscribe()

            async def until(cond: Any, timeout: float = 5.0) -> None:
                async def poll() -> None:
                    while not cond():
                        await asyncio.sleep(0.01)
                await asyncio.wait_for(poll(), timeout)

            await until(lambda: all(len(received.get(ch, [])) >= 5 for ch in channels))
            # Forced disconnect: the client reconnects and recovers what it missed.
            assert sim.drop() == 1
            await until(lambda: len(connects) == 2)
            await until(lambda: len(subscribed) == 6)
            assert sorted(subscribed[3:]) == sorted((ch, True, True) for ch in channels)
            await until(lambda: all(len(received[ch]) >= 2 * 5 for ch in channels))
            sim.paused = True
            await asyncio.sleep(0.1)  # in-flight pushes land
            for ch in channels:
                offsets = [o for o, _ in received[ch]]
                # Nothing lost, nothing twice, up to the channel's last offset.
                assert offsets == list(range(offsets[0], sim.channels[ch].offset + 1)), ch
                history = dict(sim.channels[ch].history)
                assert all(json.loads(history[o]) == d for o, d in received[ch])
            mirror = Mirror(sim.market.instruments)
            for ch in channels:
                for _, d in received[ch]:
                    mirror.feed(ch, d)
            market = sim.market
            assert isinstance(market, SyntheticMarket)
            assert mirror.books["BTC-USDT"].levels() == market.book("BTC-USDT")
            assert mirror.balances == {a: (b.total_units, b.available_units, b.reserved_units)
                                       for a, b in market.balances.items()}
            await client.disconnect()
            assert client.state == ClientState.DISCONNECTED

            # Bad token: the peer stops (terminal) and never reconnects.
            bad = Client(sim.url, token="wrong", min_reconnect_delay=0.05)
            before = sim.stats["connections"]
            await bad.connect()
            await until(lambda: bad.state == ClientState.DISCONNECTED)
            await asyncio.sleep(0.3)
            assert sim.stats["connections"] == before + 1
            await bad.disconnect()
            assert sim.stats["hook_errors"] == 0
    run_case(loop_kind, case, timeout=30)


def test_command_line_runs_and_stops() -> None:
    with sim_process("cadenza", "--port", "0", "--seed", "3", "--seconds", "30",
                     "--loop", "asyncio") as info:
        assert info["venue"] == "cadenza" and info["port"] > 0

        async def case() -> None:
            raw = await Raw.open(info["url"])
            rep = await raw.call("connect", {"token": "sim-token"})
            assert "client" in rep["connect"]
            await raw.close()
        run_case("uvloop", case)
