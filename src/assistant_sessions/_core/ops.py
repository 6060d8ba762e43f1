"""What each operation does to one user's sessions, with no concurrency at all.

An operation is applied to a :class:`~assistant_sessions._core.transaction.Transaction` over the
actor's cached copy of one user's sessions. It validates first, then writes new snapshots
through the transaction. The runtime decides *when* operations run; this module decides *what*
they do. The benchmark's baselines call the same code, so they measure the same bookkeeping.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import attrs

from .._validate import thaw
from ..errors import InvalidInputError, SessionConflictError, SessionStateError
from ..model import EMPTY_METADATA, Session, SessionState, recency_key
from .select import SessionSelector, select_default
from .transaction import Transaction

__all__ = [
    "AttachSurface",
    "Create",
    "Delete",
    "DetachSurface",
    "Expire",
    "ExpireSuspended",
    "Op",
    "Purge",
    "Resolve",
    "SuspendStale",
    "Touch",
    "UpdateMetadata",
    "new_session_id",
]

_CREATED = SessionState.CREATED
_ACTIVE = SessionState.ACTIVE
_SUSPENDED = SessionState.SUSPENDED
_EXPIRED = SessionState.EXPIRED


def new_session_id() -> str:
    """A fresh random session id (a UUID4 in its usual text form)."""
    return str(uuid.uuid4())


class Op(Protocol):
    """One operation on one user's sessions; ``apply`` validates, then writes."""

    #: The operation's name in statistics.
    kind: ClassVar[str]

    @property
    def user_id(self) -> str: ...

    def apply(self, tx: Transaction) -> Any: ...


def _activate(
    tx: Transaction, session: Session, name: str, surfaces: tuple[str, ...] | None = None
) -> Session:
    """Touch ``session``: make it active and move its last activity to now (and give it
    ``surfaces``, if given, in the same new snapshot)."""
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
            session.attached_surfaces if surfaces is None else surfaces,
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


@attrs.define
class Create:
    """Create a new session in state ``created``."""

    kind: ClassVar[str] = "create"
    user_id: str
    session_id: str
    workspace_id: str | None
    surface_id: str | None
    metadata: Mapping[str, Any]

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


@attrs.define
class _ById:
    user_id: str
    session_id: str


@attrs.define
class Touch(_ById):
    """Mark activity: created or suspended become active; expired cannot be touched."""

    kind: ClassVar[str] = "touch"

    def apply(self, tx: Transaction) -> Session:
        return _activate(tx, tx.require(self.session_id), "touch")


@attrs.define
class Expire(_ById):
    """Expire a session (terminal); expiring an expired session changes nothing."""

    kind: ClassVar[str] = "expire"

    def apply(self, tx: Transaction) -> Session:
        session = tx.require(self.session_id)
        if session.state is _EXPIRED:
            return session
        return tx.put(_with(session, state=_EXPIRED, state_changed_at=tx.now))


@attrs.define
class _SurfaceOp:
    user_id: str
    session_id: str
    surface_id: str


@attrs.define
class AttachSurface(_SurfaceOp):
    """Attach a surface; attaching an attached surface changes nothing."""

    kind: ClassVar[str] = "attach_surface"

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


@attrs.define
class DetachSurface(_SurfaceOp):
    """Detach a surface; detaching a surface that is not attached changes nothing."""

    kind: ClassVar[str] = "detach_surface"

    def apply(self, tx: Transaction) -> Session:
        session = _require_live(tx, self.session_id, "detach a surface from")
        if self.surface_id not in session.attached_surfaces:
            return session
        surfaces = tuple(s for s in session.attached_surfaces if s != self.surface_id)
        return tx.put(_with(session, attached_surfaces=surfaces))


@attrs.define
class UpdateMetadata:
    """Shallow-merge new metadata into a live session's metadata."""

    kind: ClassVar[str] = "update_metadata"
    user_id: str
    session_id: str
    metadata: Mapping[str, Any]

    def apply(self, tx: Transaction) -> Session:
        session = _require_live(tx, self.session_id, "update the metadata of")
        if not self.metadata:
            return session
        merged = MappingProxyType({**session.metadata, **self.metadata})
        _check_metadata_size(tx, merged)
        return tx.put(_with(session, metadata=merged))


