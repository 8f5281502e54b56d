"""A deliberately simple pure-Python kline aggregator: the oracle for the engine.

It keeps every trade of an open bar in a list and builds the bar only when asked,
from the trades stably sorted by time (so equal timestamps keep arrival order).
Nothing is shared with engine/_core/kline.pyx except the written rules:

- time frames: interval [start, start + length), start = ts - (ts - offset) mod length,
  offset 0 except weeks (Monday: 4 days after the epoch); a trade on a boundary opens
  the new bar; a trade older than the frame's current interval is late;
- activity frames (tick/volume/notional): a bar closes on the trade that reaches the
  threshold; a trade older than the last trade of the last closed bar is late;
- fill mode: flat bars at the previous close for intervals without trades, of which
  only the last `history` are kept (the rest counted as fill_skipped);
- the first time bar of a frame carries the PARTIAL flag, filled bars FILLED.

Bars are tuples in BAR_DTYPE field order, with the notional split into (lo, hi).
"""
from __future__ import annotations

from collections import deque

FILLED = 1
PARTIAL = 2
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NS = 1_000_000_000
_MASK64 = (1 << 64) - 1

Trade = tuple[int, int, int, int]  # price_ticks, qty_lots, ts_ns, side
Bar = tuple[int, ...]


def make_bar(trades: list[Trade], open_ts: int, close_ts: int, flags: int) -> Bar:
    """The bar of `trades` (in arrival order) as a BAR_DTYPE-ordered tuple."""
    ordered = sorted(trades, key=lambda t: t[2])  # stable: equal ts keep arrival order
    prices = [t[0] for t in trades]
    notional = sum(t[0] * t[1] for t in trades)
    return (
        open_ts, close_ts,
        ordered[0][0], max(prices), min(prices), ordered[-1][0],
        sum(t[1] for t in trades), sum(t[1] for t in trades if t[3] > 0), len(trades),
        notional & _MASK64, notional >> 64,
        ordered[0][2], ordered[-1][2], flags,
    )


def flat_bar(price: int, open_ts: int, close_ts: int) -> Bar:
    return (open_ts, close_ts, price, price, price, price, 0, 0, 0, 0, 0, 0, 0, FILLED)


class _Frame:
    def __init__(self, interval: str, fill: bool, history: int) -> None:
        self.interval = interval
        self.fill = fill
        self.history: deque[Bar] = deque(maxlen=history)
        self.closed_log: list[Bar] = []   # every materialized close, in order
        self.late_log: list[Trade] = []
        self.closed = 0
        self.late = 0
        self.fill_skipped = 0
        self.trades: list[Trade] = []
        self.last_close: int | None = None
        if ":" in interval:
            self.kind, value = interval.split(":")
            self.threshold = int(value)
            self.last_closed_ts: int | None = None
            self.volume = 0
            self.notional = 0
        else:
            self.kind = "time"
            self.length = int(interval[:-1]) * _UNITS_S[interval[-1]] * _NS
            self.offset = 4 * 86400 * _NS if interval.endswith("w") else 0
            self.start: int | None = None
            self.built_any = False

    def _close(self, bar: Bar) -> None:
        self.history.append(bar)
        self.closed_log.append(bar)
        self.closed += 1
        self.last_close = bar[5]

    # time frames
    def _move(self, new_start: int) -> None:
        if self.start is not None:
            if self.trades:
                self._close(self._time_bar())
                self.built_any = True
                self.trades = []
            elif self.fill and self.last_close is not None:
                self._close(flat_bar(self.last_close, self.start, self.start + self.length))
            if self.fill and self.last_close is not None:
                empty = list(range(self.start + self.length, new_start, self.length))
                keep = empty[-self.history.maxlen:] if self.history.maxlen else []
                self.fill_skipped += len(empty) - len(keep)
                self.closed += len(empty) - len(keep)
                for s in keep:
                    self._close(flat_bar(self.last_close, s, s + self.length))
        self.start = new_start

    def _time_bar(self) -> Bar:
        assert self.start is not None
        flags = 0 if self.built_any else PARTIAL
        return make_bar(self.trades, self.start, self.start + self.length, flags)

    def add(self, trade: Trade) -> None:
        ts = trade[2]
        if self.kind == "time":
            if self.start is not None and ts < self.start:
                self.late += 1
                self.late_log.append(trade)
                return
            if self.start is None or ts >= self.start + self.length:
                self._move(ts - (ts - self.offset) % self.length)
            self.trades.append(trade)
            return
        if self.last_closed_ts is not None and ts < self.last_closed_ts:
            self.late += 1
            self.late_log.append(trade)
            return
        self.trades.append(trade)
        self.volume += trade[1]
        self.notional += trade[0] * trade[1]
        if self.kind == "tick":
            done = len(self.trades) >= self.threshold
        elif self.kind == "volume":
            done = self.volume >= self.threshold
        else:
            done = self.notional >= self.threshold
        if done:
            bar = self._activity_bar()
            self._close(bar)
            self.last_closed_ts = bar[12]
            self.trades = []
            self.volume = 0
            self.notional = 0

    def _activity_bar(self) -> Bar:
        first = min(t[2] for t in self.trades)
        last = max(t[2] for t in self.trades)
        return make_bar(self.trades, first, last, 0)

    def advance(self, ts: int) -> None:
        if self.kind == "time" and (self.start is None or ts >= self.start + self.length):
            self._move(ts - (ts - self.offset) % self.length)

    def current(self) -> Bar | None:
        if not self.trades:
            return None
        return self._time_bar() if self.kind == "time" else self._activity_bar()


class ReferenceAggregator:
    """Same public surface as engine.KlineAggregator where the tests need it."""

    def __init__(self, intervals: tuple[str, ...], empty: str = "fill", history: int = 1000) -> None:
        self.frames = {name: _Frame(name, empty == "fill", history) for name in intervals}

    def add_trade(self, price_ticks: int, qty_lots: int, ts_ns: int, side: int) -> None:
        trade = (price_ticks, qty_lots, ts_ns, side)
        for frame in self.frames.values():
            frame.add(trade)

    def add_trades(self, prices: list[int], qtys: list[int], ts_ns: list[int], sides: list[int]) -> None:
        for trade in zip(prices, qtys, ts_ns, sides):
            for frame in self.frames.values():
                frame.add(trade)

    def advance(self, ts_ns: int) -> None:
        for frame in self.frames.values():
            frame.advance(ts_ns)

    def bars(self, interval: str) -> list[Bar]:
        return list(self.frames[interval].history)

    def current(self, interval: str) -> Bar | None:
        return self.frames[interval].current()

    def stats(self, interval: str) -> dict[str, int]:
        f = self.frames[interval]
        return {"closed": f.closed, "late": f.late, "fill_skipped": f.fill_skipped}
