"""Stream venue (Socket.IO) frame decoder; payload schemas in ``feeds.stream``."""
from typing import Any, Iterable

from typing_extensions import disjoint_base

from engine._core.book import OrderBook
from engine._core.instrument import Instrument
from engine._core.kline import KlineAggregator
from feeds._hotpath import Dispatch, FrameSink

EVENT_ORDERBOOK: int
EVENT_KLINE: int
EVENT_OPENORDERS: int
EVENT_POSITIONS: int

@disjoint_base
class StreamSymbol:
    """One instrument of the stream venue and what was applied for it."""

    symbol: str
    instrument: Instrument
    book: OrderBook
    aggregator: KlineAggregator | None
    last_trade_id: int
    last_seq: int
    books: int
    klines: int
    trades: int
    def __init__(self, instrument: Instrument, book: OrderBook, aggregator: KlineAggregator | None = None,
                 intervals: Iterable[str] = ()) -> None: ...
    def add_interval(self, interval: str) -> None: ...
    @property
    def interval_names(self) -> list[str]: ...

@disjoint_base
class StreamDecoder(FrameSink):
    """Decodes stream-venue frames in place (jscan) into books, trades, venue candles
    and the venue's account handlers. ``feed`` raises DecodeError for a bad frame."""

    events: int
    pings: int
    duplicate_trades: int
    stale_candles: int
    unknown_symbol: int
    seq_gaps: int
    seq_resets: int
    def __init__(self, venue: Any, dispatch: Dispatch, trade_type: Any, namespace: str = "/") -> None: ...
    def add_symbol(self, sym: StreamSymbol) -> StreamSymbol: ...
    @property
    def symbol_list(self) -> list[StreamSymbol]: ...
    def symbol(self, name: str) -> StreamSymbol: ...
