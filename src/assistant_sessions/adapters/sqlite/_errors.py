"""The SQLite adapter's one translation of a driver error into an :class:`AdapterError`
(used by the reader and writer threads, and for the writer process's errors)."""

from __future__ import annotations

import sqlite3

from ...errors import AdapterError

__all__ = ["translate"]


def translate(exc: sqlite3.Error, what: str) -> AdapterError:
    """The :class:`AdapterError` of a driver error (the driver error is its cause)."""
    error = AdapterError(f"{what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
