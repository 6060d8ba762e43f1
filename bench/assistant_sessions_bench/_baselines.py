"""The baselines the store is measured against, in the same process and on the same work.

Both run the library's own bookkeeping (the operations of :mod:`assistant_sessions._core`
applied through a :class:`~assistant_sessions._core.Transaction` to a cached
:class:`~assistant_sessions._core.UserState`, committed to an adapter) and build each operation
as the store's facade does, with the same input checks and metadata freezing (re-exported by
the core for this), so that a baseline does the work the store does. They differ from the
store only in how calls are kept apart:

* :class:`FloorStore`, the **floor**: no concurrency machinery at all. Plain synchronous
  methods over an in-memory adapter's ``*_nowait`` methods, called by one task. Nothing can be
  cheaper than this and still do the work.
* :class:`LockStore`: what a user would write by hand. The same semantics, with one
  :class:`anyio.Lock` per user held around each lookup-or-create, over any adapter.
* :class:`CheckpointFloor`: the floor's resolves behind one schedule point each
  (``anyio.lowlevel.checkpoint()``), driven by many tasks like the store. Every store call is a
  schedule point, so nothing that keeps that can be faster: it is the ceiling beside Google
  ADK's in-memory service, whose calls never yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self, final

import anyio
import anyio.lowlevel

from assistant_sessions import (
    AdapterError,
    Clock,
    InMemorySessionStoreAdapter,
    Session,
    SessionConflictError,
    SessionNotFoundError,
    SessionQuery,
)
from assistant_sessions._core import (
    AttachSurface,
    DetachSurface,
    Op,
    Resolve,
    Transaction,
    UpdateMetadata,
    UserState,
    check_id,
    check_optional_id,
    freeze_metadata,
    utc_now,
)
from assistant_sessions.adapters.base import Rejection, SessionStoreAdapter, SynchronousAdapter

__all__ = ["CheckpointFloor", "FloorStore", "LockStore"]

#: How often the lock store re-applies an operation after a version conflict.
_MAX_RETRIES: Final = 16

#: An operation on one surface of a session: ``AttachSurface`` or ``DetachSurface``.
_SurfaceOp = type[AttachSurface] | type[DetachSurface]


# -- the baselines ---------------------------------------------------------------------------


def _resolve_op(user_id: str, surface_id: str | None, workspace_id: str | None) -> Resolve:
    return Resolve(
        check_id(user_id, "user_id"),
        check_optional_id(workspace_id, "workspace_id"),
        check_optional_id(surface_id, "surface_id"),
        None,
    )


@final
class FloorStore:
    """The floor: the store's bookkeeping, called directly, with no concurrency machinery.

    Its methods are synchronous; only one task may use it.
    """

    def __init__(self, adapter: InMemorySessionStoreAdapter, clock: Clock = utc_now) -> None:
        self._adapter = adapter
        self._clock = clock
        self._states: dict[str, UserState] = {}

    def _apply(self, user_id: str, op: Op) -> Any:
        state = self._states.get(user_id)
        if state is None:
            state = self._states[user_id] = UserState(self._adapter.load_user_nowait(user_id))
        tx = Transaction(state, self._clock())
        try:
            result = op.apply(tx)
        except BaseException:
            tx.rollback()
            raise
        if tx.dirty:
            rejection = self._adapter.commit_nowait((tx.to_commit(),))[0]
            if rejection is not None:
                tx.rollback()
                del self._states[user_id]
                raise AdapterError(f"the floor's commit was rejected: {rejection.value}")
            state.version += 1
        return result

    def _owner(self, session_id: str) -> str:
        session = self._adapter.get_nowait(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return session.user_id

    def resolve(
        self, *, user_id: str, surface_id: str | None = None, workspace_id: str | None = None
    ) -> Session:
        """Lookup-or-create, as :meth:`SessionStore.resolve` (default affinity)."""
        op = _resolve_op(user_id, surface_id, workspace_id)
        result: Session = self._apply(op.user_id, op)
        return result

    def update_metadata(self, session_id: str, metadata: Mapping[str, Any]) -> Session:
        """As :meth:`SessionStore.update_metadata`."""
        session_id = check_id(session_id, "session_id")
        frozen = freeze_metadata(metadata)
        user_id = self._owner(session_id)
        result: Session = self._apply(user_id, UpdateMetadata(user_id, session_id, frozen))
        return result

    def _on_surface(self, make: _SurfaceOp, session_id: str, surface_id: str) -> Session:
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        user_id = self._owner(session_id)
        result: Session = self._apply(user_id, make(user_id, session_id, surface_id))
        return result

    def attach_surface(self, session_id: str, surface_id: str) -> Session:
        """As :meth:`SessionStore.attach_surface`."""
        return self._on_surface(AttachSurface, session_id, surface_id)

    def detach_surface(self, session_id: str, surface_id: str) -> Session:
        """As :meth:`SessionStore.detach_surface`."""
        return self._on_surface(DetachSurface, session_id, surface_id)

    def find(self, *, user_id: str | None = None) -> list[Session]:
        """As :meth:`SessionStore.find` with only ``user_id``."""
        return self._adapter.find_nowait(
            SessionQuery(user_id=check_optional_id(user_id, "user_id"))
        )


class _User:
    __slots__ = ("lock", "state")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.state: UserState | None = None


@final
class CheckpointFloor:
    """The floor's resolves, each behind one schedule point, for many tasks (resolves only)."""

    def __init__(self, adapter: InMemorySessionStoreAdapter) -> None:
        self._floor = FloorStore(adapter)

    async def resolve(self, *, user_id: str, surface_id: str | None = None) -> Session:
        """:meth:`FloorStore.resolve` after one ``anyio.lowlevel.checkpoint()``."""
        await anyio.lowlevel.checkpoint()
        return self._floor.resolve(user_id=user_id, surface_id=surface_id)

    async def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the checkpointed floor runs the resolve workloads only")

    find = update_metadata = attach_surface = detach_surface = _unsupported


