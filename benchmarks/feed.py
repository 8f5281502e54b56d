"""Feed benchmark: frames per second from a burst over loopback, and latency.

``python -m benchmarks feed [--quick] [--json PATH] [--frames N] [--repeats R]``

Method
------
- The Cadenza simulator runs in its own process in burst mode: it pre-encodes one book
  snapshot and N deltas of ``market:orderBook:BTC-USDT`` (Centrifugo push envelopes,
  ~250-400 bytes each) and, on every subscribe to that channel, writes exactly those
  frames as fast as the socket takes them. Every competitor receives identical bytes.
- Each competitor runs in a fresh process (``harness.run_isolated``), on uvloop,
  connects, subscribes, and times first to last burst frame (N frames):
  - ``engine``: ``Engine.connect("cadenza", ...)`` with a no-op ``on_book`` callback:
    picows -> Cython decoder (jscan) -> OrderBook.apply_updates -> callback. Its final
    book is checked against the simulator's ``burst_book``.
  - ``picows-raw``: a picows client whose listener only counts frames (no decode): the
    ceiling for any picows-based client.
  - ``websockets-json``: the common Python pipeline: ``websockets`` client,
    ``json.loads`` per message, levels applied to ``sortedcontainers.SortedDict`` keyed
    by ``float`` price (the usual shortcut; exactness would cost it more).
- ``ns_per_op`` is ns per frame (1e9 / frames per second), the median of R repeats.
  Receive-to-callback latency (p50/p99) is in ``extra``: for the engine from the feed's
  latency ring (socket read to callback start), for websockets-json from ``recv()``
  returning to the end of the book update.
- A second case, ``in-process``, feeds the same messages to the decoder with no socket
  (engine: ``CadenzaDecoder`` + ``Dispatch`` + no-op callback; peer: ``json.loads`` +
  SortedDict): the decode/apply cost alone.
- Caveat: the sender shares the machine's 2 cores; when the consumer is faster than
  the sender, both run at the sender's pace and the ratio understates the consumer's
  headroom (the in-process case shows it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import Record, run_isolated

SYMBOL = "BTC-USDT"
TOKEN = "bench-token"
SEED = 17


# ---------------------------------------------------------------- simulator process

def _serve(n_frames: int) -> None:
    """Run the burst simulator until stdin closes; print its URL first."""
    import asyncio

    import uvloop

    from feeds.sim.cadenza import CadenzaSim

    async def main() -> None:
        async with CadenzaSim(seed=SEED, token=TOKEN, burst=n_frames, burst_symbol=SYMBOL) as sim:
            print(sim.url, flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)

    uvloop.run(main())


def expected_book(n_frames: int) -> tuple[list[list[int]], list[list[int]]]:
    """The book every client must end with (built the way the simulator builds it)."""
    from feeds.sim.cadenza import CadenzaSim
    sim = CadenzaSim(seed=SEED, token=TOKEN, burst=n_frames, burst_symbol=SYMBOL)
    sim._prepare_burst()
    bids, asks = sim.burst_book
    return [list(x) for x in bids], [list(x) for x in asks]


# ---------------------------------------------------------------- competitors

def bench_engine(url: str, n_frames: int) -> dict[str, Any]:
    """Engine end to end; returns frames/s, latency percentiles and the final book."""
    import asyncio

    import uvloop

    from engine import Engine
    from feeds.sim.market import default_instruments

    async def main() -> dict[str, Any]:
        eng = Engine(bar_intervals=())
        for inst in default_instruments():
            if inst.symbol == SYMBOL:
                eng.add_instrument(inst)
        total = n_frames + 1  # snapshot + deltas
        state = {"count": 0, "t0": 0, "t1": 0}
        done = asyncio.Event()
        perf = time.perf_counter_ns

        def on_book(book: Any) -> None:
            c = state["count"] + 1
            state["count"] = c
            if c == 1:
                state["t0"] = perf()
            elif c == total:
                state["t1"] = perf()
                done.set()

        eng.on_book(on_book)
        feed = eng.connect("cadenza", url=url, token=TOKEN, instruments=[SYMBOL],
                           latency_capacity=total + 16)
        await eng.start()
        await asyncio.wait_for(done.wait(), 120)
        book = eng.book(SYMBOL)
        lat = feed.counters.latency.percentiles((50.0, 99.0))
        result = {"frames": n_frames, "seconds": (state["t1"] - state["t0"]) / 1e9,
                  "p50_ns": lat.get("p50", 0), "p99_ns": lat.get("p99", 0),
                  "bids": book.bids().tolist(), "asks": book.asks().tolist(),
                  "decode_errors": feed.counters.decode_errors}
        await eng.close()
        return result

    return uvloop.run(main())


def bench_picows_raw(url: str, n_frames: int) -> dict[str, Any]:
    """picows client that only counts the burst frames."""
    import uvloop
    from picows import WSListener, WSMsgType, ws_connect

    total = n_frames + 1
    perf = time.perf_counter_ns

    class Counter(WSListener):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.t0 = 0
            self.t1 = 0
            self.done: Any = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            if not frame.get_payload_as_memoryview()[:8] == b'{"push":':
                return
            self.count += 1
            if self.count == 1:
                self.t0 = perf()
            elif self.count == total:
                self.t1 = perf()
                self.done.set()

    async def main() -> dict[str, Any]:
        import asyncio
        # Same read buffer as the engine's session default: equal socket reads for both.
        transport, generic = await ws_connect(Counter, url, max_frame_size=16 << 20,
                                              read_buffer_init_size=256 * 1024)
        assert isinstance(generic, Counter)
        listener = generic
        listener.done = asyncio.Event()
        transport.send(WSMsgType.TEXT, json.dumps({"id": 1, "connect": {"token": TOKEN, "name": "raw"}}).encode())
        transport.send(WSMsgType.TEXT, json.dumps({"id": 2, "subscribe": {"channel": f"market:orderBook:{SYMBOL}"}}).encode())
        await asyncio.wait_for(listener.done.wait(), 120)
        transport.disconnect()
        return {"frames": n_frames, "seconds": (listener.t1 - listener.t0) / 1e9}

    return uvloop.run(main())


def bench_websockets_json(url: str, n_frames: int) -> dict[str, Any]:
    """websockets + json + sortedcontainers: the common pure-Python pipeline."""
    import asyncio

    import uvloop
    import websockets
    from sortedcontainers import SortedDict

    total = n_frames + 1
    perf = time.perf_counter_ns
    now = time.time_ns

    async def main() -> dict[str, Any]:
        bids: SortedDict = SortedDict()
        asks: SortedDict = SortedDict()
        count = 0
        t0 = t1 = 0
        lat: list[int] = []
        async with websockets.connect(url, max_size=16 << 20, compression=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": TOKEN, "name": "ws"}}))
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": f"market:orderBook:{SYMBOL}"}}))
            while count < total:
                msg = await ws.recv()
                recv_ns = now()
                text = msg if isinstance(msg, str) else msg.decode()
                for line in text.split("\n"):
                    obj = json.loads(line)
                    push = obj.get("push")
                    if push is None:
                        continue
                    data = push["pub"]["data"]
                    if data["type"] == "snapshot":
                        bids.clear()
                        asks.clear()
                    for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
                        for price, qty in levels:
                            p = float(price)
                            if float(qty) == 0.0:
                                side.pop(p, None)
                            else:
                                side[p] = qty
                    count += 1
                    lat.append(now() - recv_ns)
                    if count == 1:
                        t0 = perf()
                    elif count == total:
                        t1 = perf()
        lat.sort()
        return {"frames": n_frames, "seconds": (t1 - t0) / 1e9,
                "p50_ns": lat[len(lat) // 2], "p99_ns": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}

    return uvloop.run(main())


# ---------------------------------------------------------------- in-process (no socket)

def _burst_payloads(n_frames: int) -> list[bytes]:
    """The burst's messages built from the public simulator pieces (same seed, same
    market), for the in-process case: one snapshot then ``n_frames`` deltas."""
    from feeds.sim.cadenza import CadenzaSim, encode_book
    from feeds.sim.market import BookDelta
    market = CadenzaSim(seed=SEED, token=TOKEN).market
    inst = market.instruments[SYMBOL]
    ch = f"market:orderBook:{SYMBOL}"

    def push(data: str, offset: int) -> bytes:
        return f'{{"push":{{"channel":"{ch}","pub":{{"data":{data},"offset":{offset}}}}}}}'.encode()

    out = [push(encode_book(inst, market.snapshot(SYMBOL), 1), 1)]
    while len(out) <= n_frames:
        for e in market.step():
            if isinstance(e, BookDelta) and e.symbol == SYMBOL and len(out) <= n_frames:
                out.append(push(encode_book(inst, e, len(out) + 1), len(out) + 1))
    return out


def bench_inprocess(n_frames: int, impl: str, repeats: int) -> dict[str, Any]:
    """Decode + apply + no-op callback per message with no socket in the way: the
    engine's CadenzaDecoder vs json.loads + SortedDict. Median ns per message."""
    payloads = _burst_payloads(n_frames)
    samples = []
    for _ in range(repeats):
        if impl == "engine":
            from engine import Engine
            from engine.engine import Trade
            from feeds._hotpath import Dispatch, FeedCounters
            from feeds.cadenza_decode import KIND_BOOK, CadenzaDecoder, Channel
            from feeds.sim.market import default_instruments
            eng = Engine(bar_intervals=())
            inst = next(i for i in default_instruments() if i.symbol == SYMBOL)
            book = eng.add_instrument(inst)
            eng.on_book(lambda b: None)
            dec = CadenzaDecoder(None, Dispatch(eng, "bench", FeedCounters(n_frames + 16)), Trade, {})
            chan = dec.add_channel(Channel(f"market:orderBook:{SYMBOL}", KIND_BOOK, inst, book))
            chan.live = True
            feed = dec.feed
            t0 = time.perf_counter_ns()
            for p in payloads:
                feed(p, 0)
            samples.append((time.perf_counter_ns() - t0) / len(payloads))
        else:
            from sortedcontainers import SortedDict
            bids: Any = SortedDict()
            asks: Any = SortedDict()
            cbs: list[Any] = [lambda b: None]
            t0 = time.perf_counter_ns()
            for p in payloads:
                data = json.loads(p)["push"]["pub"]["data"]
                if data["type"] == "snapshot":
                    bids.clear()
                    asks.clear()
                for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
                    for price, qty in levels:
                        f = float(price)
                        if float(qty) == 0.0:
                            side.pop(f, None)
                        else:
                            side[f] = qty
                for cb in cbs:
                    cb(bids)
            samples.append((time.perf_counter_ns() - t0) / len(payloads))
    return {"ns": statistics.median(samples), "runs_ns": samples}


