"""Bot platform simulator: the protocol of ``feeds.botplatform`` over loopback.

Serves ``ws://127.0.0.1:<port>/ws`` and sends exactly the messages documented in the
adapter's module docstring, built from a :class:`BotScenario`: a seeded trading bot
whose positions move through Created -> InProgress -> Finishing -> Completed (or
Failed when the entry order expires), each with its entry order and its take-profit
and stop orders (every order type of the platform appears), priced from a
:class:`~feeds.sim.market.SyntheticMarket`; NFT energy spent and recharged;
notifications; symbols whose ``can_trade``/``is_active`` flags change (the bot opens
no position on a symbol it may not trade).

Session, as served:

- The first client message must be ``{"event":"Auth","data":{"token":...}}``: the
  right token gets ``AuthOk`` with the user id; a wrong one (or the ``reject_auth``
  fault) gets ``AuthError`` then CLOSE 4001 "invalid token". Anything else first, a
  frame that is not JSON, or an unknown event -> CLOSE 4400 "bad request".
- ``{"event":"Subscribe","data":{"topics":["User","Symbol"]}}`` after AuthOk: the
  ``Symbol`` list, then the user ``Snapshot`` (``seq`` = the last User seq so far),
  then every live message of the subscribed topics.
- ``{"event":"Heartbeat","ts":...}`` every ``heartbeat_s`` seconds to subscribed
  clients (it queues behind a stall like everything else, so a stalled server goes
  silent).

Faults beyond the base ones (drop, close, malformed, oversize, stall, reject_auth):
:meth:`BotPlatformSim.skip_sequence` (User messages applied and their seq consumed,
never sent), :meth:`BotPlatformSim.inject_user` (send any User data with the next seq,
state unchanged), :meth:`BotPlatformSim.send_invalid_transition` (a Filled order sent
back as New). Burst mode (``burst=N``): see :class:`BotPlatformSim`.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence

from engine._core.instrument import Instrument
from engine._core.positions import units_to_quote
from feeds.sim.market import SyntheticMarket, default_instruments
from feeds.sim.server import SimClient, SimServer, encode_burst

__all__ = ["BotPlatformSim", "BotScenario", "SimOrder", "SimPosition", "SimSymbol", "burst_messages",
           "encode_order", "encode_position", "encode_symbol", "from_cli", "symbol_frame", "user_frame"]

CLOSE_INVALID_TOKEN = 4001
CLOSE_BAD_REQUEST = 4400
ENERGY_START_UNITS = 1_000 * 100_000_000  # 1000 energy
#: Far-future times for symbols listed later / expiring later (independent of any clock).
YEAR_2100_NS = 4_102_444_800 * 1_000_000_000


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SimSymbol:
    """A symbol as the venue lists it (times in ns; None: no limit)."""
    symbol: str
    can_trade: bool
    is_active: bool
    list_time_ns: int | None = None
    exp_time_ns: int | None = None


@dataclass(frozen=True, slots=True)
class SimPosition:
    """A bot position: ``qty_lots`` unsigned (``side`` Long/Short), ``entry_ticks`` the
    entry price (one fill price: always a whole tick), ``realized_units`` quote units
    (tick x lot)."""
    position_id: str
    symbol: str
    side: str
    status: str
    qty_lots: int
    entry_ticks: int | None
    realized_units: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class SimOrder:
    """A position's order (prices in ticks, None when the type has none)."""
    order_id: str
    position_id: str
    client_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    qty_lots: int
    filled_lots: int
    price_ticks: int | None
    stop_ticks: int | None
    ts_ns: int

    @property
    def open(self) -> bool:
        """New or PartiallyFilled."""
        return self.status in ("New", "PartiallyFilled")


def encode_position(inst: Instrument, p: SimPosition, kind: str | None = "PositionUpdate") -> dict[str, Any]:
    """The position object (``type`` first when ``kind`` is given)."""
    out: dict[str, Any] = {"type": kind} if kind else {}
    out.update(id=p.position_id, symbol=p.symbol, side=p.side, status=p.status,
               qty=inst.lots_to_qty(p.qty_lots),
               entry_price=None if p.entry_ticks is None else inst.ticks_to_price(p.entry_ticks),
               realized_pnl=units_to_quote(inst, p.realized_units), ts=p.ts_ns)
    return out


