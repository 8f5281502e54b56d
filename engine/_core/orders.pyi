"""Order state machine (Cython). See engine.account for the enums."""
from typing_extensions import disjoint_base
from engine._core.instrument import Instrument
from engine.errors import OrderInputError as OrderInputError

def order_transition(status: int, event: int) -> int:
    """Next status, -1 illegal, -2 by fill, -3 back to the open state."""

@disjoint_base
class Order:
    """One order with its state machine (or a snapshot copy from an Account)."""

    @property
    def order_id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def instrument(self) -> Instrument | None: ...
    @property
    def symbol(self) -> str | None: ...
    def __init__(
        self,
        order_id: str,
        side: int,
        qty_lots: int,
        price_ticks: int = ...,
        *,
        order_type: int = ...,
        stop_price_ticks: int = ...,
        status: int = ...,
        client_id: str = ...,
        instrument: Instrument | None = ...,
        ts_ns: int = ...,
    ) -> None: ...
    def apply_fill(self, price_ticks: int, qty_lots: int, trade_id: int = ..., ts_ns: int = ...) -> bool: ...
    def apply_event(self, event: int, ts_ns: int = ..., seq: int = ...) -> bool: ...
    def apply_snapshot(
        self,
        status: int,
        qty_lots: int,
        filled_lots: int,
        price_ticks: int,
        stop_price_ticks: int = ...,
        cost: int = ...,
        ts_ns: int = ...,
        seq: int = ...,
    ) -> bool: ...
    def _check_invariants(self) -> None: ...
    @property
    def side(self) -> int: ...
    @property
    def order_type(self) -> int: ...
    @property
    def status(self) -> int: ...
    @property
    def price_ticks(self) -> int: ...
    @property
    def stop_price_ticks(self) -> int: ...
    @property
    def qty_lots(self) -> int: ...
    @property
    def filled_lots(self) -> int: ...
    @property
    def remaining_lots(self) -> int: ...
    @property
    def cost(self) -> int: ...
    @property
    def created_ns(self) -> int: ...
    @property
    def updated_ns(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def is_closed(self) -> bool: ...
