"""``python -m engine replay PATH --venue binance-spot|binance-usdm|binance-coinm``

(Recordings of the other venues: ``--venue NAME --instrument SYMBOL:TICK:LOT``, see
``engine.replay_venue``.)

Replays a recorded file (hftbacktest ``<receive_ns> <json>`` lines, gzip or plain, or a
cryptofeed capture) through the real decoding path -- ``BinanceBookSync.feed`` on each
frame's bytes -- and prints a summary (``--json``: one JSON object).

Symbol: ``--symbol``, else the ``s`` of the first frame that has one. Frames of other
symbols in a multi-symbol capture are skipped (by the combined-stream name, or the
``symbol=`` of a REST capture's URL) before timing starts.

Tick and lot sizes, when ``--tick-size``/``--lot-size`` are not given, are inferred from
the first depth snapshot in the file:

- tick = 10**-d, d = the most significant decimals of any snapshot price (trailing
  zeros do not count): matching engines only accept prices on the tick, so the
  snapshot's 2,000 prices reveal it ("61837.63000000" -> d=2 -> "0.01");
- lot = 10**-w, w = the decimals the wire writes sizes with ("3.78826000" -> w=8).
  Sizes in Binance depth frames are not always multiples of the symbol's lot
  (BTCUSDT spot on 2024-08-08 has three diff sizes with 6 significant decimals against
  5 in the snapshot), and the wire's precision is the only bound no frame exceeds.

A frame that still does not fit (or is malformed) is counted in ``errors``; the
replay goes on. Exit status: 0 when the replay ran, 2 on bad arguments or a file with
no usable snapshot and no sizes given.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Sequence

from engine._core.instrument import Instrument
from engine._core import jscan
from engine.book import CrossPolicy, OrderBook
from engine.errors import BookError, DecodeError
from feeds.binance_sync import BinanceBookSync
from feeds.recording import RecordedFrame, read_frames

VENUES = {"binance-spot": "spot", "binance-usdm": "usdm", "binance-coinm": "coinm"}

_LEVEL = re.compile(rb'\[\s*"(-?\d+)(?:\.(\d*))?"\s*,\s*"(-?\d+)(?:\.(\d*))?"')


def infer_steps(snapshot: bytes) -> tuple[str, str]:
    """Tick and lot sizes implied by a Binance REST depth snapshot (rule in the module
    docstring). ValueError if it holds no levels. O(len)."""
    price_sig = 0
    qty_wire = 0
    found = False
    for m in _LEVEL.finditer(snapshot):
        found = True
        price_sig = max(price_sig, len((m.group(2) or b"").rstrip(b"0")))
        qty_wire = max(qty_wire, len(m.group(4) or b""))
    if not found:
        raise ValueError("the snapshot has no [price, qty] levels to infer tick and lot sizes from")
    return _step(price_sig), _step(qty_wire)


def _step(decimals: int) -> str:
    return "1" if decimals == 0 else "0." + "0" * (decimals - 1) + "1"


def _is_snapshot(payload: bytes) -> bool:
    try:
        jscan.find_int(payload, "lastUpdateId")
    except (KeyError, DecodeError):
        return False
    return True


def _stream_symbol(frame: RecordedFrame) -> str | None:
    """Lower-case symbol a frame belongs to, when the frame says (stream name or URL)."""
    if frame.channel:
        m = re.search(r"[?&]symbol=([A-Za-z0-9_]+)", frame.channel)
        return m.group(1).lower() if m else None
    try:
        return jscan.find_string(frame.payload, "stream").split("@", 1)[0].lower()
    except (KeyError, DecodeError):
        return None


def _first_symbol(frames: Sequence[RecordedFrame]) -> str | None:
    for f in frames:
        for path in (("data", "s"), ("s",)):
            try:
                return jscan.find_string(f.payload, *path)
            except (KeyError, DecodeError):
                continue
    return None


def replay(path: str, venue: str, *, tick_size: str | None = None, lot_size: str | None = None,
           symbol: str | None = None) -> dict[str, Any]:
    """Replay ``path`` and return the summary dict (keys listed in the module docs).
    ValueError when no symbol or no sizes can be determined."""
    market = VENUES[venue]
    frames = list(read_frames(path))
    symbol = symbol or _first_symbol(frames)
    if not symbol:
        raise ValueError(f"{path}: no frame names its symbol; pass --symbol")
    wanted = symbol.lower()
    frames = [f for f in frames if _stream_symbol(f) in (None, wanted)]
    if tick_size is None or lot_size is None:
        snapshot = next((f.payload for f in frames if _is_snapshot(f.payload)), None)
        if snapshot is None:
            raise ValueError(f"{path}: no depth snapshot for {symbol}; pass --tick-size and --lot-size")
        inferred_tick, inferred_lot = infer_steps(snapshot)
        tick_size = tick_size or inferred_tick
        lot_size = lot_size or inferred_lot
    instrument = Instrument(symbol, tick_size, lot_size)
    # ALLOW: a crossed book is counted (``crossed``) rather than hidden by the book.
    book = OrderBook(instrument, cross_policy=CrossPolicy.ALLOW)
    sync = BinanceBookSync(book, market)
    payloads = [f.payload for f in frames]
    t0 = time.perf_counter_ns()
    for payload in payloads:
        try:
            sync.feed(payload)
        except (DecodeError, BookError):
            pass  # counted by the sync in `errors`; the book and the sync are unchanged
    seconds = (time.perf_counter_ns() - t0) / 1e9
    summary: dict[str, Any] = {"path": str(path), "venue": venue, "symbol": symbol,
                               "tick_size": tick_size, "lot_size": lot_size}
    summary.update(sync.counters())
    bbo = book.bbo()
    summary.update(
        state=sync.state_name,
        last_update_id=book.last_update_id,
        best_bid=None if bbo[0] is None else instrument.ticks_to_price(bbo[0]),
        best_bid_qty=None if bbo[1] is None else instrument.lots_to_qty(bbo[1]),
        best_ask=None if bbo[2] is None else instrument.ticks_to_price(bbo[2]),
        best_ask_qty=None if bbo[3] is None else instrument.lots_to_qty(bbo[3]),
        bid_levels=book.bid_count,
        ask_levels=book.ask_count,
        last_gap_reason=sync.last_gap_reason,
        seconds=seconds,
        ns_per_frame=seconds * 1e9 / max(len(payloads), 1),
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m engine replay", description=__doc__.split("\n\n")[0])
    from engine.engine import VENUES as LIVE_VENUES
    from engine.replay_venue import parse_instrument, replay_recording

    recorded = sorted(name for name in LIVE_VENUES if name != "binance")
    parser.add_argument("path")
    parser.add_argument("--venue", required=True, choices=sorted(VENUES) + recorded,
                        help="a Binance market, or a venue whose feed recorded PATH (record_path=)")
    parser.add_argument("--tick-size")
    parser.add_argument("--lot-size")
    parser.add_argument("--symbol")
    parser.add_argument("--instrument", action="append", default=[], metavar="SYMBOL:TICK:LOT",
                        help="an instrument of a recorded venue (repeat for each)")
    parser.add_argument("--account-id")
    parser.add_argument("--token", help="only where a venue's decoder checks it (never printed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        if args.venue in VENUES:
            summary = replay(args.path, args.venue, tick_size=args.tick_size, lot_size=args.lot_size,
                             symbol=args.symbol)
        else:
            if not args.instrument:
                raise ValueError(f"--venue {args.venue} needs at least one --instrument SYMBOL:TICK:LOT")
            summary = replay_recording(args.path, args.venue, [parse_instrument(t) for t in args.instrument],
                                       account_id=args.account_id, token=args.token)
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
