"""Feed benchmark: every venue's hot message, burst over loopback, three clients.

``python -m benchmarks feed [--quick] [--json PATH] [--venue V ...] [--impl I ...]
[--frames N] [--repeats R]``

Method
------
- For each venue of ``VENUES`` (one entry each: the simulator, the three clients'
  handshakes, the expected final state), the venue's simulator runs in its own process
  in burst mode: it pre-encodes the burst once and, when a client has subscribed,
  writes exactly those frames as fast as the socket takes them. Every competitor
  receives identical bytes. The simulator process also prints the state a client must
  end with (its own burst result), so nothing is rebuilt on the measuring side.
- Each competitor runs in a fresh process (``harness.run_isolated``), on uvloop,
  performs the venue's handshake and subscription, and times the burst from its first
  to its last hot message; the rate is (messages - 1) / that time:
  - ``engine``: ``Engine.connect(venue, ...)`` with no-op callbacks: picows -> the
    venue's Cython decoder -> the core (book, quote, account) -> the callback. Its final
    state is compared with the simulator's on every run (a mismatch aborts the run).
  - ``picows-raw``: a picows client that does the venue's minimal handshake and only
    counts the hot frames (a prefix check, no decode): the ceiling for a Python-level
    picows listener. The engine's listener is compiled, so on small frames the engine
    can outrun it (its ratio is then above 1).
  - ``websockets-json``: the common Python pipeline: ``websockets`` client, ``json.loads``
    per message, books in ``sortedcontainers.SortedDict`` keyed by ``float`` price (the
    usual shortcut; exactness would cost it more), other state in dicts/tuples, a no-op
    callback per update. It also checks each venue's sequence rule where there is one.
- ``ns_per_op`` is ns per hot message (1e9 / messages per second), the median of R
  repeats; repeats interleave the competitors so drift hits all of them alike.
  Receive-to-callback latency p50/p99 is in ``extra``: for the engine from the feed's
  latency ring (socket read to callback start), for websockets-json from ``recv()``
  returning to the end of the update. ``extra.loadavg`` is the 1-minute load average
  when the venue's runs ended.
- The hot messages (what a case times):
  - ``cadenza``: ``market:orderBook`` snapshot + N deltas (Centrifugo push, ~215 B);
  - ``binance``: the recorded ``depth@100ms`` diffs and ``trade`` frames of
    tests/data/binance (hftbacktest BTCUSDT spot, MIT), all 13,208 of them (3,451 diffs,
    9,757 trades) in recorded order (the recording fixes the burst size). Clients sync
    from the REST snapshot first; the burst starts when the client sends a live
    ``SUBSCRIBE`` (real Binance protocol), so the measured part is the live diff
    stream. ``BinanceSim`` has no burst mode, so this module subclasses it for that.
    The few diffs older than the snapshot are dropped by the engine (no callback).
  - ``stream``: Socket.IO ``orderbook`` events (whole book + recent trades, ~3 KB);
  - ``prices``: whole-book ``PRICES`` of one market (~900 B), the first one included;
  - ``realtime``: ``trade:created`` + ``market:price`` pairs (~130 B); every client
    subscribes to the market channel only (the engine with ``rooms=()``,
    ``notifications=False``);
  - ``botplatform``: ``User`` position/order/energy/notification and ``Symbol``
    messages of the scenario's burst (the engine's rate counts frames: a frame may
    fire several callbacks, or none).
- ``<venue> in-process`` cases feed the same hot messages to each client with no socket
  (``--no-inprocess`` skips them): ``engine`` is the venue's decoder as the session
  calls it (``frame_sink.feed`` in C, or the adapter's ``on_frame``) on an engine that
  never connects, its final state checked too; ``json-python`` is the websockets-json
  pipeline's per-message code without websockets. This is the decode/apply/callback
  cost alone (GC off while timed, as harness.time_ns_per_op does).
- Caveat: the sender shares the machine's 2 cores; when a consumer is faster than the
  sender, both run at the sender's pace and the ratio understates the consumer's
  headroom (the in-process case shows it).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from benchmarks.harness import Record, run_isolated

if TYPE_CHECKING:
    from engine import Engine, Instrument
    from feeds.session import Feed
    from feeds.sim.server import SimServer

SEED = 17
TOKEN = "bench-token"
JWT = "bench.jwt.token"
SYMBOL = "BTC-USDT"
PRICES_MARKET = "BTC-EUR"
BINANCE_SYMBOL = "BTCUSDT"
BINANCE_STREAMS = ("btcusdt@depth@100ms", "btcusdt@trade")
BINANCE_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance" / \
    "hftbacktest_spot_btcusdt_20240808.txt.xz"
#: Timers the burst must not interleave with (seconds): pings, heartbeats, keep-alives.
QUIET_S = 3600.0
WAIT_S = 180.0

Json = dict[str, Any]


def _levels(rows: Any) -> list[list[int]]:
    return [[int(p), int(q)] for p, q in rows]


def _book_state(book: Any) -> Json:
    return {"bids": _levels(book.bids().tolist()), "asks": _levels(book.asks().tolist())}


def _subscribe_binance() -> str:
    return json.dumps({"method": "SUBSCRIBE", "params": list(BINANCE_STREAMS), "id": 1})


# ================================================================ simulators (own process)
# Each builder returns the simulator (not started), a function that, once it has
# started (bursts are encoded in ``start``), describes it: URL, hot message count,
# and ``expected``, the state a client must end with, in the form the engine reports;
# and a function giving the frames themselves for the in-process case: (the frames a
# client gets before the burst and needs for its state, the burst's hot messages).

Frames = tuple[list[bytes], list[bytes]]
SimBuild = tuple["SimServer", Callable[[], Json], Callable[[], Frames]]

def _sim_cadenza(n: int) -> SimBuild:
    from feeds.sim.cadenza import CadenzaSim
    sim = CadenzaSim(seed=SEED, token=TOKEN, burst=n, burst_symbol=SYMBOL)

    def info() -> Json:
        bids, asks = sim.burst_book
        return {"url": sim.url, "total": len(sim.burst_payloads),
                "tick": float(sim.market.instruments[SYMBOL].tick_size),
                "expected": {"bids": _levels(bids), "asks": _levels(asks)}}
    return sim, info, lambda: ([], sim.burst_payloads)


def _binance_instrument() -> Instrument:
    """BTCUSDT with the recording's precision: book sizes carry 8 decimals (finer than
    the 0.00001 order lot), as benchmarks/decode.py uses too."""
    from engine import Instrument
    return Instrument(BINANCE_SYMBOL, "0.01", "0.00000001")


def _binance_recording() -> Any:
    """The whole recorded BTCUSDT file as a RecordedBinance (stream names read from the
    envelope without parsing the rest)."""
    from feeds.recording import read_frames
    from feeds.sim.market import RecordedBinance, RecordedFrame
    frames = []
    key = b'{"stream":"'
    for f in read_frames(BINANCE_DATA):
        raw = f.payload
        stream = raw[len(key):raw.index(b'"', len(key))].decode() if raw.startswith(key) else None
        frames.append(RecordedFrame(f.recv_ns, stream, raw))
    return RecordedBinance(frames, _binance_instrument())


def _sim_binance(n: int) -> SimBuild:
    """BinanceSim serving the recording's REST snapshot; the WebSocket burst (every
    depth/trade frame, recorded order) starts on a client's live SUBSCRIBE. ``n`` is
    ignored: the recording fixes the burst."""
    from feeds.sim.binance import BinanceSim
    from feeds.sim.server import SimClient, encode_burst

    recording = _binance_recording()
    payloads = [f.raw for f in recording.frames if f.stream in BINANCE_STREAMS]
    burst = encode_burst(payloads)

    class BurstBinanceSim(BinanceSim):
        def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
            super().on_message(client, payload, binary)
            if b'"SUBSCRIBE"' in payload:
                self.spawn(client.burst(burst), f"burst-{client.client_id}")

    # interval_s=None: the replay cursor never moves, so REST serves the recorded
    # snapshot (ahead of the stream, as a real snapshot taken while diffs buffer).
    sim = BurstBinanceSim(recording, interval_s=None, ping_s=QUIET_S)
    # The book after the whole recording, built by a second (never started) simulator.
    final = BinanceSim(recording, interval_s=None)
    final.advance(len(recording.frames))
    bids, asks = final.book()
    inst = recording.instrument
    trades = [json.loads(p)["data"] for p in payloads if b"@trade" in p[:40]]
    last = trades[-1]
    snapshot_id = int(recording.snapshot["lastUpdateId"])
    stale = sum(1 for p in payloads if b"@depth" in p[:40] and json.loads(p)["data"]["u"] <= snapshot_id)

    def info() -> Json:
        return {"url": sim.url, "rest_url": sim.rest_url, "total": len(payloads), "tick": float(inst.tick_size),
                "depth_frames": len(payloads) - len(trades), "stale_diffs": stale,
                "expected": {"bids": _levels(bids), "asks": _levels(asks), "trades": len(trades),
                             "last_trade": [str(last["t"]), inst.price_to_ticks(last["p"]),
                                            inst.qty_to_lots(last["q"])]}}
    # In process the REST snapshot body comes first.
    return sim, info, lambda: ([recording.snapshot_frame.raw], payloads)


def _sim_stream(n: int) -> SimBuild:
    from feeds.sim.stream import StreamSim
    sim = StreamSim(seed=SEED, burst=n, burst_symbol=SYMBOL, ping_interval_ms=int(QUIET_S * 1000))

    def info() -> Json:
        bids, asks = sim.burst_book
        t = sim.burst_trades[-1]
        return {"url": sim.url, "total": len(sim.burst_frames), "tick": 1.0,   # prices are ticks already
                "expected": {"bids": _levels(bids), "asks": _levels(asks), "trades": len(sim.burst_trades),
                             "last_trade": [str(t.trade_id), t.price_ticks, t.qty_lots]}}
    return sim, info, lambda: ([], sim.burst_frames)


def _sim_prices(n: int) -> SimBuild:
    from feeds.sim.prices import PricesSim
    sim = PricesSim(seed=SEED, burst=n, burst_market=PRICES_MARKET, keepalive_s=None)

    def info() -> Json:
        bids, asks = sim.burst_book
        # The first PRICES (the subscription's whole book) is a hot message too.
        return {"url": sim.url, "total": len(sim.burst_payloads) + 1,
                "tick": float(sim.instruments[PRICES_MARKET].tick_size),
                "expected": {"bids": _levels(bids), "asks": _levels(asks)}}

    def frames() -> Frames:
        from feeds.sim.prices import encode_prices
        first = encode_prices(sim.instruments, {PRICES_MARKET: sim.market.book(PRICES_MARKET)}).encode()
        return [], [first, *sim.burst_payloads]
    return sim, info, frames


def _sim_realtime(n: int) -> SimBuild:
    from feeds.sim.realtime import RealtimeSim
    sim = RealtimeSim(seed=SEED, jwt=JWT, burst=n, burst_symbol=SYMBOL)

    def info() -> Json:
        assert sim.burst_quote is not None
        t = sim.burst_trades[-1]
        return {"url": sim.url, "total": len(sim.burst_payloads), "tick": float(sim.instruments[SYMBOL].tick_size),
                "expected": {"quote": list(sim.burst_quote), "trades": len(sim.burst_trades),
                             "last_trade": [f"T-{t.trade_id}", t.price_ticks, t.qty_lots]}}
    return sim, info, lambda: ([], sim.burst_payloads)


def _enum_name(venue_name: str) -> str:
    """"PartiallyFilled" -> "PARTIALLY_FILLED" (the engine's enum member names)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", venue_name).upper()


def _sim_botplatform(n: int) -> SimBuild:
    from feeds.sim.botplatform import BotPlatformSim
    sim = BotPlatformSim(seed=SEED, token=TOKEN, burst=n, heartbeat_s=QUIET_S)

    def info() -> Json:
        sc = sim.burst_scenario
        assert sc is not None
        orders = {o.order_id: [_enum_name(o.status), _enum_name(o.order_type), 0 if o.side == "Buy" else 1,
                               o.qty_lots, o.filled_lots, o.price_ticks or 0, o.stop_ticks or 0,
                               o.client_id, o.symbol] for o in sc.orders.values()}
        positions = {}
        for sym in sorted(sc.instruments):
            p = sc.current_position(sym)
            positions[sym] = (["CREATED", 0, "0", None] if p is None else
                              [_enum_name(p.status), p.qty_lots if p.side == "Long" else -p.qty_lots,
                               str(p.realized_units), str(p.entry_ticks) if p.qty_lots else None])
        symbols = {s.symbol: [s.can_trade, s.is_active, s.list_time_ns, s.exp_time_ns]
                   for s in sc.symbols.values()}
        # AuthOk, the Symbol list and the Snapshot come before the burst.
        return {"url": sim.url, "total": sim.burst_frames, "before": 3,
                "expected": {"orders": orders, "positions": positions, "energy": sc.energy_units,
                             "symbols": symbols}}

    def frames() -> Frames:
        # What the simulator sends: AuthOk, the Symbol list, the Snapshot, then the burst
        # (rebuilt from a copy of the scenario exactly as burst mode does).
        from feeds.sim.botplatform import burst_messages, symbol_frame
        before = [json.dumps({"event": "Auth", "data": {"type": "AuthOk", "user_id": sim.user_id}}).encode(),
                  symbol_frame(sim.scenario.symbol_list_data()).encode(),
                  sim.user_frame(sim.scenario.snapshot_data(), sim.seq).encode()]
        return before, burst_messages(copy.deepcopy(sim.scenario), sim.burst_count, sim.seq)
    return sim, info, frames


def _serve(venue: str, n_frames: int) -> None:
    """Run ``venue``'s burst simulator until stdin closes; print its description (one
    JSON line) first."""
    import uvloop

    async def main() -> None:
        sim, info, _ = VENUES[venue].sim(n_frames)
        async with sim:
            print(json.dumps(info()), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    uvloop.run(main())


# ================================================================ engine (own process)

class _Progress:
    """Counts hot messages in the no-op callbacks; notes the first and last time.

    ``skip`` callbacks that precede the burst are not counted. With ``counters`` and
    ``frames`` set (venues whose frames do not map 1:1 to callbacks), the burst is over
    when the feed has received ``frames`` frames, checked in every callback."""

    def __init__(self, total: int, skip: int = 0) -> None:
        self.total = total
        self.skip = skip
        self.count = 0
        self.t0 = 0
        self.t1 = 0
        self.counters: Any = None
        self.frames = 0
        self.done = asyncio.Event()
        self.trades = 0
        self.last_trade: Any = None

    def hit(self, _obj: object = None) -> None:
        if self.skip:
            self.skip -= 1
            return
        c = self.count + 1
        self.count = c
        if c == 1:
            self.t0 = time.perf_counter_ns()
        if c == self.total:
            self.t1 = time.perf_counter_ns()
            self.done.set()

    def hit_trade(self, trade: object) -> None:
        """A trade that is one of the burst's hot messages (kept for the state check)."""
        self.trades += 1
        self.last_trade = trade
        self.hit()

    def note_trade(self, trade: object) -> None:
        """A trade carried inside another hot message (kept for the state check)."""
        self.trades += 1
        self.last_trade = trade

    def trade_state(self) -> Json:
        t = self.last_trade
        return {"trades": self.trades,
                "last_trade": [t.trade_id, t.price_ticks, t.qty_lots] if t is not None else None}

    def hit_frames(self, _obj: object = None) -> None:
        got = self.counters.frames
        if got <= self.skip:
            return
        if not self.t0:
            self.t0 = time.perf_counter_ns()
        if got >= self.frames and not self.t1:
            self.t1 = time.perf_counter_ns()
            self.count = self.total
            self.done.set()


# Each returns the feed and a function giving the final state (the ``expected`` form).
EngineSetup = Callable[["Engine", Json, _Progress], tuple["Feed", Callable[[], Json]]]


def _engine_cadenza(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    eng.on_book(prog.hit)
    feed = eng.connect("cadenza", url=info["url"], token=TOKEN, instruments=[SYMBOL],
                       latency_capacity=info["total"] + 16)
    return feed, lambda: _book_state(eng.book(SYMBOL))


def _engine_binance(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    eng.add_instrument(_binance_instrument())
    eng.on_book(prog.hit)
    eng.on_trade(prog.hit_trade)
    feed = eng.connect("binance", url=info["url"], rest_url=info["rest_url"], instruments=[BINANCE_SYMBOL],
                       latency_capacity=info["total"] + 16)

    def on_status(ev: Any) -> None:
        if ev.status == "subscribed":   # every book synced from its REST snapshot
            feed.send_text(_subscribe_binance())

    eng.on_status(on_status)
    # The snapshot's own book callback comes first; stale diffs fire nothing.
    prog.skip = 1
    prog.total = info["expected"]["trades"] + info["depth_frames"] - info["stale_diffs"]

    return feed, lambda: {**_book_state(eng.book(BINANCE_SYMBOL)), **prog.trade_state()}


def _engine_stream(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    eng.on_book(prog.hit)
    eng.on_trade(prog.note_trade)
    feed = eng.connect("stream", url=info["url"], instruments=[SYMBOL], kline_intervals=(),
                       latency_capacity=2 * info["total"] + 16)

    return feed, lambda: {**_book_state(eng.book(SYMBOL)), **prog.trade_state()}


def _engine_prices(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    from feeds.sim.prices import prices_instruments
    eng.add_instrument(next(i for i in prices_instruments() if i.symbol == PRICES_MARKET))
    eng.on_book(prog.hit)
    feed = eng.connect("prices", url=info["url"], instruments=[PRICES_MARKET], markets=[PRICES_MARKET],
                       latency_capacity=info["total"] + 16)
    return feed, lambda: _book_state(eng.book(PRICES_MARKET))


def _engine_realtime(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    eng.on_trade(prog.hit_trade)
    # Market data only, like the other two clients (no chat room, no notifications).
    feed = eng.connect("realtime", url=info["url"], token=JWT, instruments=[SYMBOL], rooms=(),
                       notifications=False, latency_capacity=info["total"] + 16)
    venue: Any = feed.venue
    venue.on_quote(prog.hit)

    def state() -> Json:
        q = venue.quotes[SYMBOL]
        return {"quote": [q.last_price_ticks, q.change_ticks, q.change_pct_units, q.ts_ns], **prog.trade_state()}
    return feed, state


def _engine_botplatform(eng: Engine, info: Json, prog: _Progress) -> tuple[Feed, Callable[[], Json]]:
    from engine.account import OrderStatus, OrderType, PositionStatus
    from feeds.sim.botplatform import BotScenario
    for inst in BotScenario(seed=SEED).instruments.values():
        eng.add_instrument(inst)
    for register in (eng.on_order, eng.on_position, eng.on_balance):
        register(prog.hit_frames)
    feed = eng.connect("botplatform", url=info["url"], token=TOKEN, account_id="A-1",
                       latency_capacity=4 * info["total"] + 16)
    venue: Any = feed.venue
    venue.on_energy(prog.hit_frames)
    venue.on_notification(prog.hit_frames)
    venue.symbols.on_change(prog.hit_frames)
    prog.counters = feed.counters
    prog.skip = info["before"]
    prog.frames = info["before"] + info["total"]
    acct = eng.account("A-1")

    def state() -> Json:
        orders = {}
        for oid in acct.order_ids_by_slot():
            m = acct.order(oid)
            orders[oid] = [OrderStatus(m.status).name, OrderType(m.order_type).name, int(m.side), m.qty_lots,
                           m.filled_lots, m.price_ticks, m.stop_price_ticks, m.client_id, m.symbol]
        positions = {}
        for sym in sorted(info["expected"]["positions"]):
            mp = acct.position(sym)
            entry = mp.avg_entry_price
            positions[sym] = [PositionStatus(mp.status).name, mp.qty_lots, str(mp.realized_pnl),
                              None if entry is None else str(entry)]
        symbols = {s: [i.can_trade, i.is_active, i.list_time_ns, i.exp_time_ns]
                   for s, i in venue.symbols.snapshot().items()}
        return {"orders": orders, "positions": positions, "energy": acct.balance("NFT_ENERGY").total,
                "symbols": symbols}
    return feed, state


def _add_default_instrument(eng: Engine, venue: str) -> None:
    """BTC-USDT of the synthetic market, for the venues whose simulators use it."""
    if venue in ("cadenza", "stream", "realtime"):
        from feeds.sim.market import default_instruments
        eng.add_instrument(next(i for i in default_instruments() if i.symbol == SYMBOL))


def bench_engine(venue: str, info: Json) -> Json:
    """The engine end to end on ``venue``'s burst: rate, latency, final state."""
    import uvloop

    from engine import Engine

    async def main() -> Json:
        eng = Engine(bar_intervals=())
        _add_default_instrument(eng, venue)
        prog = _Progress(info["total"])
        feed, state = VENUES[venue].engine(eng, info, prog)
        await eng.start()
        try:
            await asyncio.wait_for(prog.done.wait(), WAIT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{venue}: engine saw {prog.count} of {prog.total} hot messages "
                               f"(feed {feed.status.value}: {feed.status_reason}; {feed.counters.as_dict()})") from None
        lat = feed.counters.latency.percentiles((50.0, 99.0))
        result = {"count": prog.count, "seconds": (prog.t1 - prog.t0) / 1e9,
                  "p50_ns": lat.get("p50", 0), "p99_ns": lat.get("p99", 0),
                  # Checked here: the state can be large (every order of the account).
                  "problems": _state_problems(info, state(), feed.counters)}
        await eng.close()
        return result

    return uvloop.run(main())


# ================================================================ raw picows (own process)

@dataclass(frozen=True)
class RawPlan:
    """What the raw picows client does: the URL path/query it opens, the texts it sends
    once connected, the texts it answers to server frames (prefix -> reply; a prefix
    ending in ``$`` must match the whole frame), the prefixes of the hot frames it
    counts, and how many matching frames precede the burst."""
    path: str = ""
    hello: tuple[str, ...] = ()
    replies: tuple[tuple[bytes, str], ...] = ()
    hot: tuple[bytes, ...] = ()
    skip: int = 0


def _raw_plan(venue: str, info: Json) -> RawPlan:
    if venue == "cadenza":
        return RawPlan(hello=(json.dumps({"id": 1, "connect": {"token": TOKEN, "name": "raw"}}),
                              json.dumps({"id": 2, "subscribe": {"channel": f"market:orderBook:{SYMBOL}"}})),
                       hot=(b'{"push":',))
    if venue == "binance":
        return RawPlan(path="?streams=" + "/".join(BINANCE_STREAMS), hello=(_subscribe_binance(),),
                       hot=(b'{"stream":',))
    if venue == "stream":
        return RawPlan(path="?EIO=4&transport=websocket",
                       replies=((b"0{", "40"), (b"40", f'421["orderbook",{{"symbol":"{SYMBOL}"}}]'),
                                (b"2$", "3")),
                       hot=(b'42["orderbook"',))
    if venue == "prices":
        return RawPlan(hello=(json.dumps({"type": "PRICE_SUBSCRIPTION", "markets": [PRICES_MARKET]}),),
                       hot=(b'{"type":"PRICES"',))
    if venue == "realtime":
        return RawPlan(hello=(json.dumps({"type": "auth", "token": JWT}),
                              json.dumps({"type": "subscribe", "channel": "market", "symbols": [SYMBOL]})),
                       hot=(b'{"type":"trade:created"', b'{"type":"market:price"'))
    if venue == "botplatform":
        return RawPlan(hello=(json.dumps({"event": "Auth", "data": {"token": TOKEN}}),
                              json.dumps({"event": "Subscribe", "data": {"topics": ["User", "Symbol"]}})),
                       hot=(b'{"event":"User"', b'{"event":"Symbol"'), skip=2)   # Symbol list, Snapshot
    raise KeyError(venue)


def bench_picows_raw(venue: str, info: Json) -> Json:
    """A picows client that does ``venue``'s handshake and only counts the hot frames."""
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    plan = _raw_plan(venue, info)
    total = info["total"]
    perf = time.perf_counter_ns
    hot = plan.hot
    replies = [(p[:-1], True, r) if p.endswith(b"$") else (p, False, r) for p, r in plan.replies]

    class Counter(WSListener):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.skip = plan.skip
            self.t0 = 0
            self.t1 = 0
            self.done = asyncio.Event()

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            head = frame.get_payload_as_memoryview()[:24]
            for prefix in hot:
                if head[:len(prefix)] == prefix:
                    break
            else:
                if replies:
                    data = frame.get_payload_as_bytes()
                    for prefix, whole, reply in replies:
                        if data == prefix if whole else data.startswith(prefix):
                            transport.send(WSMsgType.TEXT, reply.encode())
                            break
                return
            if self.skip:
                self.skip -= 1
                return
            self.count += 1
            if self.count == 1:
                self.t0 = perf()
            elif self.count == total:
                self.t1 = perf()
                self.done.set()

    async def main() -> Json:
        # Same read buffer as the engine's session default: equal socket reads for both.
        transport, listener = await ws_connect(Counter, info["url"] + plan.path, max_frame_size=16 << 20,
                                               read_buffer_init_size=256 * 1024)
        assert isinstance(listener, Counter)
        for text in plan.hello:
            transport.send(WSMsgType.TEXT, text.encode())
        await asyncio.wait_for(listener.done.wait(), WAIT_S)
        transport.disconnect()
        return {"count": listener.count, "seconds": (listener.t1 - listener.t0) / 1e9}

    return uvloop.run(main())


# ================================================================ websockets + json (own process)

class _PyBook:
    """Two SortedDicts keyed by float price (the usual shortcut), values as received."""

    def __init__(self) -> None:
        from sortedcontainers import SortedDict
        self.bids: Any = SortedDict()
        self.asks: Any = SortedDict()

    def replace(self, bids: list[tuple[float, Any]], asks: list[tuple[float, Any]]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.bids.update(bids)
        self.asks.update(asks)

    def apply(self, side: Any, levels: list[list[str]]) -> None:
        for price, qty in levels:
            p = float(price)
            if float(qty) == 0.0:
                side.pop(p, None)
            else:
                side[p] = qty


class _Pipeline:
    """One venue's websockets + json client: ``path`` and ``hello`` open the session,
    ``handle(text)`` applies one message and returns (hot messages, reply or None)."""

    path = ""

    def __init__(self, info: Json) -> None:
        self.info = info
        self.book = _PyBook()
        self.callbacks: list[Callable[[Any], None]] = [lambda obj: None]
        self.hello: list[str] = []
        self.trades = 0

    def emit(self, obj: Any) -> None:
        for cb in self.callbacks:
            cb(obj)

    def trade(self, obj: Any) -> None:
        self.trades += 1
        self.emit(obj)

    def summary(self) -> Json:
        """A small digest of the final state, checked against the simulator's result
        so the peer is known to have done the whole job: level counts and best prices
        (in ticks of ``info["tick"]``), trade count, and the venue's own extras."""
        out: Json = {"trades": self.trades}
        tick = self.info.get("tick")
        if tick is not None:
            out.update(bids=len(self.book.bids), asks=len(self.book.asks),
                       best_bid=round(self.book.bids.peekitem(-1)[0] / tick) if self.book.bids else None,
                       best_ask=round(self.book.asks.peekitem(0)[0] / tick) if self.book.asks else None)
        return out

    async def prepare(self) -> None:
        """Work before the handshake (REST snapshots)."""

    def handle(self, text: str) -> tuple[int, str | None]:
        raise NotImplementedError


class _CadenzaPipeline(_Pipeline):
    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.hello = [json.dumps({"id": 1, "connect": {"token": TOKEN, "name": "ws"}}),
                      json.dumps({"id": 2, "subscribe": {"channel": f"market:orderBook:{SYMBOL}"}})]

    def handle(self, text: str) -> tuple[int, str | None]:
        n = 0
        for line in text.split("\n"):   # Centrifugo may batch replies, one per line
            push = json.loads(line).get("push")
            if push is None:
                continue
            data = push["pub"]["data"]
            if data["type"] == "snapshot":
                self.book.replace([], [])
            self.book.apply(self.book.bids, data["bids"])
            self.book.apply(self.book.asks, data["asks"])
            self.emit(self.book)
            n += 1
        return n, None


class _BinancePipeline(_Pipeline):
    """REST snapshot first (urllib, before the timed part), then the diffs with
    Binance's spot rules (drop ``u <= lastUpdateId``, bridge, ``U == prev u + 1``)."""

    path = "?streams=" + "/".join(BINANCE_STREAMS)

    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.hello = [_subscribe_binance()]
        self.last_u = 0
        self.bridged = False

    async def prepare(self) -> None:
        from urllib.request import urlopen
        url = f"{self.info['rest_url']}/api/v3/depth?symbol={BINANCE_SYMBOL}&limit=5000"
        self.load_snapshot(await asyncio.get_running_loop().run_in_executor(None, lambda: urlopen(url).read()))

    def load_snapshot(self, body: bytes) -> None:
        snap = json.loads(body)
        self.book.replace([(float(p), q) for p, q in snap["bids"]], [(float(p), q) for p, q in snap["asks"]])
        self.last_u = snap["lastUpdateId"]

    def handle(self, text: str) -> tuple[int, str | None]:
        msg = json.loads(text)
        data = msg.get("data")
        if data is None:
            return 0, None          # {"result":null,"id":1}
        if data["e"] == "trade":
            self.trade((data["t"], float(data["p"]), float(data["q"]), data["m"], data["T"]))
            return 1, None
        first, last = data["U"], data["u"]
        if last <= self.last_u:
            return 1, None          # older than the book: dropped
        if (first > self.last_u + 1) if not self.bridged else (first != self.last_u + 1):
            raise RuntimeError(f"binance gap: U={first} after u={self.last_u}")
        self.bridged = True
        self.last_u = last
        self.book.apply(self.book.bids, data["b"])
        self.book.apply(self.book.asks, data["a"])
        self.emit(self.book)
        return 1, None


class _StreamPipeline(_Pipeline):
    """Engine.IO open -> ``40`` -> subscribe; each orderbook event replaces the book and
    its new trades (id above the last applied) reach the callback."""

    path = "?EIO=4&transport=websocket"

    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.last_trade_id = -1

    def handle(self, text: str) -> tuple[int, str | None]:
        if text.startswith("42"):
            name, data = json.loads(text[2:])
            if name != "orderbook":
                return 0, None
            self.book.replace([(float(x["ticks"]), x["lots"]) for x in data["bids"]],
                              [(float(x["ticks"]), x["lots"]) for x in data["asks"]])
            for t in sorted(data["trades"], key=lambda t: t["id"]):
                if t["id"] > self.last_trade_id:
                    self.last_trade_id = t["id"]
                    self.trade(t)
            self.emit(self.book)
            return 1, None
        if text.startswith("0{"):
            return 0, "40"
        if text.startswith("40"):
            return 0, f'421["orderbook",{{"symbol":"{SYMBOL}"}}]'
        if text == "2":
            return 0, "3"
        return 0, None


class _PricesPipeline(_Pipeline):
    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.hello = [json.dumps({"type": "PRICE_SUBSCRIPTION", "markets": [PRICES_MARKET]})]

    def handle(self, text: str) -> tuple[int, str | None]:
        msg = json.loads(text)
        if msg["type"] != "PRICES":
            return 0, None
        for market, entry in msg["prices"].items():
            if market != PRICES_MARKET or not (entry["bids"] or entry["asks"]):
                continue    # another market, or the keep-alive
            self.book.replace([(float(x["price"]), x["quantity"]) for x in entry["bids"]],
                              [(float(x["price"]), x["quantity"]) for x in entry["asks"]])
            self.emit(self.book)
        return 1, None


class _RealtimePipeline(_Pipeline):
    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.hello = [json.dumps({"type": "auth", "token": JWT}),
                      json.dumps({"type": "subscribe", "channel": "market", "symbols": [SYMBOL]})]
        self.quotes: dict[str, dict[str, Any]] = {}

    def handle(self, text: str) -> tuple[int, str | None]:
        msg = json.loads(text)
        kind = msg["type"]
        if kind == "trade:created":
            self.trade((msg["symbol"], msg["id"], float(msg["price"]), float(msg["qty"]), msg["side"], msg["ts"]))
            return 1, None
        if kind == "market:price":
            q = self.quotes.setdefault(msg["symbol"], {})
            q.update(price=float(msg["price"]), change=float(msg["change"]),
                     pct=float(msg["changePercent"]), ts=msg["ts"])
            self.emit(q)
            return 1, None
        return 0, None

    def summary(self) -> Json:
        q = self.quotes.get(SYMBOL)
        return {**super().summary(), "price": round(q["price"] / self.info["tick"]) if q else None}


class _BotPlatformPipeline(_Pipeline):
    """Auth + Subscribe; User messages with the seq rule into dicts of positions and
    orders (state fields as received), energy, notifications; Symbol into a registry."""

    def __init__(self, info: Json) -> None:
        super().__init__(info)
        self.hello = [json.dumps({"event": "Auth", "data": {"token": TOKEN}}),
                      json.dumps({"event": "Subscribe", "data": {"topics": ["User", "Symbol"]}})]
        self.skip = 2                 # the Symbol list and the Snapshot (AuthOk is not counted)
        self.seq = -1
        self.positions: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.symbols: dict[str, dict[str, Any]] = {}
        self.energy = 0

    def summary(self) -> Json:
        return {"orders": len(self.orders), "energy": self.energy}

    def _order(self, o: dict[str, Any]) -> None:
        self.orders[o["id"]] = {"status": o["status"], "qty": float(o["qty"]), "filled": float(o["filled_qty"]),
                                "price": None if o["price"] is None else float(o["price"]), "symbol": o["symbol"]}
        self.emit(self.orders[o["id"]])

    def _position(self, p: dict[str, Any]) -> None:
        self.positions[p["id"]] = {"status": p["status"], "qty": float(p["qty"]), "symbol": p["symbol"],
                                   "entry": None if p["entry_price"] is None else float(p["entry_price"])}
        self.emit(self.positions[p["id"]])

    def handle(self, text: str) -> tuple[int, str | None]:
        msg = json.loads(text)
        event = msg["event"]
        data = msg.get("data") or {}
        kind = data.get("type")
        if event == "User":
            seq = msg["seq"]
            if kind == "Snapshot":
                self.seq = seq
                for p in data["positions"]:
                    self._position(p)
                for o in data["orders"]:
                    self._order(o)
            elif seq == self.seq + 1:
                self.seq = seq
                if kind in ("PositionCreate", "PositionUpdate"):
                    self._position(data)
                elif kind in ("PositionOrderCreate", "PositionOrderUpdate"):
                    self._order(data)
                elif kind == "NftEnergyUpdate":
                    self.energy = data["energy"]
                    self.emit(self.energy)
                elif kind == "Notification":
                    self.emit(data)
            elif seq > self.seq + 1:
                raise RuntimeError(f"botplatform gap: seq {seq} after {self.seq}")
        elif event == "Symbol":
            for s in data["symbols"] if kind == "Symbol" else [data]:
                self.symbols[s["symbol"]] = s
                self.emit(s)
        else:
            return 0, None
        if self.skip:
            self.skip -= 1          # the Symbol list and the Snapshot precede the burst
            return 0, None
        return 1, None


def bench_websockets_json(venue: str, info: Json) -> Json:
    """websockets + json (+ sortedcontainers): the common pure-Python pipeline."""
    import uvloop
    import websockets

    total = info["total"]
    perf = time.perf_counter_ns
    now = time.time_ns

    async def main() -> Json:
        pipe = PIPELINES[venue](info)
        await pipe.prepare()
        lat: list[int] = []
        marks = [0, 0, 0]   # count, t0, t1

        async def consume(ws: Any) -> None:
            count = t0 = 0
            while count < total:
                msg = await ws.recv()
                recv_ns = now()
                n, reply = pipe.handle(msg if isinstance(msg, str) else msg.decode())
                if reply is not None:
                    await ws.send(reply)
                if n:
                    lat.append(now() - recv_ns)
                    count += n
                    if t0 == 0:
                        t0 = perf()
            marks[:] = [count, t0, perf()]

        async with websockets.connect(info["url"] + pipe.path, max_size=16 << 20, compression=None) as ws:
            for text in pipe.hello:
                await ws.send(text)
            try:
                await asyncio.wait_for(consume(ws), WAIT_S)
            except asyncio.TimeoutError:
                raise RuntimeError(f"{venue}: websockets-json did not get {total} hot messages "
                                   f"in {WAIT_S:g} s") from None
        lat.sort()
        return {"count": marks[0], "seconds": (marks[2] - marks[1]) / 1e9,
                "p50_ns": lat[len(lat) // 2], "p99_ns": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "summary": pipe.summary()}

    return uvloop.run(main())


PIPELINES: dict[str, Callable[[Json], _Pipeline]] = {
    "cadenza": _CadenzaPipeline,
    "binance": _BinancePipeline,
    "stream": _StreamPipeline,
    "prices": _PricesPipeline,
    "realtime": _RealtimePipeline,
    "botplatform": _BotPlatformPipeline,
}


# ================================================================ the venue registry

@dataclass(frozen=True)
class VenueBench:
    """One venue in the benchmark: its hot message (for the case name), burst sizes
    (full / ``--quick``; messages of the burst as the simulator counts them), the
    simulator builder and the engine setup. The raw and websockets clients are
    ``_raw_plan`` and ``PIPELINES``, keyed by the same name."""
    message: str
    frames: int
    quick_frames: int
    sim: Callable[[int], SimBuild]
    engine: EngineSetup


VENUES: dict[str, VenueBench] = {
    "cadenza": VenueBench("orderBook deltas", 100_000, 20_000, _sim_cadenza, _engine_cadenza),
    "binance": VenueBench("recorded depth+trade frames", 0, 0, _sim_binance, _engine_binance),
    "stream": VenueBench("orderbook events", 30_000, 5_000, _sim_stream, _engine_stream),
    "prices": VenueBench("PRICES books", 50_000, 10_000, _sim_prices, _engine_prices),
    "realtime": VenueBench("trade:created/market:price messages", 50_000, 10_000, _sim_realtime, _engine_realtime),
    "botplatform": VenueBench("User/Symbol messages", 50_000, 10_000, _sim_botplatform, _engine_botplatform),
}

IMPLS = {
    "engine": "bench_engine",
    "picows-raw": "bench_picows_raw",
    "websockets-json": "bench_websockets_json",
}


# ================================================================ in-process (no socket)

def bench_inprocess(venue: str, n_frames: int, impl: str, repeats: int) -> Json:
    """The burst's hot messages fed straight to a client with no socket in the way: the
    decode/apply/callback cost alone. ``engine``: the venue's decoder as the session
    calls it (``frame_sink.feed`` in C, or the adapter's ``on_frame``), on a fresh
    engine per repeat, its final state checked; ``json-python``: the same venue's
    websockets-json pipeline minus the socket. Median ns per hot message."""
    import uvloop

    async def build() -> tuple[Json, Frames]:
        sim, describe, frames = VENUES[venue].sim(n_frames)
        async with sim:
            return describe(), frames()

    info, (before, burst) = uvloop.run(build())
    samples = []
    for _ in range(repeats):
        if impl == "engine":
            samples.append(_inprocess_engine(venue, info, before, burst))
        else:
            pipe = PIPELINES[venue](info)
            if isinstance(pipe, _BinancePipeline):
                pipe.load_snapshot(before[0])
            else:
                for p in before:
                    pipe.handle(p.decode())
            handle = pipe.handle
            with _gc_off():
                t0 = time.perf_counter_ns()
                for p in burst:
                    handle(p.decode())
                samples.append((time.perf_counter_ns() - t0) / len(burst))
    return {"ns": statistics.median(samples), "runs_ns": samples, "total": len(burst)}


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    """GC collected then off while timing, as ``harness.time_ns_per_op`` does: this
    process also holds the simulator's objects, whose collection is not the client's."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _inprocess_engine(venue: str, info: Json, before: list[bytes], burst: list[bytes]) -> float:
    from engine import Engine
    from feeds._hotpath import time_ns

    async def main() -> float:
        eng = Engine(bar_intervals=())
        _add_default_instrument(eng, venue)
        prog = _Progress(info["total"])
        feed, state = VENUES[venue].engine(eng, info, prog)   # never started: no socket
        v: Any = feed.venue
        if venue == "cadenza":
            for ch in v.channels:   # as after the subscribe replies
                ch.live = True
        if venue == "binance":
            v.syncs[BINANCE_SYMBOL].feed(before[0])
        sink = v.frame_sink
        feed_one: Callable[[Any, int], None] = sink.feed if sink is not None else \
            (lambda p, ns: v.on_frame(memoryview(p), ns))
        if venue != "binance":
            for p in before:
                feed_one(p, time_ns())
        with _gc_off():
            t0 = time.perf_counter_ns()
            for p in burst:
                feed_one(p, 0)
            ns = (time.perf_counter_ns() - t0) / len(burst)
        _check_engine(venue, _state_problems(info, state(), feed.counters))
        return ns

    return asyncio.run(main())


# ================================================================ driver

def _start_sim(venue: str, n: int) -> tuple[subprocess.Popen[str], Json]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", f"from benchmarks.feed import _serve; _serve({venue!r}, {n})"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        info: Json = json.loads(line)
    except ValueError:
        _stop_sim(proc)
        raise RuntimeError(f"{venue} burst simulator did not start (got {line!r})") from None
    return proc, info


def _stop_sim(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _state_problems(info: Json, state: Json, counters: Any) -> list[str]:
    """How the engine's final state differs from the simulator's burst result (JSON
    round-tripped, as the simulator's was), plus any decode error, gap or callback
    error. Empty when it is exactly the same."""
    problems = [f"{k}={getattr(counters, k)}" for k in ("decode_errors", "gaps", "callback_errors")
                if getattr(counters, k)]
    want, got = info["expected"], json.loads(json.dumps(state))
    for key in want:
        if got.get(key) != want[key]:
            problems.append(f"{key} differs" + (f" (got {got.get(key)!r}, want {want[key]!r})"
                                                if len(repr(want[key])) < 200 else ""))
    return problems


def _peer_problems(info: Json, summary: Json) -> list[str]:
    """How a websockets-json peer's digest (``_Pipeline.summary``) differs from the
    simulator's burst result."""
    want = info["expected"]
    checks: Json = {}
    if "bids" in want:
        checks.update(bids=len(want["bids"]), asks=len(want["asks"]),
                      best_bid=want["bids"][0][0] if want["bids"] else None,
                      best_ask=want["asks"][0][0] if want["asks"] else None)
    if "trades" in want:
        checks["trades"] = want["trades"]
    if "quote" in want:
        checks["price"] = want["quote"][0]
    if "orders" in want:
        checks.update(orders=len(want["orders"]), energy=want["energy"])
    return [f"{k}: got {summary.get(k)!r}, want {v!r}" for k, v in checks.items() if summary.get(k) != v]


def _check_engine(venue: str, problems: list[str]) -> None:
    if problems:
        raise RuntimeError(f"{venue}: engine state differs from the simulator's burst result: {'; '.join(problems)}")


def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    """Per venue: one burst simulator process, every competitor ``repeats`` times."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks feed")
    parser.add_argument("--venue", action="append", choices=list(VENUES), help="default: every venue")
    parser.add_argument("--impl", action="append", choices=list(IMPLS), help="default: every client")
    parser.add_argument("--frames", type=int, default=None, help="burst size (binance: fixed by the recording)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-inprocess", action="store_true", help="skip the no-socket cases")
    opts = parser.parse_args(rest)
    repeats = opts.repeats or (1 if args.quick else 3)
    impls = opts.impl or list(IMPLS)
    records: list[Record] = []
    summary: list[str] = []
    for venue in opts.venue or list(VENUES):
        spec = VENUES[venue]
        n = opts.frames or (spec.quick_frames if args.quick else spec.frames)
        proc, info = _start_sim(venue, n)
        try:
            samples: dict[str, list[Json]] = {impl: [] for impl in impls}
            for _ in range(repeats):
                for impl in impls:
                    res = run_isolated("benchmarks.feed", IMPLS[impl], {"venue": venue, "info": info})
                    if impl == "engine":
                        _check_engine(venue, res["problems"])
                    elif impl == "websockets-json" and (bad := _peer_problems(info, res["summary"])):
                        raise RuntimeError(f"{venue}: websockets-json ended in another state: {'; '.join(bad)}")
                    samples[impl].append(res)
        finally:
            _stop_sim(proc)
        load = os.getloadavg()[0]
        case = f"{venue}: burst {info['total']} {spec.message}"
        by: dict[str, Record] = {}
        for impl, runs in samples.items():
            rates = [(r["count"] - 1) / r["seconds"] for r in runs]
            rate = statistics.median(rates)
            extra: Json = {"msgs_per_s": round(rate), "messages": info["total"],
                           "runs_msgs_per_s": [round(x) for x in rates], "loadavg": round(load, 2)}
            if "p50_ns" in runs[0]:
                extra["p50_ns"] = statistics.median(r["p50_ns"] for r in runs)
                extra["p99_ns"] = statistics.median(r["p99_ns"] for r in runs)
            by[impl] = Record("feed", case, impl, 1e9 / rate, ops=info["total"], repeats=repeats, extra=extra)
            records.append(by[impl])
        if "engine" in by:
            eng = by["engine"]
            assert eng.extra is not None
            line = [f"{venue}: engine {eng.extra['msgs_per_s']:,}/s"]
            for other in ("picows-raw", "websockets-json"):
                if other in by:
                    line.append(f"{by[other].ns_per_op / eng.ns_per_op:.2f}x {other}")
            line.append(f"p50 {eng.extra['p50_ns'] / 1000:.1f} us, p99 {eng.extra['p99_ns'] / 1000:.1f} us")
            line.append(f"load {load:.2f}")
            summary.append("; ".join(line))
            print(summary[-1], flush=True)
    if not opts.no_inprocess:
        for venue in opts.venue or list(VENUES):
            spec = VENUES[venue]
            n = opts.frames or (spec.quick_frames if args.quick else spec.frames)
            ns_runs: dict[str, list[float]] = {"engine": [], "json-python": []}
            total = 0
            for _ in range(repeats):        # one process per run, interleaved like the socket runs
                for impl, got in ns_runs.items():
                    res = run_isolated("benchmarks.feed", "bench_inprocess",
                                       {"venue": venue, "n_frames": n, "impl": impl, "repeats": 1})
                    got.extend(res["runs_ns"])
                    total = res["total"]
            by_impl = {impl: statistics.median(got) for impl, got in ns_runs.items()}
            for impl, got in ns_runs.items():
                records.append(Record("feed", f"{venue} in-process {total} {spec.message} (no socket)", impl,
                                      by_impl[impl], ops=total, repeats=repeats,
                                      extra={"runs_ns": [round(x, 1) for x in got]}))
            summary.append(f"{venue} in-process: engine {by_impl['engine']:.0f} ns/msg; "
                           f"{by_impl['json-python'] / by_impl['engine']:.2f}x json-python")
    print("\n".join(["engine vs peers (same run, medians):", *summary]))
    return records
