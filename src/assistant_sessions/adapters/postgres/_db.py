"""The open database behind a :class:`~assistant_sessions.PostgresSessionStoreAdapter`.

Two *lanes*, a writer and a reader, each one connection in autocommit mode fed by one
:class:`~assistant_sessions.adapters._batching.Batcher` that runs a batch as one call in a worker
thread (``anyio.to_thread.run_sync`` with a one-token limiter of its own): a connection is only
ever used by one thread at a time, the event loop never waits on the network, and the same code
runs on asyncio and trio (psycopg's own async API is asyncio-only).

Writes: every user commit pending when the writer starts a call goes into one statement and one
transaction (group commit, :func:`~assistant_sessions.adapters.postgres._writes.write_group`);
without group commit, each commit call of the batch gets its own. Reads: every read pending when
the reader starts a call runs on its connection, one statement each.

A lane reconnects by itself: before each call it drops a connection that broke or that the
server has closed (its socket became readable while idle: the server said goodbye), and opens a
new one. So while the server is down each call fails at once with ``AdapterError``, and the
first call after it is back succeeds, without reopening the adapter.
"""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Sequence
from typing import Any, final

import anyio
import anyio.to_thread
import psycopg

from ...errors import AdapterError
from .._batching import Batcher, Job
from ..base import Rejection
from ._reads import Read, Reads
from ._schema import migrate
from ._writes import EncodedCommit, commit_statement, write_group

__all__ = ["Database", "Lane", "translate"]

logger = logging.getLogger("assistant_sessions")

#: Most reads one reader call takes (a bound on how long one call holds the reader).
MAX_READ_BATCH = 512

WriteJob = Job[Sequence[EncodedCommit], list[Rejection | None]]
ReadJob = Job[Read, Any]


def translate(exc: psycopg.Error, what: str) -> AdapterError:
    """The :class:`AdapterError` of a driver error (the driver error is its cause)."""
    error = AdapterError(f"{what}: {type(exc).__name__}: {str(exc).strip()}")
    error.__cause__ = exc
    return error


