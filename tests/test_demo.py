"""``python -m engine demo``: the main job runs the simulators and the engine live."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import demo
from engine.engine import VENUES

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"connected", "frames", "errors", "gaps", "reconnects", "best_bid", "best_ask"}


def _check_row(row: dict[str, Any], book: bool = True) -> None:
    assert REQUIRED <= set(row)
    assert row["connected"] is True and row["frames"] > 0 and row["errors"] == 0
    if book:
        bid, ask = Decimal(row["best_bid"]), Decimal(row["best_ask"])  # exact decimal strings
        assert 0 < bid < ask


def test_demo_json_every_venue() -> None:
    proc = subprocess.run([sys.executable, "-m", "engine", "demo", "--seconds", "2", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result) == set(demo.DEMO_VENUES) >= {"cadenza", "binance"}
    for name, row in result.items():
        _check_row(row, book=name in ("cadenza", "binance"))
    assert result["cadenza"]["best_bid"] == result["cadenza"]["books"]["BTC-USDT"]["best_bid"]


def test_demo_one_venue_with_display(capsys: Any) -> None:
    assert demo.main(["--seconds", "1", "--venue", "cadenza", "--asyncio"]) == 0
    out = capsys.readouterr().out
    assert "[cadenza]" in out and "BTC-USDT" in out and "summary:" in out and "binance" not in out


def test_a_new_venue_joins_with_one_entry_each(monkeypatch: Any, capsys: Any) -> None:
    # A venue is one VENUES line (the adapter) plus one DEMO_VENUES entry (its simulator).
    monkeypatch.setitem(VENUES, "cadenza-copy", "feeds.cadenza:CadenzaVenue")
    monkeypatch.setitem(demo.DEMO_VENUES, "cadenza-copy", demo.DEMO_VENUES["cadenza"])
    assert demo.main(["--seconds", "1", "--json", "--venue", "cadenza-copy"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["cadenza-copy"]
    _check_row(result["cadenza-copy"])


def test_demo_rejects_unknown_venue() -> None:
    with pytest.raises(SystemExit):
        demo.main(["--venue", "nope"])
