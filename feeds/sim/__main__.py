"""Run a venue simulator from the command line.

    python -m feeds.sim cadenza --port 8000 --seed 7
    python -m feeds.sim cadenza --port 0 --burst 200000      # burst mode, for benchmarks
    python -m feeds.sim binance --port 8001 --http-port 8002

Prints one JSON line on stdout once listening (``{"venue":..,"url":..,...}``; with
``--port 0`` it carries the chosen port), then serves until SIGINT/SIGTERM or
``--seconds`` elapse, and stops cleanly (every connection closed with 1001).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from feeds.sim.server import SimServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feeds.sim", description=__doc__.split("\n\n")[0])
    p.add_argument("venue", choices=["cadenza", "binance"])
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--port", type=int, default=0, help="WebSocket port (0: any free port)")
    p.add_argument("--seed", type=int, default=1, help="synthetic market seed (cadenza)")
    p.add_argument("--token", default="sim-token", help="accepted connect token (cadenza)")
    p.add_argument("--ping", type=int, default=25, help="server ping interval, s (cadenza)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between market steps (cadenza, default 0.01) / replay ticks "
                        "(binance, default 0.001)")
    p.add_argument("--burst", type=int, default=0,
                   help="cadenza burst mode: N pre-encoded book deltas per subscribe")
    p.add_argument("--burst-symbol", default=None, help="instrument of the burst (cadenza)")
    p.add_argument("--http-port", type=int, default=0, help="REST port (binance)")
    p.add_argument("--recording", type=Path, default=None,
                   help="recorded Binance frames, hftbacktest format (binance)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    return p


def build(args: argparse.Namespace) -> SimServer:
    """The simulator the parsed ``args`` describe (not started)."""
    if args.venue == "cadenza":
        from feeds.sim.cadenza import CadenzaSim
        return CadenzaSim(seed=args.seed, token=args.token, ping_s=args.ping,
                          interval_s=0.01 if args.interval is None else args.interval,
                          burst=args.burst,
                          burst_symbol=args.burst_symbol, host=args.host, port=args.port)
    from feeds.sim.binance import BinanceSim, binance_instrument
    from feeds.sim.market import RecordedBinance
    recording = (RecordedBinance.load(args.recording, binance_instrument())
                 if args.recording is not None else None)
    return BinanceSim(recording, interval_s=0.001 if args.interval is None else args.interval,
                      http_port=args.http_port,
                      host=args.host, port=args.port)


async def serve(args: argparse.Namespace) -> None:
    """Start the simulator, announce it on stdout, serve until a signal or timeout."""
    sim = build(args)
    await sim.start()
    info: dict[str, Any] = {"venue": sim.name, "url": sim.url, "port": sim.port}
    rest_url = getattr(sim, "rest_url", None)
    if rest_url is not None:
        info["rest_url"] = rest_url
    print(json.dumps(info), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        if args.seconds > 0:
            try:
                await asyncio.wait_for(done.wait(), args.seconds)
            except asyncio.TimeoutError:
                pass
        else:
            await done.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
