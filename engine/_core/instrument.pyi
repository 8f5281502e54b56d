from typing_extensions import disjoint_base


@disjoint_base
class Instrument:
    """A tradable symbol with exact tick and lot sizes (decimal strings)."""

    symbol: str
    tick_size: str
    lot_size: str
    price_decimals: int
    tick_units: int
    qty_decimals: int
    lot_units: int
    instrument_id: int

    def __init__(self, symbol: str, tick_size: str, lot_size: str, instrument_id: int = 0) -> None: ...
    def price_to_ticks(self, price: str | bytes) -> int: ...
    def qty_to_lots(self, qty: str | bytes) -> int: ...
    def ticks_to_price(self, price_ticks: int, strip_zeros: bool = False) -> str: ...
    def lots_to_qty(self, qty_lots: int, strip_zeros: bool = False) -> str: ...
