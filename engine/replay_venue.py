"""Replay a recording of any registered venue through its real decoding path.

``python -m engine replay PATH --venue NAME --instrument SYMBOL:TICK:LOT [...]``
(``--account-id``, ``--token`` where the venue needs them). A recording made with
``Engine.connect(..., record_path=PATH)`` holds every frame the venue sent, with its
receive time; each is handed to the venue adapter of a never-connected engine
(``Venue.replay_frame``), so books, trades, bars and the account end as they did live.
Binance recordings (and captures from other tools) go through ``engine.replay``.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from engine._core.instrument import Instrument
from engine.errors import DecodeError, FeedError


def parse_instrument(text: str) -> Instrument:
    """``SYMBOL:TICK:LOT`` (e.g. ``BTC-USDT:0.01:0.00001``) -> Instrument."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--instrument {text!r}: expected SYMBOL:TICK_SIZE:LOT_SIZE")
    return Instrument(parts[0], parts[1], parts[2])


def replay_recording(path: str, venue: str, instruments: Sequence[Instrument], *,
                     account_id: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Feed every frame of ``path`` to a fresh engine's ``venue`` adapter and summarize:
    frames, errors (frames the decoder refused, state unchanged), per-instrument best
    bid/ask (decimal strings) and levels, and the account's order and position counts."""
    return asyncio.run(_replay(path, venue, list(instruments), account_id, token))


async def _replay(path: str, venue: str, instruments: list[Instrument], account_id: str | None,
                  token: str | None) -> dict[str, Any]:
    # Inside a running loop: some venues schedule timers or callbacks as they decode.
    from engine.engine import Engine
    from feeds.recording import read_frames

    eng = Engine()
    for inst in instruments:
        eng.add_instrument(inst)
    kwargs: dict[str, Any] = {"url": "ws://127.0.0.1:1/replay", "instruments": instruments}
    if account_id is not None:
        kwargs["account_id"] = account_id
    if token is not None:
        kwargs["token"] = token
    feed = eng.connect(venue, **kwargs)  # never started: no socket is opened
    frames = errors = 0
    first_error = None
    t0 = time.perf_counter()
    for frame in read_frames(path):
        frames += 1
        try:
            feed.venue.replay_frame(feed, memoryview(frame.payload), frame.recv_ns)
        except (DecodeError, FeedError) as exc:
            errors += 1
            first_error = first_error or str(exc)
    seconds = time.perf_counter() - t0
    books = {}
    for inst in instruments:
        book = eng.book(inst.symbol)
        bid, ask = book.best_bid(), book.best_ask()
        books[inst.symbol] = {
            "best_bid": None if bid is None else inst.ticks_to_price(bid[0]),
            "best_ask": None if ask is None else inst.ticks_to_price(ask[0]),
            "bid_levels": book.bid_count,
            "ask_levels": book.ask_count,
        }
    summary: dict[str, Any] = {"path": path, "venue": venue, "frames": frames, "errors": errors,
                               "first_error": first_error, "books": books, "seconds": seconds}
    if account_id is not None:
        acct = eng.account(account_id)
        summary["orders"] = len(acct.orders())
        summary["positions"] = {p.instrument.symbol: p.qty_lots for p in acct.positions()}
    await eng.close()
    return summary
