"""The storage port: the one boundary between the runtime and an adapter.

It is the only place that knows whether an adapter is synchronous (and whether it groups
commits: :attr:`Storage.grouped`), and so how a turn's storage work runs:

* **Inline** (an adapter that is also a
  :class:`~assistant_sessions.adapters.SynchronousAdapter`, like the in-memory one): a turn runs
  to its end in the caller's task, without an await (:meth:`Storage.run_now`). Reads are plain
  calls. Nothing can stall, so there is nothing for a deadline to wait for.
* **Detached** (every other adapter): turns run only in the store's executor
  (:mod:`~assistant_sessions._runtime.pump`), whose commits go through
  :meth:`Storage.commit_many`, never in a caller's task; each read runs in a task of the store
  (:meth:`Storage.read`) while its caller waits for the answer. A caller whose scope is
  cancelled or times out therefore gets control back at once, whatever the storage does; the
  work it started completes (or fails) on the store's time, and the actor applies its outcome,
  so the actor's view never diverges from storage.

A turn is a generator (see :meth:`~assistant_sessions._runtime.actor.UserActor.turn`) that
yields a :class:`StorageCall` each time it needs storage (a user's snapshot, or a commit); the
port answers it in place, and the turn reads the answer when it resumes: one engine, driven
here (inline) or by the pump (detached). (Answering in place rather than with
``send``/``throw`` lets a plain ``for`` loop or ``next`` drive the turn, which is markedly
cheaper on the hot path.)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from contextlib import suppress
from datetime import datetime
from typing import Any, Final, TypeAlias, TypeVar, cast, final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ..adapters.base import (
    GroupCommitAdapter,
    GroupLoadAdapter,
    Rejection,
    SessionStoreAdapter,
    SynchronousAdapter,
    UserCommit,
    UserSnapshot,
    batch_failure,
)
from ..errors import AdapterError
from ..model import Session, SessionQuery, SessionState

__all__ = ["COMMIT", "LOAD", "Storage", "StorageCall", "Turn"]

_T = TypeVar("_T")

#: A turn asks for a user's snapshot (the argument is the user id).
LOAD: Final = 0
#: A turn asks for one user commit (the argument is a ``UserCommit``); the answer is the
#: rejection, or ``None``.
COMMIT: Final = 1


@final
@attrs.define(eq=False)
class StorageCall:
    """One request of a turn to storage (``kind`` of ``argument``), answered in place by the
    storage port (``result``, or the adapter's ``error``)."""

    kind: int = LOAD
    argument: Any = None
    result: Any = None
    error: Exception | None = None

    def answer(self) -> Any:
        """The port's answer, or raise the adapter's exception."""
        if self.error is not None:
            raise self.error
        return self.result


#: A turn: yields storage calls and ends when every request of its batch has an outcome.
Turn: TypeAlias = Generator[StorageCall, None, None]


@final
class Storage:
    """The runtime's view of one adapter (see the module documentation)."""

    __slots__ = ("_sync", "_task_group", "adapter", "group_loads", "grouped", "inline")

    def __init__(self, adapter: SessionStoreAdapter) -> None:
        self.adapter = adapter
        self._sync: SynchronousAdapter | None = (
            adapter if isinstance(adapter, SynchronousAdapter) else None
        )
        #: Whether turns run to their end in the caller's task, without awaiting.
        self.inline = self._sync is not None
        #: Whether the adapter takes many users' commits in one call (:class:`GroupCommitAdapter`).
        self.grouped = isinstance(adapter, GroupCommitAdapter) and adapter.group_commit is True
        #: Whether it also takes many users' loads in one call (:class:`GroupLoadAdapter`).
        self.group_loads = self.grouped and isinstance(adapter, GroupLoadAdapter)
        self._task_group: anyio.abc.TaskGroup | None = None

    def bind(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run detached reads in ``task_group`` (the store's)."""
        self._task_group = task_group

    # -- turns ---------------------------------------------------------------------------------

    def commit_now(self, commit: UserCommit) -> Rejection | None:
        """Apply one user commit without awaiting (inline storage only).

        Raises:
            Exception: Whatever the adapter raised (its commit's outcome is then unknown).
        """
        sync = self._sync
        assert sync is not None
        return sync.commit_nowait((commit,))[0]

    def load_now(self, user_id: str) -> UserSnapshot:
        """Read one user's snapshot without awaiting (inline storage only).

        Raises:
            Exception: Whatever the adapter raised.
        """
        sync = self._sync
        assert sync is not None
        return sync.load_user_nowait(user_id)

    def run_now(self, turn: Turn) -> None:
        """Drive ``turn`` to its end without awaiting (inline storage only)."""
        sync = self._sync
        assert sync is not None
        for call in turn:
            try:
                if call.kind is COMMIT:
                    call.result = sync.commit_nowait((call.argument,))[0]
                else:
                    call.result = sync.load_user_nowait(call.argument)
            except Exception as exc:
                call.error = exc

    async def commit_many(self, calls: list[StorageCall]) -> None:
        """Hand the commits ``calls`` ask for to the adapter in one call; answer each in place.

        A storage failure (:class:`~assistant_sessions.AdapterError`) is every call's: each gets
        a copy of it. Any other exception is an adapter's defect, raised before it applied
        anything (the adapter contract); with several commits, each is then sent again alone,
        so that only the user whose commit raised gets it.
        """
        try:
            results = await self.adapter.commit([call.argument for call in calls])
        except AdapterError as exc:
            _fail(calls, exc)
            return
        except Exception as exc:
            if len(calls) == 1:
                calls[0].error = exc
                return
            for call in calls:
                await self.commit_many([call])
            return
        if len(results) != len(calls):
            name = type(self.adapter).__name__
            _fail(calls, AdapterError(_miscounted(name, "commit", results, calls)))
            return
        for call, result in zip(calls, results, strict=True):
            call.result = result

    async def load_many(self, calls: list[StorageCall]) -> None:
        """Read the snapshots ``calls`` ask for; answer each in place.

        With several calls and an adapter that groups loads, in one ``load_users`` call, whose
        failures reach the calls as :meth:`commit_many`'s do; else one ``load_user`` each.
        """
        adapter = self.adapter
        if len(calls) > 1 and self.group_loads:
            loader = cast(GroupLoadAdapter, adapter)  # checked once, by group_loads
            try:
                results = await loader.load_users([call.argument for call in calls])
            except AdapterError as exc:
                _fail(calls, exc)
                return
            except Exception:
                pass  # a defect: each user is loaded again alone, below
            else:
                if len(results) == len(calls):
                    for call, result in zip(calls, results, strict=True):
                        if isinstance(result, AdapterError):
                            call.error = result
                        else:
                            call.result = result
                    return
                name = type(adapter).__name__
                _fail(calls, AdapterError(_miscounted(name, "load_users", results, calls)))
                return
        for call in calls:
            try:
                call.result = await adapter.load_user(call.argument)
            except Exception as exc:
                call.error = exc

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        """The committed session with this id, or ``None`` (see :meth:`read`)."""
        if self._sync is not None:
            return self._sync.get_nowait(session_id)
        return await self.read(self.adapter.get, session_id)

    async def find(self, query: SessionQuery) -> list[Session]:
        """Committed sessions matching ``query`` (see :meth:`read`)."""
        if self.inline:
            return await self.adapter.find(query)
        return await self.read(self.adapter.find, query)

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Sweep candidates, after the keyset ``after`` if given (see :meth:`read`)."""
        return await self.read(
            functools.partial(self.adapter.due, after=after), state, before, limit
        )

    async def read(self, read: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Await ``read(*args)`` so that the caller can leave at any time.

        With detached storage the read runs in a task of the store and the caller waits for its
        answer: cancelled, the caller returns at once and the answer is dropped when it comes.
        """
        task_group = self._task_group
        if self.inline or task_group is None:
            return await read(*args)
        send, receive = anyio.create_memory_object_stream[tuple[bool, Any]](1)
        task_group.start_soon(_answer, send, read, args)
        with receive:
            ok, value = await receive.receive()
        if ok:
            result: _T = value
            return result
        raise value


def _miscounted(adapter: str, method: str, results: list[Any], calls: list[StorageCall]) -> str:
    return f"{adapter}.{method} returned {len(results)} outcomes for {len(calls)} calls"


def _fail(calls: list[StorageCall], exc: AdapterError) -> None:
    """Every one of ``calls`` failed with ``exc``: each gets an exception of its own."""
    if len(calls) == 1:
        calls[0].error = exc
    else:
        for call in calls:
            call.error = batch_failure(exc)


async def _answer(
    send: MemoryObjectSendStream[tuple[bool, Any]],
    read: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
) -> None:
    with send:
        try:
            answer: tuple[bool, Any] = (True, await read(*args))
        except Exception as exc:
            answer = (False, exc)
        # The caller may have left: then nobody wants the answer.
        with suppress(anyio.BrokenResourceError, anyio.WouldBlock):
            send.send_nowait(answer)
