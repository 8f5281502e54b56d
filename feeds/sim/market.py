"""Market data for the simulators: a seeded synthetic market and a recorded-Binance source.

Both produce venue-neutral events in exact integers (prices in ticks, sizes in lots,
quote-asset amounts in units of ``10**-QUOTE_DECIMALS``); each venue simulator turns
them into its own wire format with ``Instrument.ticks_to_price`` / ``lots_to_qty``
(and :func:`format_amount` for amounts), so no float ever touches a number.

- :class:`SyntheticMarket`: random-walk mid, level churn near the touch (about
  ``depth`` levels a side), trades that consume the touch, and one trading account
  whose orders are placed, partially filled, filled and canceled, with positions and
  balances moving. Fully deterministic from ``seed`` (timestamps too: they advance by
  ``step_ns`` per step from ``start_ts_ns``, never from the wall clock).
- :class:`RecordedBinance`: frames recorded from Binance combined streams
  (hftbacktest format, ``<recv_ns> <json>`` per line, gzip), kept byte for byte for the
  Binance simulator and re-shaped into the same integer events for other venues.

Both expose the exact state they have produced (``books()``, ``trades``, and for the
synthetic market ``orders``, ``positions``, ``balances``) so tests compare a client's
state with it.
"""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence, Union

from sortedcontainers import SortedDict

from engine._core.instrument import Instrument

__all__ = [
    "QUOTE_DECIMALS", "Level", "BookSnapshot", "BookDelta", "Trade", "Order", "Fill",
    "Position", "Balance", "Portfolio", "Balances", "MarketEvent", "BookState",
    "SyntheticMarket", "RecordedBinance", "RecordedFrame", "RecordedMarket", "MarketSource",
    "default_instruments",
    "format_amount",
]

#: Quote-asset amounts (order cost, fees, balances, realized PnL) are int counts of
#: 10**-QUOTE_DECIMALS of the quote asset.
QUOTE_DECIMALS = 8
_AMOUNT = Instrument("AMOUNT", "0." + "0" * (QUOTE_DECIMALS - 1) + "1", "1")

#: (price_ticks, qty_lots); in a delta qty_lots 0 deletes the level.
Level = tuple[int, int]


def format_amount(units: int) -> str:
    """Quote-asset amount (int units of 10**-QUOTE_DECIMALS) as an exact decimal string
    with QUOTE_DECIMALS decimals ("-0.00012345"). O(digits)."""
    return _AMOUNT.ticks_to_price(units)


def default_instruments() -> list[Instrument]:
    """The instruments the demo and the CLI simulate: BTC-USDT (tick 0.01, lot
    0.00001) and ETH-USDT (tick 0.01, lot 0.0001)."""
    return [Instrument("BTC-USDT", "0.01", "0.00001"), Instrument("ETH-USDT", "0.01", "0.0001")]


_DEFAULT_MIDS = {"BTC-USDT": "61837.63", "ETH-USDT": "2631.45"}


# -- events (immutable; every one is a fact the venue publishes) ------------------------

@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """Whole book of ``symbol``: levels best first. ``update_id`` is the source's
    book version (Binance ``lastUpdateId``; the synthetic market counts changes)."""
    symbol: str
    ts_ns: int
    bids: list[Level]
    asks: list[Level]
    update_id: int


@dataclass(frozen=True, slots=True)
class BookDelta:
    """Changed levels of ``symbol``, best first per side; qty_lots 0 deletes.
    ``first_update_id``..``update_id`` is the range of book versions it covers."""
    symbol: str
    ts_ns: int
    bids: list[Level]
    asks: list[Level]
    first_update_id: int
    update_id: int


