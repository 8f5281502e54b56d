"""Realtime venue hot-message decoder; the wire format is in ``feeds.realtime``."""
from typing import Any, Iterable

from typing_extensions import disjoint_base

from engine._core.instrument import Instrument
from feeds._hotpath import Dispatch, FrameSink

PCT_DECIMALS: int

@disjoint_base
class Quote:
    """Exact last price of one symbol (market:price), updated in place."""

    symbol: str
    instrument: Instrument
    last_price_ticks: int
    change_ticks: int
    change_pct_units: int
    ts_ns: int
    recv_ns: int
    updates: int
    def __init__(self, instrument: Instrument) -> None: ...
    @property
    def last_price(self) -> str | None: ...
    @property
    def change(self) -> str | None: ...
    @property
    def change_percent(self) -> str | None: ...

@disjoint_base
class RealtimeDecoder(FrameSink):
    """Decodes market:price / trade:created in place; other types go to the venue.
    ``feed`` raises DecodeError for a bad or oversize message (nothing changed)."""

    max_message_bytes: int
    emit_quotes: bool
    prices: int
    trades: int
    cold: int
    unknown_symbols: int
    oversize: int
    def __init__(self, venue: Any, dispatch: Dispatch, trade_type: Any, quotes: Iterable[Quote],
                 max_message_bytes: int) -> None: ...
    @property
    def quote_list(self) -> list[Quote]: ...
