"""The PostgreSQL adapter's write: a group of versioned user commits in one statement.

Every user commit of a group goes into one call of the schema's ``commit_users`` function
(created by the migrations in ``_schema``), as arrays: one round trip and one transaction for
the whole group, however many users it holds. Inside, the function locks the users' version rows
in user order (two writers never deadlock on them), refuses each user whose version moved on
(``'version'``), and applies the rest set-wise: claim new users, bump the others' versions,
delete, upsert. An upsert that meets an id another user owns changes no row; if that happens, the
set-wise step is undone and the function goes user by user, each user in a block of its own, so
that only the user with the taken id is refused (``'duplicate_id'``) and everyone else applied.

Everything here runs in the writer thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from ..base import Rejection
from ._schema import SessionRow, statement

__all__ = ["EncodedCommit", "commit_statement", "write_group"]

#: One user commit, ready for SQL: user id, expected version, rows to upsert, ids to delete.
EncodedCommit = tuple[str, int, tuple[SessionRow, ...], tuple[str, ...]]

#: How often a group that lost a deadlock or serialization race is sent again. The statement
#: was rolled back whole, so sending it again is safe.
RETRIES: Final = 5

_REJECTIONS: Final = {
    None: None,
    "version": Rejection.VERSION,
    "duplicate_id": Rejection.DUPLICATE_ID,
}


def commit_statement(schema: str) -> sql.Composed:
    """The call of ``commit_users`` in ``schema``, with its 15 array parameters."""
    return statement(
        "SELECT {schema}.commit_users("
        "%b::text[], %b::int8[], %b::text[], %b::text[], %b::text[], %b::text[], "
        "%b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], "
        "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])",
        schema,
    )


def _parameters(commits: Sequence[EncodedCommit]) -> list[list[Any]]:
    users: list[str] = []
    expected: list[int] = []
    columns: list[list[Any]] = [[] for _ in range(11)]
    deleted: list[str] = []
    deleted_owners: list[str] = []
    for user_id, version, rows, deletes in commits:
        users.append(user_id)
        expected.append(version)
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        for session_id in deletes:
            deleted.append(session_id)
            deleted_owners.append(user_id)
    return [users, expected, *columns, deleted, deleted_owners]


def write_group(
    connection: psycopg.Connection[Any], call: sql.Composed, commits: Sequence[EncodedCommit]
) -> list[Rejection | None]:
    """Apply ``commits`` in one transaction (one statement); one result per commit.

    The connection must be in autocommit mode: the statement is its own transaction.

    Raises:
        psycopg.Error: The statement failed and was rolled back: nothing was applied (or the
            connection broke while it ran, and what was applied is unknown).
    """
    parameters = _parameters(commits)
    for attempt in range(RETRIES + 1):
        try:
            row = connection.execute(call, parameters).fetchone()
            break
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
            if attempt == RETRIES:
                raise
    assert row is not None  # a SELECT of one function call returns one row
    return [_REJECTIONS[outcome] for outcome in row[0]]