def encode_order(inst: Instrument, o: SimOrder, kind: str | None = "PositionOrderUpdate") -> dict[str, Any]:
    """The order object (``type`` first when ``kind`` is given)."""
    out: dict[str, Any] = {"type": kind} if kind else {}
    out.update(id=o.order_id, position_id=o.position_id, client_id=o.client_id, symbol=o.symbol,
               side=o.side, order_type=o.order_type, status=o.status, qty=inst.lots_to_qty(o.qty_lots),
               filled_qty=inst.lots_to_qty(o.filled_lots),
               price=None if o.price_ticks is None else inst.ticks_to_price(o.price_ticks),
               stop_price=None if o.stop_ticks is None else inst.ticks_to_price(o.stop_ticks), ts=o.ts_ns)
    return out


def encode_symbol(s: SimSymbol) -> dict[str, Any]:
    """The symbol object of Symbol / SymbolUpdate."""
    return {"symbol": s.symbol, "can_trade": s.can_trade, "is_active": s.is_active,
            "list_time": s.list_time_ns, "exp_time": s.exp_time_ns}


@dataclass
class _Bot:
    """Lifecycle of the bot on one symbol: idle -> entering -> open -> exiting -> idle."""
    phase: str = "idle"
    position_id: str = ""
    entry_id: str = ""
    exit_ids: list[str] = field(default_factory=list)
    exit_id: str = ""


