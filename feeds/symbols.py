"""Symbol registry: which symbols a venue lists, and whether a strategy may trade them now.

The bot platform venue (``feeds.botplatform``) keeps one :class:`SymbolRegistry` up to
date from its ``Symbol`` (full list) and ``SymbolUpdate`` (one symbol) messages. The
registry is updated *before* any callback runs and before the next frame is decoded,
so a strategy that asks ``registry.tradable(symbol)`` right before acting sees a
symbol's deactivation as soon as the venue announced it.

A symbol is *tradable* at time ``now_ns`` when it is known, ``is_active``,
``can_trade``, listed (``list_time_ns`` is None or <= now) and not expired
(``exp_time_ns`` is None or now < exp_time). :meth:`SymbolRegistry.why_not` gives the
reason when it is not.

>>> reg = SymbolRegistry()
>>> reg.update(SymbolInfo("BTC-USDT", can_trade=True, is_active=True))
SymbolChange(symbol='BTC-USDT', old=None, new=SymbolInfo(symbol='BTC-USDT', can_trade=True, is_active=True, list_time_ns=None, exp_time_ns=None))
>>> reg.tradable("BTC-USDT"), reg.tradable("ETH-USDT")
(True, False)
>>> _ = reg.update(SymbolInfo("BTC-USDT", can_trade=False, is_active=True))
>>> reg.why_not("BTC-USDT")
'BTC-USDT: trading disabled (can_trade false)'

Callbacks (``on_change``) receive a :class:`SymbolChange` after the registry changed;
they run through one wrapper that logs an exception with its traceback, counts it in
``callback_errors`` and carries on, so user code never leaves the registry half-updated.
Callbacks are plain functions (a coroutine function's result is closed, not awaited,
and counted as a callback error: run async work from a task you own).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from engine.errors import EngineError

__all__ = ["SymbolChange", "SymbolInfo", "SymbolNotTradable", "SymbolRegistry"]

log = logging.getLogger("feeds.symbols")


class SymbolNotTradable(EngineError):
    """``SymbolRegistry.require`` refused a symbol; ``reason`` says why."""

    def __init__(self, symbol: str, reason: str) -> None:
        super().__init__(reason)
        self.symbol = symbol
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What the venue says about one symbol.

    ``list_time_ns`` / ``exp_time_ns``: listing and expiry times, ns since the epoch
    (None: listed since forever / never expires)."""

    symbol: str
    can_trade: bool
    is_active: bool
    list_time_ns: int | None = None
    exp_time_ns: int | None = None

    def why_not(self, now_ns: int) -> str | None:
        """Why the symbol cannot be traded at ``now_ns`` (None when it can). O(1)."""
        if not self.is_active:
            return f"{self.symbol}: not active (is_active false)"
        if not self.can_trade:
            return f"{self.symbol}: trading disabled (can_trade false)"
        if self.list_time_ns is not None and now_ns < self.list_time_ns:
            return f"{self.symbol}: not listed until {self.list_time_ns} ns"
        if self.exp_time_ns is not None and now_ns >= self.exp_time_ns:
            return f"{self.symbol}: expired at {self.exp_time_ns} ns"
        return None

    def tradable_at(self, now_ns: int) -> bool:
        """True when ``why_not(now_ns)`` is None. O(1)."""
        return self.why_not(now_ns) is None


@dataclass(frozen=True, slots=True)
class SymbolChange:
    """One registry change: ``old`` is None for a new symbol, ``new`` None for a
    symbol the venue no longer lists."""

    symbol: str
    old: SymbolInfo | None
    new: SymbolInfo | None


SymbolCallback = Callable[[SymbolChange], object]


