"""``python -m engine demo``: local venue simulators, the engine live, a sample strategy.

Starts every simulator in ``DEMO_VENUES`` on loopback, connects the engine to each (on
uvloop), runs a small strategy hook (a mid-price EMA crossover that counts signals and
tracks the widest spread), shows top of book, the last closed bars and the account's
positions in the terminal, and ends with a summary.

    python -m engine demo                       # every venue, 10 s, live display
    python -m engine demo --seconds 5 --json    # JSON summary keyed by venue name
    python -m engine demo --venue cadenza       # one venue (repeatable)

JSON output: ``{"cadenza": {"connected": true, "status": "subscribed", "frames": ...,
"errors": ..., "gaps": ..., "resyncs": ..., "reconnects": ..., "best_bid": "61837.63",
"best_ask": "61837.64", "books": {...}, "latency_ns": {...}}, "binance": {...}}``;
prices are exact decimal strings (null for an empty side, and for venues that carry no
book: botplatform is an account feed, realtime a quote feed). ``"venue"`` holds the
adapter's own ``describe()`` (quotes, symbols, channel offsets, counters).

A later venue joins with one ``DEMO_VENUES`` entry: a coroutine that starts its
simulator and returns it with the ``Engine.connect`` arguments (venue name from the
key).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from engine._core.instrument import Instrument
from engine.engine import BarClose, Engine, Trade


@dataclass
class DemoSetup:
    """What a demo venue factory returns: the running simulator (``stop()`` is awaited
    at the end), the instruments it trades and the ``Engine.connect`` keywords."""

    sim: Any
    instruments: list[Instrument]
    connect: dict[str, Any] = field(default_factory=dict)
    #: False for venues that carry no order book (account or quote feeds): their
    #: instruments' books belong to other venues and are not reported as theirs.
    has_books: bool = True


async def _cadenza(seed: int) -> DemoSetup:
    from feeds.sim.cadenza import CadenzaSim
    token = "demo-token"
    sim = CadenzaSim(seed=seed, token=token, interval_s=0.01)
    await sim.start()
    return DemoSetup(sim, list(sim.market.instruments.values()),
                     dict(url=sim.url, token=token, account_id=sim.market.account_id))


async def _binance(seed: int) -> DemoSetup:
    from feeds.sim.binance import BinanceSim
    # The recording is short: replay it at a watchable pace (about 250 frames/s).
    sim = BinanceSim(interval_s=0.02, frames_per_tick=5)
    await sim.start()
    return DemoSetup(sim, [sim.instrument], dict(url=sim.url, rest_url=sim.rest_url))


async def _botplatform(seed: int) -> DemoSetup:
    from feeds.sim.botplatform import BotPlatformSim
    token = "demo-token"
    sim = BotPlatformSim(seed=seed, token=token, interval_s=0.02)
    await sim.start()
    return DemoSetup(sim, list(sim.instruments.values()), dict(url=sim.url, token=token, account_id=sim.user_id),
                     has_books=False)


async def _prices(seed: int) -> DemoSetup:
    from feeds.sim.prices import PricesSim
    sim = PricesSim(seed=seed, interval_s=0.02)
    await sim.start()
    # No markets: the subscription omits them and the server sends every EUR pair.
    return DemoSetup(sim, [sim.instruments[m] for m in sim.eur_markets], dict(url=sim.url))


async def _realtime(seed: int) -> DemoSetup:
    from feeds.sim.market import SyntheticMarket
    from feeds.sim.realtime import RealtimeSim
    jwt = "demo.jwt.token"
    # Own symbols: its trades must not share kline aggregators with another venue's.
    insts = [Instrument("BTC-USD", "0.01", "0.00001"), Instrument("ETH-USD", "0.01", "0.0001")]
    market = SyntheticMarket(insts, seed=seed, mids={"BTC-USD": "61837.63", "ETH-USD": "2631.45"},
                             account_rate=0.0)
    sim = RealtimeSim(market, jwt=jwt, interval_s=0.02)
    await sim.start()
    # Last prices and quotes, not a book: see the summary's "venue" entry.
    return DemoSetup(sim, insts, dict(url=sim.url, token=jwt), has_books=False)


async def _stream(seed: int) -> DemoSetup:
    from feeds.sim.market import SyntheticMarket
    from feeds.sim.stream import StreamSim
    key = "demo-api-key"
    # Own symbols and account: books, bars and orders must not mix with another venue's.
    insts = [Instrument("BTC-USDC", "0.01", "0.00001"), Instrument("ETH-USDC", "0.01", "0.0001")]
    market = SyntheticMarket(insts, seed=seed, mids={"BTC-USDC": "61837.63", "ETH-USDC": "2631.45"},
                             account_id="S-1")
    sim = StreamSim(market, api_key=key, interval_s=0.02)
    await sim.start()
    return DemoSetup(sim, insts, dict(url=sim.url, token=key, account_id="S-1"))


#: Demo registry: venue name (as in ``engine.engine.VENUES``) -> simulator factory.
DEMO_VENUES: dict[str, Callable[[int], Awaitable[DemoSetup]]] = {
    "cadenza": _cadenza,
    "binance": _binance,
    "botplatform": _botplatform,
    "prices": _prices,
    "realtime": _realtime,
    "stream": _stream,
}


class SampleStrategy:
    """A toy strategy hook: fast/slow EMA of the mid price per symbol (integer ticks,
    fixed-point so nothing is a float), a signal when they cross, and the widest
    spread seen. Shows how callbacks read the core objects without copying."""

    FAST_SHIFT = 2   # alpha = 1/4
    SLOW_SHIFT = 5   # alpha = 1/32

    def __init__(self) -> None:
        self.updates: dict[str, int] = {}
        self.signals: dict[str, int] = {}
        self.max_spread_ticks: dict[str, int] = {}
        self.last_bar: dict[str, BarClose] = {}
        self.trades = 0
        self._ema: dict[str, tuple[int, int, int]] = {}  # fast, slow (ticks << 16), last sign

    def on_book(self, book: Any) -> None:
        bbo = book.bbo()
        if bbo[0] is None or bbo[2] is None:
            return
        sym = book.instrument.symbol
        self.updates[sym] = self.updates.get(sym, 0) + 1
        spread = bbo[2] - bbo[0]
        if spread > self.max_spread_ticks.get(sym, -1):
            self.max_spread_ticks[sym] = spread
        mid = (bbo[0] + bbo[2]) << 15  # mid in ticks, 16 fractional bits
        fast, slow, sign = self._ema.get(sym, (mid, mid, 0))
        fast += (mid - fast) >> self.FAST_SHIFT
        slow += (mid - slow) >> self.SLOW_SHIFT
        new_sign = (fast > slow) - (fast < slow)
        if new_sign and sign and new_sign != sign:
            self.signals[sym] = self.signals.get(sym, 0) + 1
        self._ema[sym] = (fast, slow, new_sign or sign)

    def on_trade(self, trade: Trade) -> None:
        self.trades += 1

    def on_bar(self, close: BarClose) -> None:
        self.last_bar[close.symbol] = close


def _price(inst: Instrument, level: Any) -> str | None:
    return None if level is None else inst.ticks_to_price(level[0])


def summary(eng: Engine, venue_instruments: dict[str, list[Instrument]]) -> dict[str, dict[str, Any]]:
    """The demo's result per venue (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    stats = eng.stats()
    for name, insts in venue_instruments.items():
        row = stats.get(name, {})
        books = {}
        for inst in insts:
            book = eng.book(inst.symbol)
            books[inst.symbol] = {"best_bid": _price(inst, book.best_bid()),
                                  "best_ask": _price(inst, book.best_ask()),
                                  "last_update_id": book.last_update_id}
        first = books[insts[0].symbol] if insts else {"best_bid": None, "best_ask": None}
        feed = eng.feeds.get(name)
        out[name] = {
            "connected": bool(row.get("connected")),
            "ever_connected": bool(feed is not None and feed.connected_once),
            "status": row.get("status"),
            "reason": row.get("reason"),
            "frames": row.get("frames", 0),
            "bytes": row.get("bytes", 0),
            "errors": row.get("decode_errors", 0) + row.get("callback_errors", 0),
            "gaps": row.get("gaps", 0),
            "resyncs": row.get("resyncs", 0),
            "reconnects": row.get("reconnects", 0),
            "best_bid": first["best_bid"],
            "best_ask": first["best_ask"],
            "books": books,
            "latency_ns": row.get("latency_ns", {}),
        }
        describe = getattr(feed.venue, "describe", None) if feed is not None else None
        if callable(describe):
            out[name]["venue"] = describe()  # venue-specific state (quotes, symbols, ...)
    return out