class BotScenario:
    """A seeded bot-platform user (deterministic from ``seed``; times from a synthetic
    clock). ``step()`` returns the messages one step produced, as ``(event, data)``
    pairs with ``event`` "User" or "Symbol", after applying them to the state below.

    State (compare a client against it): ``positions`` and ``orders`` (by id, in
    creation order), ``energy_units``, ``symbols``, ``notifications``.
    ``extra_symbols`` are listed but not traded (symbols the engine may not track):
    by default one that expires in 2100 and one listed only from 2100."""

    def __init__(self, instruments: Sequence[Instrument] | None = None, *, seed: int = 1,
                 user_id: str = "U-1", start_ts_ns: int = 1_723_161_600_000_000_000,
                 step_ns: int = 10_000_000, open_rate: float = 0.3, symbol_rate: float = 0.03) -> None:
        insts = list(default_instruments() if instruments is None else instruments)
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in insts}
        self.market = SyntheticMarket(insts, seed=seed, start_ts_ns=start_ts_ns, step_ns=step_ns,
                                      account_rate=0.0)
        self.user_id = user_id
        self.open_rate = open_rate
        self.symbol_rate = symbol_rate
        self._rng = random.Random(seed * 7919 + 1)
        self.positions: dict[str, SimPosition] = {}
        self.orders: dict[str, SimOrder] = {}
        self.energy_units = ENERGY_START_UNITS
        self.notifications: list[dict[str, Any]] = []
        self.symbols: dict[str, SimSymbol] = {
            sym: SimSymbol(sym, True, True, start_ts_ns - 86_400 * 10**9 * 365, None) for sym in self.instruments}
        self.symbols["SOL-USDT"] = SimSymbol("SOL-USDT", True, True, None, YEAR_2100_NS)
        self.symbols["XRP-USDT"] = SimSymbol("XRP-USDT", True, True, YEAR_2100_NS, None)
        self._bots = {sym: _Bot() for sym in self.instruments}
        self._next_position = 1
        self._next_order = 1
        self._next_note = 1
        self.steps = 0

    @property
    def ts_ns(self) -> int:
        """The scenario clock (ns)."""
        return self.market.ts_ns

    def current_position(self, symbol: str) -> SimPosition | None:
        """The latest position opened on ``symbol`` (None before the first)."""
        bot = self._bots.get(symbol)
        return self.positions.get(bot.position_id) if bot and bot.position_id else None

    # -- snapshot --------------------------------------------------------------------------
    def snapshot_data(self) -> dict[str, Any]:
        """The ``Snapshot`` data: every position and order in creation order, energy."""
        return {"type": "Snapshot",
                "positions": [encode_position(self.instruments[p.symbol], p, None) for p in self.positions.values()],
                "orders": [encode_order(self.instruments[o.symbol], o, None) for o in self.orders.values()],
                "energy": self.energy_units, "ts": self.ts_ns}

    def symbol_list_data(self) -> dict[str, Any]:
        """The ``Symbol`` data: the whole list."""
        return {"type": "Symbol", "symbols": [encode_symbol(s) for s in self.symbols.values()]}

    # -- stepping --------------------------------------------------------------------------
    def step(self) -> list[tuple[str, dict[str, Any]]]:
        """Advance one step; returns the messages it produced (already applied)."""
        self.steps += 1
        self.market.step()
        out: list[tuple[str, dict[str, Any]]] = []
        rng = self._rng
        if rng.random() < self.symbol_rate:
            self._toggle_symbol(out)
        for sym, bot in self._bots.items():
            if rng.random() < 0.5:
                getattr(self, f"_{bot.phase}")(sym, bot, out)
        if rng.random() < 0.02:
            self._energy(rng.randint(1, 50) * 100_000_000 + rng.randint(0, 99_999_999), out)
        return out

    def _touch(self, sym: str, side: str) -> int:
        bids, asks = self.market.book(sym)
        return (asks[0][0] if side in ("Buy", "Long") else bids[0][0])

    def _pos(self, p: SimPosition, out: list[tuple[str, dict[str, Any]]], create: bool = False, **kw: Any) -> SimPosition:
        p = replace(p, ts_ns=self.ts_ns, **kw)
        self.positions[p.position_id] = p
        out.append(("User", encode_position(self.instruments[p.symbol], p,
                                            "PositionCreate" if create else "PositionUpdate")))
        return p

    def _order(self, o: SimOrder, out: list[tuple[str, dict[str, Any]]], create: bool = False, **kw: Any) -> SimOrder:
        o = replace(o, ts_ns=self.ts_ns, **kw)
        self.orders[o.order_id] = o
        out.append(("User", encode_order(self.instruments[o.symbol], o,
                                         "PositionOrderCreate" if create else "PositionOrderUpdate")))
        return o

    def _new_order(self, bot: _Bot, sym: str, side: str, order_type: str, qty: int, price: int | None,
                   stop: int | None, out: list[tuple[str, dict[str, Any]]]) -> SimOrder:
        oid = f"O-{self._next_order}"
        self._next_order += 1
        o = SimOrder(oid, bot.position_id, f"c-{oid[2:]}", sym, side, order_type, "New", qty, 0, price, stop, 0)
        return self._order(o, out, create=True)

    def _idle(self, sym: str, bot: _Bot, out: list[tuple[str, dict[str, Any]]]) -> None:
        s = self.symbols[sym]
        if not (s.can_trade and s.is_active) or self._rng.random() >= self.open_rate:
            return
        rng = self._rng
        pid = f"P-{self._next_position}"
        self._next_position += 1
        side = rng.choice(("Long", "Short"))
        bot.position_id, bot.phase, bot.exit_ids, bot.exit_id = pid, "entering", [], ""
        self._pos(SimPosition(pid, sym, side, "Created", 0, None, 0, 0), out, create=True)
        buy = "Buy" if side == "Long" else "Sell"
        qty = rng.randint(1, 40) * rng.choice((1, 10, 100))
        if rng.random() < 0.3:
            o = self._new_order(bot, sym, buy, "Market", qty, None, None, out)
        else:
            px = self._touch(sym, "Sell" if buy == "Buy" else "Buy")  # join our side's touch
            o = self._new_order(bot, sym, buy, "Limit", qty, px, None, out)
        bot.entry_id = o.order_id

    def _entering(self, sym: str, bot: _Bot, out: list[tuple[str, dict[str, Any]]]) -> None:
        rng = self._rng
        o = self.orders[bot.entry_id]
        p = self.positions[bot.position_id]
        if o.order_type == "Limit" and o.filled_lots == 0 and rng.random() < 0.2:
            self._order(o, out, status=rng.choice(("Expired", "Expired", "Canceled")))
            self._pos(p, out, status="Failed")
            self._finish(bot, out, f"position {p.position_id} failed: entry not filled")
            return
        price = o.price_ticks if o.price_ticks is not None else self._touch(sym, o.side)
        remaining = o.qty_lots - o.filled_lots
        lots = remaining if o.order_type == "Market" or rng.random() < 0.5 else rng.randint(1, remaining)
        filled = o.filled_lots + lots
        o = self._order(o, out, status="Filled" if filled == o.qty_lots else "PartiallyFilled",
                        filled_lots=filled)
        self._pos(p, out, status="InProgress", qty_lots=filled, entry_ticks=price)
        if o.status != "Filled":
            return
        exit_side = "Sell" if o.side == "Buy" else "Buy"
        sign = 1 if o.side == "Buy" else -1
        gap = rng.randint(3, 30)
        if rng.random() < 0.5:
            tp = self._new_order(bot, sym, exit_side, "TakeProfit", filled, price + sign * gap,
                                 price + sign * (gap - 1), out)
        else:
            tp = self._new_order(bot, sym, exit_side, "TakeProfitMarket", filled, None, price + sign * gap, out)
        kind = rng.choice(("StopMarket", "Stop", "TrailingStopMarket"))
        stop_px = price - sign * gap
        sl = self._new_order(bot, sym, exit_side, kind, filled,
                             stop_px - sign if kind == "Stop" else None, stop_px, out)
        bot.exit_ids = [tp.order_id, sl.order_id]
        bot.phase = "open"

    def _open(self, sym: str, bot: _Bot, out: list[tuple[str, dict[str, Any]]]) -> None:
        if self._rng.random() < 0.4:
            return
        bot.exit_id = self._rng.choice(bot.exit_ids)
        self._pos(self.positions[bot.position_id], out, status="Finishing")
        bot.phase = "exiting"

    def _exiting(self, sym: str, bot: _Bot, out: list[tuple[str, dict[str, Any]]]) -> None:
        rng = self._rng
        o = self.orders[bot.exit_id]
        p = self.positions[bot.position_id]
        assert p.entry_ticks is not None
        price = o.price_ticks if o.price_ticks is not None else o.stop_ticks
        assert price is not None
        remaining = o.qty_lots - o.filled_lots
        lots = remaining if rng.random() < 0.6 else rng.randint(1, remaining)
        filled = o.filled_lots + lots
        o = self._order(o, out, status="Filled" if filled == o.qty_lots else "PartiallyFilled", filled_lots=filled)
        pnl = (price - p.entry_ticks) * lots * (1 if p.side == "Long" else -1)
        left = p.qty_lots - lots
        if left:
            self._pos(p, out, qty_lots=left, realized_units=p.realized_units + pnl)
            return
        for other in bot.exit_ids:
            if other != o.order_id and self.orders[other].open:
                self._order(self.orders[other], out, status="Canceled")
        self._pos(p, out, status="Completed", qty_lots=0, entry_ticks=None, realized_units=p.realized_units + pnl)
        self._energy(-rng.randint(1, 20) * 10_000_000, out)
        self._finish(bot, out, f"position {p.position_id} completed")

    def _finish(self, bot: _Bot, out: list[tuple[str, dict[str, Any]]], text: str) -> None:
        bot.phase = "idle"
        if self._rng.random() < 0.5:
            note = {"type": "Notification", "id": f"N-{self._next_note}", "level": "info",
                    "title": "Position", "message": text, "ts": self.ts_ns}
            self._next_note += 1
            self.notifications.append(note)
            out.append(("User", note))

    def _energy(self, delta_units: int, out: list[tuple[str, dict[str, Any]]]) -> None:
        self.energy_units = max(0, self.energy_units + delta_units)
        out.append(("User", {"type": "NftEnergyUpdate", "energy": self.energy_units, "ts": self.ts_ns}))

    def _toggle_symbol(self, out: list[tuple[str, dict[str, Any]]]) -> None:
        rng = self._rng
        s = self.symbols[rng.choice(sorted(self.symbols))]
        if rng.random() < 0.7:
            s = replace(s, can_trade=not s.can_trade)
        else:
            s = replace(s, is_active=not s.is_active)
        self.symbols[s.symbol] = s
        out.append(("Symbol", dict(type="SymbolUpdate", **encode_symbol(s))))


