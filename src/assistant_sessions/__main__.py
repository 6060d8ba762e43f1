"""The ``assistant-sessions`` command: ``demo``, ``bench`` and ``inspect``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

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
    modules = {"demo": "._demo", "bench": ".benchmark", "inspect": "._inspect"}
    if command not in modules:
        parser.error(f"unknown command {command!r}")
    run: Callable[[Sequence[str]], int] = importlib.import_module(
        modules[command], __package__
    ).main
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
