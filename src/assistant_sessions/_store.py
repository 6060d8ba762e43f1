"""SessionStore, the object users hold, and create_session_store().

The facade validates input, then routes each call to the owning user's actor (by ``user_id``,
or by session id through the adapter's id index); it never changes a session itself. Reads
(``get``, ``find``) go straight to the adapter, which holds committed data only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from datetime import datetime, timedelta
from time import perf_counter
from types import TracebackType
from typing import Any, Final, Self, TypeVar, final

import anyio
import anyio.lowlevel
import attrs

from ._clock import Clock, check_clock
from ._core import (
    AttachSurface,
    Create,
    Delete,
    DetachSurface,
    Expire,
    Op,
    Policy,
    Resolve,
    SessionSelector,
    Touch,
    UpdateMetadata,
    new_session_id,
)
from ._runtime.events import EventKind, Subscription
from ._runtime.supervisor import Supervisor
from ._validate import (
    check_aware,
    check_duration,
    check_id,
    check_limit,
    check_optional_duration,
    check_optional_id,
    check_state,
    freeze_metadata,
)
from .adapters.base import SessionStoreAdapter
from .adapters.memory import InMemorySessionStoreAdapter
from .errors import InvalidInputError, InvalidTypeError, SessionNotFoundError, StoreClosedError
from .model import EMPTY_METADATA, Session, SessionQuery, SessionState, StoreStatistics

__all__ = ["SessionPages", "SessionStore", "create_session_store"]

_T = TypeVar("_T")

_NEW: Final = "new"
_OPEN: Final = "open"
_CLOSED: Final = "closed"

#: How long leaving the ``async with`` waits for in-flight calls before cancelling them.
DRAIN_TIMEOUT: Final = 30.0


@final
class SessionStore:
    """The session store. Create it with :func:`create_session_store` and use it inside
    ``async with``; every method is a coroutine and a checkpoint (a cancellation point).

    Cancelling a call either changes nothing (the call was still queued) or lets its effect
    complete (it was being applied); it never leaves half an effect.
    """

    def __init__(
        self,
        adapter: SessionStoreAdapter,
        supervisor: Supervisor,
    ) -> None:
        self._adapter = adapter
        self._supervisor = supervisor
        self._sync = supervisor.sync_adapter
        self._recorder = supervisor.recorder
        self._status = _NEW
        self._in_flight = 0
        self._drained: anyio.Event | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._status != _NEW:
            raise StoreClosedError("a store can be entered only once; create a new one")
        await self._adapter.open()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._supervisor.run, task_group)
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            await self._adapter.aclose()
            raise
        self._task_group = task_group
        self._status = _OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._status = _CLOSED
        task_group = self._task_group
        assert task_group is not None
        with anyio.CancelScope(shield=True):
            # In-flight calls finish (drain); new ones already raise StoreClosedError.
            if self._in_flight:
                self._drained = anyio.Event()
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await self._drained.wait()
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            # One plain exception for users where the task group hands over a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._supervisor.close_all()
            # Not under a cancel scope of ours: an adapter may hold a task group entered in
            # open() (the Redis driver does), which must be left in the scope it was entered
            # in. Adapters shield their own closing where it must not be interrupted.
            await self._adapter.aclose()
        return None

    def _leave(self) -> None:
        """A call in flight has returned; the last one wakes a closing store."""
        self._in_flight -= 1
        if self._drained is not None and not self._in_flight:
            self._drained.set()

    async def _enter_call(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self._status != _OPEN:
            raise StoreClosedError(
                "the store is closed"
                if self._status == _CLOSED
                else "the store is not open yet: use `async with create_session_store() as store`"
            )

    async def _call(self, op: Op) -> Any:
        # The hot path: _enter_call and _run written out, to save two coroutine frames.
        await anyio.lowlevel.checkpoint()
        if self._status != _OPEN:
            await self._enter_call()
        histogram = self._recorder.histogram(op.kind)
        supervisor = self._supervisor
        actor = supervisor.actors.get(op.user_id) or supervisor.actor(op.user_id)
        self._in_flight += 1
        start = perf_counter()
        try:
            return await actor.call(op)
        except BaseException:
            histogram.errors += 1
            raise
        finally:
            histogram.add(perf_counter() - start)
            self._leave()

    async def _call_by_id(self, session_id: str, make: Any, *args: Any) -> Any:
        await self._enter_call()
        # In flight from here, through the id lookup (which may await): leaving the store waits
        # for the call, instead of letting it reach an actor after the task group is gone.
        self._in_flight += 1
        try:
            session = (
                self._sync.get_nowait(session_id)
                if self._sync is not None
                else await self._adapter.get(session_id)
            )
            if session is None:
                raise SessionNotFoundError(session_id)
            op = make(session.user_id, session_id, *args)
            return await self._run(session.user_id, op, make.kind)
        finally:
            self._leave()

    async def _read(self, read: Awaitable[_T]) -> _T:
        """Await an adapter read, in flight so that leaving the store waits for it (the
        adapter is closed right after)."""
        self._in_flight += 1
        try:
            return await read
        finally:
            self._leave()

    async def _run(self, user_id: str, op: Op, kind: str) -> Any:
        histogram = self._recorder.histogram(kind)
        start = perf_counter()
        try:
            return await self._supervisor.call(user_id, op)
        except BaseException:
            histogram.errors += 1
            raise
        finally:
            histogram.add(perf_counter() - start)

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
        result: Session = await self._call(op)
        return result

    async def get(self, session_id: str) -> Session | None:
        """Return the session with this id, or ``None`` if there is none.

        Raises:
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed.
        """
        session_id = check_id(session_id, "session_id")
        await self._enter_call()
        if self._sync is not None:
            return self._sync.get_nowait(session_id)
        return await self._read(self._adapter.get(session_id))

    async def find(
        self,
        *,
        user_id: str | None = None,
        workspace_id: str | None = None,
        state: SessionState | str | None = None,
        surface_id: str | None = None,
        active_after: datetime | None = None,
        limit: int = 50,
    ) -> list[Session]:
        """Return sessions matching every given filter, most recently active first.

        Args:
            user_id: Only this user's sessions.
            workspace_id: Only sessions of this workspace.
            state: Only sessions in this state (a :class:`SessionState` or its value).
            surface_id: Only sessions with this surface attached.
            active_after: Only sessions last active after this aware ``datetime``.
            limit: At most this many sessions (at least 1).

        Raises:
            InvalidInputError: ``limit < 1``, an unknown state, an empty id, a naive datetime.
            InvalidTypeError: An argument has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed.
        """
        query = _query(user_id, workspace_id, state, surface_id, active_after, limit)
        await self._enter_call()
        return await self._read(self._adapter.find(query))

    async def touch(self, session_id: str) -> Session:
        """Mark activity: ``created`` and ``suspended`` become ``active``; ``active`` stays.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        result: Session = await self._call_by_id(check_id(session_id, "session_id"), Touch)
        return result

    async def attach_surface(self, session_id: str, surface_id: str) -> Session:
        """Attach a surface to a live session; attaching it again changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: An id is not valid.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        result: Session = await self._call_by_id(session_id, AttachSurface, surface_id)
        return result

    async def detach_surface(self, session_id: str, surface_id: str) -> Session:
        """Detach a surface from a live session; detaching an absent one changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            SessionStateError: The session is expired.
            InvalidInputError, InvalidTypeError: An id is not valid.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        result: Session = await self._call_by_id(session_id, DetachSurface, surface_id)
        return result

    async def expire(self, session_id: str) -> Session:
        """Expire a session. Expiry is terminal; expiring an expired session changes nothing.

        Raises:
            SessionNotFoundError: No such session.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        result: Session = await self._call_by_id(check_id(session_id, "session_id"), Expire)
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
        """
        session_id = check_id(session_id, "session_id")
        frozen = freeze_metadata(metadata)
        result: Session = await self._call_by_id(session_id, UpdateMetadata, frozen)
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
        """
        duration = self._supervisor.default_ttl if ttl is None else check_duration(ttl, "ttl")
        await self._enter_call()
        self._in_flight += 1
        try:
            return await self._supervisor.sweep_stale(duration)
        finally:
            self._leave()

    async def delete(self, session_id: str) -> Session:
        """Delete a session, whatever its state; return it as it was.

        Raises:
            SessionNotFoundError: No such session.
            InvalidInputError, InvalidTypeError: ``session_id`` is not a valid id.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        result: Session = await self._call_by_id(check_id(session_id, "session_id"), Delete)
        return result

    def find_iter(
        self,
        *,
        user_id: str | None = None,
        workspace_id: str | None = None,
        state: SessionState | str | None = None,
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
        query = _query(user_id, workspace_id, state, surface_id, active_after, page_size)
        return SessionPages(self, query)

    async def _find_page(self, query: SessionQuery) -> list[Session]:
        await self._enter_call()
        return await self._read(self._adapter.find(query))

    def subscribe(
        self,
        *,
        user_id: str | None = None,
        kinds: Iterable[EventKind | str] | None = None,
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
            kinds: Only these :class:`EventKind` (or their values).
            buffer_size: Events kept for a slow reader (at least 1).

        Raises:
            InvalidInputError, InvalidTypeError: Bad arguments.
            StoreClosedError: The store is not open.
        """
        if self._status != _OPEN:
            raise StoreClosedError("the store is not open")
        return self._supervisor.events.subscribe(
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
    ) -> Session:
        """Lookup-or-create, atomically: return the user's best live session, touched, or a
        new one.

        Among the user's created, active and suspended sessions in ``workspace_id`` (``None``
        matches only sessions without a workspace), the most recently active one attached to
        ``surface_id`` wins, else the most recently active one; it is touched and returned. If
        there is none, a session is created with ``surface_id`` attached. The whole step is one
        turn of the user's actor, so concurrent resolves of one user create at most one session.

        Args:
            user_id: The user.
            surface_id: The surface the message came from, or ``None``.
            workspace_id: The workspace, or ``None``.
            resolver: Chooses among the candidates instead of the default rule (see
                :class:`SessionSelector`); it runs inside the actor's turn, so it must not call
                the store.

        Raises:
            InvalidInputError: An id is not valid, or the resolver returned a session that was
                not one of its candidates.
            InvalidTypeError: An argument has the wrong type.
            StoreClosedError: The store is not open.
            AdapterError: The storage failed; nothing changed.
        """
        if resolver is not None and not callable(getattr(resolver, "select", None)):
            raise InvalidTypeError("resolver must have a select(candidates, *, surface_id) method")
        op = Resolve(
            check_id(user_id, "user_id"),
            check_optional_id(workspace_id, "workspace_id"),
            check_optional_id(surface_id, "surface_id"),
            resolver,
        )
        result: Session = await self._call(op)
        return result

    def statistics(self) -> StoreStatistics:
        """A snapshot of the store's runtime counters (never blocks; costs O(live actors))."""
        supervisor = self._supervisor
        recorder = self._recorder
        depths = [a.queued for a in supervisor.actors.values()]
        return StoreStatistics(
            live_actors=len(depths),
            busy_actors=sum(1 for a in supervisor.actors.values() if a.busy),
            mailbox_depth_max=max(depths, default=0),
            mailbox_depth_total=sum(depths),
            in_flight=self._in_flight,
            operations=recorder.operations(),
            sweeps=supervisor.sweeps,
            sessions_suspended=recorder.sessions_suspended,
            sessions_expired=recorder.sessions_expired,
            sessions_purged=recorder.sessions_purged,
            restarts=supervisor.restarts,
            adapter_errors=recorder.adapter_errors,
            subscribers=len(supervisor.events),
        )


def create_session_store(
    adapter: SessionStoreAdapter | None = None,
    *,
    default_ttl: float | timedelta = 3600,
    sweep_interval: float | timedelta | None = None,
    expire_after: float | timedelta | None = None,
    clock: Clock | None = None,
    purge_after: float | timedelta | None = None,
    exclusive_surfaces: bool = True,
    max_surfaces: int = 64,
    max_metadata_bytes: int = 64 * 1024,
    idle_after: float | timedelta = 30.0,
    mailbox_size: int = 64,
    max_batch: int = 256,
    max_restarts: int = 3,
    restart_window: float | timedelta = 5.0,
) -> SessionStore:
    """Create a session store; use it as ``async with create_session_store() as store:``.

    Entering starts the store's task group (its supervisor and actors); leaving it waits for
    calls in flight, then stops every task. Nothing outlives the ``async with``.

    Args:
        adapter: Where sessions are kept; a new :class:`InMemorySessionStoreAdapter` if ``None``.
        default_ttl: Seconds (or a ``timedelta``) of inactivity after which ``sweep_stale``
            suspends an active session.
        sweep_interval: Run a sweep this often (seconds or ``timedelta``); ``None``: never.
        expire_after: With periodic sweeps, expire sessions suspended longer than this;
            ``None``: never.
        purge_after: With periodic sweeps, delete sessions expired longer than this;
            ``None``: keep them.
        exclusive_surfaces: A surface is attached to at most one live session of a user:
            attaching it to one session detaches it from the user's other sessions, atomically.
        max_surfaces: Most surfaces one session may have attached; attaching more is invalid
            input.
        max_metadata_bytes: Largest metadata of one session (compact UTF-8 JSON); a larger
            merge is invalid input.
        clock: Zero-argument callable returning the current aware UTC ``datetime``.
        idle_after: Retire a user's actor (drop its cached sessions) after about this long
            without calls; it is re-activated on the next call.
        mailbox_size: Requests that may queue for one user before callers wait (backpressure).
        max_batch: Most queued requests applied and committed together.
        max_restarts: Restarts of one actor allowed within ``restart_window``; past that its
            calls raise :class:`ActorFailedError` until the window has passed.
        restart_window: Seconds (or ``timedelta``) of the restart-intensity window.

    Raises:
        InvalidInputError: A duration is not positive, or a size is below 1.
        InvalidTypeError: An argument has the wrong type.
    """
    if adapter is None:
        adapter = InMemorySessionStoreAdapter()
    elif not isinstance(adapter, SessionStoreAdapter):
        raise InvalidTypeError(
            f"adapter must implement SessionStoreAdapter, not {type(adapter).__name__}"
        )
    if not isinstance(exclusive_surfaces, bool):
        raise InvalidTypeError("exclusive_surfaces must be a bool")
    for name, value in (
        ("mailbox_size", mailbox_size),
        ("max_batch", max_batch),
        ("max_restarts", max_restarts),
        ("max_surfaces", max_surfaces),
        ("max_metadata_bytes", max_metadata_bytes),
    ):
        if type(value) is not int:
            raise InvalidTypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < (0 if name == "max_restarts" else 1):
            raise InvalidInputError(f"{name} is too small: {value}")
    supervisor = Supervisor(
        adapter,
        clock=check_clock(clock),
        default_ttl=check_duration(default_ttl, "default_ttl"),
        sweep_interval=check_optional_duration(sweep_interval, "sweep_interval"),
        expire_after=check_optional_duration(expire_after, "expire_after"),
        purge_after=check_optional_duration(purge_after, "purge_after"),
        policy=Policy(exclusive_surfaces, max_surfaces, max_metadata_bytes),
        idle_after=check_duration(idle_after, "idle_after"),
        mailbox_size=mailbox_size,
        max_batch=max_batch,
        max_restarts=max_restarts,
        restart_window=check_duration(restart_window, "restart_window").total_seconds(),
    )
    return SessionStore(adapter, supervisor)


def _query(
    user_id: object,
    workspace_id: object,
    state: object,
    surface_id: object,
    active_after: object,
    limit: object,
) -> SessionQuery:
    return SessionQuery(
        user_id=check_optional_id(user_id, "user_id"),
        workspace_id=check_optional_id(workspace_id, "workspace_id"),
        state=None if state is None else check_state(state),
        surface_id=check_optional_id(surface_id, "surface_id"),
        active_after=None if active_after is None else check_aware(active_after, "active_after"),
        limit=check_limit(limit),
    )


@final
class SessionPages:
    """Async iterator over every session matching a query, fetched page by page."""

    def __init__(self, store: SessionStore, query: SessionQuery) -> None:
        self._store = store
        self._query = query
        self._page: list[Session] = []
        self._done = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Session:
        if not self._page:
            if self._done:
                raise StopAsyncIteration
            page = await self._store._find_page(self._query)
            if len(page) < self._query.limit:
                self._done = True
            if not page:
                raise StopAsyncIteration
            last = page[-1]
            self._query = attrs.evolve(self._query, after=(last.last_activity_at, last.id))
            page.reverse()
            self._page = page
        return self._page.pop()
