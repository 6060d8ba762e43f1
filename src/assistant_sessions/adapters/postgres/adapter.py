"""The PostgreSQL adapter: sessions in a PostgreSQL database, shared by processes and machines.

Usage (needs the ``postgres`` extra: ``pip install 'assistant-sessions[postgres]'``)::

    adapter = PostgresSessionStoreAdapter("postgresql://app@db.internal/app")
    async with create_session_store(adapter) as store:
        session = await store.resolve(user_id="u1", surface_id="web")

Tables
    Everything lives in one schema of the adapter's own (``schema``, default
    ``assistant_sessions``), created and migrated forward on open (see ``_schema``): ``users``
    with each user's commit version, and ``sessions`` with the session's JSON text, its queried
    fields as indexed columns, and its metadata as a ``jsonb`` column for the team's own SQL.
    Opening a schema written by a newer library is refused.

Correct across processes and machines
    Each user's commit applies only if the user's stored version still matches the one it was
    computed from (the version rows are locked, in user order, inside the commit's
    transaction), so lookup-or-create is exactly-once across every process that shares the
    schema, and no update is lost. A commit that lost such a race is reloaded inside the actor,
    invisibly to callers. Durability is the server's: a commit returns once PostgreSQL has
    committed it (with the server's default ``synchronous_commit = on``, flushed to its WAL).

Group commit
    The commits of every actor waiting at a moment go to the server in one statement -- one
    round trip and one transaction, whatever the number of users -- with each user's version
    checked inside it; one user's rejection never fails another's. ``group_commit=False`` gives
    each commit call its own transaction, for comparison.

Off the event loop
    The driver is psycopg 3, used through its synchronous API in worker threads
    (``anyio.to_thread``), one connection for writes and one for reads, each used by one thread
    at a time: the same code on asyncio and trio. A call whose caller gives up leaves at once;
    a statement the server is running completes first (the store's deadlines hold regardless).

Errors and outages
    Driver errors become :class:`AdapterError` with the psycopg exception as ``__cause__``.
    While the server is unreachable, calls fail with :class:`AdapterError` at once; the adapter
    reconnects by itself, so calls succeed again once it is back, without reopening. A commit
    whose connection broke while the server ran it fails with :class:`AdapterError` too, and the
    store reloads the user, since it may have been applied. A stored session that does not
    decode fails alone, as with SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import psycopg
from psycopg import conninfo

from ...errors import AdapterError, InvalidInputError, InvalidTypeError
from ...model import Session, SessionQuery, SessionState
from .._lifetime import Shared
from ..base import Rejection, UserCommit, UserSnapshot
from . import _db as db
from ._reads import Read
from ._schema import encode_session
from ._writes import EncodedCommit

__all__ = ["PostgresSessionStoreAdapter", "PostgresStatistics"]

#: What a schema name may be: a plain identifier, so it needs no quoting anywhere.
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@attrs.frozen(slots=True)
class PostgresStatistics:
    """Counters of a :class:`PostgresSessionStoreAdapter` since it was created.

    Attributes:
        transactions: Write transactions committed (with group commit, many users each).
        user_commits: User commits written (applied or rejected).
        write_calls: Calls of the writer thread.
        read_calls: Calls of the reader thread (each runs every read pending at its start).
    """

    transactions: int
    user_commits: int
    write_calls: int
    read_calls: int


def _describe(dsn: str) -> str:
    """``host:port/dbname`` of a connection string, without its password, for messages."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise InvalidInputError(f"dsn is not a PostgreSQL connection string: {exc}") from None
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


