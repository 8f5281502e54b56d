"""Account: orders, netting positions and balances in typed memory (Cython)."""
from typing_extensions import disjoint_base
from types import TracebackType
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np
import numpy.typing as npt

from engine._core.instrument import Instrument
from engine._core.orders import Order
from engine._core.positions import Position

ORDER_DTYPE: np.dtype[np.void]
ORDER_ROW_SIZE: int

class Balance(NamedTuple):
    """One asset balance: exact integers at ``decimals`` fraction digits."""

    total: int
    available: int
    reserved: int
    decimals: int
    updated_ns: int


@disjoint_base
class Account:
    """Orders, netting positions and balances of one venue account."""

    @property
    def account_id(self) -> str: ...
    @property
    def feed_mode(self) -> bool: ...
    @property
    def error_count(self) -> int: ...
    @property
    def stale_count(self) -> int: ...
    @property
    def callback_error_count(self) -> int: ...
    @property
    def fill_count(self) -> int: ...
    @property
    def order_count(self) -> int: ...
    @property
    def max_closed_orders(self) -> int: ...
    @property
    def pruned_count(self) -> int: ...
    @property
    def order_capacity(self) -> int: ...
    @property
    def closed_order_count(self) -> int: ...
    @property
    def position_id_count(self) -> int: ...
    @property
    def in_batch(self) -> bool: ...
    def __init__(
        self,
        account_id: str = ...,
        instruments: Iterable[Instrument] = ...,
        *,
        feed_mode: bool = ...,
        max_closed_orders: int | None = ...,
    ) -> None: ...
    def batch(self) -> AccountBatch: ...
    def begin_batch(self) -> int: ...
    def commit_batch(self) -> int: ...
    def abort_batch(self) -> int: ...
    def set_callbacks(
        self,
        *,
        on_order: Callable[[Order], object] | None = ...,
        on_position: Callable[[Position], object] | None = ...,
        on_balance: Callable[[str, Balance], object] | None = ...,
        on_error: Callable[[Exception], object] | None = ...,
    ) -> None: ...
    def add_instrument(self, instrument: Instrument) -> int: ...
    def add_order(
        self,
        order_id: str,
        symbol: str,
        side: int,
        qty_lots: int,
        price_ticks: int = ...,
        *,
        order_type: int = ...,
        stop_price_ticks: int = ...,
        status: int = ...,
        client_id: str = ...,
        ts_ns: int = ...,
    ) -> int: ...
    def order_slot(self, order_id: str) -> int: ...
    def apply_fill(
        self, order_id: str, trade_id: int, price_ticks: int, qty_lots: int, fee: int = ..., ts_ns: int = ...
    ) -> bool: ...
    def apply_fill_slot(
        self, slot: int, trade_id: int, price_ticks: int, qty_lots: int, fee: int = ..., ts_ns: int = ...
    ) -> bool: ...
    def apply_order_event(self, order_id: str, event: int, ts_ns: int = ..., seq: int = ...) -> bool: ...
    def apply_order_snapshot(
        self,
        order_id: str,
        status: int,
        qty_lots: int,
        filled_lots: int,
        price_ticks: int,
        stop_price_ticks: int = ...,
        cost: int = ...,
        ts_ns: int = ...,
        seq: int = ...,
        fold_fills: bool = ...,
    ) -> bool: ...
    def has_order(self, order_id: str) -> bool: ...
    def order(self, order_id: str) -> Order: ...
    def order_by_client_id(self, client_id: str) -> Order: ...
    def order_ids_by_slot(self) -> list[str]: ...
    def orders(self, open_only: bool = ...) -> npt.NDArray[np.void]: ...
    def remove_closed_orders(self) -> int: ...
    def position(self, symbol: str) -> Position: ...
    def positions(self) -> list[Position]: ...
    def set_position_status(self, symbol: str, status: int, ts_ns: int = ...) -> bool: ...
    def set_asset_decimals(self, asset: str, decimals: int) -> None: ...
    def set_balance(
        self, asset: str, total: int, available: int, reserved: int, decimals: int = ..., ts_ns: int = ...
    ) -> bool: ...
    def balance(self, asset: str) -> Balance: ...
    def balances(self) -> dict[str, Balance]: ...
    def _check_invariants(self) -> None: ...
    def on_position_create(
        self,
        position_id: str,
        symbol: str,
        status: str,
        qty: str | int = ...,
        entry_price: str | None = ...,
        side: str | int | None = ...,
        realized_pnl: str | int | None = ...,
        ts_ns: int = ...,
    ) -> bool: ...
    def on_position_update(
        self,
        position_id: str,
        symbol: str,
        status: str,
        qty: str | int = ...,
        entry_price: str | None = ...,
        side: str | int | None = ...,
        realized_pnl: str | int | None = ...,
        ts_ns: int = ...,
    ) -> bool: ...
    def on_position_order_create(
        self,
        position_id: str,
        order_id: str,
        symbol: str,
        side: str | int,
        order_type: str,
        status: str,
        qty: str | int,
        price: str | int | None = ...,
        stop_price: str | int | None = ...,
        filled_qty: str | int = ...,
        client_id: str = ...,
        ts_ns: int = ...,
        seq: int = ...,
    ) -> bool: ...
    def on_position_order_update(
        self,
        order_id: str,
        status: str,
        qty: str | int,
        price: str | int | None = ...,
        stop_price: str | int | None = ...,
        filled_qty: str | int = ...,
        ts_ns: int = ...,
        seq: int = ...,
    ) -> bool: ...
    def on_nft_energy_update(self, energy: int, ts_ns: int = ...) -> bool: ...
    def on_openorders(
        self,
        cancel: Iterable[Mapping[str, Any]] = ...,
        modify: Iterable[Mapping[str, Any]] = ...,
        symbol: str | None = ...,
        ts_ns: int = ...,
    ) -> int: ...
    def on_balances(self, items: Iterable[Mapping[str, Any]], ts_ns: int = ...) -> int: ...


@disjoint_base
class AccountBatch:
    """Context manager of ``Account.batch()``."""

    @property
    def applied(self) -> bool: ...
    def __init__(self, account: Account) -> None: ...
    def __enter__(self) -> AccountBatch: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool: ...