@dataclass(frozen=True, slots=True)
class Trade:
    """A public trade. ``side`` is the taker side, "buy" or "sell"."""
    symbol: str
    trade_id: int
    price_ticks: int
    qty_lots: int
    side: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Order:
    """State of one account order after a change (``status`` in New, PartiallyFilled,
    Filled, Canceled). ``cost_units``: filled notional in quote units."""
    order_id: int
    client_order_id: int
    symbol: str
    side: str
    order_type: str
    status: str
    price_ticks: int
    qty_lots: int
    filled_lots: int
    cost_units: int
    created_ts_ns: int
    updated_ts_ns: int

    @property
    def open(self) -> bool:
        """True while the order can still fill (New or PartiallyFilled)."""
        return self.status in ("New", "PartiallyFilled")


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an account order; ``fee_units`` in quote units."""
    order_id: int
    fill_id: int
    symbol: str
    side: str
    price_ticks: int
    qty_lots: int
    fee_units: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Position:
    """Net position in ``symbol``: ``qty_lots`` signed (short < 0); ``cost_units`` the
    cost basis of the open quantity (quote units, >= 0); ``avg_entry_ticks`` the cost
    basis per lot truncated to a whole tick; ``realized_pnl_units`` quote units."""
    symbol: str
    qty_lots: int
    cost_units: int
    avg_entry_ticks: int
    realized_pnl_units: int


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset: ``total_units = available_units + reserved_units`` (quote units)."""
    asset: str
    total_units: int
    available_units: int
    reserved_units: int


@dataclass(frozen=True, slots=True)
class Portfolio:
    """Positions that changed (or all of them, for an account snapshot)."""
    positions: list[Position]


@dataclass(frozen=True, slots=True)
class Balances:
    """Balances after a change (every asset of the account)."""
    balances: list[Balance]


MarketEvent = Union[BookSnapshot, BookDelta, Trade, Order, Fill, Portfolio, Balances]