@final
class PostgresSessionStoreAdapter:
    """Keeps sessions in PostgreSQL (see the module documentation).

    Args:
        dsn: A libpq connection string (``"host=db port=5432 dbname=app user=app"``) or URL
            (``"postgresql://app@db/app"``).
        schema: The schema that holds the tables, created if missing; stores that share one
            schema share their sessions. A plain identifier of at most 63 characters.
        group_commit: Write every pending commit in one transaction (the default). ``False``
            gives each commit call its own transaction: slower, for comparison.
        max_group: Most commit calls written in one transaction.
        connect_timeout: Seconds to wait for a connection to the server.

    Raises:
        InvalidInputError: A malformed ``dsn`` or ``schema``, a non-positive timeout or size.
        InvalidTypeError: An argument has the wrong type.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "assistant_sessions",
        group_commit: bool = True,
        max_group: int = 1024,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(dsn, str):
            raise InvalidTypeError(f"dsn must be a str, not {type(dsn).__name__}")
        if not isinstance(schema, str):
            raise InvalidTypeError(f"schema must be a str, not {type(schema).__name__}")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInputError(
                "schema must be a plain identifier (a letter or _, then letters, digits or _; "
                f"at most 63 characters), not {schema!r}"
            )
        if type(max_group) is not int:
            raise InvalidTypeError("max_group must be an int")
        if max_group < 1:
            raise InvalidInputError(f"max_group must be at least 1, got {max_group}")
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float):
            raise InvalidTypeError("connect_timeout must be seconds (int or float)")
        if not 0 < connect_timeout < float("inf"):
            raise InvalidInputError(
                f"connect_timeout must be positive and finite, got {connect_timeout!r}"
            )
        self._where = _describe(dsn)
        self._dsn = dsn
        self._schema = schema
        self._group_commit = bool(group_commit)
        self._max_group = max_group
        self._connect_timeout = float(connect_timeout)
        self._shared: Shared[db.Database] = Shared()
        self._counts = [0, 0, 0, 0]

    def __repr__(self) -> str:
        return (
            f"PostgresSessionStoreAdapter(<{self._where}>, schema={self._schema!r}, "
            f"group_commit={self._group_commit})"
        )

    @property
    def group_commit(self) -> bool:
        """Whether pending commits share one transaction (see
        :class:`~assistant_sessions.adapters.GroupCommitAdapter`)."""
        return self._group_commit

    @property
    def schema(self) -> str:
        """The schema that holds the tables."""
        return self._schema

    def statistics(self) -> PostgresStatistics:
        """The adapter's counters, over every time it was open (never blocks)."""
        counts = list(self._counts)
        if (database := self._shared.value) is not None:
            counts = [a + b for a, b in zip(counts, self._current_counts(database), strict=True)]
        return PostgresStatistics(*counts)

    @staticmethod
    def _current_counts(database: db.Database) -> list[int]:
        return [
            database.transactions,
            database.user_commits,
            database.writes.batches,
            database.reads.batches,
        ]

    # -- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and create or migrate the schema.

        An open adapter may be opened again (several stores sharing it): each :meth:`open`
        needs its :meth:`aclose`, and the last one closes the connections.

        Raises:
            AdapterError: The server cannot be reached, or the schema is newer than this
                library knows or cannot be migrated.

        On cancellation the adapter is not left open.
        """
        await self._shared.open(self._connect, db.Database.close)

    async def _connect(self) -> db.Database:
        database = db.Database(
            self._dsn,
            self._schema,
            self._where,
            connect_timeout=self._connect_timeout,
            group_commit=self._group_commit,
            max_group=self._max_group,
        )
        await anyio.to_thread.run_sync(database.open)
        return database

    async def aclose(self) -> None:
        """Close the connections when the last :meth:`open` is matched; committed data stays.

        Closing a closed adapter does nothing. Commits still waiting fail with
        :class:`AdapterError`; one being written completes first.

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
            raise AdapterError(f"the PostgreSQL adapter for {self._where} is not open")
        return database

    # -- per-user load and commit --------------------------------------------------------------

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version (0: never written).

        A stored session that does not decode is left out (and logged).

        Raises:
            AdapterError: The server failed or is unreachable, or the adapter is not open.

        On cancellation before the read started, nothing is read; once it started, it
        completes first.
        """
        database = self._database()
        result: UserSnapshot = await database.reads.submit(Read(user_id=user_id))
        return result

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """:meth:`load_user` of each of ``user_ids``, in one statement (the store's grouped
        loads: :class:`~assistant_sessions.adapters.GroupLoadAdapter`).

        Returns:
            One snapshot per user, in order.

        Raises:
            AdapterError: The server failed or is unreachable, or the adapter is not open.

        Cancellation: as :meth:`load_user`.
        """
        database = self._database()
        result: list[UserSnapshot | AdapterError] = await database.reads.submit(
            Read(user_ids=tuple(user_ids))
        )
        return result

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit atomically if its version matches.

        The commits go into the next write transaction together with every other commit
        pending by then (group commit). When this returns, applied commits are committed by
        the server.

        Returns:
            One entry per commit, in order: ``None`` if applied, else why it was rejected.

        Raises:
            AdapterError: The server failed or is unreachable: what was applied is unknown
                (nothing, unless the connection broke while the server ran the transaction).
            InvalidInputError: A commit upserts a session of another user.

        On cancellation while still waiting for its transaction, nothing is applied; once its
        transaction started, it completes (whole) and the cancellation follows.
        """
        database = self._database()
        encoded: list[EncodedCommit] = []
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
            AdapterError: The server failed, or the session does not decode.

        Cancellation: as :meth:`load_user`.
        """
        database = self._database()
        result: Session | None = await database.reads.submit(Read(session_id=session_id))
        return result

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return committed sessions matching ``query``, most recently active first.

        Sessions that do not decode are skipped and logged; reading goes on past them.

        Raises:
            AdapterError: The server failed.

        Cancellation: as :meth:`load_user`.
        """
        database = self._database()
        result: list[Session] = await database.reads.submit(database.queries.find(query))
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
        state_clock, id)`` index. Sessions that do not decode are skipped and logged.

        Raises:
            AdapterError: The server failed.

        Cancellation: as :meth:`load_user`.
        """
        database = self._database()
        read = database.queries.due(state, before, limit, after)
        result: list[Session] = await database.reads.submit(read)
        return result
