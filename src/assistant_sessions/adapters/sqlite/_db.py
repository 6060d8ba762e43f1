"""The open SQLite database behind a :class:`~assistant_sessions.SqliteSessionStoreAdapter`.

Two connections in autocommit mode (transactions are explicit): a *writer* and a *reader*, each
used by one :class:`~._lane.Lane`, so a connection is only ever used by one thread at a time and
reads never wait behind a disk sync (WAL readers do not block the writer, nor it them).

Writes: every user commit pending when the writer lane starts a call goes into one ``BEGIN
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

Reads: every read pending when the reader lane starts a call runs in one read transaction.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, final

import anyio
import anyio.to_thread

from ...errors import AdapterError
from ...model import Session, SessionQuery, SessionState
from .._batching import Job, Lane
from ..base import Rejection, UserSnapshot
from ._schema import SessionRow, decode_session, migrate, to_micros

__all__ = ["Database", "EncodedCommit", "Read", "write_transaction"]

logger = logging.getLogger("assistant_sessions")

#: One user commit, ready for SQL: user id, expected version, rows to upsert, ids to delete.
EncodedCommit = tuple[str, int, tuple[SessionRow, ...], tuple[str, ...]]

#: A read job: runs in the reader thread with the reader connection.
Read = Callable[[sqlite3.Connection], Any]

#: Each connection's page cache, KiB (SQLite's default is 2 MiB). The writer touches pages all
#: over the indexes; pages that stay cached are not read again for every transaction.
CACHE_KIB: Final = 32768

#: Log pages between automatic checkpoints (SQLite's default is 1000). A checkpoint copies each
#: page changed since the last one back into the database once, however often it changed, and
#: syncs the file: rarer checkpoints copy and sync less for the same commits. The log may grow to
#: about this many pages (4 KiB each) before it is reset.
CHECKPOINT_PAGES: Final = 10000

#: Most reads one reader call takes (a bound on how long one read transaction lasts).
MAX_READ_BATCH: Final = 512

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


def translate(exc: sqlite3.Error, what: str) -> AdapterError:
    """The :class:`AdapterError` of a driver error (the driver error is its cause)."""
    error = AdapterError(f"{what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def connect(
    path: str, synchronous: str, busy_timeout: float
) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """Open the writer and reader connections, migrating the schema (runs in a thread).

    Raises:
        AdapterError: The file cannot be opened or migrated, or is too new.
    """
    connections: list[sqlite3.Connection] = []
    try:
        for _ in range(2):
            connections.append(
                sqlite3.connect(
                    path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
            )
        writer, reader = connections
        _use_wal(writer, path, busy_timeout)
        writer.execute(f"PRAGMA synchronous = {synchronous}")
        writer.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        for connection in connections:
            connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        migrate(writer, path)
        reader.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        for connection in connections:
            connection.close()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, f"cannot open the SQLite database {path}") from exc
        raise
    return writer, reader


def _use_wal(connection: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    # Switching a new file to WAL needs an exclusive lock, and when processes open a new file
    # at once SQLite reports the clash at once instead of waiting (that would deadlock): retry.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))
    if str(mode).lower() != "wal":
        raise AdapterError(f"{path} cannot use write-ahead logging (journal mode {mode!r})")


@final
class Database:
    """Connections and lanes of one open adapter; create it inside the event loop."""

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        group_commit: bool,
        max_group: int,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._group_commit = group_commit
        self._closing = False
        self.write_lane: Lane[Sequence[EncodedCommit]] = Lane(self._write_batch, max_group)
        self.read_lane: Lane[Read] = Lane(self._read_batch, MAX_READ_BATCH)
        self.transactions = 0
        self.user_commits = 0

    async def read(self, read: Read) -> Any:
        """Run ``read`` in the reader thread, batched with other pending reads."""
        return await self.read_lane.submit(read)

    async def close(self) -> None:
        """Fail what is still pending, wait for running calls, close the connections."""
        self._closing = True
        await self.read_lane.idle()
        await self.write_lane.idle()
        await anyio.to_thread.run_sync(self._close_connections)

    def _close_connections(self) -> None:
        errors: list[sqlite3.Error] = []
        for connection in (self._reader, self._writer):
            try:
                connection.close()
            except sqlite3.Error as exc:  # pragma: no cover - close fails only on a broken disk
                errors.append(exc)
        if errors:  # pragma: no cover
            raise translate(errors[0], f"closing {self.path} failed")

    def _closed_error(self) -> AdapterError:
        return AdapterError(f"the SQLite adapter for {self.path} was closed")

    # -- the reader thread -----------------------------------------------------------------

    def _read_batch(self, jobs: list[Job[Read]]) -> None:
        if self._closing:
            for job in jobs:
                job.fail(self._closed_error())
            return
        connection = self._reader
        try:
            # One snapshot for the whole batch: each read sees committed data only.
            connection.execute("BEGIN")
        except sqlite3.Error as exc:
            for job in jobs:
                job.fail(translate(exc, f"reading {self.path} failed"))
            return
        try:
            for job in jobs:
                try:
                    job.succeed(job.payload(connection))
                except sqlite3.Error as exc:
                    job.fail(translate(exc, f"reading {self.path} failed"))
                except Exception as exc:
                    job.fail(exc)
        finally:
            try:
                connection.execute("COMMIT")
            except sqlite3.Error:  # pragma: no cover - ending a read transaction
                logger.exception("ending a read transaction on %s failed", self.path)

    # -- the writer thread -----------------------------------------------------------------

    def _write_batch(self, jobs: list[Job[Sequence[EncodedCommit]]]) -> None:
        if self._closing:
            for job in jobs:
                job.fail(self._closed_error())
            return
        groups = [jobs] if self._group_commit else [[job] for job in jobs]
        for group in groups:
            commits = [commit for job in group for commit in job.payload]
            try:
                results = self._transaction(commits)
            except sqlite3.Error as exc:
                for job in group:
                    job.fail(translate(exc, f"writing to {self.path} failed"))
                continue
            start = 0
            for job in group:
                end = start + len(job.payload)
                job.succeed(results[start:end])
                start = end

    def _transaction(self, commits: list[EncodedCommit]) -> list[Rejection | None]:
        self.user_commits += len(commits)
        results = write_transaction(self._writer, commits)
        self.transactions += 1
        return results


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


# -- reads (run in the reader thread) -------------------------------------------------------


def _decoded(session_id: str, user_id: str, data: Any, reader: str) -> Session | None:
    """The session of a row, or ``None`` (logging a warning) if it does not decode."""
    try:
        return decode_session(session_id, user_id, data)
    except AdapterError as exc:
        logger.warning("%s skips stored session %r: %s", reader, session_id, exc)
        return None


def load_user(user_id: str) -> Read:
    """The read of one user's sessions and version.

    Rows that do not decode are left out (and logged): the user's other sessions stay usable.
    The damaged session keeps its row and its id; ``get`` of it raises.
    """

    def read(connection: sqlite3.Connection) -> UserSnapshot:
        row = connection.execute("SELECT version FROM users WHERE user_id = ?", (user_id,))
        found = row.fetchone()
        rows = connection.execute(
            "SELECT id, data FROM sessions WHERE user_id = ? ORDER BY rowid", (user_id,)
        ).fetchall()
        reader = f"loading user {user_id!r}"
        sessions = [
            session
            for session_id, data in rows
            if (session := _decoded(session_id, user_id, data, reader)) is not None
        ]
        return UserSnapshot(user_id, 0 if found is None else int(found[0]), tuple(sessions))

    return read


def get(session_id: str) -> Read:
    """The read of one session by id (a row that does not decode raises ``AdapterError``)."""

    def read(connection: sqlite3.Connection) -> Session | None:
        row = connection.execute(
            "SELECT user_id, data FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if row is None else decode_session(session_id, row[0], row[1])

    return read


def find(query: SessionQuery) -> Read:
    """The read of the sessions matching ``query``, most recently active first.

    Rows that do not decode are skipped (and logged), and reading goes on past them until
    ``limit`` sessions are found.
    """
    clauses: list[str] = []
    parameters: list[Any] = []
    for column, value in (
        ("user_id", query.user_id),
        ("workspace_id", query.workspace_id),
        ("state", None if query.state is None else query.state.value),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if query.surface_id is not None:
        clauses.append("id IN (SELECT session_id FROM session_surfaces WHERE surface_id = ?)")
        parameters.append(query.surface_id)
    if query.active_after is not None:
        clauses.append("last_activity_at > ?")
        parameters.append(to_micros(query.active_after))
    if query.after is not None:
        # Keyset paging: the sessions that follow the cursor in the result order.
        clauses.append("(last_activity_at, id) < (?, ?)")
        parameters.extend((to_micros(query.after[0]), query.after[1]))
    select = "SELECT id, user_id, data, last_activity_at FROM sessions"
    order = "ORDER BY last_activity_at DESC, id DESC LIMIT ?"
    first = f"{select} {'WHERE' if clauses else ''} {' AND '.join(clauses)} {order}"
    # After skipping damaged rows: the rows past the last one read.
    more = f"{select} WHERE {' AND '.join([*clauses, '(last_activity_at, id) < (?, ?)'])} {order}"
    limit = query.limit

    def read(connection: sqlite3.Connection) -> list[Session]:
        return _read_past_damaged(connection, first, more, parameters, limit, "find")

    return read


def due(state: SessionState, before: datetime, limit: int) -> Read:
    """The read of up to ``limit`` sessions of ``state`` with a state clock before ``before``.

    Rows that do not decode are skipped (and logged), so one damaged session cannot stop
    sweeps; reading goes on past them until ``limit`` sessions are found.
    """
    cutoff = to_micros(before)
    first = (
        "SELECT id, user_id, data, state_clock FROM sessions "
        "WHERE state = ? AND state_clock < ? ORDER BY state_clock, id LIMIT ?"
    )
    after = (
        "SELECT id, user_id, data, state_clock FROM sessions "
        "WHERE state = ? AND state_clock < ? AND (state_clock, id) > (?, ?) "
        "ORDER BY state_clock, id LIMIT ?"
    )

    def read(connection: sqlite3.Connection) -> list[Session]:
        return _read_past_damaged(connection, first, after, (state.value, cutoff), limit, "a sweep")

    return read


def _read_past_damaged(
    connection: sqlite3.Connection,
    first: str,
    more: str,
    parameters: Sequence[Any],
    limit: int,
    reader: str,
) -> list[Session]:
    """Up to ``limit`` decoded sessions: ``first`` with ``parameters`` and a row limit, then,
    as long as damaged rows were skipped, ``more`` for the rows past the last one read (its
    parameters also take that row's sort key and id, before the row limit).
    """
    found: list[Session] = []
    asked = limit
    rows = connection.execute(first, (*parameters, asked)).fetchall()
    while True:
        for session_id, user_id, data, _ in rows:
            session = _decoded(session_id, user_id, data, reader)
            if session is not None:
                found.append(session)
        if len(found) >= limit or len(rows) < asked:
            return found
        asked = limit - len(found)
        last = rows[-1]
        rows = connection.execute(more, (*parameters, last[3], last[0], asked)).fetchall()
