"""Order-book suite: ``python -m benchmarks book [--quick] [--json PATH]``.

Every competitor replays the same deterministic stream (numpy seed) in its own process:
a book of ~2,000 levels a side around a fixed mid, then updates whose distance from the
touch is geometric (most near the touch, some deep), 30% of them deletes.

Cases (ns per operation, median of repeats; the Python loop is included for every
impl alike and measured on its own as ``python-loop``):
- ``update``: one level change from Python.
- ``update_bbo``: one change, then read best bid and ask (price and size) from Python.
- ``batch_apply``: the engine's numpy batch apply, ns per level (1,000 levels a call),
  on the stream above (30% deletes, so levels keep leaving and coming back).
- ``batch_apply_resize``: the same changes without deletes: sizes change at levels
  the book holds (the most common venue event).
- ``top10``: the 10 best bids out (engine: numpy copy; peers: their natural form).
- ``top10_view``: the engine's view of the same (``copy=False``: a read-only array over
  the book's export buffer, no array data allocated).
- ``deep_update``: updates uniformly spread over 20,000 levels a side.
- ``memory``: ns per update over a long run; ``extra`` has bytes per level and the
  resident-memory growth after warm-up.
"""
from __future__ import annotations

import argparse
import resource
from itertools import islice
from typing import Any, Callable

import numpy as np

from benchmarks.harness import Record, importable, run_isolated, time_ns_per_op

SEED = 20240808
MID = 10_000_000


def make_stream(n: int, levels: int, seed: int = SEED, uniform: bool = False) -> dict[str, Any]:
    """Initial book (``levels`` a side) and ``n`` updates as Python lists of ints."""
    rng = np.random.default_rng(seed)
    offs = np.arange(1, levels + 1)
    if uniform:
        dist = rng.integers(1, levels + 1, n)
    else:
        dist = np.minimum(rng.geometric(1 / 40, n), levels)
    sides = rng.integers(0, 2, n)
    prices = np.where(sides == 0, MID - dist, MID + dist)
    qtys = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 100_000, n))
    return {
        "bids": [(MID - int(o), int(q)) for o, q in zip(offs, rng.integers(1, 100_000, levels))],
        "asks": [(MID + int(o), int(q)) for o, q in zip(offs, rng.integers(1, 100_000, levels))],
        "sides": sides.tolist(),
        "prices": prices.tolist(),
        "qtys": qtys.tolist(),
    }


# --- per-impl adapters: build(stream) -> object; each case is a closure over it ---


def _engine(stream: dict[str, Any]) -> Any:
    from engine import Instrument, OrderBook

    book = OrderBook(Instrument("BENCH", "0.01", "0.00001"))
    bp, bq = zip(*stream["bids"])
    ap, aq = zip(*stream["asks"])
    book.apply_snapshot(np.array(bp), np.array(bq), np.array(ap), np.array(aq))
    return book


def _sortedcontainers(stream: dict[str, Any]) -> Any:
    from sortedcontainers import SortedDict

    return SortedDict(stream["bids"]), SortedDict(stream["asks"])


def _order_book(stream: dict[str, Any]) -> Any:
    import order_book

    ob = order_book.OrderBook()
    for p, q in stream["bids"]:
        ob.bids[p] = q
    for p, q in stream["asks"]:
        ob.asks[p] = q
    return ob


def _nautilus(stream: dict[str, Any]) -> Any:
    from nautilus_trader.model.book import OrderBook
    from nautilus_trader.model.data import BookOrder
    from nautilus_trader.model.enums import BookType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price, Quantity

    book = OrderBook(InstrumentId.from_str("BENCH.SIM"), BookType.L2_MBP)
    for p, q in stream["bids"]:
        book.add(BookOrder(OrderSide.BUY, Price(p / 100, 2), Quantity(q, 0), 0), 0)
    for p, q in stream["asks"]:
        book.add(BookOrder(OrderSide.SELL, Price(p / 100, 2), Quantity(q, 0), 0), 0)
    # Orders are built before timing so only the book's own work is measured.
    orders = [
        BookOrder(OrderSide.BUY if s == 0 else OrderSide.SELL, Price(p / 100, 2), Quantity(max(q, 1), 0), 0)
        for s, p, q in zip(stream["sides"], stream["prices"], stream["qtys"])
    ]
    return book, orders


