"""Every public module imports on its own, in a fresh interpreter (no import cycle
depends on which module a user happens to import first)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for pattern in ("engine/*.py", "feeds/*.py", "feeds/sim/*.py")
    for p in ROOT.glob(pattern)
    if p.name not in ("__main__.py",)
)


@pytest.mark.parametrize("module", [m.removesuffix(".__init__") for m in MODULES])
def test_module_imports_alone(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_core_does_not_load_the_feed_layer() -> None:
    code = "import sys, engine; engine.OrderBook; print('picows' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = "from engine import Engine; print(Engine.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "engine.engine"
