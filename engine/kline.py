"""Python face of the kline aggregator: the class, the bar dtype and small helpers.

The state lives in :mod:`engine._core.kline` (see its docstring for the exact rules on
boundaries, late trades, fill mode and venue candles). A bar is one record of
:data:`BAR_DTYPE`; its notional is an exact 128-bit integer stored as
``notional_hi * 2**64 + notional_lo`` (``price_ticks * qty_lots`` summed), so it can
never overflow; :func:`bar_notional` and :func:`bar_vwap` turn it into Python numbers.

>>> from engine import Instrument, KlineAggregator
>>> agg = KlineAggregator(Instrument("BTCUSDT", "0.01", "0.00001"), intervals=("1m",))
>>> agg.add_trade(6183763, 2000, 60_000_000_000, 1)
>>> agg.add_trade(6183765, 1000, 61_000_000_000, -1)
>>> bar = agg.current("1m")
>>> int(bar["open_ticks"]), int(bar["close_ticks"]), int(bar["volume_lots"]), bar_notional(bar)
(6183763, 6183765, 3000, 18551291000)
>>> bar_vwap(bar)
Fraction(18551291, 3)
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from engine._core.kline import (
    BAR_DTYPE,
    BAR_SIZE,
    FILLED,
    MAX_TIMESTAMP_NS,
    PARTIAL,
    VENUE,
    WEEK_OFFSET_NS,
    KlineAggregator,
    KlineError,
    parse_interval,
)

__all__ = [
    "BAR_DTYPE",
    "BAR_SIZE",
    "FILLED",
    "MAX_TIMESTAMP_NS",
    "PARTIAL",
    "VENUE",
    "WEEK_OFFSET_NS",
    "KlineAggregator",
    "KlineError",
    "bar_notional",
    "bar_vwap",
    "bars_notional",
    "bars_vwap",
    "parse_interval",
]


def bar_notional(bar: Any) -> int:
    """Exact notional of one bar record (sum of price_ticks * qty_lots, in ticks*lots). O(1)."""
    return (int(bar["notional_hi"]) << 64) + int(bar["notional_lo"])


def bars_notional(bars: npt.NDArray[Any]) -> list[int]:
    """Exact notionals of an array of bars, as Python ints. O(n)."""
    hi = bars["notional_hi"].tolist()
    lo = bars["notional_lo"].tolist()
    return [(h << 64) + low for h, low in zip(hi, lo)]


def bar_vwap(bar: Any) -> Fraction | None:
    """Exact volume-weighted average price of a bar, in ticks; None without volume. O(1)."""
    volume = int(bar["volume_lots"])
    return Fraction(bar_notional(bar), volume) if volume else None


def bars_vwap(bars: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """VWAP of each bar in ticks as float64 (NaN for bars without volume), for analysis
    and display only: the exact value is :func:`bar_vwap`. O(n)."""
    volume = bars["volume_lots"].astype(np.float64)
    notional = bars["notional_hi"].astype(np.float64) * 2.0**64 + bars["notional_lo"].astype(np.float64)
    out = np.full(len(bars), np.nan)
    np.divide(notional, volume, out=out, where=volume > 0)
    return out
