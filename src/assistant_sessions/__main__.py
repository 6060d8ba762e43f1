"""The ``assistant-sessions`` command: ``demo``, ``bench`` and ``inspect``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="assistant-sessions", description="Session continuity for async chat assistants."
    )
    parser.add_argument(
        "command", choices=["demo", "bench", "inspect"], help="what to run (see COMMAND --help)"
    )
    if not args or args[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from ._demo import main as run
    elif command == "bench":
        from .benchmark import main as run
    elif command == "inspect":
        from ._inspect import main as run
    else:
        parser.error(f"unknown command {command!r}")
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
