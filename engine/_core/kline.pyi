"""Type stub for engine._core.kline (hand-written; keep in step with kline.pyx)."""
from fractions import Fraction
from typing import Any, Callable, Iterable, SupportsIndex, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from engine._core.instrument import Instrument
from engine.errors import KlineError as KlineError

BAR_DTYPE: np.dtype[np.void]
BAR_SIZE: int
FILLED: int
PARTIAL: int
VENUE: int
WEEK_OFFSET_NS: int
MAX_TIMESTAMP_NS: int

_IntArray = npt.ArrayLike
_BarCallback = Callable[[str, np.void], object]
_LateCallback = Callable[[str, int, int, int, int], object]
_DivergenceCallback = Callable[[str, np.void | None, np.void], object]

def parse_interval(interval: str) -> tuple[str, int, int]: ...

@disjoint_base
class BarStore:
    @property
    def exports(self) -> int: ...

@final
class KlineAggregator:
    def __init__(
        self,
        inst: Instrument,
        intervals: Iterable[str] | str = ("1s", "1m", "5m", "1h"),
        empty: str = "fill",
        history: int = 1000,
        on_close: _BarCallback | None = None,
        on_update: _BarCallback | None = None,
        on_late: _LateCallback | None = None,
        on_divergence: _DivergenceCallback | None = None,
    ) -> None: ...
    @property
    def instrument(self) -> Instrument: ...
    @property
    def fill_empty(self) -> bool: ...
    @property
    def history(self) -> int: ...
    @property
    def intervals(self) -> tuple[str, ...]: ...
    @property
    def callback_errors(self) -> int: ...
    @property
    def events_dropped(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def trades_applied(self) -> int: ...
    @property
    def on_close(self) -> _BarCallback | None: ...
    @on_close.setter
    def on_close(self, cb: _BarCallback | None) -> None: ...
    @property
    def on_update(self) -> _BarCallback | None: ...
    @on_update.setter
    def on_update(self, cb: _BarCallback | None) -> None: ...
    @property
    def on_late(self) -> _LateCallback | None: ...
    @on_late.setter
    def on_late(self, cb: _LateCallback | None) -> None: ...
    @property
    def on_divergence(self) -> _DivergenceCallback | None: ...
    @on_divergence.setter
    def on_divergence(self, cb: _DivergenceCallback | None) -> None: ...
    def add_trade(
        self, price_ticks: SupportsIndex, qty_lots: SupportsIndex, ts_ns: SupportsIndex, side: SupportsIndex = 0
    ) -> None: ...
    def add_trades(
        self, prices: _IntArray, qtys: _IntArray, ts_ns: _IntArray, sides: _IntArray | None = None
    ) -> int: ...
    def advance(self, ts_ns: SupportsIndex) -> None: ...
    def venue_add(
        self,
        interval: str,
        open_ts_ns: int,
        open_ticks: int,
        high_ticks: int,
        low_ticks: int,
        close_ticks: int,
        volume_lots: int,
        update_ts_ns: int = 0,
    ) -> None: ...
    def venue_modify(
        self,
        interval: str,
        open_ts_ns: int,
        open_ticks: int,
        high_ticks: int,
        low_ticks: int,
        close_ticks: int,
        volume_lots: int,
        update_ts_ns: int = 0,
    ) -> None: ...
    def bars_view(self, interval: str, venue: bool = False) -> npt.NDArray[np.void]: ...
    def bars(self, interval: str, venue: bool = False) -> npt.NDArray[np.void]: ...
    def current(self, interval: str, venue: bool = False) -> np.void | None: ...
    def vwap(self, interval: str) -> Fraction | None: ...
    def stats(self, interval: str) -> dict[str, Any]: ...
    def view_exports(self, interval: str) -> int: ...
    def _check_invariants(self) -> bool: ...
