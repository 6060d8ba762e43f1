"""The adapter contract: what a store needs from the storage that keeps its sessions.

A store never changes a session in place. Each user's sessions are owned by that user's actor,
which works on a cached copy and writes its changes back in *per-user commits*. The contract is
built so that the same actor code is correct over one process's memory, an embedded database
(SQLite) and a server shared by many processes (Redis):

Per-user load
    :meth:`SessionStoreAdapter.load_user` returns every session of one user together with the
    user's *version*: an integer that starts at 0 for a user never written and grows by one with
    every applied commit of that user.

Atomic, versioned per-user commit
    :meth:`SessionStoreAdapter.commit` takes a batch of :class:`UserCommit` (at most one per
    user), each naming the version it was computed from. For each user, the adapter applies all
    of its upserts and deletes atomically and sets the version to ``expected_version + 1`` --
    only if the stored version still equals ``expected_version``; otherwise it applies nothing
    for that user and reports :attr:`Rejection.VERSION`. A commit that would give a session id
    already used by another session of any user is refused whole with
    :attr:`Rejection.DUPLICATE_ID`. Different users' commits in one batch are independent (an
    adapter may write them in one transaction: that is group commit). Once ``commit`` returns,
    the applied changes are as durable as the adapter promises. If the storage fails, ``commit``
    raises :class:`~assistant_sessions.AdapterError`, and the caller must assume nothing about
    which users were applied: it reloads them. Any other exception is taken for a defect found
    before anything was applied (a commit it cannot encode, say): the store sends each commit
    of that call again alone, so that only the user whose commit raised gets the error.

    The version check is what makes lookup-or-create exactly-once across processes: two
    processes that both computed "create" from version *n* cannot both commit.

Indexed queries
    :meth:`~SessionStoreAdapter.get` by session id, :meth:`~SessionStoreAdapter.find` by
    :class:`~assistant_sessions.SessionQuery` (most recently active first), and
    :meth:`~SessionStoreAdapter.due` for sweeps: the oldest sessions of one state whose *state
    clock* (``last_activity_at`` for created and active sessions, ``state_changed_at`` for
    suspended and expired ones) is before a cutoff, read in bounded batches from an index
    ordered by that clock -- never by scanning every session. ``due`` orders its results by
    ``(state clock, id)`` and pages by keyset: with ``after=(clock, id)`` (those of the last
    session of the previous page) it returns only sessions that sort after it, so a sweep makes
    progress past candidates it could not change (an empty page is the end). Queries see
    committed data only. A sweep re-checks each candidate inside its owner's actor before
    changing it, so ``due`` may return a candidate that is no longer stale.

Lifetime
    A store calls :meth:`~SessionStoreAdapter.open` when its ``async with`` starts and
    :meth:`~SessionStoreAdapter.aclose` when it ends. Adapters can be opened again after closing,
    and one adapter may serve several stores at once: each ``open`` is matched by one
    ``aclose``, in any order, and the adapter keeps working until the last one.

Adapters translate driver errors into :class:`~assistant_sessions.AdapterError` (keeping the
driver's exception as ``__cause__``); a row that cannot be decoded fails with ``AdapterError``
for that session only.

An in-process adapter may also implement :class:`SynchronousAdapter`: the store then runs a
turn completely inside the caller's task, without an await, which is the in-memory fast path.
An adapter that writes many users' commits together (one transaction, one round trip) says so
with :class:`GroupCommitAdapter`: the store then hands it the commits of all the users waiting
at once, in one call. Otherwise it calls ``commit`` once per user commit, concurrently, so
that storage stalling on one user's commit holds no other user. Such an adapter that also reads
many users in one call (:class:`GroupLoadAdapter`) is handed the loads of all the users waiting
at once, in one ``load_users`` call, the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from ..errors import AdapterError
from ..model import Session, SessionQuery, SessionState

__all__ = [
    "GroupCommitAdapter",
    "GroupLoadAdapter",
    "Rejection",
    "SessionStoreAdapter",
    "SynchronousAdapter",
    "UserCommit",
    "UserSnapshot",
    "batch_failure",
    "state_clock",
]


@attrs.frozen(slots=True)
class UserSnapshot:
    """Every session of one user, and the version they were read at (0: never written)."""

    user_id: str
    version: int
    sessions: tuple[Session, ...] = ()


@attrs.frozen(slots=True)
class UserCommit:
    """The changes of one user, computed from ``expected_version``.

    Attributes:
        user_id: Whose sessions change; every upserted session belongs to this user.
        expected_version: The version the changes were computed from.
        upserts: New snapshots of created or changed sessions.
        deletes: Ids of sessions to delete.
    """

    user_id: str
    expected_version: int
    upserts: tuple[Session, ...] = ()
    deletes: tuple[str, ...] = ()


class Rejection(enum.Enum):
    """Why an adapter did not apply one user's commit."""

    #: The stored version is not the expected one: another writer got there first.
    VERSION = "version"
    #: An upserted new session has an id that another session already uses.
    DUPLICATE_ID = "duplicate_id"


