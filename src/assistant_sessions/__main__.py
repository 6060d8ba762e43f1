"""The ``assistant-sessions`` command: ``demo`` and ``inspect``, and the commands of plugins.

Further commands are plugins, found through the entry-point group ``assistant_sessions.commands``
(:data:`COMMANDS_GROUP`): an entry point's name is the command, and its object a function
``main(argv) -> int``. The ``bench`` command (the load benchmark) is one, registered by this
distribution itself; the library never imports a plugin except to run its command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points

from ._version import __version__

__all__ = ["COMMANDS_GROUP", "main"]

#: The entry-point group of the commands that plugins add.
COMMANDS_GROUP = "assistant_sessions.commands"

#: The library's own commands, by name: the module whose ``main`` runs each.
_BUILTIN = {"demo": "._demo", "inspect": "._inspect"}

#: Plugin commands that this distribution registers itself: missing, they mean an installation
#: whose metadata predates them.
_DISTRIBUTED = frozenset({"bench"})


def _plugins() -> dict[str, EntryPoint]:
    """The plugin commands installed, by name (a built-in name cannot be taken over)."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=COMMANDS_GROUP):
        if entry.name not in _BUILTIN:
            found.setdefault(entry.name, entry)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    plugins = _plugins()
    # Built-ins first and last, plugins between: with bench this is the order the help has
    # always shown (demo, bench, inspect).
    commands = ["demo", *sorted(plugins), "inspect"]
    parser = argparse.ArgumentParser(
        prog="assistant-sessions", description="Session continuity for async chat assistants."
    )
    parser.add_argument("command", choices=commands, help="what to run (see COMMAND --help)")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    if not args or args[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if args else 2
    if args[0] == "--version":
        print(f"assistant-sessions {__version__}")
        return 0
    command, rest = args[0], args[1:]
    run: Callable[[Sequence[str]], int]
    if command in _BUILTIN:
        run = importlib.import_module(_BUILTIN[command], __package__).main
    elif command in plugins:
        entry = plugins[command]
        try:
            loaded = entry.load()
        except ImportError as exc:
            parser.error(f"the {command!r} command ({entry.value}) cannot be loaded: {exc}")
        if not callable(loaded):
            parser.error(f"the {command!r} command's entry point {entry.value} is not callable")
        run = loaded
    elif command in _DISTRIBUTED:
        parser.error(
            f"the {command!r} command is not installed: no entry point {command!r} in the group"
            f" {COMMANDS_GROUP!r}; reinstall assistant-sessions (pip install -e . in a checkout)"
            " to register it"
        )
    else:
        parser.error(f"unknown command {command!r}")
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
