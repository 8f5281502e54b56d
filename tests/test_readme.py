"""The README's first code example runs as written (so it cannot drift from the API)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_python_example_runs() -> None:
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    ns: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), ns)
    book = ns["book"]
    assert book.bbo() == (6183763, 2000, None, None)  # type: ignore[attr-defined]
    assert book.bids(10)["price"].tolist() == [6183763, 6183762]  # type: ignore[attr-defined]