def state_clock(session: Session) -> datetime:
    """The time a session's staleness is measured from: the key of the ``due`` index."""
    if session.state is SessionState.CREATED or session.state is SessionState.ACTIVE:
        return session.last_activity_at
    return session.state_changed_at


def batch_failure(exc: BaseException) -> AdapterError:
    """One caller's own exception for a batch of storage work that raised ``exc`` as a whole.

    An :class:`~assistant_sessions.AdapterError` is copied (same class and attributes, its
    cause kept), so that each caller's traceback is its own; any other exception becomes an
    ``AdapterError`` caused by it.
    """
    if isinstance(exc, AdapterError):
        # A storage failure of the whole batch: each job gets a copy of the same class and
        # attributes, keeping the cause. Not copy.copy: it calls __init__ with ``args``, which
        # a subclass's own signature may refuse.
        try:
            error = type(exc).__new__(type(exc), *exc.args)
            error.__dict__.update(exc.__dict__)
        except Exception:  # a class that cannot be made this way
            error = AdapterError(str(exc))
        error.__cause__ = exc.__cause__ or exc
        error.__traceback__ = None
    else:
        error = AdapterError(f"a batch failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
    return error


@runtime_checkable
class SessionStoreAdapter(Protocol):
    """What a store needs from its storage. See the module documentation for the contract."""

    async def open(self) -> None:
        """Make the adapter ready for use (connect, create the schema)."""

    async def aclose(self) -> None:
        """Release what :meth:`open` acquired. Committed data stays."""

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's current version."""

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit atomically if its version matches.

        Returns:
            One entry per commit, in order: ``None`` if applied, else why it was rejected.

        Raises:
            AdapterError: The storage failed; which commits were applied is unknown.
        """

    async def get(self, session_id: str) -> Session | None:
        """Return the committed session with this id, or ``None``."""

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return committed sessions matching ``query``, most recently active first.

        ``query.state`` is ``None`` or a frozenset of states: a session in any of them matches
        (:meth:`SessionQuery.matches` is the reference).
        """

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``.

        Ordered by ``(state clock, id)``; with ``after``, only the sessions that sort after that
        key (keyset paging). See the module documentation.
        """


@runtime_checkable
class SynchronousAdapter(Protocol):
    """Optional fast path of in-process adapters: the same operations without awaiting."""

    def load_user_nowait(self, user_id: str) -> UserSnapshot:
        """Like :meth:`SessionStoreAdapter.load_user`."""

    def commit_nowait(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Like :meth:`SessionStoreAdapter.commit`."""

    def get_nowait(self, session_id: str) -> Session | None:
        """Like :meth:`SessionStoreAdapter.get`."""


@runtime_checkable
class GroupCommitAdapter(Protocol):
    """Optional: an adapter that writes the commits of one :meth:`~SessionStoreAdapter.commit`
    call together (group commit), so that a store hands it every waiting user's commit at once.

    Its users then share their commit's fate: a failure of the call is every one's, and a call
    that stalls holds them all.
    """

    @property
    def group_commit(self) -> bool:
        """Whether commits are grouped now (``False``: the store sends one per call)."""


@runtime_checkable
class GroupLoadAdapter(Protocol):
    """Optional, beside :class:`GroupCommitAdapter`: an adapter that reads many users'
    snapshots in one call (one statement, one round trip), so that a store that groups commits
    hands it the loads of every waiting user at once.
    """

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """Like :meth:`SessionStoreAdapter.load_user` for each of ``user_ids`` (distinct).

        Returns:
            One entry per user, in order: the snapshot, or the :class:`~assistant_sessions.
            AdapterError` that user's load alone failed with (a session that cannot be decoded,
            where the adapter fails a load for it).

        Raises:
            AdapterError: The storage failed: every load failed. Any other exception is taken
                for a defect, as with ``commit``: the store loads each user again alone.
        """
