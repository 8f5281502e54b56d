"""Bot platform end to end over loopback against feeds.sim.botplatform (asyncio and
uvloop), plus decoder unit tests: bad frames change nothing.

The simulator's scenario moves only when a test calls ``sim.advance(n)``, so every test
knows what was published; after each scenario the engine's orders, positions, energy
and symbol registry must equal the simulator's state, and no task or socket may be left.
"""
from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
from decimal import Decimal
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Instrument
from engine.account import Account, OrderStatus, OrderType, PositionStatus
from engine.errors import DecodeError, InvalidTransition
from feeds.botplatform import BotPlatformVenue, NftEnergy, Notification, is_terminal_close, parse_symbol
from feeds._hotpath import Dispatch, FeedCounters
from feeds.botplatform_decode import BotPlatformDecoder
from feeds.session import Feed, FeedStatus
from feeds.sim.botplatform import BotPlatformSim, BotScenario, encode_order, encode_position
from feeds.symbols import SymbolInfo, SymbolRegistry
from loopback import close_code_scenario, oversize_frame_reconnects, close_engine_and_sim, step as step_sim

TOKEN = "sim-token-b0t-51ab"
FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, seed=3, connect_timeout_s=3.0)
STATUS_NAME = {"New": OrderStatus.NEW, "PartiallyFilled": OrderStatus.PARTIALLY_FILLED,
               "Filled": OrderStatus.FILLED, "Canceled": OrderStatus.CANCELED, "Expired": OrderStatus.EXPIRED}
TYPE_NAME = {"Limit": OrderType.LIMIT, "Market": OrderType.MARKET, "Stop": OrderType.STOP,
             "StopMarket": OrderType.STOP_MARKET, "TakeProfit": OrderType.TAKE_PROFIT,
             "TakeProfitMarket": OrderType.TAKE_PROFIT_MARKET,
             "TrailingStopMarket": OrderType.TRAILING_STOP_MARKET}
POSITION_STATUS = {"Created": PositionStatus.CREATED, "InProgress": PositionStatus.IN_PROGRESS,
                   "Finishing": PositionStatus.FINISHING, "Completed": PositionStatus.COMPLETED,
                   "Failed": PositionStatus.FAILED}


