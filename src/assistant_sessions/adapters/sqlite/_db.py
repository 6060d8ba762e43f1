"""The open SQLite database behind a :class:`~assistant_sessions.SqliteSessionStoreAdapter`.

Two connections in autocommit mode (transactions are explicit): a *writer* and a *reader*, each
fed by one :class:`~assistant_sessions.adapters._batching.Batcher` that runs a batch as one call
in a worker thread (``anyio.to_thread.run_sync`` with a one-token limiter of its own), or, for
the writer with ``writer="process"``, as one request to the child process that owns the writer
connection (:mod:`._writer_process`). So a connection is only ever used by one thread at a
time, and reads never wait behind a disk sync (WAL readers do not block the writer, nor it
them).

Writes: every user commit pending when the writer starts a call goes into one transaction
(group commit: :func:`~assistant_sessions.adapters.sqlite._writes.write_transaction`); without
group commit, each commit call of the batch gets its own. Reads: every read pending when the
reader starts a call runs in one read transaction (the reads are in
:mod:`~assistant_sessions.adapters.sqlite._reads`).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final, final

import anyio
import anyio.to_thread

from ...errors import AdapterError
from .._batching import Batcher, Job
from ..base import Rejection, batch_failure
from ._errors import translate
from ._reads import Read
from ._schema import migrate
from ._writer_process import Outcome, WriterProcess
from ._writes import EncodedCommit, IndexedColumns, counted_transaction, write_transaction

__all__ = [
    "Database",
    "EncodedCommit",
    "IndexedColumns",
    "connect",
    "translate",
    "write_transaction",
]

logger = logging.getLogger("assistant_sessions")

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

#: A write job: the user commits of one ``commit`` call, and one result for each.
WriteJob = Job[Sequence[EncodedCommit], list[Rejection | None]]
#: A read job.
ReadJob = Job[Read, Any]


def connect(
    path: str, synchronous: str, busy_timeout: float
) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """Open the writer and reader connections, migrating the schema (runs in a thread).

    Raises:
        AdapterError: The file cannot be opened or migrated, or is too new.
    """
    connections: list[sqlite3.Connection] = []
    try:
        connections.append(open_writer(path, synchronous, busy_timeout))
        connections.append(_open(path, busy_timeout))
        writer, reader = connections
        migrate(writer, path)
        reader.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        for connection in connections:
            connection.close()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, f"cannot open the SQLite database {path}") from exc
        raise
    return writer, reader


def open_writer(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """A writer connection in WAL mode with the adapter's durability and checkpoint settings.

    Raises:
        sqlite3.Error: The file cannot be opened or set up.
        AdapterError: The file cannot use write-ahead logging.
    """
    connection = _open(path, busy_timeout)
    try:
        _use_wal(connection, path, busy_timeout)
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
    except BaseException:
        connection.close()
        raise
    return connection


def _open(path: str, busy_timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    except BaseException:
        connection.close()
        raise
    return connection


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
    """Connections and batchers of one open adapter; create it inside the event loop."""

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection | WriterProcess,
        reader: sqlite3.Connection,
        *,
        group_commit: bool,
        max_group: int,
    ) -> None:
        self.path = path
        #: The writer connection (used in a worker thread), or the process that owns it.
        self._writer = writer
        self._reader = reader
        self._group_commit = group_commit
        self._closing = False
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(1)
        #: ``writes.submit(commits)`` applies a commit call's user commits in the writer thread
        #: (or process), and ``reads.submit(read)`` runs a read in the reader thread, each
        #: batched with what else is pending.
        self.writes: Batcher[Sequence[EncodedCommit], list[Rejection | None]] = Batcher(
            self._run_writes, max_group
        )
        self.reads: Batcher[Read, Any] = Batcher(self._run_reads, MAX_READ_BATCH)
        self.transactions = 0
        self.user_commits = 0
        self.touches = 0
        #: What the writer thread last wrote to the indexed columns (its alone).
        self._indexed = IndexedColumns()

    async def close(self) -> None:
        """Fail what is still pending, wait for running calls, close the connections."""
        self._closing = True
        for limiter in (self._read_limiter, self._write_limiter):
            async with limiter:  # the thread call that runs now, if any, has ended
                pass
        try:
            await anyio.to_thread.run_sync(self._close_connections)
        finally:
            if isinstance(self._writer, WriterProcess):
                await self._writer.aclose()

    def _close_connections(self) -> None:
        errors: list[sqlite3.Error] = []
        connections = [self._reader]
        if isinstance(self._writer, sqlite3.Connection):
            connections.append(self._writer)
        for connection in connections:
            try:
                connection.close()
            except sqlite3.Error as exc:  # pragma: no cover - close fails only on a broken disk
                errors.append(exc)
        if errors:  # pragma: no cover
            raise translate(errors[0], f"closing {self.path} failed")

    def _closed_error(self) -> AdapterError:
        return AdapterError(f"the SQLite adapter for {self.path} was closed")

    async def _run_reads(self, jobs: list[ReadJob]) -> None:
        await anyio.to_thread.run_sync(self._read_batch, jobs, limiter=self._read_limiter)

    async def _run_writes(self, jobs: list[WriteJob]) -> None:
        process = self._writer
        if not isinstance(process, WriterProcess):
            await anyio.to_thread.run_sync(self._write_batch, jobs, limiter=self._write_limiter)
            return
        async with self._write_limiter:  # what close() waits for
            if self._closing:
                for job in jobs:
                    job.fail(self._closed_error())
                return
            groups = self._groups(jobs)
            self.user_commits += sum(len(job.payload) for job in jobs)
            outcomes = await process.write([_commits(group) for group in groups])
            for group, outcome in zip(groups, outcomes, strict=True):
                self._settle(group, outcome)

    # -- the reader thread -----------------------------------------------------------------

    def _read_batch(self, jobs: list[ReadJob]) -> None:
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

    def _write_batch(self, jobs: list[WriteJob]) -> None:
        if self._closing:
            for job in jobs:
                job.fail(self._closed_error())
            return
        for group in self._groups(jobs):
            commits = _commits(group)
            self.user_commits += len(commits)
            self._settle(group, self._transaction(commits))

    def _transaction(self, commits: list[EncodedCommit]) -> Outcome:
        assert isinstance(self._writer, sqlite3.Connection)
        try:
            return counted_transaction(self._writer, commits, self._indexed)
        except sqlite3.Error as exc:
            return translate(exc, f"writing to {self.path} failed")

    # -- either writer ---------------------------------------------------------------------

    def _groups(self, jobs: list[WriteJob]) -> list[list[WriteJob]]:
        """The jobs of each transaction: all of them with group commit, else one each."""
        return [jobs] if self._group_commit else [[job] for job in jobs]

    def _settle(self, group: list[WriteJob], outcome: Outcome) -> None:
        """Give each job of one transaction its results, or its own copy of its error."""
        if isinstance(outcome, AdapterError):
            for job in group:
                job.fail(batch_failure(outcome))
            return
        results, touches = outcome
        self.transactions += 1
        self.touches += touches
        start = 0
        for job in group:
            end = start + len(job.payload)
            job.succeed(results[start:end])
            start = end


def _commits(group: list[WriteJob]) -> list[EncodedCommit]:
    return [commit for job in group for commit in job.payload]
