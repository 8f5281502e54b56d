"""Prices (Tradevest style) frame decoder; the wire format is in ``feeds.prices``."""
from typing import Any, Iterable

from typing_extensions import disjoint_base

from engine._core.book import OrderBook
from engine._core.instrument import Instrument
from feeds._hotpath import Dispatch, FrameSink

@disjoint_base
class MarketBook:
    """One market of the venue: its instrument, the engine's book and counters."""

    market: str
    instrument: Instrument
    book: OrderBook
    replaces: int
    keepalives: int
    last_recv_ns: int
    def __init__(self, market: str, instrument: Instrument, book: OrderBook) -> None: ...

@disjoint_base
class PricesDecoder(FrameSink):
    """Decodes the frames of one prices connection into shared MarketBooks; ``feed``
    raises DecodeError for a bad frame and then changes no book."""

    live: bool
    frames_applied: int
    keepalive_frames: int
    unknown_markets: int
    errors: int
    def __init__(self, link: Any, dispatch: Dispatch, markets: Iterable[MarketBook]) -> None: ...
    def reset(self, link: Any, markets: Iterable[MarketBook]) -> None: ...
    @property
    def market_list(self) -> list[MarketBook]: ...