def _loop_update(impl: str, stream: dict[str, Any], obj: Any, read_bbo: bool) -> Callable[[], int]:
    ops = list(zip(stream["sides"], stream["prices"], stream["qtys"]))
    if impl == "engine":
        book = obj
        set_, bbo = book.set, book.bbo
        if read_bbo:
            def run() -> int:
                for s, p, q in ops:
                    set_(s, p, q)
                    bbo()
                return len(ops)
        else:
            def run() -> int:
                for s, p, q in ops:
                    set_(s, p, q)
                return len(ops)
        return run
    if impl == "sortedcontainers":
        books = obj

        def run() -> int:
            for s, p, q in ops:
                d = books[s]
                if q:
                    d[p] = q
                else:
                    d.pop(p, None)
                if read_bbo:
                    books[0].peekitem(-1)
                    books[1].peekitem(0)
            return len(ops)
        return run
    if impl == "order-book":
        ob = obj
        sides = (ob.bids, ob.asks)

        def run() -> int:
            for s, p, q in ops:
                d = sides[s]
                if q:
                    d[p] = q
                elif p in d:
                    del d[p]
                if read_bbo:
                    ob.bids.index(0)
                    ob.asks.index(0)
            return len(ops)
        return run
    if impl == "nautilus_trader":
        book, orders = obj
        items = list(zip(orders, stream["qtys"]))
        update, delete = book.update, book.delete

        def run() -> int:
            for o, q in items:
                if q:
                    update(o, 0)
                else:
                    delete(o, 0)
                if read_bbo:
                    book.best_bid_price()
                    book.best_bid_size()
                    book.best_ask_price()
                    book.best_ask_size()
            return len(items)
        return run
    if impl == "python-loop":
        def run() -> int:
            for s, p, q in ops:
                pass
            return len(ops)
        return run
    raise ValueError(impl)


def _top10(impl: str, obj: Any, view: bool) -> Callable[[], int]:
    n = 20_000
    if impl == "engine":
        bids = obj.bids
        if view:
            def run() -> int:
                for _ in range(n):
                    bids(10, copy=False)
                return n
        else:
            def run() -> int:
                for _ in range(n):
                    bids(10)
                return n
        return run
    if impl == "sortedcontainers":
        d = obj[0]

        def run() -> int:
            for _ in range(n):
                list(islice(reversed(d.items()), 10))
            return n
        return run
    if impl == "order-book":
        bids = obj.bids

        def run() -> int:
            for _ in range(n):
                [bids.index(i) for i in range(10)]
            return n
        return run
    if impl == "nautilus_trader":
        book = obj[0]

        def run() -> int:
            for _ in range(n // 20):
                book.bids()[:10]
            return n // 20
        return run
    raise ValueError(impl)


BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "engine": _engine,
    "sortedcontainers": _sortedcontainers,
    "order-book": _order_book,
    "nautilus_trader": _nautilus,
    "python-loop": lambda stream: None,
}


