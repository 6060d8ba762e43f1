"""The SQLite adapter: sessions in one database file, durable, shared safely by processes.

Usage::

    adapter = SqliteSessionStoreAdapter("sessions.db")
    async with create_session_store(adapter) as store:
        session = await store.resolve(user_id="u1", surface_id="web")

Durability
    The database runs in write-ahead-log (WAL) mode. ``synchronous`` chooses when a commit
    returns (SQLite's ``PRAGMA synchronous``):

    * ``"FULL"`` (the default): the WAL is synced to disk before every commit returns. An
      acknowledged write survives a process crash (``kill -9``) *and* an operating-system crash
      or power loss.
    * ``"NORMAL"``: commits are written to the WAL (the operating system's cache) and synced
      only at checkpoints. An acknowledged write survives a process crash, because the kernel
      still holds what the process wrote; the last commits may be lost to a power loss or an
      OS crash (the database stays consistent). Faster where syncs are slow.
    * ``"EXTRA"``: like ``"FULL"``, and also syncs the directory; ``"OFF"``: never syncs
      (survives a process crash, not a power loss; the database may be corrupted by one).

    Group commit makes ``"FULL"`` cheap under load: one sync covers every commit that was
    waiting. Checkpoints (copying the log back into the database file) run every 10,000 log
    pages (about 40 MB), not SQLite's default 1,000: a page changed by many commits is copied
    and synced once. Each connection caches up to 32 MiB of pages. Neither changes durability.

Off the event loop
    All database work runs in worker threads (``anyio.to_thread.run_sync``), or for writes
    optionally in a child process (below), never on the event loop, on asyncio and trio alike.
    There are two connections: a writer and a reader, each used by one call at a time. Writes
    are grouped: every commit pending when the writer starts a transaction goes into it (a lone
    commit goes at once, without waiting for company); while a transaction is written, newly
    arriving commits wait and go together into the next one. Each user's commit is checked
    against its version inside the transaction and rejected alone. Reads pending together run
    together in one read transaction.

The writer process
    With ``writer="process"`` the write transactions run in a child process with its own
    interpreter lock, so that under load they overlap the event loop's and the reader's work
    instead of taking turns with them (resolves a second rose by about 1.3x on the benchmark's
    2-core machine). Opening starts the child (``sys.executable``: a Python interpreter, about
    0.4 s); closing ends it; if it dies, the write in flight fails with :class:`AdapterError`
    (applied or not, unknown) and the next write starts another. See ``_writer_process``.

Several processes
    Processes (and stores) may share one file, each with its own adapter. Every write
    transaction starts with ``BEGIN IMMEDIATE``, which takes the database's write lock before
    versions are checked, so the versioned commits of all processes are serialized and a
    resolve is exactly-once across them. A process that finds the lock taken retries for
    ``busy_timeout`` seconds before its commit fails with :class:`AdapterError`.

Errors
    Driver errors become :class:`AdapterError` with the ``sqlite3`` exception as ``__cause__``.
    A stored session that does not decode (damaged JSON, a bad state, a document that disagrees
    with its row) fails alone: ``get`` of that id raises :class:`AdapterError` naming it (the
    decoding error is its cause), so every store call on that session fails so; ``load_user``,
    ``find`` and ``due`` leave it out, logging a warning, so the owner's other sessions stay
    readable and writable, resolves for the owner work, and sweeps go on. The damaged row is
    never written over by another user's session: its id stays taken (``DUPLICATE_ID``).
    ``assistant-sessions inspect`` shows such rows for repair. To repair a row while stores use
    the file, also bump its user's version in the same transaction (``UPDATE users SET version =
    version + 1 WHERE user_id = ?``), so that their actors reload the user.

Schema
    A version table and forward migrations (see ``_schema``): opening an older database
    migrates it in one transaction; a database written by a newer library is refused. Sessions
    are stored as their JSON storage form (the library's cattrs converter), with copies of the
    queried fields as columns; timestamps as integer microseconds since the epoch (UTC) so
    SQL orders them correctly. The indexes key on the minute of each clock, not the clock, so
    that a session touched again within the same minute is written without rewriting an index
    entry (``statistics().touches`` counts those writes); queries still order exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from ...errors import AdapterError, InvalidInputError, InvalidTypeError
from ...model import Session, SessionQuery, SessionState
from .._lifetime import Shared
from ..base import Rejection, UserCommit, UserSnapshot
from . import _db as db
from . import _reads as reads
from ._schema import encode_session
from ._writer_process import WriterProcess

__all__ = ["SqliteSessionStoreAdapter", "SqliteStatistics", "Synchronous", "Writer"]

#: The durability settings of :class:`SqliteSessionStoreAdapter` (SQLite's ``synchronous``).
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
#: Where a :class:`SqliteSessionStoreAdapter` runs its write transactions.
Writer = Literal["thread", "process"]

_SYNCHRONOUS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_WRITERS: Final = ("thread", "process")


@attrs.frozen(slots=True)
class SqliteStatistics:
    """Counters of a :class:`SqliteSessionStoreAdapter` since it was created.

    Attributes:
        transactions: Write transactions committed.
        user_commits: User commits written (applied or rejected); with group commit, many per
            transaction.
        write_calls: Calls of the writer thread.
        read_calls: Calls of the reader thread (each runs every read pending at its start).
        touches: Session rows written without rewriting their index entries (their user,
            workspace, state and the minute of their clocks were as the writer last wrote).
    """

    transactions: int
    user_commits: int
    write_calls: int
    read_calls: int
    touches: int


@final
class SqliteSessionStoreAdapter:
    """Keeps sessions in a SQLite database file (see the module documentation).

    Args:
        path: The database file; created, with its schema, if it does not exist.
        synchronous: When a commit is durable: ``"FULL"`` (default; survives process and OS
            crashes), ``"NORMAL"`` (survives process crashes), ``"EXTRA"`` or ``"OFF"``.
        busy_timeout: Seconds to wait for another process's write lock before failing.
        group_commit: Write every pending commit in one transaction (the default). ``False``
            gives each commit call its own transaction: slower, for comparison.
        max_group: Most commit calls written in one transaction.
        writer: Where write transactions run: ``"thread"`` (the default), a worker thread of
            this process; or ``"process"``, a child process that this adapter starts when it
            opens and ends when it closes (see *The writer process* in the module
            documentation): faster under load, at the cost of a process.

    Raises:
        InvalidInputError: An unknown ``synchronous`` or ``writer``, a non-positive timeout or
            group size.
        InvalidTypeError: An argument has the wrong type.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        group_commit: bool = True,
        max_group: int = 1024,
        writer: Writer = "thread",
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidTypeError(f"path must be a str or path, not {type(path).__name__}")
        self._path = os.fspath(path)
        if not self._path or self._path == ":memory:" or self._path.startswith("file:"):
            raise InvalidInputError(f"path must name a database file, not {self._path!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise InvalidInputError(
                f"synchronous must be one of {', '.join(sorted(_SYNCHRONOUS))}, not {synchronous!r}"
            )
        self._synchronous = synchronous.upper()
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise InvalidTypeError("busy_timeout must be seconds (int or float)")
        if not busy_timeout > 0:
            raise InvalidInputError(f"busy_timeout must be positive, got {busy_timeout!r}")
        if type(max_group) is not int:
            raise InvalidTypeError("max_group must be an int")
        if max_group < 1:
            raise InvalidInputError(f"max_group must be at least 1, got {max_group}")
        if not isinstance(writer, str):
            raise InvalidTypeError(f"writer must be a str, not {type(writer).__name__}")
        if writer not in _WRITERS:
            raise InvalidInputError(f"writer must be 'thread' or 'process', not {writer!r}")
        self._writer: Writer = writer
        self._busy_timeout = float(busy_timeout)
        self._group_commit = bool(group_commit)
        self._max_group = max_group
        self._shared: Shared[db.Database] = Shared()
        self._counts = [0, 0, 0, 0, 0]

    def __repr__(self) -> str:
        return (
            f"SqliteSessionStoreAdapter({self._path!r}, synchronous={self._synchronous!r}, "
            f"group_commit={self._group_commit}, writer={self._writer!r})"
        )

    @property
    def group_commit(self) -> bool:
        """Whether pending commits share one transaction (see
        :class:`~assistant_sessions.adapters.GroupCommitAdapter`)."""
        return self._group_commit

    @property
    def writer(self) -> Writer:
        """Where write transactions run: ``"thread"`` or ``"process"``."""
        return self._writer

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def synchronous(self) -> str:
        """The durability setting (``PRAGMA synchronous``)."""
        return self._synchronous

    def statistics(self) -> SqliteStatistics:
        """The adapter's counters, over every time it was open (never blocks)."""
        counts = list(self._counts)
        if (database := self._shared.value) is not None:
            counts = [a + b for a, b in zip(counts, self._current_counts(database), strict=True)]
        return SqliteStatistics(*counts)

    @staticmethod
    def _current_counts(database: db.Database) -> list[int]:
        return [
            database.transactions,
            database.user_commits,
            database.writes.batches,
            database.reads.batches,
            database.touches,
        ]

    # -- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the database: create the file and schema, or migrate an older schema.

        An open adapter may be opened again (several stores sharing it): each :meth:`open`
        needs its :meth:`aclose`, and the last one closes the database.

        Raises:
            AdapterError: The file cannot be opened, is not a database of this library, or has
                a newer schema version than this library knows.

        On cancellation the database is not left open.
        """
        await self._shared.open(self._connect, db.Database.close)

    async def _connect(self) -> db.Database:
        settings = (self._path, self._synchronous, self._busy_timeout)
        writer, reader = await anyio.to_thread.run_sync(db.connect, *settings)
        if self._writer == "thread":
            return db.Database(
                self._path,
                writer,
                reader,
                group_commit=self._group_commit,
                max_group=self._max_group,
            )
        # The schema is migrated: from here on the child's own connection writes.
        process = WriterProcess(*settings)
        try:
            await anyio.to_thread.run_sync(writer.close)
            await process.start()
        except BaseException:
            await anyio.to_thread.run_sync(reader.close)
            raise
        return db.Database(
            self._path, process, reader, group_commit=self._group_commit, max_group=self._max_group
        )

    async def aclose(self) -> None:
        """Close the database when the last :meth:`open` is matched; committed data stays.

        Closing a closed adapter does nothing. Commits still waiting when the database closes
        fail with :class:`AdapterError`; one being written completes first.

        Raises:
            AdapterError: Closing the connections failed.

        Cancellation does not interrupt closing.
        """
        database = await self._shared.release()
        if database is None:
            return
        self._counts = [
            a + b for a, b in zip(self._counts, self._current_counts(database), strict=True)
        ]
        with anyio.CancelScope(shield=True):
            await database.close()

    def _database(self) -> db.Database:
        database = self._shared.value
        if database is None:
            raise AdapterError(f"the SQLite adapter for {self._path} is not open")
        return database

    # -- per-user load and commit --------------------------------------------------------------

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version (0: never written).

        A stored session that does not decode is left out (and logged): see the module
        documentation.

        Raises:
            AdapterError: The database failed or is not open.

        On cancellation before the read started, nothing is read; once it started, it
        completes first.
        """
        result: UserSnapshot = await self._database().reads.submit(reads.load_user(user_id))
        return result

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """:meth:`load_user` of each of ``user_ids``, in one statement (the store's
        grouped loads: :class:`~assistant_sessions.adapters.GroupLoadAdapter`).

        Returns:
            One snapshot per user, in order.

        Raises:
            AdapterError: The database failed or is not open.

        Cancellation: as :meth:`load_user`.
        """
        result: list[UserSnapshot | AdapterError] = await self._database().reads.submit(
            reads.load_users(user_ids)
        )
        return result

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit atomically if its version matches.

        The commits go into the next write transaction together with every other commit
        pending by then (group commit). When this returns, applied commits are as durable as
        ``synchronous`` promises.

        Returns:
            One entry per commit, in order: ``None`` if applied, else why it was rejected.

        Raises:
            AdapterError: The database failed or is not open; the transaction was rolled back,
                so none of these commits was applied.
            InvalidInputError: A commit upserts a session of another user.

        On cancellation while still waiting for its transaction, nothing is applied; once its
        transaction started, it completes (whole) and the cancellation follows.
        """
        database = self._database()
        encoded: list[db.EncodedCommit] = []
        for commit in commits:
            for session in commit.upserts:
                if session.user_id != commit.user_id:
                    raise InvalidInputError(
                        f"the commit of user {commit.user_id!r} upserts session {session.id!r} "
                        f"of user {session.user_id!r}"
                    )
            encoded.append(
                (
                    commit.user_id,
                    commit.expected_version,
                    tuple(map(encode_session, commit.upserts)),
                    tuple(commit.deletes),
                )
            )
        if not encoded:
            await anyio.lowlevel.checkpoint()
            return []
        return await database.writes.submit(encoded)

    # -- queries -------------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        """Return the committed session with this id, or ``None``.

        Raises:
            AdapterError: The database failed or is not open, or the session does not decode.

        Cancellation: as :meth:`load_user`.
        """
        result: Session | None = await self._database().reads.submit(reads.get(session_id))
        return result

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return committed sessions matching ``query``, most recently active first.

        Sessions that do not decode are skipped and logged; reading goes on past them.

        Raises:
            AdapterError: The database failed or is not open.

        Cancellation: as :meth:`load_user`.
        """
        result: list[Session] = await self._database().reads.submit(reads.find(query))
        return result

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``.

        Ordered by (state clock, id), after ``after`` if given, read from the ``(state,
        sweep_key, id)`` index (one-minute buckets of the state clock, each sorted exactly).
        Sessions that do not decode are skipped and logged.

        Raises:
            AdapterError: The database failed or is not open.

        Cancellation: as :meth:`load_user`.
        """
        read = reads.due(state, before, limit, after)
        result: list[Session] = await self._database().reads.submit(read)
        return result