class SymbolRegistry:
    """Per-symbol trading permissions (``SymbolInfo``) with change callbacks.

    Reads (``get``, ``tradable``, ``why_not``, ``require``) are O(1) dict lookups and
    safe from any callback. Writes come from the venue adapter (``replace_all`` for a
    full list, ``update`` for one symbol); each returns the changes it made and then
    notifies ``on_change`` callbacks. ``clock`` gives "now" in ns when a read does not
    pass ``now_ns`` (default ``time.time_ns``; tests pass a fixed clock)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._symbols: dict[str, SymbolInfo] = {}
        self._callbacks: list[SymbolCallback] = []
        self._clock = clock
        #: Callback exceptions caught (logged with traceback, then ignored).
        self.callback_errors = 0
        #: Registry changes applied since creation (symbols added, changed or removed).
        self.changes = 0

    def __repr__(self) -> str:
        n_ok = sum(1 for s in self._symbols if self.tradable(s))
        return f"SymbolRegistry({len(self._symbols)} symbols, {n_ok} tradable)"

    # ---- reads -----------------------------------------------------------------------
    def get(self, symbol: str) -> SymbolInfo | None:
        """The venue's latest word on ``symbol``; None when it never listed it. O(1)."""
        return self._symbols.get(symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._symbols

    def __len__(self) -> int:
        return len(self._symbols)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._symbols))

    def snapshot(self) -> dict[str, SymbolInfo]:
        """Every known symbol (a new dict of the immutable infos). O(n)."""
        return dict(self._symbols)

    def why_not(self, symbol: str, now_ns: int | None = None) -> str | None:
        """Why ``symbol`` cannot be traded now (None when it can): unknown, not active,
        trading disabled, not listed yet, expired. O(1)."""
        info = self._symbols.get(symbol)
        if info is None:
            return f"{symbol}: unknown symbol (not listed by the venue)"
        return info.why_not(self._clock() if now_ns is None else now_ns)

    def tradable(self, symbol: str, now_ns: int | None = None) -> bool:
        """True when a strategy may act on ``symbol`` now (see the module docstring).
        Unknown symbols are not tradable. O(1)."""
        return self.why_not(symbol, now_ns) is None

    def require(self, symbol: str, now_ns: int | None = None) -> SymbolInfo:
        """The symbol's info when tradable; ``SymbolNotTradable`` (with the reason)
        otherwise. O(1)."""
        reason = self.why_not(symbol, now_ns)
        if reason is not None:
            raise SymbolNotTradable(symbol, reason)
        return self._symbols[symbol]

    def tradable_symbols(self, now_ns: int | None = None) -> list[str]:
        """Every symbol tradable now, in listing order. O(n)."""
        now = self._clock() if now_ns is None else now_ns
        return [s for s, info in self._symbols.items() if info.tradable_at(now)]

    # ---- callbacks -------------------------------------------------------------------
    def on_change(self, callback: SymbolCallback) -> SymbolCallback:
        """``callback(change: SymbolChange)`` after every change. Returns the callback
        (usable as a decorator). TypeError when not callable."""
        if not callable(callback):
            raise TypeError(f"on_change needs a callable, got {type(callback).__name__}")
        self._callbacks.append(callback)
        return callback

    def remove_callback(self, callback: SymbolCallback) -> None:
        """Stop calling ``callback`` (ValueError if it was not registered)."""
        self._callbacks.remove(callback)

    def _notify(self, changes: list[SymbolChange]) -> None:
        # The one place user callbacks run: errors are logged, counted, swallowed.
        for change in changes:
            for cb in list(self._callbacks):
                try:
                    result = cb(change)
                except Exception:
                    self.callback_errors += 1
                    log.exception("symbol callback %s raised; registry unaffected",
                                  getattr(cb, "__qualname__", repr(cb)))
                    continue
                if asyncio.iscoroutine(result):
                    result.close()  # not supported, see the module docstring
                    self.callback_errors += 1
                    log.error("symbol callback %s is a coroutine function; it was not run",
                              getattr(cb, "__qualname__", repr(cb)))

    # ---- writes (venue adapters) -----------------------------------------------------
    def update(self, info: SymbolInfo) -> SymbolChange | None:
        """Set one symbol (``SymbolUpdate``). Returns the change, or None when the info
        equals the current one (no callback then). O(callbacks)."""
        old = self._symbols.get(info.symbol)
        if old == info:
            return None
        self._symbols[info.symbol] = info
        self.changes += 1
        change = SymbolChange(info.symbol, old, info)
        self._notify([change])
        return change

    def replace_all(self, infos: Iterable[SymbolInfo]) -> list[SymbolChange]:
        """Replace the whole list (``Symbol`` message): symbols not in ``infos`` are
        removed. Applied whole, then callbacks run once per change. ValueError (and no
        change) when a symbol appears twice. O(n + callbacks x changes)."""
        new: dict[str, SymbolInfo] = {}
        for info in infos:
            if info.symbol in new:
                raise ValueError(f"symbol {info.symbol!r} listed twice")
            new[info.symbol] = info
        changes = [SymbolChange(s, old, None) for s, old in self._symbols.items() if s not in new]
        changes += [SymbolChange(s, self._symbols.get(s), info) for s, info in new.items()
                    if self._symbols.get(s) != info]
        self._symbols = new
        self.changes += len(changes)
        self._notify(changes)
        return changes