class BookState:
    """An L2 book of exact integers (reference implementation on SortedDict).

    ``apply(bids, asks)`` sets levels (qty 0 deletes); ``levels()`` returns
    ``(bids, asks)`` best first. O(log n) per level."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def replace(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Replace the whole book."""
        self.bids = SortedDict({p: q for p, q in bids if q})
        self.asks = SortedDict({p: q for p, q in asks if q})

    def apply(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Apply changed levels; qty 0 deletes (a missing level is ignored)."""
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)

    def levels(self) -> tuple[list[Level], list[Level]]:
        """(bids, asks) best first, as new lists."""
        return list(reversed(self.bids.items())), list(self.asks.items())

    def best_bid(self) -> Level | None:
        """Best bid level or None."""
        return self.bids.peekitem(-1) if self.bids else None

    def best_ask(self) -> Level | None:
        """Best ask level or None."""
        return self.asks.peekitem(0) if self.asks else None


class SyntheticMarket:
    """A seeded synthetic market over ``instruments`` with one trading account.

    Parameters: ``seed``; ``depth`` (levels a side, >= 2); ``mids`` (symbol -> start
    mid price string; default a preset or 100000 ticks); ``account_id``;
    ``quote_asset`` and ``initial_balance`` (decimal string); ``start_ts_ns`` and
    ``step_ns`` (synthetic clock); ``fee_bps`` (fee = notional * fee_bps / 10000,
    rounded down to a quote unit); ``account_rate`` (chance per step of an account
    action). Every instrument's ``price_decimals + qty_decimals`` must be at most
    QUOTE_DECIMALS so notionals are whole quote units (``ValueError`` otherwise).

    Each :meth:`step` advances the clock by ``step_ns`` and returns the events it
    produced, in order: per instrument a ``Trade`` (sometimes) then the ``BookDelta``
    that includes its effect, then account events (``Order``, ``Fill``, ``Portfolio``,
    ``Balances``). O(depth) per step.
    """

    def __init__(self, instruments: Sequence[Instrument] | None = None, *, seed: int = 1,
                 depth: int = 20, mids: Mapping[str, str] | None = None,
                 account_id: str = "A-1", quote_asset: str = "USDT",
                 initial_balance: str = "100000", start_ts_ns: int = 1_723_161_600_000_000_000,
                 step_ns: int = 10_000_000, fee_bps: int = 10, account_rate: float = 0.2) -> None:
        self.instruments: dict[str, Instrument] = {
            i.symbol: i for i in (default_instruments() if instruments is None else instruments)}
        if not self.instruments:
            raise ValueError("SyntheticMarket needs at least one instrument")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth!r}")
        self.seed = seed
        self.depth = depth
        self.account_id: str | None = account_id
        self.quote_asset = quote_asset
        self.step_ns = step_ns
        self.fee_bps = fee_bps
        self.account_rate = account_rate
        self.ts_ns = start_ts_ns
        self.steps = 0
        self._rng = random.Random(seed)
        # Quote units per (tick x lot) of each instrument: notional = p * q * scale.
        self._scale: dict[str, int] = {}
        for sym, inst in self.instruments.items():
            d = inst.price_decimals + inst.qty_decimals
            if d > QUOTE_DECIMALS:
                raise ValueError(f"{sym}: tick {inst.tick_size} x lot {inst.lot_size} has {d} decimals, "
                                 f"more than QUOTE_DECIMALS={QUOTE_DECIMALS}")
            self._scale[sym] = inst.tick_units * inst.lot_units * 10 ** (QUOTE_DECIMALS - d)
        self._books: dict[str, BookState] = {}
        self._mid: dict[str, int] = {}
        self._update_id: dict[str, int] = {}
        mids = dict(_DEFAULT_MIDS, **(mids or {}))
        for sym, inst in self.instruments.items():
            mid = inst.price_to_ticks(mids[sym]) if sym in mids else 100_000
            self._mid[sym] = mid
            book = BookState()
            price = mid - 1
            for _ in range(depth):
                book.bids[price] = self._rand_qty()
                price -= self._rng.choice((1, 1, 1, 2))
            price = mid + 1
            for _ in range(depth):
                book.asks[price] = self._rand_qty()
                price += self._rng.choice((1, 1, 1, 2))
            self._books[sym] = book
            self._update_id[sym] = 1
        #: Every public trade produced, in order.
        self.trades: list[Trade] = []
        #: Latest state of every order ever placed, by order id.
        self.orders: dict[int, Order] = {}
        self._open: dict[int, Order] = {}  # the open subset of ``orders``, oldest first
        #: Positions by symbol (only symbols that ever traded).
        self.positions: dict[str, Position] = {}
        self.balances: dict[str, Balance] = {}
        total = _AMOUNT.price_to_ticks(initial_balance)
        self.balances[quote_asset] = Balance(quote_asset, total, total, 0)
        self._next_trade_id = 1
        self._next_order_id = 1
        self._next_fill_id = 1

    # -- published state -----------------------------------------------------------------

    def books(self) -> dict[str, tuple[list[Level], list[Level]]]:
        """{symbol: (bids, asks)} best first, exact ticks/lots, as new lists."""
        return {sym: b.levels() for sym, b in self._books.items()}

    def book(self, symbol: str) -> tuple[list[Level], list[Level]]:
        """(bids, asks) of ``symbol`` best first. ``KeyError`` for an unknown symbol."""
        return self._books[symbol].levels()

    def snapshot(self, symbol: str) -> BookSnapshot:
        """The whole book of ``symbol`` as an event (does not change state)."""
        bids, asks = self._books[symbol].levels()
        return BookSnapshot(symbol, self.ts_ns, bids, asks, self._update_id[symbol])

    def open_orders(self) -> list[Order]:
        """Orders that can still fill, oldest first. O(open orders)."""
        return list(self._open.values())

    def account_snapshot(self) -> list[MarketEvent]:
        """Events that rebuild the account from nothing: every position (omitted while
        there is none: a portfolio publication carries its seq inside its positions),
        the balances, then every open order. Does not change state."""
        out: list[MarketEvent] = []
        if self.positions:
            out.append(Portfolio(list(self.positions.values())))
        out.append(Balances(list(self.balances.values())))
        out.extend(self.open_orders())
        return out

    # -- simulation ----------------------------------------------------------------------

    def _rand_qty(self) -> int:
        return self._rng.randint(1, 5000)

    def step(self) -> list[MarketEvent]:
        """Advance the market by one step; returns the events produced (see class doc)."""
        self.steps += 1
        self.ts_ns += self.step_ns
        events: list[MarketEvent] = []
        for sym in self.instruments:
            if self._rng.random() < 0.8:
                self._step_book(sym, events)
        if self._rng.random() < self.account_rate:
            self._step_account(events)
        return events

    def step_book(self, symbol: str) -> list[MarketEvent]:
        """Advance only ``symbol``'s book by one step (clock included): the events
        (a ``Trade`` sometimes, then a ``BookDelta``). Used to pre-encode bursts.
        ``KeyError`` for an unknown symbol."""
        if symbol not in self._books:
            raise KeyError(symbol)
        self.steps += 1
        self.ts_ns += self.step_ns
        events: list[MarketEvent] = []
        self._step_book(symbol, events)
        return events

    def _step_book(self, sym: str, events: list[MarketEvent]) -> None:
        rng = self._rng
        book = self._books[sym]
        before_b: dict[int, int] = {}
        before_a: dict[int, int] = {}

        def set_level(side: SortedDict, before: dict[int, int], price: int, qty: int) -> None:
            if price not in before:
                before[price] = side.get(price, 0)
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)

        mid = self._mid[sym]
        if rng.random() < 0.15:
            mid += rng.choice((-2, -1, 1, 2))
            self._mid[sym] = mid
            for p in list(book.bids.irange(minimum=mid)):
                set_level(book.bids, before_b, p, 0)
            for p in list(book.asks.irange(maximum=mid)):
                set_level(book.asks, before_a, p, 0)
        if rng.random() < 0.3:
            taker = rng.choice(("buy", "sell"))
            touch = book.best_ask() if taker == "buy" else book.best_bid()
            if touch is not None:
                price, qty = touch
                traded = rng.randint(1, qty)
                side, before = (book.asks, before_a) if taker == "buy" else (book.bids, before_b)
                set_level(side, before, price, qty - traded)
                trade = Trade(sym, self._next_trade_id, price, traded, taker, self.ts_ns)
                self._next_trade_id += 1
                self.trades.append(trade)
                events.append(trade)
        for _ in range(rng.randint(1, 3)):
            idx = min(int(rng.expovariate(0.4)), self.depth + 2)
            if rng.random() < 0.5:
                price, side, before = mid - 1 - idx, book.bids, before_b
            else:
                price, side, before = mid + 1 + idx, book.asks, before_a
            if price in side and rng.random() < 0.3:
                set_level(side, before, price, 0)
            else:
                set_level(side, before, price, self._rand_qty())
        # Keep exactly ``depth`` levels a side: drop the far end, refill beyond it.
        while len(book.bids) > self.depth:
            set_level(book.bids, before_b, book.bids.peekitem(0)[0], 0)
        while len(book.asks) > self.depth:
            set_level(book.asks, before_a, book.asks.peekitem(-1)[0], 0)
        while len(book.bids) < self.depth:
            far = book.bids.peekitem(0)[0] - rng.choice((1, 1, 2)) if book.bids else mid - 1
            set_level(book.bids, before_b, far, self._rand_qty())
        while len(book.asks) < self.depth:
            far = book.asks.peekitem(-1)[0] + rng.choice((1, 1, 2)) if book.asks else mid + 1
            set_level(book.asks, before_a, far, self._rand_qty())
        bids = [(p, book.bids.get(p, 0)) for p in sorted(before_b, reverse=True)
                if book.bids.get(p, 0) != before_b[p]]
        asks = [(p, book.asks.get(p, 0)) for p in sorted(before_a)
                if book.asks.get(p, 0) != before_a[p]]
        if bids or asks:
            uid = self._update_id[sym] + 1
            self._update_id[sym] = uid
            events.append(BookDelta(sym, self.ts_ns, bids, asks, uid, uid))

    # -- account -------------------------------------------------------------------------

    def _notional(self, sym: str, price_ticks: int, qty_lots: int) -> int:
        return price_ticks * qty_lots * self._scale[sym]

    def _reserved(self) -> int:
        return sum(self._notional(o.symbol, o.price_ticks, o.qty_lots - o.filled_lots)
                   for o in self._open.values())

    def _set_order(self, order: Order) -> None:
        self.orders[order.order_id] = order
        if order.open:
            self._open[order.order_id] = order
        else:
            self._open.pop(order.order_id, None)

    def _balances_event(self, total_delta: int) -> Balances:
        old = self.balances[self.quote_asset]
        total = old.total_units + total_delta
        reserved = self._reserved()
        new = Balance(self.quote_asset, total, total - reserved, reserved)
        self.balances[self.quote_asset] = new
        return Balances([new])

    def _step_account(self, events: list[MarketEvent]) -> None:
        rng = self._rng
        open_orders = self.open_orders()
        action = rng.random()
        if not open_orders or (action < 0.4 and len(open_orders) < 6):
            self._place(events)
        elif action < 0.85:
            self._fill(rng.choice(open_orders), events)
        else:
            order = rng.choice(open_orders)
            done = replace(order, status="Canceled", updated_ts_ns=self.ts_ns)
            self._set_order(done)
            events.append(done)
            events.append(self._balances_event(0))

    def _place(self, events: list[MarketEvent]) -> None:
        rng = self._rng
        sym = rng.choice(list(self.instruments))
        book = self._books[sym]
        side = rng.choice(("buy", "sell"))
        if side == "buy":
            bb = book.best_bid()
            price = (bb[0] if bb else self._mid[sym] - 1) - rng.randint(0, 5)
        else:
            ba = book.best_ask()
            price = (ba[0] if ba else self._mid[sym] + 1) + rng.randint(0, 5)
        oid = self._next_order_id
        self._next_order_id += 1
        order = Order(oid, oid, sym, side, "Limit", "New", price, rng.randint(1, 2000), 0, 0,
                      self.ts_ns, self.ts_ns)
        self._set_order(order)
        events.append(order)
        events.append(self._balances_event(0))

    def _fill(self, order: Order, events: list[MarketEvent]) -> None:
        rng = self._rng
        remaining = order.qty_lots - order.filled_lots
        qty = remaining if rng.random() < 0.4 else rng.randint(1, remaining)
        sym = order.symbol
        notional = self._notional(sym, order.price_ticks, qty)
        fee = notional * self.fee_bps // 10_000
        filled = order.filled_lots + qty
        new = replace(order, status="Filled" if filled == order.qty_lots else "PartiallyFilled",
                      filled_lots=filled, cost_units=order.cost_units + notional,
                      updated_ts_ns=self.ts_ns)
        self._set_order(new)
        fill = Fill(order.order_id, self._next_fill_id, sym, order.side, order.price_ticks, qty,
                    fee, self.ts_ns)
        self._next_fill_id += 1
        pnl = self._apply_fill(sym, qty if order.side == "buy" else -qty, order.price_ticks)
        events.append(new)
        events.append(fill)
        events.append(Portfolio([self.positions[sym]]))
        events.append(self._balances_event(pnl - fee))

    def _apply_fill(self, sym: str, signed_lots: int, price_ticks: int) -> int:
        """Fold a fill into the position (average cost); returns the realized PnL."""
        pos = self.positions.get(sym) or Position(sym, 0, 0, 0, 0)
        qty, cost, pnl = pos.qty_lots, pos.cost_units, 0
        if qty == 0 or (qty > 0) == (signed_lots > 0):
            qty += signed_lots
            cost += self._notional(sym, price_ticks, abs(signed_lots))
        else:
            closing = min(abs(signed_lots), abs(qty))
            removed = cost * closing // abs(qty)
            exit_value = self._notional(sym, price_ticks, closing)
            pnl = exit_value - removed if qty > 0 else removed - exit_value
            cost -= removed
            qty += closing if signed_lots > 0 else -closing
            rest = abs(signed_lots) - closing
            if rest:
                qty = rest if signed_lots > 0 else -rest
                cost = self._notional(sym, price_ticks, rest)
        avg = cost // (abs(qty) * self._scale[sym]) if qty else 0
        self.positions[sym] = Position(sym, qty, cost, avg, pos.realized_pnl_units + pnl)
        return pnl


# -- recorded Binance ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One recorded line: receive time, stream name (``None`` for the REST depth
    snapshot line) and the exact recorded JSON bytes (the combined-stream envelope,
    or the snapshot body)."""
    recv_ns: int
    stream: str | None
    raw: bytes


class RecordedBinance:
    """Recorded Binance combined-stream frames of one symbol (hftbacktest format).

    ``frames``: every line in order. ``snapshot``: the parsed REST depth snapshot line
    (``lastUpdateId``, ``bids``, ``asks``). ``instrument`` converts the strings to
    ticks/lots (``DecimalError`` names any value that is not a whole number of steps).
    :meth:`events` re-shapes the stream into integer events for other venues.
    """

    def __init__(self, frames: list[RecordedFrame], instrument: Instrument) -> None:
        self.frames = frames
        self.instrument = instrument
        snaps = [f for f in frames if f.stream is None]
        if not snaps:
            raise ValueError("recording has no REST depth snapshot line")
        self.snapshot_frame = snaps[0]
        self.snapshot: dict[str, Any] = json.loads(snaps[0].raw)

    @classmethod
    def load(cls, path: str | Path, instrument: Instrument, limit: int | None = None) -> RecordedBinance:
        """Read ``path`` (gzip or plain text), at most ``limit`` lines.
        ``ValueError`` naming the line for a malformed one."""
        p = Path(path)
        opener = gzip.open if p.suffix == ".gz" else open
        frames: list[RecordedFrame] = []
        with opener(p, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if limit is not None and len(frames) >= limit:
                    break
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                ts, sep, raw = line.partition(b" ")
                if not sep or not ts.isdigit():
                    raise ValueError(f"{p}:{lineno}: expected '<recv_ns> <json>'")
                stream = None
                if raw.startswith(b'{"stream":'):
                    stream = json.loads(raw)["stream"]
                frames.append(RecordedFrame(int(ts), stream, raw))
        return cls(frames, instrument)

    @property
    def symbol(self) -> str:
        """The instrument's symbol."""
        return self.instrument.symbol

    def snapshot_levels(self) -> tuple[list[Level], list[Level]]:
        """The REST snapshot as (bids, asks) best first, in ticks/lots."""
        inst = self.instrument
        snap = self.snapshot
        bids = [(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in snap["bids"]]
        asks = [(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in snap["asks"]]
        return bids, asks

    def events(self, symbol: str | None = None) -> Iterator[BookSnapshot | BookDelta | Trade]:
        """Re-shape the recording: the snapshot first (as ``symbol``, default the
        instrument's), then, in recorded order, every depth diff that follows it
        (spot rule: first ``U <= lastUpdateId+1 <= u``, then ``U == prev u + 1``;
        ``ValueError`` on a gap) and every trade recorded after the snapshot."""
        sym = symbol or self.instrument.symbol
        inst = self.instrument
        last = int(self.snapshot["lastUpdateId"])
        bids, asks = self.snapshot_levels()
        yield BookSnapshot(sym, self.snapshot_frame.recv_ns, bids, asks, last)
        after = False
        for f in self.frames:
            if f is self.snapshot_frame:
                after = True
                continue
            if f.stream is None:
                continue
            if f.stream.endswith("@trade") and after:
                d = json.loads(f.raw)["data"]
                yield Trade(sym, int(d["t"]), inst.price_to_ticks(d["p"]), inst.qty_to_lots(d["q"]),
                            "sell" if d["m"] else "buy", int(d["T"]) * 1_000_000)
            elif "@depth" in f.stream:
                d = json.loads(f.raw)["data"]
                first, final = int(d["U"]), int(d["u"])
                if final <= last:
                    continue
                if first > last + 1:
                    raise ValueError(f"recorded depth gap: U={first} after u={last}")
                last = final
                yield BookDelta(sym, int(d["E"]) * 1_000_000,
                                [(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in d["b"]],
                                [(inst.price_to_ticks(p), inst.qty_to_lots(q)) for p, q in d["a"]],
                                first, final)


class MarketSource(Protocol):
    """What a venue simulator needs from a market (SyntheticMarket, RecordedMarket)."""

    instruments: dict[str, Instrument]
    account_id: str | None
    trades: list[Trade]

    def step(self) -> list[MarketEvent]: ...
    def book(self, symbol: str) -> tuple[list[Level], list[Level]]: ...
    def books(self) -> dict[str, tuple[list[Level], list[Level]]]: ...
    def snapshot(self, symbol: str) -> BookSnapshot: ...
    def account_snapshot(self) -> list[MarketEvent]: ...


class RecordedMarket:
    """A :class:`RecordedBinance` replayed as a market for another venue's simulator.

    The snapshot is applied at construction; each :meth:`step` returns the next
    recorded event (``BookDelta`` or ``Trade``), or ``[]`` once ``exhausted``. There is
    no account (``account_id`` is None). ``symbol`` renames the instrument on the
    venue (the book of "BTCUSDT" served as "BTC-USDT"); prices keep the instrument's
    tick and lot sizes."""

    def __init__(self, recording: RecordedBinance, symbol: str | None = None) -> None:
        inst = recording.instrument
        if symbol is not None and symbol != inst.symbol:
            inst = Instrument(symbol, inst.tick_size, inst.lot_size, inst.instrument_id)
        self.instruments: dict[str, Instrument] = {inst.symbol: inst}
        self.symbol = inst.symbol
        self.account_id: str | None = None
        self.trades: list[Trade] = []
        self._events = list(recording.events(inst.symbol))
        first = self._events[0]
        if not isinstance(first, BookSnapshot):  # events() yields the snapshot first
            raise TypeError(f"recording must start with a snapshot, got {type(first).__name__}")
        self._book = BookState()
        self._book.replace(first.bids, first.asks)
        self._update_id = first.update_id
        self.ts_ns = first.ts_ns
        self._pos = 1

    @property
    def exhausted(self) -> bool:
        """True once every recorded event was returned."""
        return self._pos >= len(self._events)

    def step(self) -> list[MarketEvent]:
        """Next recorded event applied to the book: ``[BookDelta]``, ``[Trade]`` or ``[]``."""
        if self.exhausted:
            return []
        e = self._events[self._pos]
        self._pos += 1
        self.ts_ns = e.ts_ns
        if isinstance(e, BookDelta):
            self._book.apply(e.bids, e.asks)
            self._update_id = e.update_id
        elif isinstance(e, Trade):
            self.trades.append(e)
        return [e]

    def book(self, symbol: str) -> tuple[list[Level], list[Level]]:
        """(bids, asks) best first. ``KeyError`` for another symbol."""
        if symbol != self.symbol:
            raise KeyError(symbol)
        return self._book.levels()

    def books(self) -> dict[str, tuple[list[Level], list[Level]]]:
        """{symbol: (bids, asks)}."""
        return {self.symbol: self._book.levels()}

    def snapshot(self, symbol: str) -> BookSnapshot:
        """The current book as an event."""
        bids, asks = self.book(symbol)
        return BookSnapshot(symbol, self.ts_ns, bids, asks, self._update_id)

    def account_snapshot(self) -> list[MarketEvent]:
        """No account: always ``[]``."""
        return []
