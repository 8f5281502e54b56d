"""Run a venue simulator from the command line.

    python -m feeds.sim cadenza --port 8000 --seed 7
    python -m feeds.sim cadenza --port 0 --burst 200000      # burst mode, for benchmarks
    python -m feeds.sim binance --port 8001 --http-port 8002
    python -m feeds.sim <venue> --set key=value ...          # venue-specific options

Venues are discovered, not listed: every ``feeds/sim/<venue>.py`` module that defines
``from_cli(args: argparse.Namespace) -> SimServer`` is a choice (``args`` holds the
common options below, and ``args.options`` the ``--set key=value`` pairs as strings).
A simulator module without its own ``from_cli`` yet may have one in ``_FALLBACK`` below
(the module's own always wins).

Prints one JSON line on stdout once listening (``{"venue":..,"url":..,"port":..}``
plus ``rest_url`` when the venue has one), then serves until SIGINT/SIGTERM or
``--seconds`` elapse, and stops cleanly (every connection closed with 1001).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import pkgutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import feeds.sim
from feeds.sim.server import SimServer

BuildFn = Callable[[argparse.Namespace], SimServer]


def _stream_from_cli(args: argparse.Namespace) -> SimServer:
    """``python -m feeds.sim stream`` while feeds/sim/stream.py has no ``from_cli``:
    ``--seed --token`` (the accepted apiKey) ``--ping`` (Engine.IO ping interval, s)
    ``--interval --burst --burst-symbol --host --port``."""
    from feeds.sim.stream import StreamSim
    kw: dict[str, Any] = {}
    if args.ping is not None:
        kw["ping_interval_ms"] = int(args.ping * 1000)
    return StreamSim(seed=args.seed, api_key=args.token, interval_s=0.01 if args.interval is None else args.interval,
                     burst=args.burst, burst_symbol=args.burst_symbol, host=args.host, port=args.port, **kw)


#: Builders for simulator modules that do not define ``from_cli`` themselves.
_FALLBACK: dict[str, BuildFn] = {"stream": _stream_from_cli}


def venues() -> dict[str, str]:
    """{venue name: module name} of every simulator module with a ``from_cli`` (its own,
    or one in ``_FALLBACK``). Modules are found by name and only the ones mentioning
    ``from_cli`` are listed, so listing them imports nothing."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(feeds.sim.__path__):
        if info.name.startswith("_") or info.name in ("server", "market"):
            continue
        source = Path(feeds.sim.__path__[0]) / f"{info.name}.py"
        if source.is_file() and (info.name in _FALLBACK or "def from_cli(" in source.read_text(encoding="utf-8")):
            found[info.name] = f"feeds.sim.{info.name}"
    return found


def _parser(choices: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m feeds.sim", description="Run a venue simulator.")
    p.add_argument("venue", choices=choices)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--port", type=int, default=0, help="WebSocket port (0: any free port)")
    p.add_argument("--seed", type=int, default=1, help="synthetic market seed")
    p.add_argument("--token", default="sim-token", help="accepted token (venues with auth)")
    p.add_argument("--ping", type=int, default=None, help="server ping interval, s")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between market steps / replay ticks (venue default)")
    p.add_argument("--burst", type=int, default=0,
                   help="burst mode: N pre-encoded frames per subscription")
    p.add_argument("--burst-symbol", default=None, help="instrument of the burst")
    p.add_argument("--http-port", type=int, default=0, help="REST port (venues with REST)")
    p.add_argument("--recording", type=Path, default=None,
                   help="recorded Binance frames, hftbacktest format")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="venue-specific option (repeatable)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: never)")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    return p


def build(args: argparse.Namespace) -> SimServer:
    """The simulator the parsed ``args`` describe (not started)."""
    module = importlib.import_module(venues()[args.venue])
    from_cli: BuildFn = getattr(module, "from_cli", None) or _FALLBACK[args.venue]
    return from_cli(args)


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
    """Entry point; returns the process exit code (2 for a bad ``--set``)."""
    parser = _parser(sorted(venues()))
    args = parser.parse_args(argv)
    options: dict[str, str] = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        options[key] = value
    args.options = options
    if args.loop == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
