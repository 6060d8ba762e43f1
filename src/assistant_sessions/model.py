"""The value types of assistant-sessions: sessions, their states, queries and statistics.

All of them are frozen: a :class:`Session` is a snapshot, and changing a session means the store
builds a new one. Nothing a caller holds can change what is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import attrs

__all__ = [
    "EMPTY_METADATA",
    "LIVE_STATES",
    "OperationStatistics",
    "Session",
    "SessionQuery",
    "SessionState",
    "StoreStatistics",
]


class SessionState(enum.StrEnum):
    """Lifecycle state of a session: ``created -> active <-> suspended -> expired``."""

    CREATED = "created"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"


#: States in which a session can still be resolved, touched and changed.
LIVE_STATES: Final = frozenset({SessionState.CREATED, SessionState.ACTIVE, SessionState.SUSPENDED})

#: The shared read-only mapping of every session without metadata.
EMPTY_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})


def _metadata_repr(value: Mapping[str, Any]) -> str:
    return repr(dict(value))


@attrs.frozen(slots=True, weakref_slot=False)
class Session:
    """An immutable snapshot of one session.

    Attributes:
        id: The session id, unique in the store.
        user_id: The (already authenticated) user the session belongs to.
        workspace_id: The workspace, or ``None``.
        state: The lifecycle state.
        created_at: When the session was created (timezone-aware UTC).
        last_activity_at: The last time the session was created, touched or resolved.
        state_changed_at: When ``state`` last changed.
        attached_surfaces: Surface ids in the order they were attached.
        metadata: A read-only mapping; nested objects are read-only mappings and arrays are
            tuples, so a snapshot is immutable all the way down.
    """

    id: str
    user_id: str
    workspace_id: str | None
    state: SessionState
    created_at: datetime
    last_activity_at: datetime
    state_changed_at: datetime
    attached_surfaces: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = attrs.field(
        default=EMPTY_METADATA, hash=False, repr=_metadata_repr
    )

    @property
    def is_live(self) -> bool:
        """Whether the session can still be used (any state but ``expired``)."""
        return self.state is not SessionState.EXPIRED


def _state_set(
    value: SessionState | Iterable[SessionState] | None,
) -> frozenset[SessionState] | None:
    """``SessionQuery.state`` as a frozenset (hashable, so the query stays hashable)."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((SessionState(value),))
    return frozenset(SessionState(state) for state in value)


@attrs.frozen(slots=True)
class SessionQuery:
    """Filters of :meth:`SessionStore.find <assistant_sessions.SessionStore.find>`.

    A ``None`` filter matches everything. Results are ordered by ``last_activity_at``, most
    recent first (ties broken by ``id``), and cut to ``limit``. ``state`` is a frozenset of
    states (a session matches if its state is any of them); one :class:`SessionState`, or any
    iterable of them, is converted to one.
    """

    user_id: str | None = None
    workspace_id: str | None = None
    state: frozenset[SessionState] | None = attrs.field(default=None, converter=_state_set)
    surface_id: str | None = None
    active_after: datetime | None = None
    limit: int = 50
    #: Keyset cursor for paging: only sessions that come *after* this ``recency_key`` in the
    #: result order, that is with ``(last_activity_at, id)`` smaller than it.
    after: tuple[datetime, str] | None = None

    def matches(self, session: Session) -> bool:
        """Whether ``session`` passes every filter of this query (``limit`` aside)."""
        return (
            (self.user_id is None or session.user_id == self.user_id)
            and (self.workspace_id is None or session.workspace_id == self.workspace_id)
            and (self.state is None or session.state in self.state)
            and (self.surface_id is None or self.surface_id in session.attached_surfaces)
            and (self.active_after is None or session.last_activity_at > self.active_after)
            and (self.after is None or (session.last_activity_at, session.id) < self.after)
        )


@attrs.frozen(slots=True)
class OperationStatistics:
    """Count and latency percentiles (seconds) of one kind of operation."""

    count: int
    errors: int
    p50: float
    p95: float
    p99: float
    max: float


@attrs.frozen(slots=True)
class StoreStatistics:
    """A snapshot of a store's runtime counters, from :meth:`SessionStore.statistics`.

    Attributes:
        live_actors: Users whose actor is live (sessions cached), busy or idle.
        busy_actors: Actors applying or holding queued requests right now.
        mailbox_depth_max: The longest mailbox queue now.
        mailbox_depth_total: Requests queued in all mailboxes now.
        in_flight: Calls accepted and not yet returned.
        operations: Per operation kind (``resolve``, ``touch``, ...): count, errors, latency
            percentiles in seconds.
        sweeps: Sweeps run since the store opened.
        sessions_suspended: Sessions suspended by sweeps.
        sessions_expired: Sessions expired by the supervisor (``expire_after``).
        sessions_purged: Expired sessions deleted by the supervisor (``purge_after``).
        restarts: Actor restarts since the store opened.
        adapter_errors: Storage failures met by actors.
        subscribers: Open event subscriptions.
    """

    live_actors: int
    busy_actors: int
    mailbox_depth_max: int
    mailbox_depth_total: int
    in_flight: int
    operations: Mapping[str, OperationStatistics]
    sweeps: int
    sessions_suspended: int
    sessions_expired: int
    sessions_purged: int
    restarts: int
    adapter_errors: int
    subscribers: int


def recency_key(session: Session) -> tuple[datetime, str]:
    """Sort key of "most recently active": newest ``last_activity_at`` last, then by id."""
    return (session.last_activity_at, session.id)
