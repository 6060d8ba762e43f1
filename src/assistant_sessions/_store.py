"""SessionStore, the object users hold: it validates each call and routes it.

A call on a user's sessions is routed to that user's actor (by ``user_id``, or by session id
through a read of the session's owner) and runs there as one turn; reads (``get``, ``find``) go
to the storage port, which holds committed data only. The facade never changes a session itself,
and never waits for storage in a way a caller's cancel scope cannot end (see
:mod:`._runtime.storage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, final

from ._core import (
    AttachSurface,
    Create,
    Delete,
    DetachSurface,
    Expire,
    Resolve,
    SessionSelector,
    Touch,
    UpdateMetadata,
    new_session_id,
)
from ._pages import SessionPages
from ._router import Router
from ._runtime import Runtime
from ._runtime.events import EventKind, Subscription
from ._validate import (
    check_bool,
    check_duration,
    check_id,
    check_optional_id,
    check_query,
    freeze_metadata,
)
from .adapters.base import SessionStoreAdapter
from .errors import InvalidTypeError
from .model import EMPTY_METADATA, Session, SessionState, StoreStatistics

__all__ = ["SessionStore"]


@final
class SessionStore:
    """The session store. Create it with :func:`create_session_store` and use it inside
    ``async with``; every method is a coroutine and a checkpoint (a cancellation point).

    Cancelling a call never leaves half an effect. A call cancelled before its turn started
    changes nothing; a call whose turn had started returns control at once (whatever the
    storage is doing), and its effect is then completed, or rolled back if the storage fails,
    by the user's actor on its own time: a cancelled caller may assume only that the call was
    applied whole or not at all, and a later read shows which.
    """

    def __init__(self, adapter: SessionStoreAdapter, runtime: Runtime) -> None:
        self._runtime = runtime
        self._registry = runtime.registry
        self._router = Router(adapter, runtime)

    async def __aenter__(self) -> Self:
        await self._router.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._router.close()

    # -- the store API -------------------------------------------------------------------------

    async def create(
        self,
        *,
        user_id: str,
        id: str | None = None,
        workspace_id: str | None = None,
        initial_surface_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session in state ``created``.

        Args:
            user_id: The owner.
            id: The session id; a random UUID when ``None``.
            workspace_id: The workspace, or ``None``.
            initial_surface_id: A surface to attach at once, or ``None``.
            metadata: Initial metadata (``str`` keys, JSON-serializable values), copied.

        Returns:
            The new session.

        Raises:
            SessionConflictError: ``id`` is already used by a session.
            InvalidInputError: An id is empty or too long, or metadata has a bad value.
            InvalidTypeError: An argument has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing was created.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        user_id = check_id(user_id, "user_id")
        session_id = new_session_id() if id is None else check_id(id, "id")
        op = Create(
            user_id,
            session_id,
            check_optional_id(workspace_id, "workspace_id"),
            check_optional_id(initial_surface_id, "initial_surface_id"),
            EMPTY_METADATA if metadata is None else freeze_metadata(metadata),
        )
        result: Session = await self._router.call(op)
        return result

    async def get(self, session_id: str) -> Session | None:
        """Return the session with this id, or ``None`` if there is none.

        Raises:
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed.

        Cancelled: returns at once; a read changes nothing.
        """
        session_id = check_id(session_id, "session_id")
        return await self._router.get(session_id)

    async def find(
        self,
        *,
        user_id: str | None = None,
        workspace_id: str | None = None,
        state: SessionState | str | Iterable[SessionState | str] | None = None,
        surface_id: str | None = None,
        active_after: datetime | None = None,
        limit: int = 50,
    ) -> list[Session]:
        """Return sessions matching every given filter, most recently active first.

        Args:
            user_id: Only this user's sessions.
            workspace_id: Only sessions of this workspace.
            state: Only sessions in this state, or any of these (:class:`SessionState` or value).
            surface_id: Only sessions with this surface attached.
            active_after: Only sessions last active after this aware ``datetime``.
            limit: At most this many sessions (at least 1).

        Raises:
            InvalidInputError: ``limit < 1``, an unknown or no state, an empty id, a naive datetime.
            InvalidTypeError: An argument has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed.

        Cancelled: returns at once; a read changes nothing.
        """
        query = check_query(user_id, workspace_id, state, surface_id, active_after, limit)
        return await self._router.find(query)

    async def touch(self, session_id: str) -> Session:
        """Mark activity: ``created`` and ``suspended`` become ``active``; ``active`` stays.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        result: Session = await self._router.call_by_id(check_id(session_id, "session_id"), Touch)
        return result

    async def attach_surface(self, session_id: str, surface_id: str) -> Session:
        """Attach a surface to a live session; attaching it again changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: An id is not valid.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        result: Session = await self._router.call_by_id(session_id, AttachSurface, surface_id)
        return result

    async def detach_surface(self, session_id: str, surface_id: str) -> Session:
        """Detach a surface from a live session; detaching an absent one changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: An id is not valid.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        result: Session = await self._router.call_by_id(session_id, DetachSurface, surface_id)
        return result

    async def expire(self, session_id: str) -> Session:
        """Expire a session. Expiry is terminal; expiring an expired session changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        result: Session = await self._router.call_by_id(check_id(session_id, "session_id"), Expire)
        return result

    async def update_metadata(self, session_id: str, metadata: Mapping[str, Any]) -> Session:
        """Shallow-merge ``metadata`` into a live session's metadata (new keys win).

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError: A value is not JSON-serializable (NaN, too deep).
            InvalidTypeError: ``metadata`` is not a mapping with ``str`` keys, or a value has
                a type JSON cannot carry.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        session_id = check_id(session_id, "session_id")
        frozen = freeze_metadata(metadata)
        result: Session = await self._router.call_by_id(session_id, UpdateMetadata, frozen)
        return result

    async def sweep_stale(self, ttl: float | timedelta | None = None) -> list[Session]:
        """Suspend created and active sessions whose last activity is older than ``ttl``;
        return them.

        Sessions left in ``created`` are swept too (the original package never swept them, so
        they leaked).

        Each user's sessions are suspended in one turn of that user's actor, which re-checks
        staleness, so a session touched after the sweep's cutoff is never suspended. A user
        whose turn fails is skipped; every other user is swept, then the first failure is
        raised.

        Args:
            ttl: Seconds or a ``timedelta``; the store's ``default_ttl`` when ``None``.

        Raises:
            InvalidInputError: ``ttl`` is not positive.
            InvalidTypeError: ``ttl`` has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed.
            ActorFailedError: The actor of some user is past its restart intensity.

        Cancelled: returns at once; users already swept stay swept, and a user whose
        turn had started is swept whole.
        """
        sweeper = self._runtime.sweeper
        duration = sweeper.default_ttl if ttl is None else check_duration(ttl, "ttl")
        return await self._router.read(sweeper.sweep_stale, duration)

    async def delete(self, session_id: str) -> Session:
        """Delete a session, whatever its state; return it as it was.

        Raises:
            SessionNotFoundError: No such session.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        result: Session = await self._router.call_by_id(check_id(session_id, "session_id"), Delete)
        return result

    def find_iter(
        self,
        *,
        user_id: str | None = None,
        workspace_id: str | None = None,
        state: SessionState | str | Iterable[SessionState | str] | None = None,
        surface_id: str | None = None,
        active_after: datetime | None = None,
        page_size: int = 100,
    ) -> SessionPages:
        """Iterate over *every* session matching the filters, most recently active first.

        Sessions are read in pages of ``page_size`` with a keyset cursor, so listing many
        sessions never loads them all at once. Each page is a consistent read; sessions that
        change between pages may be seen twice or not at all, as with any cursor over live data.
        Filters as in :meth:`find`; ``async for session in store.find_iter(...)``.

        Raises:
            InvalidInputError, InvalidTypeError: As :meth:`find` (at once, before iterating).
        """
        query = check_query(user_id, workspace_id, state, surface_id, active_after, page_size)
        return SessionPages(self._router.find, query)

    def subscribe(
        self,
        *,
        user_id: str | None = None,
        kinds: EventKind | str | Iterable[EventKind | str] | None = None,
        buffer_size: int = 1000,
    ) -> Subscription:
        """Subscribe to lifecycle events of this store.

        Events of one user arrive in the order its actor applied them. Publishing never waits
        for subscribers: when ``buffer_size`` events are waiting, the oldest is dropped; the next
        event read carries how many were dropped (``missed_before``), and
        ``subscription.missed`` counts them all. Use ``async with`` or ``close()`` to free the
        subscription; iteration ends when it is closed or the store closes.

        Args:
            user_id: Only this user's events.
            kinds: Only this :class:`EventKind` (or its value), or only these.
            buffer_size: Events kept for a slow reader (at least 1).

        Raises:
            InvalidInputError, InvalidTypeError: Bad arguments.
            StoreClosedError: The store is not open.
        """
        self._router.check_open()
        return self._runtime.events.subscribe(
            buffer_size=buffer_size,
            user_id=check_optional_id(user_id, "user_id"),
            kinds=kinds,
        )

    async def resolve(
        self,
        *,
        user_id: str,
        surface_id: str | None = None,
        workspace_id: str | None = None,
        resolver: SessionSelector | None = None,
        attach_surface: bool = True,
    ) -> Session:
        """Lookup-or-create, atomically: return the user's best live session, touched, or a
        new one.

        Among the user's created, active and suspended sessions in ``workspace_id`` (``None``
        matches only sessions without a workspace), the most recently active one attached to
        ``surface_id`` wins, else the most recently active one; it is touched and returned. If
        there is none, a session is created. ``surface_id`` is attached to the session returned
        as by :meth:`attach_surface`, unless ``attach_surface=False``. The whole step is one
        turn of the user's actor, so concurrent resolves of one user create at most one session.

        Args:
            user_id: The user.
            surface_id: The surface the message came from, or ``None``.
            workspace_id: The workspace, or ``None``.
            resolver: Chooses among the candidates instead of the default rule (see
                :class:`SessionSelector`); it runs inside the actor's turn, so it must not call
                the store.
            attach_surface: ``False``: ``surface_id`` only guides the choice.

        Raises:
            InvalidInputError: An id is not valid, the resolver returned a non-candidate, or the
                chosen session has ``max_surfaces`` surfaces, not ``surface_id`` (nothing changed).
            InvalidTypeError: An argument has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.

        Cancelled: a call still queued is never applied; one whose turn has started
        returns at once and is applied whole, or not at all, by the actor.
        """
        if resolver is not None and not callable(getattr(resolver, "select", None)):
            raise InvalidTypeError("resolver must have a select(candidates, *, surface_id) method")
        op = Resolve(
            check_id(user_id, "user_id"),
            # check_optional_id written out: this runs on every resolve.
            None if workspace_id is None else check_id(workspace_id, "workspace_id"),
            None if surface_id is None else check_id(surface_id, "surface_id"),
            resolver,
            # A plain identity test on the hot path; check_bool for the error.
            attach=attach_surface
            if attach_surface is True or attach_surface is False
            else check_bool(attach_surface, "attach_surface"),
        )
        result: Session = await self._router.call(op)
        return result

    def statistics(self) -> StoreStatistics:
        """A snapshot of the store's runtime counters (never blocks; costs O(live actors))."""
        return self._runtime.statistics(in_flight=self._router.in_flight)
