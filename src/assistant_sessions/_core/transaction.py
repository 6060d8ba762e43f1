"""A user's cached sessions and the transaction that writes them, with its undo log.

A :class:`Transaction` over a :class:`UserState` records how to undo every write, so a batch of
operations can be committed to the adapter at once and rolled back whole if the commit fails,
or back to a savepoint when one operation of the batch fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import attrs

from ..adapters.base import UserCommit, UserSnapshot
from ..errors import SessionNotFoundError
from ..model import Session

__all__ = ["DEFAULT_POLICY", "Policy", "Transaction", "UserState"]


@attrs.frozen(slots=True)
class Policy:
    """The store's rules that operations enforce.

    Attributes:
        exclusive_surfaces: A surface is attached to at most one live session of a user:
            attaching it to one detaches it from the others, in the same turn.
        max_surfaces: Most surfaces one session may have attached.
        max_metadata_bytes: Largest metadata of one session, as compact UTF-8 JSON.
    """

    exclusive_surfaces: bool = True
    max_surfaces: int = 64
    max_metadata_bytes: int = 64 * 1024


DEFAULT_POLICY: Final = Policy()


class UserState:
    """The actor's cached copy of one user's sessions, at ``version`` of the adapter."""

    __slots__ = ("sessions", "user_id", "version")

    def __init__(self, snapshot: UserSnapshot) -> None:
        self.user_id = snapshot.user_id
        self.version = snapshot.version
        self.sessions: dict[str, Session] = {s.id: s for s in snapshot.sessions}


class Transaction:
    """Writes of a batch of operations to one :class:`UserState`, with their undo log."""

    __slots__ = ("_undo", "now", "policy", "sessions", "state")

    def __init__(self, state: UserState, now: datetime, policy: Policy = DEFAULT_POLICY) -> None:
        self.state = state
        self.sessions = state.sessions
        self.now = now
        self.policy = policy
        self._undo: list[tuple[str, Session | None]] = []

    def require(self, session_id: str) -> Session:
        """Return the session, or raise :class:`SessionNotFoundError`."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session

    def put(self, session: Session) -> Session:
        """Write a new snapshot of ``session`` and return it."""
        sessions = self.sessions
        self._undo.append((session.id, sessions.get(session.id)))
        sessions[session.id] = session
        return session

    def delete(self, session_id: str) -> None:
        """Delete a session of this user."""
        self._undo.append((session_id, self.sessions.pop(session_id)))

    def mark(self) -> int:
        """A savepoint for :meth:`rollback`."""
        return len(self._undo)

    def rollback(self, mark: int = 0) -> None:
        """Undo every write made after ``mark``."""
        undo, sessions = self._undo, self.sessions
        while len(undo) > mark:
            session_id, previous = undo.pop()
            if previous is None:
                sessions.pop(session_id, None)
            else:
                sessions[session_id] = previous

    @property
    def dirty(self) -> bool:
        """Whether anything was written."""
        return bool(self._undo)

    def changes(self) -> list[tuple[Session | None, Session | None]]:
        """Each written session once, in order of first write: (before the batch, now)."""
        if len(self._undo) == 1:
            session_id, before = self._undo[0]
            return [(before, self.sessions.get(session_id))]
        first: dict[str, Session | None] = {}
        for session_id, previous in self._undo:
            if session_id not in first:
                first[session_id] = previous
        sessions = self.sessions
        return [(before, sessions.get(session_id)) for session_id, before in first.items()]

    def to_commit(self) -> UserCommit:
        """The writes so far as one :class:`UserCommit` against the state's version."""
        undo = self._undo
        state = self.state
        if len(undo) == 1:  # the common single write, without the bookkeeping below
            session_id = undo[0][0]
            current = self.sessions.get(session_id)
            if current is not None:
                return UserCommit(state.user_id, state.version, (current,))
            return UserCommit(state.user_id, state.version, (), (session_id,))
        upserts: list[Session] = []
        deletes: list[str] = []
        for before, after in self.changes():
            if after is not None:
                upserts.append(after)
            elif before is not None:
                deletes.append(before.id)
        return UserCommit(state.user_id, state.version, tuple(upserts), tuple(deletes))
