"""Python face of the zero-copy JSON scanner (the C API is in jscan.pxd).

These helpers exist for tests and tooling; decoders use the C API. ``frame`` is any
C-contiguous buffer (bytes, bytearray, memoryview); it is only read during the call.
"""
from typing import Union

_Buffer = Union[bytes, bytearray, memoryview]

def scan_validate(frame: _Buffer, max_depth: int = 64) -> None:
    """Validate that ``frame`` holds exactly one JSON value. O(len).
    Raises DecodeError(reason, offset) on the first error."""

def find_string(frame: _Buffer, *path: str) -> str:
    """The string at the object key path, unescaped. KeyError / DecodeError."""

def find_int(frame: _Buffer, *path: str, allow_string: bool = False) -> int:
    """The int64 at the object key path. KeyError / DecodeError."""

def find_steps(frame: _Buffer, step: str, *path: str) -> int:
    """The decimal string or number at the path as an exact count of ``step``."""

def levels(frame: _Buffer, tick_size: str, lot_size: str, *path: str,
           allow_extra: bool = False) -> list[tuple[int, int]]:
    """The [price, qty] level array at the path as (ticks, lots) tuples. O(len)."""