def _render(eng: Engine, strat: SampleStrategy, venue_instruments: dict[str, list[Instrument]],
            elapsed_s: float, clear: bool) -> str:
    lines = [f"ticklot demo  t={elapsed_s:5.1f}s  (Ctrl-C to stop)", ""]
    stats = eng.stats()
    for name, insts in venue_instruments.items():
        row = stats.get(name, {})
        lat = row.get("latency_ns", {})
        lines.append(f"[{name}] {row.get('status', '?'):<12} frames={row.get('frames', 0):<8} "
                     f"gaps={row.get('gaps', 0)} reconnects={row.get('reconnects', 0)} "
                     f"latency p50={lat.get('p50', 0) / 1000:.1f}us p99={lat.get('p99', 0) / 1000:.1f}us")
        for inst in insts:
            book = eng.book(inst.symbol)
            bid, ask = book.best_bid(), book.best_ask()
            bar = strat.last_bar.get(inst.symbol)
            bar_txt = ""
            if bar is not None:
                b = bar.bar
                bar_txt = (f"  last {bar.interval} bar o={inst.ticks_to_price(int(b['open_ticks']))} "
                           f"c={inst.ticks_to_price(int(b['close_ticks']))} n={int(b['trade_count'])}")
            lines.append(f"   {inst.symbol:<10} bid {_price(inst, bid) or '-':>12} x {inst.lots_to_qty(bid[1]) if bid else '-':<12}"
                         f" ask {_price(inst, ask) or '-':>12} x {inst.lots_to_qty(ask[1]) if ask else '-':<12}"
                         f" signals={strat.signals.get(inst.symbol, 0)}{bar_txt}")
    for acct_id, acct in eng.accounts.items():
        pos = [p for p in acct.positions() if p.qty_lots]
        text = ", ".join(f"{p.symbol} {p.qty_lots:+d} lots" for p in pos) or "flat"
        lines.append(f"[account {acct_id}] positions: {text}; open orders: {len(acct.orders(open_only=True))}")
    text = "\n".join(lines)
    return ("\x1b[H\x1b[2J" + text) if clear else text


