"""Two real processes on one SQLite file: resolve stays exactly-once across processes."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from _lockstep import run_in_lockstep

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).parent / "_workers" / "sqlite_worker.py"
USERS = 50
#: Rounds of USERS new users each: more chances for the two processes' commits to collide.
ROUNDS = 4


async def run_pair(path: Path, backend: str, writer: str) -> list[list[dict[str, Any]]]:
    """Run two resolve workers on ``path`` in lock step; return each one's round reports."""
    command = [sys.executable, str(WORKER), "resolve", str(path), backend, writer, str(USERS)]
    return await run_in_lockstep([[*command, str(ROUNDS)]] * 2, rounds=ROUNDS)


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_two_processes_resolving_the_same_new_users_share_one_session_each(
    tmp_path: Path, anyio_backend: str, writer: str
) -> None:
    path = tmp_path / "shared.db"  # not created yet: both processes create the schema at once
    with anyio.fail_after(60):
        first, second = await run_pair(path, anyio_backend, writer)

    connection = sqlite3.connect(path)
    try:
        stored = dict(connection.execute("SELECT user_id, id FROM sessions").fetchall())
        count = connection.execute("SELECT count(*) FROM sessions").fetchone()[0]
        versions = dict(connection.execute("SELECT user_id, version FROM users").fetchall())
    finally:
        connection.close()
    expected_users: set[str] = set()
    for round_, (mine, theirs) in enumerate(zip(first, second, strict=True)):
        users = {f"r{round_}-u{n}" for n in range(USERS)}
        expected_users |= users
        # Both processes got the same session for every user...
        assert mine["ids"] == theirs["ids"]
        assert set(mine["ids"]) == users
        assert len(set(mine["ids"].values())) == USERS
        # ...and it is the one stored. A process that lost a race had its commit rejected
        # (stale version), reloaded, and touched the winner's session instead.
        assert {user: stored[user] for user in users} == mine["ids"]
        assert mine["user_commits"] >= USERS
        assert theirs["user_commits"] >= USERS
    assert count == len(expected_users)  # exactly one session per user, nothing else
    # Each process applied exactly one commit per user (a create, or a touch after the other
    # one's create): a lost update or a double create would show here.
    assert versions == dict.fromkeys(expected_users, 2)