IMPLS = {
    "engine": "bench_engine",
    "picows-raw": "bench_picows_raw",
    "websockets-json": "bench_websockets_json",
}


# ---------------------------------------------------------------- driver

def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    """Run every competitor ``repeats`` times against one burst simulator process."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks feed")
    parser.add_argument("--frames", type=int, default=None, help="burst size (deltas)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--impl", action="append", choices=sorted(IMPLS))
    opts = parser.parse_args(rest)
    n = opts.frames or (20_000 if args.quick else 100_000)
    repeats = opts.repeats or (1 if args.quick else 3)
    impls = opts.impl or list(IMPLS)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", f"from benchmarks.feed import _serve; _serve({n})"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("ws://"):
            raise RuntimeError(f"burst simulator did not start (got {url!r})")
        want = expected_book(n)
        samples: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for _ in range(repeats):
            for impl in impls:  # interleaved so drift hits every competitor alike
                res = run_isolated("benchmarks.feed", IMPLS[impl], {"url": url, "n_frames": n})
                if impl == "engine":
                    if (res["bids"], res["asks"]) != want or res["decode_errors"]:
                        raise RuntimeError("engine book differs from the simulator's burst book")
                samples[impl].append(res)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    records = []
    for impl, runs in samples.items():
        ns = statistics.median(r["seconds"] * 1e9 / r["frames"] for r in runs)
        extra: dict[str, Any] = {"frames_per_s": round(1e9 / ns), "frames": n,
                                 "runs_frames_per_s": [round(r["frames"] / r["seconds"]) for r in runs]}
        if "p50_ns" in runs[0]:
            extra["p50_ns"] = statistics.median(r["p50_ns"] for r in runs)
            extra["p99_ns"] = statistics.median(r["p99_ns"] for r in runs)
        records.append(Record("feed", f"burst {n} book deltas", impl, ns, ops=n, repeats=repeats, extra=extra))
    for impl in ("engine", "json-sortedcontainers"):
        res = run_isolated("benchmarks.feed", "bench_inprocess", {"n_frames": n, "impl": impl, "repeats": repeats})
        records.append(Record("feed", f"in-process {n} book deltas (no socket)", impl, res["ns"], ops=n,
                              repeats=repeats, extra={"runs_ns": [round(x, 1) for x in res["runs_ns"]]}))
    by = {r.impl: r for r in records if r.case.startswith("burst")}
    if "engine" in by:
        eng = by["engine"].ns_per_op
        for other in ("picows-raw", "websockets-json"):
            if other in by:
                print(f"engine frame rate / {other}: {by[other].ns_per_op / eng:.2f}x")
        print(f"engine receive-to-callback latency: p50 {by['engine'].extra['p50_ns'] / 1000:.1f} us, "  # type: ignore[index]
              f"p99 {by['engine'].extra['p99_ns'] / 1000:.1f} us")  # type: ignore[index]
    return records
