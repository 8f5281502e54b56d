"""Recordings of every non-Binance venue replay to the state the engine reached live.

Each venue's simulator runs on loopback, an engine records the feed
(``record_path=``) for a second of live data (reconnect included for one venue), and
``engine.replay_venue`` feeds the file through a never-connected engine's adapter. The
books and the account must equal the live engine's exactly.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.demo import DEMO_VENUES
from engine.replay import main as replay_main
from engine.replay_venue import replay_recording


def _state(eng: Engine, insts: list[Any], has_books: bool, account_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if has_books:
        for inst in insts:
            book = eng.book(inst.symbol)
            bid, ask = book.best_bid(), book.best_ask()
            out[inst.symbol] = {
                "best_bid": None if bid is None else inst.ticks_to_price(bid[0]),
                "best_ask": None if ask is None else inst.ticks_to_price(ask[0]),
                "bid_levels": book.bid_count,
                "ask_levels": book.ask_count,
            }
    if account_id is not None:
        acct = eng.account(account_id)
        out["orders"] = len(acct.orders())
        out["positions"] = {p.instrument.symbol: p.qty_lots for p in acct.positions()}
    return out


async def _record(venue: str, path: Path, drop: bool) -> tuple[Any, dict[str, Any]]:
    setup = await DEMO_VENUES[venue](11)
    eng = Engine()
    for inst in setup.instruments:
        eng.add_instrument(inst)
    eng.connect(venue, record_path=str(path), **setup.connect)
    await eng.run(seconds=0.6)
    if drop:
        setup.sim.drop()  # the recording spans a reconnect
        await eng.run(seconds=0.6)
    await eng.close()
    await setup.sim.stop()
    assert path.exists() and path.stat().st_size > 0
    return setup, _state(eng, setup.instruments, setup.has_books, setup.connect.get("account_id"))


@pytest.mark.parametrize("venue", ["cadenza", "prices", "realtime", "stream", "botplatform"])
def test_recording_replays_to_the_live_state(venue: str, tmp_path: Path) -> None:
    path = tmp_path / f"{venue}.rec"
    setup, live = asyncio.run(_record(venue, path, drop=venue in ("cadenza", "botplatform")))
    account_id = setup.connect.get("account_id")
    summary = replay_recording(str(path), venue, setup.instruments, account_id=account_id,
                               token=setup.connect.get("token"))
    assert summary["frames"] > 10 and summary["errors"] == 0, summary
    replayed = dict(summary["books"]) if setup.has_books else {}
    if account_id is not None:
        replayed["orders"] = summary["orders"]
        replayed["positions"] = summary["positions"]
    assert replayed == live


def test_cli_replays_a_recorded_venue(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "prices.rec"
    setup, live = asyncio.run(_record("prices", path, drop=False))
    args = [str(path), "--venue", "prices", "--json"]
    for inst in setup.instruments:
        args += ["--instrument", f"{inst.symbol}:{inst.tick_size}:{inst.lot_size}"]
    assert replay_main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == 0 and out["books"] == live


def test_cli_needs_instruments_for_a_recorded_venue(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "empty.rec"
    path.write_text("")
    assert replay_main([str(path), "--venue", "stream"]) == 2
    assert "--instrument" in capsys.readouterr().err
