"""Binance order-book sync: REST snapshot + diff stream -> an exact OrderBook."""
from typing import Any, Callable, Optional, Union
from typing_extensions import disjoint_base

from engine._core.book import OrderBook
from feeds.binance_decode import BinanceDecoder

_Buffer = Union[bytes, bytearray, memoryview]
_GapCallback = Callable[["BinanceBookSync", str], Any]
_TradeCallback = Callable[["BinanceBookSync", int, int, int, int, int], Any]

STATE_NAMES: tuple[str, ...]

@disjoint_base
class BinanceBookSync:
    """Keeps an OrderBook exact from Binance depth snapshots and diffs (spot, USD-M,
    COIN-M). Feed every frame; see the module docstring for the rules."""

    book: OrderBook
    decoder: BinanceDecoder
    state: int
    futures: bool
    frames: int
    depth_applied: int
    dropped_stale: int
    gaps: int
    errors: int
    bbo_checks: int
    bbo_mismatches: int
    crossed: int
    snapshots: int
    buffered: int
    buffer_dropped: int
    tickers: int
    trades: int
    ignored: int
    callback_errors: int
    last_gap_reason: Optional[str]
    on_gap: Optional[_GapCallback]
    on_trade: Optional[_TradeCallback]

    def __init__(
        self,
        book: OrderBook,
        market: str = "spot",
        *,
        on_gap: Optional[_GapCallback] = None,
        on_trade: Optional[_TradeCallback] = None,
        max_buffered: int = 10_000,
        check_symbol: bool = True,
    ) -> None: ...
    def feed(self, frame: _Buffer) -> int:
        """Process one frame; returns its kind. Raises DecodeError (counted, nothing
        changed), or BookError/BookCrossedError for a snapshot the book rejects."""
    @property
    def state_name(self) -> str:
        """"awaiting_snapshot", "bridging", "live" or "out_of_sync"."""
    @property
    def in_sync(self) -> bool:
        """True when the book reflects the venue."""
    @property
    def pending_diffs(self) -> int:
        """Diffs buffered now, waiting for a snapshot."""
    @property
    def last_trade(self) -> Optional[tuple[int, int, int, int, int]]:
        """(price_ticks, qty_lots, taker_side, trade_id, trade_ts_ns) of the last trade."""
    def reset(self) -> None:
        """Forget buffered diffs and mark the book out of sync."""
    def counters(self) -> dict[str, int]:
        """All counters as a dict."""
