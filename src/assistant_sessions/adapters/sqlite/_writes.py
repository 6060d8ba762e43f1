"""The SQLite adapter's write transaction: a batch of versioned user commits, applied at once.

Every user commit pending when the writer starts a transaction goes into one ``BEGIN
IMMEDIATE`` transaction (group commit). ``BEGIN IMMEDIATE`` takes the database's write lock
before anything is read, so the version checks and the writes of two processes on one file are
serialized (a waiting process retries for ``busy_timeout``).

The transaction first applies the whole batch with one statement per kind of change, each run
over every user with ``executemany``: claim the new users, bump the versions of the others,
delete, upsert. Each statement's row count says whether every user passed: all versions still
matched, and no upsert met an id owned by another user (such an upsert changes no row). That is
the common case, and it costs a few driver calls per batch instead of a few per user. If a count
falls short, the transaction is rolled back and run again user by user: each user's version is
checked before anything of it is written (a stale version rejects that user alone), and a user
whose upsert meets a taken id is marked ``DUPLICATE_ID`` and the transaction run once more
without it. (Set-wise statements over JSON or multi-row ``VALUES`` parameters were measured too:
SQLite spent more on them than ``executemany`` does.)

Everything here runs in the writer thread.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..base import Rejection
from ._schema import SessionRow

__all__ = ["EncodedCommit", "write_transaction"]

#: One user commit, ready for SQL: user id, expected version, rows to upsert, ids to delete.
EncodedCommit = tuple[str, int, tuple[SessionRow, ...], tuple[str, ...]]

_CLAIM_NEW_USER: Final = (
    "INSERT INTO users (user_id, version) VALUES (?, 1) ON CONFLICT (user_id) DO NOTHING"
)
_BUMP_VERSION: Final = "UPDATE users SET version = ? WHERE user_id = ? AND version = ?"
_DELETE: Final = "DELETE FROM sessions WHERE id = ? AND user_id = ?"
# The WHERE makes an id owned by another user change no row: that is the duplicate check.
_UPSERT: Final = """
INSERT INTO sessions (id, user_id, workspace_id, state, created_at, last_activity_at,
                      state_changed_at, state_clock, data, surfaces)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    workspace_id = excluded.workspace_id, state = excluded.state,
    created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,
    state_changed_at = excluded.state_changed_at, state_clock = excluded.state_clock,
    data = excluded.data, surfaces = excluded.surfaces
WHERE sessions.user_id = excluded.user_id
"""


class _Duplicate(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def write_transaction(
    connection: sqlite3.Connection, commits: list[EncodedCommit]
) -> list[Rejection | None]:
    """Apply ``commits`` in one ``BEGIN IMMEDIATE`` transaction; one result per commit.

    Set-wise first (:func:`_apply_all`); if a user is refused, rolled back and run again user by
    user. The connection must be in autocommit mode and outside a transaction.

    Raises:
        sqlite3.Error: The transaction failed and was rolled back: nothing was applied.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        applied = _apply_all(connection, commits)
        if applied:
            connection.execute("COMMIT")
            return [None] * len(commits)
        connection.execute("ROLLBACK")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return _one_by_one(connection, commits)


def _one_by_one(
    connection: sqlite3.Connection, commits: list[EncodedCommit]
) -> list[Rejection | None]:
    """The transaction again, checking and applying each user's commit on its own."""
    duplicates: set[int] = set()
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            results = [
                Rejection.DUPLICATE_ID if index in duplicates else _apply(connection, index, c)
                for index, c in enumerate(commits)
            ]
            connection.execute("COMMIT")
        except _Duplicate as duplicate:
            connection.execute("ROLLBACK")
            duplicates.add(duplicate.index)
            continue
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return results


def _apply_all(connection: sqlite3.Connection, commits: list[EncodedCommit]) -> bool:
    """Apply every commit with one statement per kind of change; ``False`` if one is refused.

    The common case: every version matches and no id is taken. Each statement's row count
    says whether that held for all users; if not, the caller rolls back and goes user by user.
    """
    claims: list[tuple[str]] = []
    bumps: list[tuple[int, str, int]] = []
    deletes: list[tuple[str, str]] = []
    rows: list[SessionRow] = []
    for user_id, expected, upserts, deleted in commits:
        if expected == 0:
            claims.append((user_id,))
        else:
            bumps.append((expected + 1, user_id, expected))
        if deleted:
            deletes.extend((session_id, user_id) for session_id in deleted)
        rows.extend(upserts)
    if claims and connection.executemany(_CLAIM_NEW_USER, claims).rowcount != len(claims):
        return False
    if bumps and connection.executemany(_BUMP_VERSION, bumps).rowcount != len(bumps):
        return False
    if deletes:
        connection.executemany(_DELETE, deletes)
    return not rows or connection.executemany(_UPSERT, rows).rowcount == len(rows)


def _apply(connection: sqlite3.Connection, index: int, commit: EncodedCommit) -> Rejection | None:
    user_id, expected, rows, deletes = commit
    if expected == 0:
        cursor = connection.execute(_CLAIM_NEW_USER, (user_id,))
    else:
        cursor = connection.execute(_BUMP_VERSION, (expected + 1, user_id, expected))
    if cursor.rowcount != 1:
        return Rejection.VERSION
    if deletes:
        connection.executemany(_DELETE, [(session_id, user_id) for session_id in deletes])
    if rows and connection.executemany(_UPSERT, rows).rowcount != len(rows):
        raise _Duplicate(index)
    return None
