"""The installed version: the package metadata's, whose one source is ``pyproject.toml``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "__version__"]

#: The distribution's name on the package index.
DISTRIBUTION = "assistant-sessions"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
