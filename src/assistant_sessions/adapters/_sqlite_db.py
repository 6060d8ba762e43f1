"""The open SQLite database behind a :class:`~assistant_sessions.SqliteSessionStoreAdapter`.

Two connections in autocommit mode (transactions are explicit): a *writer* and a *reader*, each
used by one :class:`~._lane.Lane`, so a connection is only ever used by one thread at a time and
reads never wait behind a disk sync (WAL readers do not block the writer, nor it them).

Writes: every user commit pending when the writer lane starts a call goes into one ``BEGIN
IMMEDIATE`` transaction (group commit). ``BEGIN IMMEDIATE`` takes the database's write lock
before anything is read, so the version checks and the writes of two processes on one file are
serialized (a waiting process retries for ``busy_timeout``). In the transaction each user's part
is checked and applied on its own: a stale version rejects that user alone, before anything of
it is written. A session id owned by another user is found by the upsert itself (it changes no
row); that user is marked ``DUPLICATE_ID`` and the transaction is rolled back and run again
without it -- rare, and it keeps the common path to two statements per user. (Applying a whole
batch with a few set-wise statements over JSON parameters was tried: it was no faster.)

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

from ..errors import AdapterError
from ..model import Session, SessionQuery, SessionState
from ._lane import Job, Lane
from ._sqlite_schema import SessionRow, decode_session, migrate, to_micros
from .base import Rejection, UserSnapshot

__all__ = ["Database", "EncodedCommit", "Read"]

logger = logging.getLogger("assistant_sessions")

#: One user commit, ready for SQL: user id, expected version, rows to upsert, ids to delete.
EncodedCommit = tuple[str, int, tuple[SessionRow, ...], tuple[str, ...]]

#: A read job: runs in the reader thread with the reader connection.
Read = Callable[[sqlite3.Connection], Any]

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

    async def write(self, commits: Sequence[EncodedCommit]) -> list[Rejection | None]:
        """Apply ``commits`` in the writer thread, grouped with other pending commits."""
        result: list[Rejection | None] = await self.write_lane.submit(commits)
        return result

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
        connection = self._writer
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
            self.transactions += 1
            return results


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


def load_user(user_id: str) -> Read:
    """The read of one user's sessions and version."""

    def read(connection: sqlite3.Connection) -> UserSnapshot:
        row = connection.execute("SELECT version FROM users WHERE user_id = ?", (user_id,))
        found = row.fetchone()
        rows = connection.execute(
            "SELECT id, data FROM sessions WHERE user_id = ? ORDER BY rowid", (user_id,)
        ).fetchall()
        sessions = tuple(decode_session(sid, user_id, data) for sid, data in rows)
        return UserSnapshot(user_id, 0 if found is None else int(found[0]), sessions)

    return read


def get(session_id: str) -> Read:
    """The read of one session by id."""

    def read(connection: sqlite3.Connection) -> Session | None:
        row = connection.execute(
            "SELECT user_id, data FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if row is None else decode_session(session_id, row[0], row[1])

    return read


def find(query: SessionQuery) -> Read:
    """The read of the sessions matching ``query``, most recently active first."""
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
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        f"SELECT id, user_id, data FROM sessions {where} "
        "ORDER BY last_activity_at DESC, id DESC LIMIT ?"
    )
    parameters.append(query.limit)

    def read(connection: sqlite3.Connection) -> list[Session]:
        rows = connection.execute(sql, parameters).fetchall()
        return [decode_session(sid, user_id, data) for sid, user_id, data in rows]

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
        found: list[Session] = []
        asked = limit
        rows = connection.execute(first, (state.value, cutoff, asked)).fetchall()
        while True:
            for sid, user_id, data, _ in rows:
                try:
                    found.append(decode_session(sid, user_id, data))
                except AdapterError:
                    logger.warning("sweeps skip stored session %r: it does not decode", sid)
            if len(found) >= limit or len(rows) < asked:
                return found
            asked = limit - len(found)
            last = rows[-1]
            rows = connection.execute(
                after, (state.value, cutoff, last[3], last[0], asked)
            ).fetchall()

    return read
