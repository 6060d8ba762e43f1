"""The router: one route per call from the facade to the runtime, and the store's lifetime.

A call on a user's sessions goes to that user's actor (:meth:`Router.call`; by session id, the
owner is read first: :meth:`Router.call_by_id`); a read goes to the storage port
(:meth:`Router.read`). Each is in flight while it runs, so that leaving the store waits for it
(up to :data:`DRAIN_TIMEOUT`); each is a checkpoint first. The router also enters and leaves the
store's task group, which owns every task of the runtime.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from threading import get_ident
from time import perf_counter
from typing import Any, Final, TypeVar, final

import anyio
import anyio.abc
import anyio.lowlevel

from ._core import Op
from ._runtime import Runtime
from .adapters.base import SessionStoreAdapter
from .errors import SessionNotFoundError, StoreClosedError, WrongThreadError
from .model import Session, SessionQuery

__all__ = ["DRAIN_TIMEOUT", "Router"]

_T = TypeVar("_T")

_NEW: Final = "new"
_OPENING: Final = "opening"
_OPEN: Final = "open"
_CLOSED: Final = "closed"

#: How long leaving the ``async with`` waits for in-flight calls before cancelling them.
DRAIN_TIMEOUT: Final = 30.0


@final
class Router:
    """Routes one store's calls and owns its lifetime (see the module documentation)."""

    def __init__(self, adapter: SessionStoreAdapter, runtime: Runtime) -> None:
        self._adapter = adapter
        self._runtime = runtime
        self._storage = runtime.storage
        self._inline = runtime.storage.inline
        self._registry = runtime.registry
        self._recorder = runtime.recorder
        self._histograms = runtime.recorder.histograms
        self._status = _NEW
        #: Calls in flight (callers inside the store).
        self.in_flight = 0
        self._drained: anyio.Event | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._exit_stack: AsyncExitStack | None = None
        #: The thread of the event loop the store was entered in.
        self._thread: int | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the adapter and start the runtime in a new task group.

        Raises:
            StoreClosedError: The store was entered before (or is being entered now).
        """
        if self._status != _NEW:
            raise StoreClosedError("a store can be entered only once; create a new one")
        # Before the first await, so that a second entry from another task fails here too.
        self._status = _OPENING
        self._thread = get_ident()
        try:
            async with AsyncExitStack() as stack:
                await self._adapter.open()
                stack.push_async_callback(self._adapter.aclose)
                stack.callback(self._runtime.close)
                task_group = await stack.enter_async_context(anyio.create_task_group())
                await self._runtime.start(task_group)
                self._task_group = task_group
                self._exit_stack = stack.pop_all()
        except BaseException:
            self._status = _CLOSED
            raise
        self._status = _OPEN

    async def close(self) -> None:
        """Refuse new calls, wait for those in flight, then stop every task and the adapter."""
        self._status = _CLOSED
        assert self._task_group is not None
        assert self._exit_stack is not None
        with anyio.CancelScope(shield=True):
            # In-flight calls finish (drain); new ones already raise StoreClosedError.
            if self.in_flight:
                self._drained = anyio.Event()
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await self._drained.wait()
        # What is still queued will not run: tell its callers now, not after the commits in
        # flight (which complete, so that their callers learn the true outcome).
        self._registry.fail_queued()
        self._task_group.cancel_scope.cancel()
        # Leaves the task group, then ends the runtime and closes the adapter (not under a
        # cancel scope of ours: an adapter may hold a task group entered in open(), which
        # must be left in the scope it was entered in; adapters shield their own closing).
        try:
            await self._exit_stack.aclose()
        except BaseExceptionGroup as group:
            # One plain exception for users where the task group hands over a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    def check_open(self) -> None:
        """Raise :class:`StoreClosedError` unless the store is open, and
        :class:`WrongThreadError` in a thread other than its event loop's."""
        if self._thread is not None and get_ident() != self._thread:
            raise WrongThreadError(
                "the store was called from another thread than its event loop's: use "
                "anyio.from_thread.run(...) to call it from there"
            )
        if self._status != _OPEN:
            raise StoreClosedError(
                "the store is closed"
                if self._status == _CLOSED
                else "the store is not open yet: use `async with create_session_store() as store`"
            )

    # -- routes --------------------------------------------------------------------------------

    async def call(self, op: Op, *, entered: bool = False) -> Any:
        """Run ``op`` as a turn of its user's actor (``entered``: the caller has passed a
        checkpoint of this call already)."""
        if not entered:
            if self._inline:
                await anyio.lowlevel.checkpoint()
            else:
                # The wait for the reply (or for room in the mailbox) is the call's schedule
                # point; a call whose scope is cancelled already must not be queued at all.
                await anyio.lowlevel.checkpoint_if_cancelled()
        if self._status != _OPEN or get_ident() != self._thread:
            self.check_open()
        # The hot path: the histogram looked up, and _leave, written out (no method calls).
        histogram = self._histograms.get(op.kind) or self._recorder.histogram(op.kind)
        self.in_flight += 1
        start = perf_counter()
        try:
            actor = self._registry.get(op.user_id)
            if self._inline and not actor.busy:
                # UserActor.call's own first test, made here: no coroutine for a sync turn.
                return actor.call_now(op)
            return await actor.call(op)
        except BaseException:
            histogram.errors += 1
            raise
        finally:
            histogram.add(perf_counter() - start)
            self.in_flight -= 1
            if self._drained is not None and not self.in_flight:
                self._drained.set()

    async def call_by_id(self, session_id: str, make: Callable[..., Op], *args: Any) -> Any:
        """Run ``make(owner, session_id, *args)`` as a turn of the session owner's actor.

        Raises:
            SessionNotFoundError: No session has this id.
        """
        session = await self.get(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        return await self.call(make(session.user_id, session_id, *args), entered=True)

    async def get(self, session_id: str) -> Session | None:
        """The committed session with this id, or ``None`` (the hot read, written out)."""
        await anyio.lowlevel.checkpoint()
        if self._status != _OPEN or get_ident() != self._thread:
            self.check_open()
        self.in_flight += 1
        try:
            return await self._storage.get(session_id)
        finally:
            self._leave()

    async def find(self, query: SessionQuery) -> list[Session]:
        """Committed sessions matching ``query`` (the other hot read, written out)."""
        await anyio.lowlevel.checkpoint()
        if self._status != _OPEN or get_ident() != self._thread:
            self.check_open()
        self.in_flight += 1
        try:
            return await self._storage.find(query)
        finally:
            self._leave()

    async def read(self, read: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Await ``read(*args)`` (a sweep, or any other read of the storage port) in flight."""
        await anyio.lowlevel.checkpoint()
        if self._status != _OPEN or get_ident() != self._thread:
            self.check_open()
        self.in_flight += 1
        try:
            return await read(*args)
        finally:
            self._leave()

    def _leave(self) -> None:
        """A call in flight has returned; the last one wakes a closing store."""
        self.in_flight -= 1
        if self._drained is not None and not self.in_flight:
            self._drained.set()
