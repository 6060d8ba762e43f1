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

Rows the writer knows it wrote before are written by an ``UPDATE`` that sets only what changed
(:mod:`._updates`): a touch rewrites no index entry. Its ``WHERE`` checks what the writer
expects stored, so a row another process changed meanwhile makes that count fall short too, and
the transaction runs again user by user with upserts.

Everything here runs in the writer thread.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..base import Rejection
from ._schema import SessionRow
from ._updates import EncodedCommit, IndexedColumns, update_statement

__all__ = ["EncodedCommit", "IndexedColumns", "counted_transaction", "write_transaction"]

_CLAIM_NEW_USER: Final = (
    "INSERT INTO users (user_id, version) VALUES (?, 1) ON CONFLICT (user_id) DO NOTHING"
)
_BUMP_VERSION: Final = "UPDATE users SET version = ? WHERE user_id = ? AND version = ?"
_DELETE: Final = "DELETE FROM sessions WHERE id = ? AND user_id = ?"
# The WHERE makes an id owned by another user change no row: that is the duplicate check.
_UPSERT: Final = """
INSERT INTO sessions (id, user_id, workspace_id, state, created_at, last_activity_at,
                      state_changed_at, state_clock, data, surfaces, sweep_key, activity_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    workspace_id = excluded.workspace_id, state = excluded.state,
    created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,
    state_changed_at = excluded.state_changed_at, state_clock = excluded.state_clock,
    data = excluded.data, surfaces = excluded.surfaces, sweep_key = excluded.sweep_key,
    activity_key = excluded.activity_key
WHERE sessions.user_id = excluded.user_id
"""


class _Duplicate(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def write_transaction(
    connection: sqlite3.Connection,
    commits: list[EncodedCommit],
    indexed: IndexedColumns | None = None,
) -> list[Rejection | None]:
    """Apply ``commits`` in one ``BEGIN IMMEDIATE`` transaction; one result per commit.

    Set-wise first (:func:`_apply_all`), updating only what changed in rows that ``indexed``
    knows; if a user is refused or a row was not as expected, rolled back and run again user by
    user with upserts. The connection must be in autocommit mode and outside a transaction.

    Raises:
        sqlite3.Error: The transaction failed and was rolled back: nothing was applied.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        touched = _apply_all(connection, commits, indexed)
        if touched is not None:
            connection.execute("COMMIT")
            results: list[Rejection | None] = [None] * len(commits)
            if indexed is not None:
                indexed.touches += touched
                indexed.committed(commits, results)
            return results
        connection.execute("ROLLBACK")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        if indexed is not None:
            indexed.forget(commits)
        raise
    if indexed is not None:
        indexed.forget(commits)
    results = _one_by_one(connection, commits)
    if indexed is not None:
        indexed.committed(commits, results)
    return results


def counted_transaction(
    connection: sqlite3.Connection, commits: list[EncodedCommit], indexed: IndexedColumns
) -> tuple[list[Rejection | None], int]:
    """:func:`write_transaction`, and how many of the rows it wrote were touches.

    Raises:
        sqlite3.Error: As :func:`write_transaction`.
    """
    before = indexed.touches
    results = write_transaction(connection, commits, indexed)
    return results, indexed.touches - before


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


def _apply_all(
    connection: sqlite3.Connection, commits: list[EncodedCommit], indexed: IndexedColumns | None
) -> int | None:
    """Apply every commit with one statement per kind of change; ``None`` if one is refused.

    The common case: every version matches, no id is taken, and every row ``indexed`` knows is
    stored as it expects. Each statement's row count says whether that held for all of them;
    if not, the caller rolls back and goes user by user. Returns how many rows were written
    without rewriting an index entry.
    """
    claims: list[tuple[str]] = []
    bumps: list[tuple[int, str, int]] = []
    deletes: list[tuple[str, str]] = []
    rows: list[SessionRow] = []
    updates: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
    planned: set[str] = set()
    if indexed is not None:
        indexed.learn(connection, commits)
    for user_id, expected, upserts, deleted in commits:
        if expected == 0:
            claims.append((user_id,))
        else:
            bumps.append((expected + 1, user_id, expected))
        if deleted:
            deletes.extend((session_id, user_id) for session_id in deleted)
        if indexed is None:
            rows.extend(upserts)
        else:
            indexed.plan(upserts, rows, updates, planned)
    if claims and connection.executemany(_CLAIM_NEW_USER, claims).rowcount != len(claims):
        return None
    if bumps and connection.executemany(_BUMP_VERSION, bumps).rowcount != len(bumps):
        return None
    if deletes:
        connection.executemany(_DELETE, deletes)
    for changed, parameters in updates.items():
        if not parameters:
            continue
        cursor = connection.executemany(update_statement(changed), parameters)
        if cursor.rowcount != len(parameters):
            return None
    if rows and connection.executemany(_UPSERT, rows).rowcount != len(rows):
        return None
    return len(updates.get((), ()))


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
