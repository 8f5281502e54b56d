"""Shared test fixtures."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Coroutine

import pytest

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    """tests/data: small recorded frames copied into the project (see its README)."""
    return DATA


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine on a fresh event loop, once under asyncio and once under uvloop."""
    from loopback import run_on

    return lambda coro: run_on(request.param, coro)