@final
class LockStore:
    """The store a user would write by hand: the same semantics, one ``anyio.Lock`` per user.

    Use it as ``async with LockStore(adapter) as store:`` (it opens and closes the adapter).
    It uses the adapter's synchronous methods when it has them, as the store does.
    """

    def __init__(self, adapter: SessionStoreAdapter, clock: Clock = utc_now) -> None:
        self._adapter = adapter
        self._sync: SynchronousAdapter | None = (
            adapter if isinstance(adapter, SynchronousAdapter) else None
        )
        self._clock = clock
        self._users: dict[str, _User] = {}

    async def __aenter__(self) -> Self:
        await self._adapter.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Not under a cancel scope of ours: an adapter may hold a task group entered in open()
        # (the Redis driver does), which must be left in the scope it was entered in.
        await self._adapter.aclose()

    async def _apply(self, user_id: str, op: Op) -> Any:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User()
        async with user.lock:
            for _ in range(_MAX_RETRIES):
                state = user.state
                if state is None:
                    snapshot = (
                        self._sync.load_user_nowait(user_id)
                        if self._sync is not None
                        else await self._adapter.load_user(user_id)
                    )
                    state = user.state = UserState(snapshot)
                tx = Transaction(state, self._clock())
                try:
                    result = op.apply(tx)
                except BaseException:
                    tx.rollback()
                    raise
                if not tx.dirty:
                    return result
                commit = (tx.to_commit(),)
                if self._sync is not None:
                    rejection = self._sync.commit_nowait(commit)[0]
                else:
                    with anyio.CancelScope(shield=True):
                        rejection = (await self._adapter.commit(commit))[0]
                if rejection is None:
                    state.version += 1
                    return result
                tx.rollback()
                user.state = None
                if rejection is Rejection.DUPLICATE_ID:
                    raise SessionConflictError(commit[0].upserts[0].id)
            raise AdapterError(f"too many concurrent writers for user {user_id!r}")

    async def _owner(self, session_id: str) -> str:
        session = (
            self._sync.get_nowait(session_id)
            if self._sync is not None
            else await self._adapter.get(session_id)
        )
        if session is None:
            raise SessionNotFoundError(session_id)
        return session.user_id

    async def resolve(
        self, *, user_id: str, surface_id: str | None = None, workspace_id: str | None = None
    ) -> Session:
        """Lookup-or-create, as :meth:`SessionStore.resolve` (default affinity)."""
        op = _resolve_op(user_id, surface_id, workspace_id)
        result: Session = await self._apply(op.user_id, op)
        return result

    async def update_metadata(self, session_id: str, metadata: Mapping[str, Any]) -> Session:
        """As :meth:`SessionStore.update_metadata`."""
        session_id = check_id(session_id, "session_id")
        frozen = freeze_metadata(metadata)
        user_id = await self._owner(session_id)
        result: Session = await self._apply(user_id, UpdateMetadata(user_id, session_id, frozen))
        return result

    async def _on_surface(self, make: _SurfaceOp, session_id: str, surface_id: str) -> Session:
        session_id = check_id(session_id, "session_id")
        surface_id = check_id(surface_id, "surface_id")
        user_id = await self._owner(session_id)
        result: Session = await self._apply(user_id, make(user_id, session_id, surface_id))
        return result

    async def attach_surface(self, session_id: str, surface_id: str) -> Session:
        """As :meth:`SessionStore.attach_surface`."""
        return await self._on_surface(AttachSurface, session_id, surface_id)

    async def detach_surface(self, session_id: str, surface_id: str) -> Session:
        """As :meth:`SessionStore.detach_surface`."""
        return await self._on_surface(DetachSurface, session_id, surface_id)

    async def find(self, *, user_id: str | None = None) -> list[Session]:
        """As :meth:`SessionStore.find` with only ``user_id``."""
        query = SessionQuery(user_id=check_optional_id(user_id, "user_id"))
        return await self._adapter.find(query)
