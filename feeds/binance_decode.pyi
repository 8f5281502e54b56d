"""Binance market-data frame decoder (C API in binance_decode.pxd)."""
from typing import Any, Union
from typing_extensions import disjoint_base

from engine._core.instrument import Instrument

_Buffer = Union[bytes, bytearray, memoryview]

FIELD_NAMES: tuple[str, ...]
KIND_NAMES: tuple[str, ...]
MARKETS: dict[str, int]

@disjoint_base
class BinanceDecoder:
    """Decoder of Binance frames (depthUpdate, bookTicker, trade, aggTrade, REST depth
    snapshot; bare or combined-stream) for one instrument. One pass, O(len)."""

    instrument: Instrument
    market: int

    def __init__(self, instrument: Instrument, market: str = "spot", *, check_symbol: bool = True) -> None: ...
    def decode_frame(self, frame: _Buffer) -> dict[str, Any]:
        """Decode one frame into a dict (``kind`` plus the event's fields; levels as
        ``(side, price_ticks, qty_lots)``). Raises DecodeError(reason, offset)."""
    def decode_kind(self, frame: _Buffer) -> int:
        """Decode into the scratch buffer and return the kind (index into KIND_NAMES).
        Raises DecodeError(reason, offset). O(len(frame))."""
    @property
    def scratch_capacity(self) -> int:
        """Levels the scratch buffer holds (grows to the largest frame seen)."""
