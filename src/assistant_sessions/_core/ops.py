"""The bookkeeping of one user's sessions: what each operation does, with no concurrency at all.

An operation (``Op``) is applied to a :class:`Transaction` over a :class:`UserState` -- the
actor's cached copy of one user's sessions. It validates first, then writes new snapshots
through the transaction, which records how to undo them, so a batch of operations can be
committed to the adapter at once and rolled back whole if the commit fails. The actor decides
*when* operations run; this module decides *what* they do. The benchmark's baselines call the
same code, so they measure the same bookkeeping.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from .._validate import thaw
from ..adapters.base import UserCommit, UserSnapshot
from ..errors import (
    InvalidInputError,
    SessionConflictError,
    SessionNotFoundError,
    SessionStateError,
)
from ..model import EMPTY_METADATA, Session, SessionState, recency_key

if TYPE_CHECKING:
    from .._affinity import SessionSelector

__all__ = [
    "DEFAULT_POLICY",
    "AttachSurface",
    "Create",
    "Delete",
    "DetachSurface",
    "Expire",
    "ExpireSuspended",
    "Op",
    "Policy",
    "Purge",
    "Resolve",
    "SuspendStale",
    "Touch",
    "Transaction",
    "UpdateMetadata",
    "UserState",
    "new_session_id",
]

_CREATED = SessionState.CREATED
_ACTIVE = SessionState.ACTIVE
_SUSPENDED = SessionState.SUSPENDED
_EXPIRED = SessionState.EXPIRED


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


def new_session_id() -> str:
    """A fresh random session id (a UUID4 in its usual text form)."""
    return str(uuid.uuid4())


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


class Op(Protocol):
    """One operation on one user's sessions; ``apply`` validates, then writes."""

    #: The operation's name in statistics.
    kind: str

    @property
    def user_id(self) -> str: ...

    def apply(self, tx: Transaction) -> Any: ...


def _activate(tx: Transaction, session: Session, name: str) -> Session:
    """Touch ``session``: make it active and move its last activity to now."""
    state = session.state
    now = tx.now
    if state is _ACTIVE:
        changed_at = session.state_changed_at
    elif state is _EXPIRED:
        raise SessionStateError(session.id, state.value, name)
    else:
        changed_at = now
    return tx.put(
        Session(
            session.id,
            session.user_id,
            session.workspace_id,
            _ACTIVE,
            session.created_at,
            now,
            changed_at,
            session.attached_surfaces,
            session.metadata,
        )
    )


def _require_live(tx: Transaction, session_id: str, name: str) -> Session:
    session = tx.require(session_id)
    if session.state is _EXPIRED:
        raise SessionStateError(session_id, _EXPIRED.value, name)
    return session


