"""``python -m engine COMMAND``: ``demo`` (the main job) and ``replay`` (recorded frames)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("engine.demo", "run the local venue simulators and the engine live"),
    "replay": ("engine.replay", "replay a recorded file through the real decoding path"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items())
        print(f"usage: python -m engine COMMAND [args]\n{lines}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
