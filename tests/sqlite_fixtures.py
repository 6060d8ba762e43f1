"""Fixtures of the SQLite tests: a database file (``path``), an open adapter on it
(``adapter``), and a second plain connection to it (``raw``). A plugin of ``conftest.py``; a test
module that defines a fixture of the same name uses its own."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file that does not exist yet."""
    return tmp_path / "sessions.db"


@pytest.fixture
async def adapter(path: Path) -> AsyncIterator[SqliteSessionStoreAdapter]:
    """An open adapter on ``path``, closed after the test."""
    opened = SqliteSessionStoreAdapter(path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain second connection to the database, as another process would have."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        yield connection
    finally:
        connection.close()
