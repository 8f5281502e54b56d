"""Static typing: mypy --strict over the packages and the typing examples, and stubtest
comparing the hand-written .pyi stubs with the compiled extensions."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_mypy_strict_over_packages_and_examples() -> None:
    proc = _run("mypy", "--strict", "engine", "feeds", "tests/typing_examples.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_stubs_match_compiled_extensions() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in list(ROOT.glob("engine/**/*.pyx")) + list(ROOT.glob("feeds/**/*.pyx"))
    )
    allowlist = ROOT / "tests" / "stubtest_allowlist.txt"
    args = ["mypy.stubtest", *modules]
    if allowlist.exists():
        args += ["--allowlist", str(allowlist)]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_examples_run() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import typing_examples
    finally:
        sys.path.pop(0)
    assert typing_examples.top_of_book_example() is not None