def _with(
    session: Session,
    *,
    state: SessionState | None = None,
    state_changed_at: datetime | None = None,
    attached_surfaces: tuple[str, ...] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Session:
    # Built directly: attrs.evolve introspects the class on every call.
    return Session(
        session.id,
        session.user_id,
        session.workspace_id,
        session.state if state is None else state,
        session.created_at,
        session.last_activity_at,
        session.state_changed_at if state_changed_at is None else state_changed_at,
        session.attached_surfaces if attached_surfaces is None else attached_surfaces,
        session.metadata if metadata is None else metadata,
    )


def _claim_surface(tx: Transaction, surface_id: str, owner_id: str) -> None:
    """With exclusive surfaces, detach ``surface_id`` from the user's other live sessions."""
    if not tx.policy.exclusive_surfaces:
        return
    for other in list(tx.sessions.values()):
        if (
            other.id != owner_id
            and other.state is not _EXPIRED
            and surface_id in other.attached_surfaces
        ):
            surfaces = tuple(s for s in other.attached_surfaces if s != surface_id)
            tx.put(_with(other, attached_surfaces=surfaces))


def _check_metadata_size(tx: Transaction, metadata: Mapping[str, Any]) -> None:
    if not metadata:
        return
    limit = tx.policy.max_metadata_bytes
    size = len(json.dumps(thaw(metadata), separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise InvalidInputError(f"metadata would be {size} bytes; the limit is {limit}")


class Create:
    """Create a new session in state ``created``."""

    kind = "create"
    __slots__ = ("metadata", "session_id", "surface_id", "user_id", "workspace_id")

    def __init__(
        self,
        user_id: str,
        session_id: str,
        workspace_id: str | None,
        surface_id: str | None,
        metadata: Mapping[str, Any],
    ) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.workspace_id = workspace_id
        self.surface_id = surface_id
        self.metadata = metadata

    def apply(self, tx: Transaction) -> Session:
        if self.session_id in tx.sessions:
            raise SessionConflictError(self.session_id)
        return _create(
            tx, self.user_id, self.session_id, self.workspace_id, self.surface_id, self.metadata
        )


def _create(
    tx: Transaction,
    user_id: str,
    session_id: str,
    workspace_id: str | None,
    surface_id: str | None,
    metadata: Mapping[str, Any],
) -> Session:
    now = tx.now
    surfaces = () if surface_id is None else (surface_id,)
    _check_metadata_size(tx, metadata)
    if surface_id is not None:
        _claim_surface(tx, surface_id, session_id)
    return tx.put(
        Session(session_id, user_id, workspace_id, _CREATED, now, now, now, surfaces, metadata)
    )


class _ById:
    __slots__ = ("session_id", "user_id")

    def __init__(self, user_id: str, session_id: str) -> None:
        self.user_id = user_id
        self.session_id = session_id


class Touch(_ById):
    """Mark activity: created or suspended become active; expired cannot be touched."""

    kind = "touch"
    __slots__ = ()

    def apply(self, tx: Transaction) -> Session:
        return _activate(tx, tx.require(self.session_id), "touch")


class Expire(_ById):
    """Expire a session (terminal); expiring an expired session changes nothing."""

    kind = "expire"
    __slots__ = ()

    def apply(self, tx: Transaction) -> Session:
        session = tx.require(self.session_id)
        if session.state is _EXPIRED:
            return session
        return tx.put(_with(session, state=_EXPIRED, state_changed_at=tx.now))


class _SurfaceOp:
    __slots__ = ("session_id", "surface_id", "user_id")

    def __init__(self, user_id: str, session_id: str, surface_id: str) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.surface_id = surface_id


class AttachSurface(_SurfaceOp):
    """Attach a surface; attaching an attached surface changes nothing."""

    kind = "attach_surface"
    __slots__ = ()

    def apply(self, tx: Transaction) -> Session:
        session = _require_live(tx, self.session_id, "attach a surface to")
        if self.surface_id in session.attached_surfaces:
            return session
        if len(session.attached_surfaces) >= tx.policy.max_surfaces:
            raise InvalidInputError(
                f"session {session.id!r} already has the maximum of "
                f"{tx.policy.max_surfaces} surfaces attached"
            )
        _claim_surface(tx, self.surface_id, session.id)
        return tx.put(
            _with(session, attached_surfaces=(*session.attached_surfaces, self.surface_id))
        )


class DetachSurface(_SurfaceOp):
    """Detach a surface; detaching a surface that is not attached changes nothing."""

    kind = "detach_surface"
    __slots__ = ()

    def apply(self, tx: Transaction) -> Session:
        session = _require_live(tx, self.session_id, "detach a surface from")
        if self.surface_id not in session.attached_surfaces:
            return session
        surfaces = tuple(s for s in session.attached_surfaces if s != self.surface_id)
        return tx.put(_with(session, attached_surfaces=surfaces))


class UpdateMetadata:
    """Shallow-merge new metadata into a live session's metadata."""

    kind = "update_metadata"
    __slots__ = ("metadata", "session_id", "user_id")

    def __init__(self, user_id: str, session_id: str, metadata: Mapping[str, Any]) -> None:
        self.user_id = user_id
        self.session_id = session_id
        self.metadata = metadata

    def apply(self, tx: Transaction) -> Session:
        session = _require_live(tx, self.session_id, "update the metadata of")
        if not self.metadata:
            return session
        merged = MappingProxyType({**session.metadata, **self.metadata})
        _check_metadata_size(tx, merged)
        return tx.put(_with(session, metadata=merged))


class Resolve:
    """Lookup-or-create: touch the best live session of the user in the workspace, or create one.

    Candidates are the user's created, active and suspended sessions whose workspace equals
    ``workspace_id`` (``None`` matches ``None``). Without a selector, the most recently active
    candidate attached to ``surface_id`` wins, else the most recently active one.
    """

    kind = "resolve"
    __slots__ = ("new_id", "selector", "surface_id", "user_id", "workspace_id")

    def __init__(
        self,
        user_id: str,
        workspace_id: str | None,
        surface_id: str | None,
        selector: SessionSelector | None,
        new_id: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.surface_id = surface_id
        self.selector = selector
        self.new_id = new_id

    def apply(self, tx: Transaction) -> Session:
        workspace_id = self.workspace_id
        if self.selector is None:
            chosen = _select_default(tx.sessions.values(), workspace_id, self.surface_id)
        else:
            chosen = self._select_custom(tx)
        if chosen is not None:
            return _activate(tx, chosen, "resolve")
        session_id = self.new_id or new_session_id()
        if session_id in tx.sessions:
            raise SessionConflictError(session_id)
        return _create(tx, self.user_id, session_id, workspace_id, self.surface_id, EMPTY_METADATA)

    def _select_custom(self, tx: Transaction) -> Session | None:
        assert self.selector is not None
        candidates = sorted(
            (
                s
                for s in tx.sessions.values()
                if s.state is not _EXPIRED and s.workspace_id == self.workspace_id
            ),
            key=recency_key,
            reverse=True,
        )
        chosen = self.selector.select(tuple(candidates), surface_id=self.surface_id)
        if chosen is None:
            return None
        for candidate in candidates:
            if candidate.id == getattr(chosen, "id", None):
                return candidate
        raise InvalidInputError(
            f"the resolver returned {chosen!r}, which is not one of the candidates it was given"
        )


def _select_default(
    sessions: Any, workspace_id: str | None, surface_id: str | None
) -> Session | None:
    best: Session | None = None
    best_on_surface: Session | None = None
    for s in sessions:
        if s.state is _EXPIRED or s.workspace_id != workspace_id:
            continue
        # Most recently active wins, ties by id: recency_key written out, without tuples.
        if (
            best is None
            or s.last_activity_at > best.last_activity_at
            or (s.last_activity_at == best.last_activity_at and s.id > best.id)
        ):
            best = s
        if (
            surface_id is not None
            and surface_id in s.attached_surfaces
            and (best_on_surface is None or recency_key(s) > recency_key(best_on_surface))
        ):
            best_on_surface = s
    return best_on_surface if best_on_surface is not None else best


def select_default(candidates: Sequence[Session], surface_id: str | None) -> Session | None:
    """The default affinity: the most recent candidate on ``surface_id``, else the most recent."""
    best: Session | None = None
    for s in candidates:
        if (
            surface_id is not None
            and surface_id in s.attached_surfaces
            and (best is None or recency_key(s) > recency_key(best))
        ):
            best = s
    if best is not None:
        return best
    return max(candidates, key=recency_key, default=None)


class SuspendStale:
    """Suspend those of ``session_ids`` that are created or active and were last active before
    ``cutoff``.

    The re-check here, inside the owner's turn, is what keeps a sweep from suspending a session
    that was touched after the sweep read its candidates.
    """

    kind = "sweep"
    __slots__ = ("cutoff", "session_ids", "states", "user_id")

    def __init__(
        self,
        user_id: str,
        session_ids: Sequence[str],
        cutoff: datetime,
        states: frozenset[SessionState] = frozenset({_CREATED, _ACTIVE}),
    ) -> None:
        self.user_id = user_id
        self.session_ids = session_ids
        self.cutoff = cutoff
        self.states = states

    def apply(self, tx: Transaction) -> list[Session]:
        moved = []
        for session_id in self.session_ids:
            session = tx.sessions.get(session_id)
            if (
                session is not None
                and session.state in self.states
                and session.last_activity_at < self.cutoff
            ):
                moved.append(tx.put(_with(session, state=_SUSPENDED, state_changed_at=tx.now)))
        return moved


class _AgedOut:
    """An operation on those of ``session_ids`` that have been in one state since before
    ``cutoff`` (re-checked here, in the owner's turn, as sweeps require)."""

    __slots__ = ("cutoff", "session_ids", "user_id")

    def __init__(self, user_id: str, session_ids: Sequence[str], cutoff: datetime) -> None:
        self.user_id = user_id
        self.session_ids = session_ids
        self.cutoff = cutoff

    def _aged(self, tx: Transaction, state: SessionState) -> list[Session]:
        sessions = (tx.sessions.get(session_id) for session_id in self.session_ids)
        return [
            s
            for s in sessions
            if s is not None and s.state is state and s.state_changed_at < self.cutoff
        ]


class ExpireSuspended(_AgedOut):
    """Expire those of ``session_ids`` that have been suspended since before ``cutoff``."""

    kind = "expire_suspended"
    __slots__ = ()

    def apply(self, tx: Transaction) -> list[Session]:
        return [
            tx.put(_with(session, state=_EXPIRED, state_changed_at=tx.now))
            for session in self._aged(tx, _SUSPENDED)
        ]


class Delete(_ById):
    """Delete a session of any state."""

    kind = "delete"
    __slots__ = ()

    def apply(self, tx: Transaction) -> Session:
        session = tx.require(self.session_id)
        tx.delete(self.session_id)
        return session


class Purge(_AgedOut):
    """Delete those of ``session_ids`` that have been expired since before ``cutoff``."""

    kind = "purge"
    __slots__ = ()

    def apply(self, tx: Transaction) -> list[Session]:
        purged = self._aged(tx, _EXPIRED)
        for session in purged:
            tx.delete(session.id)
        return purged