@final
class Lane:
    """One connection, used by one thread at a time; reconnects after the server closed it."""

    def __init__(self, dsn: str, connect_timeout: float, where: str) -> None:
        self._dsn = dsn
        self._timeout = max(1, math.ceil(connect_timeout))
        self._where = where
        self._connection: psycopg.Connection[Any] | None = None
        self.limiter = anyio.CapacityLimiter(1)

    def connect(self) -> psycopg.Connection[Any]:
        """The lane's connection, made anew if it was lost (runs in a thread).

        Raises:
            AdapterError: The server cannot be reached.
        """
        connection = self._connection
        if connection is not None and not _usable(connection):
            self.drop()
            connection = None
        if connection is None:
            try:
                connection = psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=self._timeout,
                    application_name="assistant-sessions",
                )
            except psycopg.Error as exc:
                raise translate(exc, f"cannot connect to PostgreSQL at {self._where}") from exc
            self._connection = connection
        return connection

    def drop(self) -> None:
        """Close the connection (quietly: it may be broken already)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except psycopg.Error:  # pragma: no cover - closing a broken socket
                logger.debug("closing a PostgreSQL connection failed", exc_info=True)

    def after_error(self) -> None:
        """Drop the connection if the error broke it, so the next call reconnects."""
        connection = self._connection
        if connection is not None and (connection.broken or connection.closed):
            self.drop()


def _usable(connection: psycopg.Connection[Any]) -> bool:
    if connection.closed or connection.broken:
        return False
    # An idle connection has nothing to read; if its socket is readable, the server has
    # closed it (a restart, an administrator's pg_terminate_backend) or is about to.
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


@final
class Database:
    """The lanes and batchers of one open adapter; create it inside the event loop."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        where: str,
        *,
        connect_timeout: float,
        group_commit: bool,
        max_group: int,
    ) -> None:
        self.where = where
        self.schema = schema
        self._writer = Lane(dsn, connect_timeout, where)
        self._reader = Lane(dsn, connect_timeout, where)
        self._group_commit = group_commit
        self._call = commit_statement(schema)
        self._closing = False
        #: The statements of the reads.
        self.queries = Reads(schema)
        #: ``writes.submit(commits)`` applies a commit call's user commits in the writer
        #: thread, and ``reads.submit(read)`` runs a read in the reader thread, each batched
        #: with what else is pending.
        self.writes: Batcher[Sequence[EncodedCommit], list[Rejection | None]] = Batcher(
            self._run_writes, max_group
        )
        self.reads: Batcher[Read, Any] = Batcher(self._run_reads, MAX_READ_BATCH)
        self.transactions = 0
        self.user_commits = 0

    def open(self) -> None:
        """Connect both lanes and migrate the schema (runs in a thread).

        Raises:
            AdapterError: The server cannot be reached, or the schema cannot be migrated.
        """
        try:
            migrate(self._writer.connect(), self.schema)
            self._reader.connect()
        except psycopg.Error as exc:
            self.drop()
            raise translate(exc, f"cannot open schema {self.schema!r} at {self.where}") from exc
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        """Close both connections (runs in a thread)."""
        self._reader.drop()
        self._writer.drop()

    async def close(self) -> None:
        """Fail what is still pending, wait for running calls, close the connections."""
        self._closing = True
        for lane in (self._reader, self._writer):
            async with lane.limiter:  # the thread call that runs now, if any, has ended
                pass
        await anyio.to_thread.run_sync(self.drop)

    def _closed_error(self) -> AdapterError:
        return AdapterError(f"the PostgreSQL adapter for {self.where} was closed")

    async def _run_reads(self, jobs: list[ReadJob]) -> None:
        await anyio.to_thread.run_sync(self._read_batch, jobs, limiter=self._reader.limiter)

    async def _run_writes(self, jobs: list[WriteJob]) -> None:
        await anyio.to_thread.run_sync(self._write_batch, jobs, limiter=self._writer.limiter)

    def _on_lane(
        self, lane: Lane, jobs: Sequence[Job[Any, Any]], what: str
    ) -> psycopg.Connection[Any] | None:
        """The lane's connection, or ``None`` after failing every job (runs in a thread)."""
        if self._closing:
            for job in jobs:
                job.fail(self._closed_error())
            return None
        try:
            return lane.connect()
        except AdapterError as exc:
            for job in jobs:
                error = AdapterError(f"{what}: {exc}")
                error.__cause__ = exc.__cause__
                job.fail(error)
            return None

    # -- the reader thread -----------------------------------------------------------------

    def _read_batch(self, jobs: list[ReadJob]) -> None:
        what = f"reading from PostgreSQL at {self.where} failed"
        # Reads change nothing, so reads cut off by a connection that broke (the server
        # ended it an instant ago) are run once more on a new one.
        for retry in (True, False):
            pending = [job for job in jobs if not job.finished]
            connection = self._on_lane(self._reader, pending, what)
            if connection is None:
                return
            try:
                self._read_on(connection, pending, what)
            except psycopg.Error as exc:
                broken = connection.broken or connection.closed
                self._reader.after_error()
                if not (broken and retry):
                    for job in pending:
                        if not job.finished:
                            job.fail(translate(exc, what))
                    return
            else:
                return

    def _read_on(self, connection: psycopg.Connection[Any], jobs: list[ReadJob], what: str) -> None:
        """Run ``jobs``: the loads together, the gets together, each query on its own.

        Raises:
            psycopg.Error: A statement of many reads failed, or the connection broke.
        """
        queries = self.queries
        loads = [(job, user) for job in jobs if (user := job.payload.user_id) is not None]
        many = [(job, users) for job in jobs if (users := job.payload.user_ids) is not None]
        gets = [(job, id_) for job in jobs if (id_ := job.payload.session_id) is not None]
        if loads or many:
            distinct = dict.fromkeys(user for _, user in loads)
            for _, some in many:
                distinct.update(dict.fromkeys(some))
            snapshots = queries.load_users(connection, list(distinct))
            for job, user_id in loads:
                job.succeed(snapshots[user_id])
            for job, some in many:
                job.succeed([snapshots[user_id] for user_id in some])
        if gets:
            rows = queries.get_rows(connection, list({i: 0 for _, i in gets}))
            for job, session_id in gets:
                try:
                    job.succeed(queries.decode(session_id, rows.get(session_id)))
                except AdapterError as exc:
                    job.fail(exc)
        for job in jobs:
            if job.payload.query is not None:
                try:
                    job.succeed(job.payload.query(connection))
                except psycopg.Error as exc:
                    if connection.broken or connection.closed:
                        raise
                    job.fail(translate(exc, what))
                except Exception as exc:
                    job.fail(exc)

    # -- the writer thread -----------------------------------------------------------------

    def _write_batch(self, jobs: list[WriteJob]) -> None:
        what = f"writing to PostgreSQL at {self.where} failed"
        connection = self._on_lane(self._writer, jobs, what)
        if connection is None:
            return
        groups = [jobs] if self._group_commit else [[job] for job in jobs]
        for group in groups:
            commits = [commit for job in group for commit in job.payload]
            try:
                self.user_commits += len(commits)
                results = write_group(connection, self._call, commits)
                self.transactions += 1
            except psycopg.Error as exc:
                self._writer.after_error()
                for job in group:
                    job.fail(translate(exc, what))
                continue
            _share(group, results)


def _share(group: list[WriteJob], results: list[Rejection | None]) -> None:
    start = 0
    for job in group:
        end = start + len(job.payload)
        job.succeed(results[start:end])
        start = end
