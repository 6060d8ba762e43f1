"""The in-memory adapter: the default, for tests and single-process local use."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import final

import anyio.lowlevel

from ..model import Session, SessionQuery, SessionState, recency_key
from .base import Rejection, UserCommit, UserSnapshot, state_clock

__all__ = ["InMemorySessionStoreAdapter"]

# A due-index heap is rebuilt when it holds this many more entries than live ones.
_COMPACT_SLACK = 1024
# States whose state clock is the last activity (see ``state_clock``).
_BY_ACTIVITY = frozenset({SessionState.CREATED, SessionState.ACTIVE})


@final
class InMemorySessionStoreAdapter:
    """Keeps sessions in this process's memory, until the process ends.

    Sessions are immutable snapshots, so the adapter stores the objects themselves: nothing a
    caller holds can change them. Sweeps read an index per state, a heap ordered by the state
    clock with lazy deletion (an entry is checked against the session when it is read, and the
    heap is rebuilt when stale entries outnumber live ones), so a sweep costs in proportion to the
    stale sessions it finds, not to all sessions. ``find`` with a ``user_id`` reads only that
    user's sessions; without one it scans.

    One instance may be shared by several stores in one process (as several processes share a
    database): the versioned commits keep them correct.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._users: dict[str, dict[str, Session]] = {}
        self._versions: dict[str, int] = {}
        self._due: dict[SessionState, list[tuple[datetime, str]]] = {s: [] for s in SessionState}
        self._counts: dict[SessionState, int] = dict.fromkeys(SessionState, 0)

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
        sessions = self._users.get(user_id)
        return UserSnapshot(
            user_id, self._versions.get(user_id, 0), tuple(sessions.values()) if sessions else ()
        )

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version."""
        await anyio.lowlevel.checkpoint()
        return self.load_user_nowait(user_id)

    def commit_nowait(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit if its version matches (see the adapter contract)."""
        return [self._commit_one(commit) for commit in commits]

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit if its version matches (see the adapter contract)."""
        await anyio.lowlevel.checkpoint()
        return self.commit_nowait(commits)

    def _commit_one(self, commit: UserCommit) -> Rejection | None:
        user_id = commit.user_id
        if self._versions.get(user_id, 0) != commit.expected_version:
            return Rejection.VERSION
        sessions = self._sessions
        previous = [sessions.get(session.id) for session in commit.upserts]
        for old in previous:
            if old is not None and old.user_id != user_id:
                return Rejection.DUPLICATE_ID
        own = self._users.get(user_id)
        if own is None:
            own = self._users[user_id] = {}
        for session_id in commit.deletes:
            gone = own.pop(session_id, None)
            if gone is not None:
                del sessions[session_id]
                self._counts[gone.state] -= 1
        for old, session in zip(previous, commit.upserts, strict=True):
            sessions[session.id] = own[session.id] = session
            self._index(old, session)
        if not own:
            del self._users[user_id]
        self._versions[user_id] = commit.expected_version + 1
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
            self._counts[old_state] -= 1
        counts = self._counts
        counts[state] += 1
        heap = self._due[state]
        heapq.heappush(heap, (key, new.id))
        if len(heap) > 2 * counts[state] + _COMPACT_SLACK:
            self._rebuild(state)

    def _rebuild(self, state: SessionState) -> None:
        heap = [(state_clock(s), s.id) for s in self._sessions.values() if s.state is state]
        heapq.heapify(heap)
        self._due[state] = heap

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
            pool = self._users.get(query.user_id, {}).values()
        else:
            pool = self._sessions.values()
        return heapq.nlargest(query.limit, filter(query.matches, pool), key=recency_key)

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return sessions matching ``query``, most recently active first."""
        await anyio.lowlevel.checkpoint()
        return self.find_nowait(query)

    def due_nowait(self, state: SessionState, before: datetime, limit: int) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``."""
        heap = self._due[state]
        found: dict[str, Session] = {}
        keep: list[tuple[datetime, str]] = []
        while heap and len(found) < limit and heap[0][0] < before:
            entry = heapq.heappop(heap)
            session = self._sessions.get(entry[1])
            # Entries of sessions that changed since are dropped here: that is the lazy deletion.
            if (
                session is not None
                and session.state is state
                and state_clock(session) == entry[0]
                and session.id not in found
            ):
                found[session.id] = session
                keep.append(entry)
        for entry in keep:
            heapq.heappush(heap, entry)
        return list(found.values())

    async def due(self, state: SessionState, before: datetime, limit: int) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``."""
        await anyio.lowlevel.checkpoint()
        return self.due_nowait(state, before, limit)
