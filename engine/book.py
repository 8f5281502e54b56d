"""Python face of the order book: sides, cross policies and the level dtype.

The book itself lives in ``engine._core.book`` (typed memory); see its docstrings.
"""
from __future__ import annotations

from enum import IntEnum

from engine._core.book import LEVEL_DTYPE, OrderBook


class Side(IntEnum):
    """Book side; also the taker side of a trade (BID buys, ASK sells)."""

    BID = 0
    ASK = 1


class CrossPolicy(IntEnum):
    """What an ``OrderBook`` does when an update leaves best bid >= best ask."""

    RAISE = 0  #: reject the update with BookCrossedError; the book is unchanged
    PRUNE = 1  #: remove the stale opposite levels the fresh side crosses
    ALLOW = 2  #: keep both; ``is_crossed()`` reports it


__all__ = ["CrossPolicy", "LEVEL_DTYPE", "OrderBook", "Side"]