class Harness:
    """A simulator, an engine connected to it, and everything the callbacks saw."""

    def __init__(self, sim: BotPlatformSim, eng: Engine, feed: Feed) -> None:
        self.sim = sim
        self.eng = eng
        self.feed = feed
        self.statuses: list[Any] = []
        self.orders: list[Any] = []
        self.positions: list[Any] = []
        self.energy: list[NftEnergy] = []
        self.notes: list[Notification] = []
        self.account_errors: list[Exception] = []
        eng.on_status(self.statuses.append)
        eng.on_order(self.orders.append)
        eng.on_position(self.positions.append)
        self.venue.on_energy(self.energy.append)
        self.venue.on_notification(self.notes.append)
        self.account.set_callbacks(on_error=self.account_errors.append)

    @property
    def venue(self) -> BotPlatformVenue:
        v = self.feed.venue
        assert isinstance(v, BotPlatformVenue)
        return v

    @property
    def account(self) -> Account:
        acct = self.eng.account("A-1")
        assert isinstance(acct, Account)
        return acct

    @property
    def decoder(self) -> BotPlatformDecoder:
        assert self.venue.decoder is not None
        return self.venue.decoder

    async def caught_up(self, timeout: float = 5.0) -> None:
        """Wait until the client applied every User seq the simulator used."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (self.feed.status is FeedStatus.SUBSCRIBED and self.decoder.synced
                   and self.decoder.last_seq == self.sim.seq):
            if loop.time() > deadline:
                raise AssertionError(f"not caught up: {self.feed.status} ({self.feed.status_reason}) "
                                     f"seq {self.decoder.last_seq} of {self.sim.seq}")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # Symbol frames sent after the last User one

    async def status(self, status: FeedStatus, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.feed.status is not status:
            if loop.time() > deadline:
                raise AssertionError(f"status {self.feed.status} ({self.feed.status_reason}), wanted {status}")
            await asyncio.sleep(0.005)

    def assert_same_state(self, scenario: BotScenario | None = None) -> None:
        assert_account_matches(self.account, scenario or self.sim.scenario)
        assert_registry_matches(self.venue.symbols, scenario or self.sim.scenario)
        self.account._check_invariants()


def assert_account_matches(acct: Account, sc: BotScenario) -> None:
    """Every order, each symbol's current position and the energy equal the scenario's."""
    assert acct.order_count == len(sc.orders)
    for o in sc.orders.values():
        m = acct.order(o.order_id)
        assert (m.status, m.order_type, m.side, m.qty_lots, m.filled_lots, m.price_ticks, m.stop_price_ticks,
                m.client_id, m.symbol) == (
            STATUS_NAME[o.status], TYPE_NAME[o.order_type], 0 if o.side == "Buy" else 1, o.qty_lots,
            o.filled_lots, o.price_ticks or 0, o.stop_ticks or 0, o.client_id, o.symbol), o
    for sym in sc.instruments:
        p = sc.current_position(sym)
        mp = acct.position(sym)
        if p is None:
            assert mp.qty_lots == 0 and mp.status == PositionStatus.CREATED
            continue
        signed = p.qty_lots if p.side == "Long" else -p.qty_lots
        assert (mp.status, mp.qty_lots, mp.realized_pnl) == (POSITION_STATUS[p.status], signed, p.realized_units), p
        assert mp.avg_entry_price == (p.entry_ticks if p.qty_lots else None), p
    energy = acct.balance("NFT_ENERGY")
    assert (energy.total, energy.decimals) == (sc.energy_units, 8)


def assert_registry_matches(reg: SymbolRegistry, sc: BotScenario) -> None:
    assert reg.snapshot() == {s.symbol: SymbolInfo(s.symbol, s.can_trade, s.is_active, s.list_time_ns,
                                                   s.exp_time_ns) for s in sc.symbols.values()}


class open_harness:
    """``async with open_harness(...) as h``: sim + engine, closed cleanly on exit."""

    def __init__(self, token: str = TOKEN, sim_kw: dict[str, Any] | None = None, **connect_kw: Any) -> None:
        self.token = token
        self.sim_kw: dict[str, Any] = dict(seed=11, token=TOKEN, interval_s=None)
        self.sim_kw.update(sim_kw or {})
        self.connect_kw = dict(FAST, **connect_kw)

    async def __aenter__(self) -> Harness:
        self.sim = BotPlatformSim(**self.sim_kw)
        await self.sim.start()
        eng = Engine(bar_intervals=())
        for inst in self.sim.instruments.values():
            eng.add_instrument(inst)
        feed = eng.connect("botplatform", url=self.sim.url, token=self.token, account_id="A-1",
                           **self.connect_kw)
        self.h = Harness(self.sim, eng, feed)
        await eng.start()
        return self.h

    async def __aexit__(self, *exc: Any) -> None:
        await close_engine_and_sim(self.h.eng, self.sim)


async def step(h: Harness, n: int, chunk: int = 10) -> None:
    await step_sim(h.sim, n, chunk)


# --- end to end ----------------------------------------------------------------------

def test_end_to_end_state_matches(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 600)
            await h.caught_up()
            h.assert_same_state()
            sc = h.sim.scenario
            c = h.feed.counters
            assert c.frames > 0 and c.decode_errors == 0 and c.gaps == 0 and c.reconnects == 0
            assert c.latency.count > 0 and h.eng.callback_errors == 0
            assert h.decoder.rejected == 0 and h.account.error_count == 0 and not h.account_errors
            # The scenario exercised every order type and status of the platform...
            # and the engine's callbacks saw every one of them.
            assert {o.order_type for o in sc.orders.values()} == set(TYPE_NAME)
            assert {o.order_type for o in h.orders} == set(TYPE_NAME.values())
            assert {o.status for o in h.orders} == set(STATUS_NAME.values())
            assert {p.status for p in h.positions} == set(POSITION_STATUS.values())
            # Energy and notifications exact.
            assert [n.notification_id for n in h.notes] == [n["id"] for n in sc.notifications] != []
            assert h.energy[-1].energy_units == sc.energy_units
            assert h.energy[-1].energy == Decimal(sc.energy_units) / Decimal(100_000_000)
            assert h.venue.energy == h.energy[-1]
            assert {e.status for e in h.statuses} >= {FeedStatus.CONNECTING, FeedStatus.CONNECTED,
                                                       FeedStatus.SUBSCRIBED}
    run(main())


def test_drop_reconnects_and_resyncs_from_snapshot(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 100)
            await h.caught_up()
            for _ in range(2):
                h.sim.drop()
                await step(h, 80)  # produced while the client is away: the snapshot brings it
                await h.caught_up()
            await step(h, 50)
            await h.caught_up()
            h.assert_same_state()
            c = h.feed.counters
            assert c.reconnects == 2 and c.gaps == 0 and c.decode_errors == 0
            assert h.decoder.rejected == 0 and h.account.error_count == 0
    run(main())


@pytest.mark.parametrize("code,terminal", [(4001, True), (4400, True), (1011, False), (4500, False)])
def test_close_codes(run: Any, code: int, terminal: bool) -> None:
    assert is_terminal_close(code) is terminal

    async def main() -> None:
        async with open_harness() as h:
            await close_code_scenario(h, step, code, terminal, 30)
    run(main())


def _bad_user_frames(sim: BotPlatformSim) -> list[bytes]:
    """Well-formed envelopes with a bad ``data`` (each names the next seq)."""
    seq = sim.seq + 1
    sc = sim.scenario
    order = next(o for o in sc.orders.values() if o.status == "Filled")
    inst = sc.instruments[order.symbol]
    base = encode_order(inst, order)
    pos = next(iter(sc.positions.values()))
    frames = []
    for patch in ({"qty": "0.000001"}, {"status": "Bogus"}, {"order_type": "Iceberg"}, {"price": "-1.00"},
                  {"filled_qty": "1e3"}, {"side": "Up"}, {"qty": 5}):
        frames.append(sim.user_frame(dict(base, **patch), seq).encode())
    missing = dict(base)
    del missing["filled_qty"]
    frames.append(sim.user_frame(missing, seq).encode())
    frames.append(sim.user_frame(dict(encode_position(sc.instruments[pos.symbol], pos), qty="1.00000",
                                      entry_price=None), seq).encode())
    frames.append(sim.user_frame(dict(encode_position(sc.instruments[pos.symbol], pos), realized_pnl="0.000000001"),
                                 seq).encode())
    frames.append(sim.user_frame({"type": "NftEnergyUpdate", "energy": -5, "ts": 1}, seq).encode())
    good = sim.user_frame(base, seq)
    frames.append(good.replace('"user_id":"U-1"', '"user_id":"U-2"').encode())  # another user's frame
    frames.append((good + " x").encode())                                         # trailing garbage
    frames.append(good[:-9].encode())                                             # truncated
    return frames


def test_bad_frames_are_counted_and_change_nothing(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 200)
            await h.caught_up()
            before_orders = h.account.orders().tobytes()
            before_pos = [(p.qty_lots, p.status, p.realized_pnl) for p in h.account.positions()]
            n_callbacks = len(h.orders) + len(h.positions)
            h.sim.send_malformed()
            bad = _bad_user_frames(h.sim)
            bad.append(h.sim.user_frame({"type": "Notification", "id": "N-x", "ts": "soon"}, h.sim.seq + 1).encode())
            for frame in bad:
                h.sim.send_malformed(frame)
            await asyncio.sleep(0.2)
            c = h.feed.counters
            assert c.decode_errors == 1 + len(bad) and c.reconnects == 0
            assert h.account.orders().tobytes() == before_orders
            assert [(p.qty_lots, p.status, p.realized_pnl) for p in h.account.positions()] == before_pos
            assert len(h.orders) + len(h.positions) == n_callbacks and h.account.error_count == 0
            assert h.decoder.last_seq == h.sim.seq and len(h.notes) == h.venue.notifications
            await step(h, 100)  # the seq the bad frames named is still next: nothing lost
            await h.caught_up()
            h.assert_same_state()
            assert c.reconnects == 0 and c.gaps == 0
    run(main())


def test_invalid_transition_is_counted_reported_and_changes_nothing(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 200)
            await h.caught_up()
            n_orders = len(h.orders)
            oid = h.sim.send_invalid_transition()          # Filled -> New
            await h.caught_up()
            assert h.account.order(oid).status == OrderStatus.FILLED
            assert h.decoder.rejected == 1 and h.account.error_count == 1
            assert len(h.account_errors) == 1 and isinstance(h.account_errors[0], InvalidTransition)
            assert oid in str(h.account_errors[0]) and len(h.orders) == n_orders
            # A completed position going back to InProgress is refused the same way.
            done = next(p for p in h.sim.scenario.positions.values()
                        if p.status == "Completed" and h.sim.scenario.current_position(p.symbol) == p)
            inst = h.sim.instruments[done.symbol]
            h.sim.inject_user(dict(encode_position(inst, done), status="InProgress", qty=inst.lots_to_qty(1),
                                   entry_price="100.00"))
            await h.caught_up()
            assert h.decoder.rejected == 2 and len(h.account_errors) == 2
            await step(h, 50)
            await h.caught_up()
            h.assert_same_state()
            assert h.feed.counters.decode_errors == 0 and h.feed.counters.reconnects == 0
    run(main())


def test_skipped_sequence_resyncs(run: Any) -> None:
    async def main() -> None:
        async with open_harness() as h:
            await h.feed.wait_subscribed(5)
            await step(h, 100)
            await h.caught_up()
            h.sim.skip_sequence(3)
            await step(h, 60)
            await h.caught_up()
            await step(h, 20)
            await h.caught_up()
            h.assert_same_state()
            c = h.feed.counters
            assert c.gaps == 1 and c.resyncs == 1 and c.reconnects == 1 and c.decode_errors == 0
            assert "seq gap" in " ".join(e.reason for e in h.statuses if e.status is FeedStatus.RECONNECTING)
    run(main())


def test_stall_is_detected_and_recovered(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(heartbeat_s=0.1), stale_after_s=0.8) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 50)
            await h.caught_up()
            await asyncio.sleep(0.3)
            assert h.decoder.heartbeats >= 2 and h.feed.counters.reconnects == 0
            h.sim.stall(2.0)
            await step(h, 30)
            await h.status(FeedStatus.RECONNECTING, timeout=4)
            assert "stale" in h.feed.status_reason
            await step(h, 30)
            await h.caught_up(timeout=6)
            h.assert_same_state()
    run(main())


def test_oversize_frame_reconnects(run: Any) -> None:
    async def main() -> None:
        async with open_harness(max_message_size=256 * 1024) as h:
            await oversize_frame_reconnects(h, step, 30, 300 * 1024)
    run(main())


def test_auth_rejected_is_terminal_and_secret_free(run: Any, caplog: Any) -> None:
    async def main() -> None:
        async with open_harness(token="wrong-token-SHOULD-NOT-LEAK") as h:
            await h.status(FeedStatus.FAILED)
            await asyncio.sleep(0.1)
            assert h.feed.counters.reconnects == 0
            assert "auth rejected: 401" in h.feed.status_reason
            for e in h.statuses:
                assert "SHOULD-NOT-LEAK" not in e.reason
            assert "SHOULD-NOT-LEAK" not in repr(h.feed) + repr(h.venue.token) + repr(h.venue.describe())
        async with open_harness() as h:  # the reject_auth fault refuses even the right token
            h.sim.reject_auth = True
            await h.status(FeedStatus.FAILED)
            assert "401" in h.feed.status_reason
    with caplog.at_level(logging.DEBUG):
        run(main())
    assert "SHOULD-NOT-LEAK" not in caplog.text


def test_symbol_changes_are_visible_before_strategies_act(run: Any) -> None:
    async def main() -> None:
        # No random symbol toggles: the test's own SymbolUpdate is the only one.
        async with open_harness(sim_kw=dict(scenario=BotScenario(seed=11, symbol_rate=0.0))) as h:
            reg = h.venue.symbols
            seen: list[tuple[str, bool]] = []
            changes: list[Any] = []
            reg.on_change(changes.append)
            h.eng.on_order(lambda o: seen.append((o.symbol, reg.tradable(o.symbol))))
            await h.feed.wait_subscribed(5)
            assert reg.tradable("BTC-USDT") and reg.tradable("SOL-USDT")
            assert not reg.tradable("XRP-USDT") and "not listed until" in str(reg.why_not("XRP-USDT"))
            sc = h.sim.scenario
            while sc._bots["BTC-USDT"].phase == "idle":  # a BTC position whose orders move
                await step(h, 1, 1)
            await h.caught_up()
            h.sim.set_symbol("BTC-USDT", can_trade=False)
            seen.clear()
            await step(h, 40)
            await h.caught_up()
            assert not reg.tradable("BTC-USDT") and "can_trade" in str(reg.why_not("BTC-USDT"))
            assert changes[-1].new == SymbolInfo("BTC-USDT", False, True, sc.symbols["BTC-USDT"].list_time_ns, None)
            btc = [ok for sym, ok in seen if sym == "BTC-USDT"]
            assert btc and not any(btc)   # every BTC order callback already saw can_trade false
            h.assert_same_state()
    run(main())


def test_burst_mode_ends_in_the_burst_state(run: Any) -> None:
    async def main() -> None:
        async with open_harness(sim_kw=dict(burst=3000)) as h:
            await h.feed.wait_subscribed(5)
            scenario = h.sim.burst_scenario
            assert scenario is not None and h.sim.burst_frames >= 3000
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while h.feed.counters.frames < h.sim.burst_frames + 3:  # + AuthOk, Symbol, Snapshot
                assert loop.time() < deadline, h.feed.counters
                await asyncio.sleep(0.01)
            h.assert_same_state(scenario)
            assert h.feed.counters.decode_errors == 0 and h.decoder.rejected == 0
    run(main())


def test_simulator_protocol_errors() -> None:
    import websockets

    async def main() -> None:
        async with BotPlatformSim(token=TOKEN, interval_s=None) as sim:
            async with websockets.connect(sim.url) as ws:      # Subscribe before Auth
                await ws.send('{"event":"Subscribe","data":{"topics":["User"]}}')
                with pytest.raises(websockets.ConnectionClosed) as err:
                    await ws.recv()
                assert err.value.rcvd is not None and err.value.rcvd.code == 4400
            # max_queue=None: websockets stops reading when 16 messages wait unread, and
            # would then wait close_timeout for a CLOSE stuck behind them.
            async with websockets.connect(sim.url, max_queue=None) as ws:  # the documented session
                await ws.send(json.dumps({"event": "Auth", "data": {"token": TOKEN}}))
                assert json.loads(await ws.recv()) == {"event": "Auth", "data": {"type": "AuthOk", "user_id": "U-1"}}
                await ws.send('{"event":"Subscribe","data":{"topics":["User","Symbol"]}}')
                symbols = json.loads(await ws.recv())
                snapshot = json.loads(await ws.recv())
                assert symbols["event"] == "Symbol" and symbols["data"]["type"] == "Symbol"
                assert snapshot == {"event": "User", "user_id": "U-1", "seq": 0,
                                    "data": sim.scenario.snapshot_data()}
                sim.advance(50)
                msg = json.loads(await ws.recv())
                assert msg["event"] in ("User", "Symbol")
            assert sim.stats["hook_errors"] == 0

    asyncio.run(main())


# --- decoder unit tests: no network ----------------------------------------------------

class _Venue:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))
        return record


def _decoder(sc: BotScenario) -> tuple[BotPlatformDecoder, Account, _Venue]:
    acct = Account("A-1", sc.instruments.values(), feed_mode=True)
    venue = _Venue()
    dispatch = Dispatch(Engine(bar_intervals=()), "botplatform", FeedCounters())
    dec = BotPlatformDecoder(venue, acct, dispatch, list(sc.instruments.values()))
    dec.user_id = "U-1"
    return dec, acct, venue


def _user_frames(sc: BotScenario, sim: BotPlatformSim, steps: int, seq: int) -> list[bytes]:
    """The User frames of ``steps`` more scenario steps, seq from ``seq + 1``."""
    out = []
    for _ in range(steps):
        for event, data in sc.step():
            if event == "User":
                seq += 1
                out.append(sim.user_frame(data, seq).encode())
    return out


def test_decoder_replays_scenario_and_snapshots_exactly() -> None:
    sc = BotScenario(seed=5)
    sim = BotPlatformSim(sc)
    dec, acct, _ = _decoder(sc)
    dec.feed(sim.user_frame(sc.snapshot_data(), 0).encode(), 1)
    frames = _user_frames(sc, sim, 1500, 0)
    seq = len(frames)
    half = len(frames) // 2
    for f in frames[:half]:
        dec.feed(memoryview(f), 1)
    # A fresh client that joins now gets the same state from one Snapshot...
    late, late_acct, _ = _decoder(sc)
    for f in frames[half:]:
        dec.feed(f, 1)
    assert_account_matches(acct, sc)
    late.feed(sim.user_frame(sc.snapshot_data(), seq).encode(), 1)
    assert_account_matches(late_acct, sc)
    assert dec.applied == len(frames) + 1 and dec.rejected == 0 and acct.error_count == 0
    # ...and a client that missed a stretch (a gap) resyncs from one too.
    gap, gap_acct, gap_venue = _decoder(sc)
    gap.feed(sim.user_frame({"type": "Snapshot", "positions": [], "orders": [], "energy": None}, 0).encode(), 1)
    for f in frames[:100]:
        gap.feed(f, 1)
    gap.feed(frames[150], 1)
    assert gap_venue.calls[-1] == ("on_gap", (101, 151)) and not gap.synced
    gap.feed(frames[151], 1)
    assert gap.unsynced_dropped == 1
    gap.reset_connection()
    gap.feed(sim.user_frame(sc.snapshot_data(), seq).encode(), 1)
    assert_account_matches(gap_acct, sc)
    assert gap_acct.error_count == 0 and gap.last_seq == seq
    gap.feed(frames[10], 1)
    assert gap.stale_messages == 1


def test_decoder_rejects_bad_frames_whole() -> None:
    sc = BotScenario(seed=9)
    sim = BotPlatformSim(sc)
    dec, acct, venue = _decoder(sc)
    dec.feed(sim.user_frame(sc.snapshot_data(), 0).encode(), 1)
    seq = 0
    while not any(o.status == "Filled" for o in sc.orders.values()):
        for frame in _user_frames(sc, sim, 1, seq):
            dec.feed(frame, 1)
            seq += 1
    sim.seq = seq
    before = (acct.orders().tobytes(), [(p.qty_lots, p.status) for p in acct.positions()], dec.last_seq)
    expected = ["qty", "status: unknown value 'Bogus'", "order_type: unknown value 'Iceberg'", "price",
                "filled_qty", "side: unknown value 'Up'", "qty", "filled_qty", "entry_price", "realized_pnl",
                "energy", "user 'U-2'", "trailing", "truncated"]
    bad = _bad_user_frames(sim)
    assert len(bad) == len(expected)
    for frame, words in zip(bad, expected):
        with pytest.raises(DecodeError) as err:
            dec.feed(frame, 1)
        assert words in str(err.value), (words, str(err.value))
        assert (acct.orders().tobytes(), [(p.qty_lots, p.status) for p in acct.positions()],
                dec.last_seq) == before
    for frame, words in [
        (b'{"data":{}}', 'without "event"'),
        (b'{"event":"User","user_id":"U-1","data":{"type":"PositionUpdate"}}', "id"),
        (b'{"event":"User","user_id":"U-1","data":{"type":"Notification","id":"N"}}', '"seq"'),
        (b'{"event":"User","user_id":"U-1","seq":5,"data":{"id":"x"}}', "missing"),
        (b'{"event":"User","data":{"type":"Snapshot"},"data":{}}', "duplicate"),
        (b'[1,2]', "botplatform frame"),
        (b'{"event":"Symbol"}', 'without "data"'),
    ]:
        with pytest.raises(DecodeError) as err:
            dec.feed(frame, 1)
        assert words in str(err.value), (words, str(err.value))
    assert dec.last_seq == before[2] and acct.error_count == 0
    # Unknown events and types are skipped (forward compatible), untracked symbols counted.
    dec.feed(b'{"event":"Promo","data":{}}', 1)
    dec.feed(sim.user_frame({"type": "BotStarted", "id": "B-1"}, seq + 1).encode(), 1)
    assert dec.unknown_messages == 1 and dec.last_seq == seq + 1
    assert venue.calls[-1][0] == "parse_user_message" and venue.calls[-1][1][0] == "BotStarted"
    foreign = dict(encode_position(sc.instruments["BTC-USDT"], next(iter(sc.positions.values()))),
                   symbol="DOGE-USDT")
    dec.feed(sim.user_frame(foreign, seq + 2).encode(), 1)
    assert dec.unknown_symbol == 1 and dec.last_seq == seq + 2


def test_decoder_before_auth_and_heartbeat() -> None:
    sc = BotScenario(seed=2)
    dec, acct, venue = _decoder(sc)
    dec.user_id = ""
    with pytest.raises(DecodeError, match="authenticated as ''"):
        dec.feed(BotPlatformSim(sc).user_frame(sc.snapshot_data(), 0).encode(), 1)
    dec.feed(b'{"event":"Heartbeat","ts":5}', 1)
    dec.feed(b' {"event" : "Auth" , "data" : {"type":"AuthOk","user_id":"U-9"}} ', 1)
    assert dec.heartbeats == 1 and venue.calls[-1][0] == "on_auth"
    assert json.loads(venue.calls[-1][1][0]) == {"type": "AuthOk", "user_id": "U-9"}


def test_energy_and_notification_types_are_exact() -> None:
    e = NftEnergy("U-1", 123_456_789_012, 1, 2, True)
    assert e.energy == Decimal("1234.56789012") and str(e.energy) == "1234.56789012"
    assert parse_symbol({"symbol": "A", "can_trade": True, "is_active": False, "list_time": 5,
                         "exp_time": None}) == SymbolInfo("A", True, False, 5, None)
    for bad in ({"symbol": "A", "can_trade": 1, "is_active": True}, {"symbol": "", "can_trade": True,
                                                                      "is_active": True},
                {"symbol": "A", "can_trade": True, "is_active": True, "exp_time": 1.5}, ["A"]):
        with pytest.raises(DecodeError):
            parse_symbol(bad)


def test_venue_needs_a_token_and_rejects_unknown_options() -> None:
    from engine.errors import FeedError
    eng = Engine(bar_intervals=())
    with pytest.raises(FeedError, match="token"):
        eng.connect("botplatform", url="ws://127.0.0.1:1/ws")
    with pytest.raises(TypeError):
        eng.connect("botplatform", url="ws://127.0.0.1:1/ws", token="t0k3n", colour="red")


def test_decoder_refuses_reentrant_feed_from_a_callback() -> None:
    sc = BotScenario(seed=4)
    sim = BotPlatformSim(sc)
    eng = Engine(bar_intervals=())
    acct = Account("A-1", sc.instruments.values(), feed_mode=True)
    dec = BotPlatformDecoder(_Venue(), acct, Dispatch(eng, "botplatform", FeedCounters()), list(sc.instruments.values()))
    dec.user_id = "U-1"
    snapshot = sim.user_frame(sc.snapshot_data(), 0).encode()
    errors: list[BaseException] = []

    def strategy(order: Any) -> None:
        try:
            dec.feed(snapshot, 1)  # would reuse the scratch of the frame being applied
        except RuntimeError as exc:
            errors.append(exc)
            raise

    eng.on_order(strategy)
    dec.feed(snapshot, 1)
    seq = 0
    while not errors:
        for frame in _user_frames(sc, sim, 1, seq):
            dec.feed(frame, 1)
            seq += 1
    assert "from a callback" in str(errors[0]) and eng.callback_errors >= 1
    assert dec.last_seq == seq and acct.error_count == 0
    dec.feed(sim.user_frame(sc.snapshot_data(), seq).encode(), 1)  # usable again afterwards
    assert_account_matches(acct, sc)



def test_decoder_escaped_keys_and_words_match_and_escaped_numbers_are_refused() -> None:
    sc = BotScenario(seed=6)
    sim = BotPlatformSim(sc)
    plain, escaped = _decoder(sc)[:2], _decoder(sc)[:2]
    snapshot = sim.user_frame(sc.snapshot_data(), 0).encode()
    for d, _a in (plain, escaped):
        d.feed(snapshot, 1)
    frames = _user_frames(sc, sim, 300, 0)
    seq = len(frames)
    for frame in frames:
        plain[0].feed(frame, 1)
        # JSON escapes that decode to the same text: "status", "-" in the symbol, "U-1".
        escaped[0].feed(frame.replace(b'"status"', b'"sta\\u0074us"').replace(b"-USDT", b"\\u002dUSDT")
                        .replace(b'"U-1"', b'"U\\u002d1"'), 1)
    assert_account_matches(plain[1], sc)
    assert_account_matches(escaped[1], sc)
    order = next(iter(sc.orders.values()))
    frame = sim.user_frame(encode_order(sc.instruments[order.symbol], order), seq + 1).encode()
    qty = f'"qty":"{sc.instruments[order.symbol].lots_to_qty(order.qty_lots)}"'.encode()
    with pytest.raises(DecodeError, match="qty: wrong JSON type"):  # no venue escapes digits
        plain[0].feed(frame.replace(qty, qty.replace(b".", b"\\u002e")), 1)


def test_recorded_session_replays_to_the_same_state(run: Any, tmp_path: Any) -> None:
    from feeds.recording import read_frames
    path = tmp_path / "botplatform.txt.gz"

    async def main() -> BotScenario:
        async with open_harness(record_path=str(path)) as h:
            await h.feed.wait_subscribed(5)
            await step(h, 150)
            await h.caught_up()
            h.sim.drop()                      # the recording spans a reconnect
            await step(h, 50)
            await h.caught_up()
            return copy.deepcopy(h.sim.scenario)

    scenario = run(main())
    # A new engine, never connected, fed the recorded bytes through the venue's Python entry.
    eng = Engine(bar_intervals=())
    for inst in scenario.instruments.values():
        eng.add_instrument(inst)
    feed = eng.connect("botplatform", url="ws://127.0.0.1:1/ws", token=TOKEN, account_id="A-1")
    frames = list(read_frames(path))
    assert sum(1 for f in frames if f.payload.startswith(b'{"event":"Auth"')) == 2
    for f in frames:
        feed.venue.on_frame(memoryview(f.payload), f.recv_ns)
    acct = eng.account("A-1")
    assert isinstance(acct, Account)
    assert_account_matches(acct, scenario)
    assert isinstance(feed.venue, BotPlatformVenue)
    assert_registry_matches(feed.venue.symbols, scenario)


def test_decoder_refuses_instruments_whose_quote_unit_overflows() -> None:
    huge = Instrument("HUGE", "5000000000", "5000000000")  # tick x lot units > int64
    with pytest.raises(ValueError, match="HUGE: tick_units \\* lot_units overflows int64"):
        BotPlatformDecoder(_Venue(), Account(), Dispatch(Engine(bar_intervals=()), "b", FeedCounters()), [huge])


@functools.cache
def _fuzz_setup() -> tuple[BotPlatformDecoder, Account, list[bytes]]:
    """A decoder and account that applied 150 scenario steps, and those frames."""
    sc = BotScenario(seed=8)
    sim = BotPlatformSim(sc)
    dec, acct, _ = _decoder(sc)
    dec.feed(sim.user_frame(sc.snapshot_data(), 0).encode(), 1)
    frames = [sim.user_frame(sc.snapshot_data(), 0).encode()] + _user_frames(sc, sim, 150, 0)
    for frame in frames[1:]:
        dec.feed(frame, 1)
    return dec, acct, frames


@settings(max_examples=400, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_fuzz_mutated_frames_never_crash_and_rejections_change_nothing(data: Any) -> None:
    dec, acct, frames = _fuzz_setup()
    frame = bytearray(data.draw(st.sampled_from(frames)))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(frame) - 1, 0)))
        if kind == "flip" and frame:
            frame[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            frame[pos:pos] = bytes([data.draw(st.sampled_from(b'{}[]",:.-0123456789e \\x'))])
        elif kind == "delete" and frame:
            del frame[pos]
        else:
            del frame[pos:]
    before = (acct.orders().tobytes(), [(p.qty_lots, p.status, p.realized_pnl) for p in acct.positions()],
              acct.balances(), dec.last_seq, dec.synced, acct.error_count)
    try:
        dec.feed(bytes(frame), 1)
    except DecodeError:
        after = (acct.orders().tobytes(), [(p.qty_lots, p.status, p.realized_pnl) for p in acct.positions()],
                 acct.balances(), dec.last_seq, dec.synced, acct.error_count)
        assert after == before
    acct._check_invariants()


def test_simulator_command_line() -> None:
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "feeds.sim", "botplatform", "--seconds", "0.3", "--seed", "3",
                           "--set", "heartbeat_s=0.1", "--loop", "asyncio"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.splitlines()[0])
    assert info["venue"] == "botplatform" and info["url"] == f"ws://127.0.0.1:{info['port']}/ws"


def _snapshot_decoder(sc: BotScenario) -> tuple[BotPlatformDecoder, Account, _Venue, Engine]:
    eng = Engine(bar_intervals=())
    acct = Account("A-1", sc.instruments.values(), feed_mode=True)
    venue = _Venue()
    dec = BotPlatformDecoder(venue, acct, Dispatch(eng, "botplatform", FeedCounters()), list(sc.instruments.values()))
    dec.user_id = "U-1"
    return dec, acct, venue, eng


def test_snapshot_callbacks_run_after_the_whole_snapshot_is_applied() -> None:
    sc = BotScenario(seed=5)
    sim = BotPlatformSim(sc)
    _user_frames(sc, sim, 600, 0)   # a scenario with many positions and orders
    dec, acct, venue, eng = _snapshot_decoder(sc)
    seen: list[tuple[int, int]] = []

    def record(obj: Any) -> None:
        seen.append((len(acct.orders()), len(acct.positions())))

    eng.on_order(record)
    eng.on_position(record)
    dec.feed(sim.user_frame(sc.snapshot_data(), 0).encode(), 1)
    assert_account_matches(acct, sc)
    full = (len(acct.orders()), len(acct.positions()))
    assert len(sc.orders) > 10 and len(seen) > 10 and set(seen) == {full}
    assert dec.synced and dec.rejected == 0


def test_snapshot_with_a_refused_item_changes_nothing() -> None:
    """One item the Account refuses (a Filled order back to New) rolls the whole
    Snapshot back: no order, position or energy of it stays, no callback runs; the
    refusal is counted and the decoder waits for another Snapshot."""
    sc = BotScenario(seed=5)
    sim = BotPlatformSim(sc)
    dec, acct, venue, eng = _snapshot_decoder(sc)
    dec.feed(sim.user_frame(sc.snapshot_data(), 0).encode(), 1)
    frames = _user_frames(sc, sim, 600, 0)
    for f in frames:
        dec.feed(f, 1)
    assert_account_matches(acct, sc)
    before = (acct.orders().tobytes(), [(p.qty_lots, p.status, p.realized_pnl) for p in acct.positions()],
              acct.balance("NFT_ENERGY"))
    calls: list[Any] = []
    eng.on_order(calls.append)
    eng.on_position(calls.append)
    _user_frames(sc, sim, 200, len(frames))     # the venue moves on; then a reconnect
    data = sc.snapshot_data()
    filled = next(i for i, o in enumerate(data["orders"]) if o["status"] == "Filled")
    data["orders"][filled] = dict(data["orders"][filled], status="New")
    data["orders"].append(data["orders"].pop(filled))          # refused after every other item applied
    data["energy"] = (data["energy"] or 0) + 12345
    dec.reset_connection()
    dec.feed(sim.user_frame(data, len(frames) + 999).encode(), 1)
    after = (acct.orders().tobytes(), [(p.qty_lots, p.status, p.realized_pnl) for p in acct.positions()],
             acct.balance("NFT_ENERGY"))
    assert after == before and calls == []
    assert not dec.synced and dec.last_seq == len(frames) and dec.rejected == 2 and acct.error_count == 1
    assert ("on_refused", ("Snapshot", f"seq {len(frames) + 999}")) in venue.calls
    assert not any(name == "on_synced" for name, _ in venue.calls[-3:])
    dec.feed(sim.user_frame(sc.snapshot_data(), len(frames) + 1000).encode(), 1)   # the next one applies
    assert_account_matches(acct, sc)
    assert dec.synced and len(calls) > 10