def bench_impl(impl: str, case: str, n: int, repeats: int) -> dict[str, Any]:
    """Run one (impl, case) in this process; called through run_isolated."""
    uniform = case == "deep_update"
    levels = 20_000 if uniform else 2_000
    # The memory case replays a 1M-update stream as many times as it needs.
    stream = make_stream(min(n, 1_000_000), levels, uniform=uniform)
    obj = BUILDERS[impl](stream)
    extra: dict[str, Any] = {}
    if case in ("update", "update_bbo", "deep_update"):
        fn = _loop_update(impl, stream, obj, read_bbo=case == "update_bbo")
    elif case in ("top10", "top10_view"):
        fn = _top10(impl, obj, view=case == "top10_view")
    elif case in ("batch_apply", "batch_apply_resize"):
        sides = np.array(stream["sides"], np.int8)
        prices = np.array(stream["prices"], np.int64)
        qtys = np.array(stream["qtys"], np.int64)
        if case == "batch_apply_resize":
            # The same changes with no deletes: every one resizes a level the book holds.
            qtys = np.where(qtys == 0, 1, qtys)
        chunks = [(sides[i:i + 1000], prices[i:i + 1000], qtys[i:i + 1000]) for i in range(0, len(sides), 1000)]
        apply = obj.apply

        def fn() -> int:
            for s, p, q in chunks:
                apply(s, p, q)
            return len(sides)
    elif case == "memory":
        return _memory(obj, stream, n)
    else:
        raise ValueError(case)
    fn()  # warm-up
    return {"ns_per_op": time_ns_per_op(fn, repeats), "ops": n, "extra": extra}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _memory(book: Any, stream: dict[str, Any], total: int) -> dict[str, Any]:
    """Replay the stream repeatedly for ``total`` updates; RSS after warm-up vs at the end."""
    sides = np.array(stream["sides"], np.int8)
    prices = np.array(stream["prices"], np.int64)
    qtys = np.array(stream["qtys"], np.int64)
    chunk = 1000
    per_pass = len(sides) // chunk
    set_ = book.set
    warm = list(zip(stream["sides"][:100_000], stream["prices"][:100_000], stream["qtys"][:100_000]))
    for s, p, q in warm:
        set_(s, p, q)
    rss_warm = _rss_bytes()
    done = 0
    import time

    t0 = time.perf_counter_ns()
    while done < total:
        for i in range(per_pass):
            sl = slice(i * chunk, (i + 1) * chunk)
            book.apply(sides[sl], prices[sl], qtys[sl])
        done += per_pass * chunk
    elapsed = time.perf_counter_ns() - t0
    rss_end = _rss_bytes()
    levels = len(book)
    return {
        "ns_per_op": elapsed / done,
        "ops": done,
        "extra": {
            "levels": levels,
            "book_bytes": book.memory_bytes(),
            "bytes_per_level": round(book.memory_bytes() / max(levels, 1), 1),
            "rss_after_warmup": rss_warm,
            "rss_at_end": rss_end,
            "rss_growth_bytes": rss_end - rss_warm,
        },
    }


def _available(impl: str) -> bool:
    mod = {"order-book": "order_book", "nautilus_trader": "nautilus_trader"}.get(impl)
    return mod is None or importable(mod)


def run(args: argparse.Namespace, rest: list[str]) -> list[Record]:
    n = 50_000 if args.quick else 1_000_000
    repeats = 3 if args.quick else 7
    peers = ["engine", "sortedcontainers", "order-book", "nautilus_trader"]
    plan = [
        ("update", peers + ["python-loop"]),
        ("update_bbo", peers),
        ("batch_apply", ["engine"]),
        ("batch_apply_resize", ["engine"]),
        ("top10", peers),
        ("top10_view", ["engine"]),
        ("deep_update", ["engine", "sortedcontainers", "order-book"]),
    ]
    records = []
    for case, impls in plan:
        for impl in impls:
            if not _available(impl):
                print(f"skipping {impl}: not installed (pip install -e '.[bench]')")
                continue
            res = run_isolated("benchmarks.book", "bench_impl", {"impl": impl, "case": case, "n": n, "repeats": repeats})
            records.append(Record("book", case, impl, res["ns_per_op"], res["ops"], repeats, res["extra"] or None))
            print(f"  {case:<12} {impl:<18} {res['ns_per_op']:10.1f} ns/op", flush=True)
    mem_total = 1_000_000 if args.quick else 10_000_000
    res = run_isolated("benchmarks.book", "bench_impl", {"impl": "engine", "case": "memory", "n": mem_total, "repeats": 1})
    records.append(Record("book", "memory", "engine", res["ns_per_op"], res["ops"], 1, res["extra"]))
    print(f"  memory: {res['extra']}")
    return records
