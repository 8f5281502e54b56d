"""Cadenza (Centrifugo JSON v2) frame decoder; schemas in ``feeds.cadenza``."""
from typing import Any

from typing_extensions import disjoint_base

from engine._core.book import OrderBook
from engine._core.instrument import Instrument
from feeds._hotpath import Dispatch, FrameSink

KIND_BOOK: int
KIND_TRADE: int
KIND_ACCOUNT: int

@disjoint_base
class Channel:
    """One subscribed channel and its recovery position (survives reconnects)."""

    name: str
    kind: int
    instrument: Instrument | None
    book: OrderBook | None
    offset: int
    epoch: str
    synced: bool
    need_fresh: bool
    live: bool
    last_seq: int
    publications: int
    def __init__(self, name: str, kind: int, instrument: Instrument | None = None,
                 book: OrderBook | None = None) -> None: ...

@disjoint_base
class CadenzaDecoder(FrameSink):
    """Decodes Cadenza frames in place (jscan) into books, trades and the venue's
    account handlers. ``feed`` applies each message of a frame on its own and raises
    DecodeError for the first malformed one (the others are counted)."""

    pending: dict[int, Channel]
    pings: int
    stale_publications: int
    dropped_unsynced: int
    unknown_channel: int
    rejected_publications: int
    rejected_messages: int
    def __init__(self, venue: Any, dispatch: Dispatch, trade_type: Any,
                 instruments: dict[str, Instrument]) -> None: ...
    def add_channel(self, ch: Channel) -> Channel: ...
    @property
    def channel_list(self) -> list[Channel]: ...