@dataclass
class _Conn:
    authed: bool = False
    subscribed: bool = False


class BotPlatformSim(SimServer):
    """Bot platform venue simulator; see the module docstring.

    Parameters: ``scenario`` (default ``BotScenario(seed=seed, user_id=user_id)``),
    ``token`` (the one accepted token; never logged), ``interval_s`` (seconds between
    scenario steps; None: only :meth:`advance` moves it), ``heartbeat_s``, ``burst``
    (burst mode), plus the :class:`SimServer` parameters.

    Burst mode (``burst=N``): the scenario does not tick. At start the simulator
    encodes, from a copy of the scenario, the messages of as many whole steps as it
    takes to produce at least N of them (User seq from 1; :attr:`burst_frames` is the
    exact count). Every Subscribe gets the Symbol list, the
    initial Snapshot (seq 0) and then those exact frames as fast as the socket takes
    them (identical bytes for every client). :attr:`burst_scenario` holds the state a
    client must end with.
    """

    name: ClassVar[str] = "botplatform"
    path: ClassVar[str] = "/ws"
    malformed_payload: ClassVar[bytes] = (
        b'{"event":"User","user_id":"U-1","seq":1,"data":{"type":"PositionUpdate","id":"P-')

    def __init__(self, scenario: BotScenario | None = None, *, seed: int = 1, token: str = "sim-token",
                 user_id: str = "U-1", interval_s: float | None = 0.02, heartbeat_s: float = 5.0,
                 burst: int = 0, **server_kw: Any) -> None:
        super().__init__(**server_kw)
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s!r}")
        self.scenario = scenario if scenario is not None else BotScenario(seed=seed, user_id=user_id)
        self.user_id = self.scenario.user_id
        self._token = token
        self.interval_s = None if burst else interval_s
        self.heartbeat_s = heartbeat_s
        #: When True the scenario does not step on its own (``advance`` still works).
        self.paused = False
        #: Last User seq used (sent, skipped or injected).
        self.seq = 0
        self._skip = 0
        self.burst_count = burst
        self._burst = encode_burst([])
        self.burst_scenario: BotScenario | None = None
        self.burst_frames = 0

    def __repr__(self) -> str:  # the token never appears
        return f"BotPlatformSim(port={self.port}, seq={self.seq}, clients={len(self.clients)})"

    @property
    def instruments(self) -> dict[str, Instrument]:
        """The traded instruments (symbol -> Instrument)."""
        return self.scenario.instruments

    # -- publishing ------------------------------------------------------------------
    def _subscribers(self) -> list[SimClient]:
        return [c for c in self.clients if not c.closed and c.state is not None and c.state.subscribed]

    def user_frame(self, data: dict[str, Any], seq: int) -> str:
        """The wire text of a User message of this simulator's user."""
        return user_frame(self.user_id, data, seq)

    def _publish(self, event: str, data: dict[str, Any]) -> None:
        if event == "User":
            self.seq += 1
            if self._skip:
                self._skip -= 1  # the skip-sequence fault: applied, seq consumed, never sent
                return
            text = self.user_frame(data, self.seq)
        else:
            text = symbol_frame(data)
        for c in self._subscribers():
            c.send(text)

    def advance(self, steps: int = 1) -> int:
        """Step the scenario ``steps`` times and publish every message. Returns the
        number of messages produced. O(steps x messages)."""
        n = 0
        for _ in range(steps):
            for event, data in self.scenario.step():
                self._publish(event, data)
                n += 1
        return n

    def set_symbol(self, symbol: str, **changes: Any) -> SimSymbol:
        """Change a listed symbol's fields (``can_trade=False``...) in the scenario and
        publish the SymbolUpdate. ``KeyError`` for a symbol that is not listed."""
        s = replace(self.scenario.symbols[symbol], **changes)
        self.scenario.symbols[symbol] = s
        self._publish("Symbol", dict(type="SymbolUpdate", **encode_symbol(s)))
        return s

    # -- faults ---------------------------------------------------------------------
    def skip_sequence(self, count: int = 1) -> None:
        """The next ``count`` User messages are applied and consume a seq but are never
        sent (the client sees a gap and must resync)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count!r}")
        self._skip += count
        self.stats["faults"] += 1

    def inject_user(self, data: dict[str, Any]) -> int:
        """Send ``data`` as a User message with the next seq, without changing the
        scenario (a venue inconsistency). Returns the seq used."""
        self.seq += 1
        self.stats["faults"] += 1
        text = self.user_frame(data, self.seq)
        for c in self._subscribers():
            c.send(text)
        return self.seq

    def send_invalid_transition(self) -> str:
        """Send a Filled order back as ``New`` (an illegal transition; state unchanged).
        Returns the order id. ``LookupError`` when no order is Filled yet."""
        for o in self.scenario.orders.values():
            if o.status == "Filled":
                self.inject_user(encode_order(self.instruments[o.symbol], replace(o, status="New")))
                return o.order_id
        raise LookupError("no Filled order yet")

    # -- lifecycle ------------------------------------------------------------------
    async def on_start(self) -> None:
        if self.burst_count:
            self._prepare_burst()
        if self.interval_s is not None:
            self.spawn(self._tick_loop(self.interval_s), "scenario")
        self.spawn(self._heartbeat_loop(), "heartbeat")

    async def _tick_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not self.paused:
                self.advance(1)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            text = f'{{"event":"Heartbeat","ts":{self.scenario.ts_ns}}}'
            for c in self._subscribers():
                c.send(text)

    def on_connect(self, client: SimClient) -> None:
        client.state = _Conn()

    def on_message(self, client: SimClient, payload: bytes, binary: bool) -> None:
        conn: _Conn = client.state
        try:
            msg = json.loads(payload)
        except ValueError:
            client.close(CLOSE_BAD_REQUEST, "bad request")
            return
        event = msg.get("event") if isinstance(msg, dict) else None
        data = msg.get("data") if isinstance(msg, dict) else None
        if not isinstance(data, dict):
            data = {}
        if event == "Auth" and not conn.authed:
            if self.reject_auth or data.get("token") != self._token:
                client.send(_dumps({"event": "Auth", "data": {"type": "AuthError", "code": 401,
                                                              "message": "invalid token"}}))
                client.close(CLOSE_INVALID_TOKEN, "invalid token")
                return
            conn.authed = True
            client.send(_dumps({"event": "Auth", "data": {"type": "AuthOk", "user_id": self.user_id}}))
        elif event == "Subscribe" and conn.authed and not conn.subscribed:
            topics = data.get("topics")
            if not isinstance(topics, list) or not set(topics) <= {"User", "Symbol"}:
                client.close(CLOSE_BAD_REQUEST, "bad request")
                return
            conn.subscribed = True
            client.send(_dumps({"event": "Symbol", "data": self.scenario.symbol_list_data()}))
            client.send(self.user_frame(self.scenario.snapshot_data(), self.seq))
            if self.burst_count:
                self.spawn(client.burst(self._burst), f"burst-{client.client_id}")
        else:
            client.close(CLOSE_BAD_REQUEST, "bad request")

    # -- burst mode -----------------------------------------------------------------
    def _prepare_burst(self) -> None:
        scenario = copy.deepcopy(self.scenario)  # the live scenario stays at its start state
        frames = burst_messages(scenario, self.burst_count, self.seq)
        self._burst = encode_burst(frames)
        self.burst_scenario = scenario
        self.burst_frames = len(frames)


def user_frame(user_id: str, data: dict[str, Any], seq: int) -> str:
    """The wire text of a User message (envelope first, then ``data``)."""
    return f'{{"event":"User","user_id":{json.dumps(user_id)},"seq":{seq},"data":{_dumps(data)}}}'


def symbol_frame(data: dict[str, Any]) -> str:
    """The wire text of a Symbol message."""
    return f'{{"event":"Symbol","data":{_dumps(data)}}}'


def burst_messages(scenario: BotScenario, n: int, start_seq: int = 0) -> list[bytes]:
    """Step ``scenario`` by whole steps until at least ``n`` messages were produced and
    return their wire payloads (User seq from ``start_seq + 1``). The scenario ends in
    the state a client applying them must reach. Used by burst mode and benchmarks
    (the frames follow a Snapshot at ``start_seq``). O(messages)."""
    frames: list[bytes] = []
    seq = start_seq
    while len(frames) < n:
        for event, data in scenario.step():
            if event == "User":
                seq += 1
                frames.append(user_frame(scenario.user_id, data, seq).encode())
            else:
                frames.append(symbol_frame(data).encode())
    return frames


def from_cli(args: argparse.Namespace) -> BotPlatformSim:
    """``python -m feeds.sim botplatform``: uses ``--seed --token --interval --burst
    --host --port``; ``--set user_id=U-1`` (default U-1), ``--set heartbeat_s=S``
    (default 5). ``ValueError`` for an unknown ``--set`` key."""
    opts: dict[str, str] = dict(args.options)
    unknown = set(opts) - {"user_id", "heartbeat_s"}
    if unknown:
        raise ValueError(f"botplatform: unknown --set option(s) {sorted(unknown)}")
    return BotPlatformSim(seed=args.seed, token=args.token, user_id=opts.get("user_id", "U-1"),
                          interval_s=0.02 if args.interval is None else args.interval,
                          heartbeat_s=float(opts.get("heartbeat_s", "5")), burst=args.burst,
                          host=args.host, port=args.port)
