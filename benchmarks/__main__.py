"""``python -m benchmarks SUITE [--quick] [--json PATH]``: run one benchmark suite."""
from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks.harness import add_common_args, print_table, write_json

SUITES = ("book", "decode", "kline", "positions", "feed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("suite", choices=SUITES)
    add_common_args(parser)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"benchmarks.{args.suite}")
    records = module.run(args, rest)
    print_table(records)
    if args.json:
        write_json(records, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
