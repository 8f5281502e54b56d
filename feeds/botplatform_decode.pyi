"""Bot platform frame decoder (jscan); wire schemas in ``feeds.botplatform``."""
from typing import Any, Iterable

from typing_extensions import disjoint_base

from engine._core.account import Account
from engine._core.instrument import Instrument
from feeds._hotpath import Dispatch, FrameSink

KIND_POSITION_CREATE: int
KIND_POSITION_UPDATE: int
KIND_ORDER_CREATE: int
KIND_ORDER_UPDATE: int
POSITION_STATUS_NAMES: tuple[str, ...]
ORDER_STATUS_NAMES: tuple[str, ...]
ORDER_TYPE_NAMES: tuple[str, ...]
ORDER_SIDE_NAMES: tuple[str, ...]
POSITION_SIDE_NAMES: tuple[str, ...]

@disjoint_base
class BotPlatformDecoder(FrameSink):
    """Decodes bot platform frames in place into the Account; sequence state survives
    reconnects. ``feed`` raises DecodeError for a malformed frame (nothing applied)."""

    user_id: str
    last_seq: int
    synced: bool
    @property
    def heartbeats(self) -> int: ...
    @property
    def applied(self) -> int: ...
    @property
    def stale_messages(self) -> int: ...
    @property
    def unsynced_dropped(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def superseded(self) -> int: ...
    @property
    def unknown_symbol(self) -> int: ...
    @property
    def unknown_messages(self) -> int: ...
    def __init__(self, venue: Any, account: Account, dispatch: Dispatch, instruments: Iterable[Instrument]) -> None: ...
    def current_positions(self) -> dict[str, str]: ...
    def reset_connection(self) -> None: ...
