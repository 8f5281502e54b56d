"""feeds.symbols: the symbol registry strategies consult before acting."""
from __future__ import annotations

import doctest
import logging
from typing import Any

import pytest

import feeds.symbols
from feeds.symbols import SymbolChange, SymbolInfo, SymbolNotTradable, SymbolRegistry

NOW = 1_800_000_000_000_000_000


def _reg() -> SymbolRegistry:
    return SymbolRegistry(clock=lambda: NOW)


def test_docstring_examples() -> None:
    result = doctest.testmod(feeds.symbols)
    assert result.attempted > 0 and result.failed == 0


def test_tradable_rules_and_reasons() -> None:
    reg = _reg()
    reg.replace_all([
        SymbolInfo("OK", True, True),
        SymbolInfo("OFF", False, True),
        SymbolInfo("INACTIVE", True, False),
        SymbolInfo("LATER", True, True, list_time_ns=NOW + 1),
        SymbolInfo("LISTED", True, True, list_time_ns=NOW),
        SymbolInfo("EXPIRED", True, True, exp_time_ns=NOW),
        SymbolInfo("EXPIRING", True, True, exp_time_ns=NOW + 1),
    ])
    assert reg.tradable_symbols() == ["OK", "LISTED", "EXPIRING"]
    assert reg.why_not("OFF") == "OFF: trading disabled (can_trade false)"
    assert reg.why_not("INACTIVE") == "INACTIVE: not active (is_active false)"
    assert reg.why_not("LATER") == f"LATER: not listed until {NOW + 1} ns"
    assert reg.why_not("EXPIRED") == f"EXPIRED: expired at {NOW} ns"
    assert reg.why_not("NOPE") == "NOPE: unknown symbol (not listed by the venue)"
    assert reg.tradable("LATER", now_ns=NOW + 1) and not reg.tradable("EXPIRING", now_ns=NOW + 1)
    assert reg.require("OK") == SymbolInfo("OK", True, True)
    with pytest.raises(SymbolNotTradable) as err:
        reg.require("EXPIRED")
    assert err.value.symbol == "EXPIRED" and "expired" in err.value.reason
    assert len(reg) == 7 and "OK" in reg and "NOPE" not in reg and list(reg)[0] == "OK"


def test_update_and_replace_report_changes_then_call_back() -> None:
    reg = _reg()
    seen: list[tuple[SymbolChange, bool]] = []
    # The callback reads the registry: it already shows the change it is told about.
    reg.on_change(lambda ch: seen.append((ch, reg.tradable(ch.symbol))))
    a = SymbolInfo("A", True, True)
    assert reg.update(a) == SymbolChange("A", None, a)
    assert reg.update(a) is None  # same info: no change, no callback
    a_off = SymbolInfo("A", False, True)
    reg.update(a_off)
    assert seen == [(SymbolChange("A", None, a), True), (SymbolChange("A", a, a_off), False)]
    b = SymbolInfo("B", True, True)
    changes = reg.replace_all([b, a_off])
    assert changes == [SymbolChange("B", None, b)]
    changes = reg.replace_all([b])
    assert changes == [SymbolChange("A", a_off, None)] and "A" not in reg
    assert reg.changes == 4 and len(seen) == 4
    with pytest.raises(ValueError, match="twice"):
        reg.replace_all([b, SymbolInfo("B", False, True)])
    assert reg.get("B") == b  # refused whole


def test_callback_errors_are_counted_and_do_not_stop_others(caplog: Any) -> None:
    reg = _reg()
    calls: list[str] = []

    def bad(ch: SymbolChange) -> None:
        raise RuntimeError("strategy bug")

    async def coro(ch: SymbolChange) -> None:  # not supported: closed, counted
        calls.append("never")

    reg.on_change(bad)
    reg.on_change(coro)
    good = reg.on_change(lambda ch: calls.append(ch.symbol))
    with caplog.at_level(logging.ERROR):
        reg.update(SymbolInfo("A", True, True))
    assert calls == ["A"] and reg.callback_errors == 2 and reg.get("A") is not None
    assert "strategy bug" in caplog.text
    reg.remove_callback(good)
    reg.update(SymbolInfo("A", False, True))
    assert calls == ["A"]
    with pytest.raises(TypeError):
        reg.on_change(42)  # type: ignore[arg-type]
