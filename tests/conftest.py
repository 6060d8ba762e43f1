"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from assistant_sessions import SessionStore, create_session_store
from assistant_sessions.testing import FakeClock

# Private Redis and PostgreSQL servers for their tests (tests/redis_fixtures.py,
# tests/postgres_fixtures.py); a SQLite file, adapter and raw connection (tests/sqlite_fixtures.py).
pytest_plugins = ["redis_fixtures", "postgres_fixtures", "sqlite_fixtures"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends, named explicitly: a missing trio fails instead of being skipped."""
    backend: str = request.param
    return backend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[SessionStore]:
    """An open in-memory store on the fake clock."""
    async with create_session_store(clock=clock) as opened:
        yield opened