@attrs.define
class Resolve:
    """Lookup-or-create: touch the best live session of the user in the workspace, or create one.

    Candidates are the user's created, active and suspended sessions whose workspace equals
    ``workspace_id`` (``None`` matches ``None``). Without a selector, the most recently active
    candidate attached to ``surface_id`` wins, else the most recently active one.

    With ``attach`` (the default) ``surface_id`` is attached to the session returned, in the
    same turn: to a new one at creation, to a reused one as :class:`AttachSurface` would (with
    exclusive surfaces it is detached from the user's other live sessions; a reused session
    that already has ``max_surfaces`` attached makes the resolve invalid input, and the turn
    changes nothing). Without it the surface only guides the choice.
    """

    kind: ClassVar[str] = "resolve"
    user_id: str
    workspace_id: str | None
    surface_id: str | None
    selector: SessionSelector | None
    new_id: str | None = None
    attach: bool = True

    def apply(self, tx: Transaction) -> Session:
        workspace_id = self.workspace_id
        surface_id = self.surface_id if self.attach else None
        if self.selector is None:
            chosen = select_default(tx.sessions.values(), self.surface_id, workspace_id)
        else:
            chosen = self._select_custom(tx)
        if chosen is not None:
            if surface_id is None or surface_id in chosen.attached_surfaces:
                return _activate(tx, chosen, "resolve")  # the common case: a touch
            if len(chosen.attached_surfaces) >= tx.policy.max_surfaces:
                raise InvalidInputError(
                    f"session {chosen.id!r} already has the maximum of "
                    f"{tx.policy.max_surfaces} surfaces attached; resolve with "
                    "attach_surface=False or detach one first"
                )
            _claim_surface(tx, surface_id, chosen.id)  # then attached and touched in one snapshot
            return _activate(tx, chosen, "resolve", (*chosen.attached_surfaces, surface_id))
        session_id = self.new_id or new_session_id()
        if session_id in tx.sessions:
            raise SessionConflictError(session_id)
        return _create(tx, self.user_id, session_id, workspace_id, surface_id, EMPTY_METADATA)

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


@attrs.define
class SuspendStale:
    """Suspend those of ``session_ids`` that are created or active and were last active before
    ``cutoff``.

    The re-check here, inside the owner's turn, is what keeps a sweep from suspending a session
    that was touched after the sweep read its candidates.
    """

    kind: ClassVar[str] = "sweep"
    user_id: str
    session_ids: Sequence[str]
    cutoff: datetime
    states: frozenset[SessionState] = frozenset({_CREATED, _ACTIVE})

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


@attrs.define
class _AgedOut:
    """An operation on those of ``session_ids`` that have been in one state since before
    ``cutoff`` (re-checked here, in the owner's turn, as sweeps require)."""

    user_id: str
    session_ids: Sequence[str]
    cutoff: datetime

    def _aged(self, tx: Transaction, state: SessionState) -> list[Session]:
        sessions = (tx.sessions.get(session_id) for session_id in self.session_ids)
        return [
            s
            for s in sessions
            if s is not None and s.state is state and s.state_changed_at < self.cutoff
        ]


@attrs.define
class ExpireSuspended(_AgedOut):
    """Expire those of ``session_ids`` that have been suspended since before ``cutoff``."""

    kind: ClassVar[str] = "expire_suspended"

    def apply(self, tx: Transaction) -> list[Session]:
        return [
            tx.put(_with(session, state=_EXPIRED, state_changed_at=tx.now))
            for session in self._aged(tx, _SUSPENDED)
        ]


@attrs.define
class Delete(_ById):
    """Delete a session of any state."""

    kind: ClassVar[str] = "delete"

    def apply(self, tx: Transaction) -> Session:
        session = tx.require(self.session_id)
        tx.delete(self.session_id)
        return session


@attrs.define
class Purge(_AgedOut):
    """Delete those of ``session_ids`` that have been expired since before ``cutoff``."""

    kind: ClassVar[str] = "purge"

    def apply(self, tx: Transaction) -> list[Session]:
        purged = self._aged(tx, _EXPIRED)
        for session in purged:
            tx.delete(session.id)
        return purged
