"""Benchmarks: each suite runs every competitor on the same deterministic data in one run.

``python -m benchmarks SUITE [--quick] [--json PATH]``; suites are modules of this
package with a ``run(args) -> list[Record]`` function (see ``harness``).
"""
