"""Exceptions raised by the engine.

Every error names what was wrong (the offending value, field or byte offset) so a bot
log line is enough to find the cause. None of them ever carries a secret.
"""
from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class DecimalError(EngineError, ValueError):
    """A decimal string is malformed, overflows int64, or is not a whole number of steps."""


class BookError(EngineError, ValueError):
    """An order-book operation was given bad input (sizes, dtypes, lengths, sides)."""


class BookCrossedError(BookError):
    """An update would leave the book crossed or locked and the policy is to raise."""


class KlineError(EngineError, ValueError):
    """Bad input to the kline aggregator (a size, timestamp, side, interval or candle);
    the message names the field and value. Nothing was changed."""


class OrderInputError(EngineError, ValueError):
    """An order or position call was given a bad value (quantity, price, side, status
    string, unknown order id); nothing was changed."""


class DecodeError(EngineError, ValueError):
    """A frame could not be decoded; ``offset`` is the byte where decoding stopped."""

    def __init__(self, reason: str, offset: int = -1) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset < 0 else f"{reason} at byte {offset}")


class SequenceGapError(EngineError):
    """An update does not follow the last applied one; the book needs a resync."""


class InvalidTransition(EngineError, ValueError):
    """An order or position event is not legal from the current state."""


class FeedError(EngineError):
    """A venue connection failed; ``terminal`` says whether reconnecting is pointless."""

    def __init__(self, reason: str, terminal: bool = False) -> None:
        self.reason = reason
        self.terminal = terminal
        super().__init__(reason)