async def run_demo(venues: Sequence[str], seconds: float, *, seed: int = 7, show: bool = True,
                   refresh_s: float = 0.5, out: Any = None) -> dict[str, dict[str, Any]]:
    """Start the simulators of ``venues``, connect, run for ``seconds``, return the
    summary. Everything started here is stopped before returning."""
    out = out or sys.stdout
    eng = Engine(bar_intervals=("1s",))
    strat = SampleStrategy()
    eng.on_book(strat.on_book)
    eng.on_trade(strat.on_trade)
    eng.on_bar(strat.on_bar)
    setups: dict[str, DemoSetup] = {}
    try:
        for name in venues:
            setups[name] = await DEMO_VENUES[name](seed)
            for inst in setups[name].instruments:
                eng.add_instrument(inst)
            eng.connect(name, instruments=setups[name].instruments, backoff_initial_s=0.05,
                        **setups[name].connect)
        await eng.start()
        # The books each venue feeds (none for account- or quote-only venues).
        venue_instruments = {name: s.instruments if s.has_books else [] for name, s in setups.items()}
        t0 = time.monotonic()
        clear = show and out.isatty()
        try:
            while (elapsed := time.monotonic() - t0) < seconds:
                await asyncio.sleep(min(refresh_s, max(0.0, seconds - elapsed)))
                if show:
                    print(_render(eng, strat, venue_instruments, time.monotonic() - t0, clear), file=out,
                          flush=True)
                    if not clear:
                        print(file=out)
        except asyncio.CancelledError:
            pass  # Ctrl-C: stop early, still close everything and print the summary
        result = summary(eng, venue_instruments)
    finally:
        await eng.close()
        for s in setups.values():
            await s.sim.stop()
    if show:
        print("summary:", file=out)
        for name, row in result.items():
            print(f"  {name}: connected={row['connected']} frames={row['frames']} errors={row['errors']} "
                  f"gaps={row['gaps']} reconnects={row['reconnects']} best bid/ask "
                  f"{row['best_bid']} / {row['best_ask']}", file=out)
        print(f"  strategy: {sum(strat.updates.values())} book updates, {strat.trades} trades, "
              f"{sum(strat.signals.values())} EMA crossings, widest spread (ticks) {strat.max_spread_ticks}",
              file=out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry (``python -m engine demo``). Returns the process exit code: 0 when every
    venue connected, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m engine demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary keyed by venue")
    parser.add_argument("--venue", action="append", choices=sorted(DEMO_VENUES),
                        help="run only this venue (repeatable; default all)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument("--asyncio", action="store_true", help="plain asyncio instead of uvloop")
    args = parser.parse_args(list(argv) if argv is not None else None)
    venues = args.venue or list(DEMO_VENUES)
    factory = None
    if not args.asyncio:
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            result = runner.run(run_demo(venues, args.seconds, seed=args.seed, show=not args.json))
        except KeyboardInterrupt:
            return 130
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    return 0 if all(r["ever_connected"] for r in result.values()) else 1
