"""The in-memory adapter: the default, for tests and single-process local use."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import final

import anyio.lowlevel

from ...errors import AdapterError
from ...model import Session, SessionQuery, SessionState, recency_key
from ..base import Rejection, UserCommit, UserSnapshot
from ._due_index import DueIndex

__all__ = ["InMemorySessionStoreAdapter"]

# States whose state clock is the last activity (see ``state_clock``).
_BY_ACTIVITY = frozenset({SessionState.CREATED, SessionState.ACTIVE})


class _User:
    """One user's sessions and version: a commit reads one entry of a big dict, not two."""

    __slots__ = ("sessions", "version")

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.version = 0


@final
class InMemorySessionStoreAdapter:
    """Keeps sessions in this process's memory, until the process ends.

    Sessions are immutable snapshots, so the adapter stores the objects themselves: nothing a
    caller holds can change them. Sweeps read an index per state ordered by the state clock
    (:class:`~assistant_sessions.adapters.memory._due_index.DueIndex`), so a sweep costs in
    proportion
    to the stale sessions it finds, not to all sessions. ``find`` with a ``user_id`` reads only that
    user's sessions; without one it scans.

    One instance may be shared by several stores in one process (as several processes share a
    database): the versioned commits keep them correct.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        #: Every user ever written (a user whose sessions are all gone keeps its version).
        self._users: dict[str, _User] = {}
        self._due: dict[SessionState, DueIndex] = {s: DueIndex() for s in SessionState}

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self) -> None:
        """Nothing to open; present for the adapter contract."""
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Nothing to release: the sessions stay for the next store that opens this adapter."""
        await anyio.lowlevel.checkpoint()

    # -- per-user load and commit --------------------------------------------------------------

    def load_user_nowait(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version."""
        user = self._users.get(user_id)
        if user is None:
            return UserSnapshot(user_id, 0, ())
        return UserSnapshot(user_id, user.version, tuple(user.sessions.values()))

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version."""
        await anyio.lowlevel.checkpoint()
        return self.load_user_nowait(user_id)

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """:meth:`load_user` of each of ``user_ids`` (:class:`~assistant_sessions.adapters.
        GroupLoadAdapter`; the store reads this adapter inline, without it)."""
        await anyio.lowlevel.checkpoint()
        return [self.load_user_nowait(user_id) for user_id in user_ids]

    def commit_nowait(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit if its version matches (see the adapter contract)."""
        if len(commits) == 1:  # an actor's turn: no comprehension (a frame and a loop)
            return [self._commit_one(commits[0])]
        return [self._commit_one(commit) for commit in commits]

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit if its version matches (see the adapter contract)."""
        await anyio.lowlevel.checkpoint()
        return self.commit_nowait(commits)

    def _commit_one(self, commit: UserCommit) -> Rejection | None:
        user_id = commit.user_id
        user = self._users.get(user_id)
        if (0 if user is None else user.version) != commit.expected_version:
            return Rejection.VERSION
        sessions = self._sessions
        upserts = commit.upserts
        if len(upserts) == 1 and not commit.deletes:  # the common case, without the lists
            session = upserts[0]
            session_id = session.id
            # A session of this user's own is found in its (small) dict, not the big one.
            old = user.sessions.get(session_id) if user is not None else None
            if old is None:
                old = sessions.get(session_id)
                if old is not None and old.user_id != user_id:
                    return Rejection.DUPLICATE_ID
            if user is None:
                user = self._users[user_id] = _User()
            sessions[session_id] = user.sessions[session_id] = session
            user.version += 1
            # The index, written out for the common touch: same state, a later clock.
            state = session.state
            if old is not None and old.state is state and state in _BY_ACTIVITY:
                if old.last_activity_at != session.last_activity_at:
                    self._due[state].set(session_id, session.last_activity_at)
                return None
            self._index(old, session)
            return None
        previous = [sessions.get(session.id) for session in upserts]
        for old in previous:
            if old is not None and old.user_id != user_id:
                return Rejection.DUPLICATE_ID
        if user is None:
            user = self._users[user_id] = _User()
        own = user.sessions
        for session_id in commit.deletes:
            gone = own.pop(session_id, None)
            if gone is not None:
                del sessions[session_id]
                self._due[gone.state].discard(session_id)
        for old, session in zip(previous, upserts, strict=True):
            sessions[session.id] = own[session.id] = session
            self._index(old, session)
        if not own:
            # A dict keeps its peak size: a user whose sessions are all gone gets a new one.
            user.sessions = {}
        user.version += 1
        return None

    def _index(self, old: Session | None, new: Session) -> None:
        state = new.state
        key = new.last_activity_at if state in _BY_ACTIVITY else new.state_changed_at
        if old is not None:
            old_state = old.state
            if old_state is state:
                old_key = old.last_activity_at if state in _BY_ACTIVITY else old.state_changed_at
                if old_key == key:
                    return
            else:
                self._due[old_state].discard(old.id)
        self._due[state].set(new.id, key)

    # -- queries -------------------------------------------------------------------------------

    def get_nowait(self, session_id: str) -> Session | None:
        """Return the session with this id, or ``None``."""
        return self._sessions.get(session_id)

    async def get(self, session_id: str) -> Session | None:
        """Return the session with this id, or ``None``."""
        await anyio.lowlevel.checkpoint()
        return self._sessions.get(session_id)

    def find_nowait(self, query: SessionQuery) -> list[Session]:
        """Return sessions matching ``query``, most recently active first."""
        pool: Iterable[Session]
        if query.user_id is not None:
            user = self._users.get(query.user_id)
            pool = user.sessions.values() if user is not None else ()
        else:
            pool = self._sessions.values()
        return heapq.nlargest(query.limit, filter(query.matches, pool), key=recency_key)

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return sessions matching ``query``, most recently active first."""
        await anyio.lowlevel.checkpoint()
        return self.find_nowait(query)

    def due_nowait(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``,
        ordered by (state clock, id), after ``after`` if given."""
        sessions = self._sessions
        ids = self._due[state].oldest(before, limit, after)
        return [sessions[session_id] for session_id in ids]

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``,
        ordered by (state clock, id), after ``after`` if given."""
        await anyio.lowlevel.checkpoint()
        return self.due_nowait(state, before, limit, after=after)
