"""Shared benchmark machinery: timing, subprocess isolation, records, ratio tables.

Method: each measurement is repeated; the median of the repeats is reported (these
machines have 2 noisy cores, so medians and same-run ratios are what we compare).
Competitors that could disturb each other (allocators, GC state, imported C
libraries) run in their own subprocess via ``run_isolated``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Record:
    """One measured figure: ``ns_per_op`` is the median over repeats."""

    suite: str
    case: str
    impl: str
    ns_per_op: float
    ops: int = 0
    repeats: int = 0
    extra: dict[str, Any] | None = None


def time_ns_per_op(fn: Callable[[], int], repeats: int) -> float:
    """Run ``fn`` (which does the work and returns its op count) ``repeats`` times with
    the GC off; return the median ns per op."""
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            ops = fn()
            samples.append((time.perf_counter_ns() - t0) / max(ops, 1))
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples)


def run_isolated(module: str, func: str, payload: dict[str, Any]) -> Any:
    """Call ``module.func(**payload)`` in a fresh interpreter and return its JSON result.

    Used so each competitor is measured alone in its own process."""
    code = (
        "import json, sys, importlib\n"
        f"m = importlib.import_module({module!r})\n"
        "payload = json.loads(sys.stdin.read())\n"
        f"print(json.dumps(getattr(m, {func!r})(**payload)))\n"
    )
    # numpy's OpenBLAS threads spin after some array operations; on a 2-core machine
    # they would steal the core the measured loop runs on.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(payload),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module}.{func} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def importable(module: str) -> bool:
    """True when a competitor's module can be imported (peers are optional: the bench
    extra installs them; a suite skips a peer that is missing and says so)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def print_table(records: Sequence[Record], baseline: str = "engine") -> None:
    """Print records grouped by case with each impl's ratio to ``baseline``
    (ratio > 1 means the baseline is that many times faster)."""
    cases: dict[str, list[Record]] = {}
    for r in records:
        cases.setdefault(f"{r.suite}/{r.case}", []).append(r)
    width = max((len(k) for k in cases), default=10)
    print(f"{'case':<{width}}  {'impl':<22} {'ns/op':>12} {'x ' + baseline:>12}")
    for case, rows in cases.items():
        base = next((r.ns_per_op for r in rows if r.impl == baseline), None)
        for r in sorted(rows, key=lambda r: r.ns_per_op):
            ratio = f"{r.ns_per_op / base:.2f}" if base else "-"
            print(f"{case:<{width}}  {r.impl:<22} {r.ns_per_op:>12.1f} {ratio:>12}")
    print(f"machine: {json.dumps(machine())}")


def write_json(records: Sequence[Record], path: str) -> None:
    """Write the records as a JSON list of {suite, case, impl, ns_per_op, ...}."""
    with open(path, "w") as fh:
        json.dump([asdict(r) for r in records], fh, indent=1)
        fh.write("\n")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every suite takes."""
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="write records as JSON to PATH")
