"""Test helpers: adapters around the in-memory one that can be told to be slow, block or fail.

:class:`SlowAdapter` has no synchronous fast path, so a store over it takes the general route
(mailbox, drain task, group commit), and every call yields to the event loop. Tests can hold
any operation at a :class:`Gate`, make the next calls of an operation raise, and read counters
(calls, commits, the most operations of one user that were ever in flight at once).

:class:`FastFaultyAdapter` keeps the synchronous fast path (the store runs turns without
awaiting) and can be told to fail the same way, minus gates: a synchronous call cannot wait.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from assistant_sessions import (
    AdapterError,
    InMemorySessionStoreAdapter,
    Session,
    SessionQuery,
    SessionState,
    SessionStore,
)
from assistant_sessions.adapters import Rejection, UserCommit, UserSnapshot

T = TypeVar("T")

__all__ = [
    "FastFaultyAdapter",
    "Gate",
    "SlowAdapter",
    "gather",
    "eventually",
    "make_adapter",
    "until",
]


class Gate:
    """A point where adapter calls wait until the test opens it."""

    def __init__(self) -> None:
        self._opened = anyio.Event()
        self._arrival = anyio.Event()
        #: Calls waiting at the gate now.
        self.waiting = 0
        #: Calls that arrived at the gate so far.
        self.arrived = 0

    async def pass_through(self) -> None:
        self.waiting += 1
        self.arrived += 1
        self._arrival.set()
        try:
            await self._opened.wait()
        finally:
            self.waiting -= 1

    async def wait_for(self, arrived: int = 1) -> None:
        """Wait until at least ``arrived`` calls have reached the gate."""
        while self.arrived < arrived:
            self._arrival = anyio.Event()
            await self._arrival.wait()

    def open(self) -> None:
        self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()


class _Fault:
    def __init__(self, error: BaseException, times: int, after: bool) -> None:
        self.error = error
        self.times = times
        self.after = after


class SlowAdapter:
    """The in-memory adapter behind awaits, gates and injected failures (no fast path).

    Args:
        inner: The adapter holding the data; a new in-memory one if ``None``. Several wrappers
            may share one ``inner``, as several processes share one database.
        yields: Checkpoints each call passes before doing its work.
        group_commit: Say so as a :class:`~assistant_sessions.adapters.GroupCommitAdapter`:
            the store then hands it every waiting user's commit in one call.
    """

    def __init__(
        self,
        inner: InMemorySessionStoreAdapter | None = None,
        *,
        yields: int = 2,
        group_commit: bool = False,
    ) -> None:
        self.inner = inner if inner is not None else InMemorySessionStoreAdapter()
        self.yields = yields
        self.group_commit = group_commit
        #: Calls per operation name (``load``, ``commit``, ``get``, ``find``, ``due``).
        self.calls: Counter[str] = Counter()
        #: User commits handed to the inner adapter (a batch of N users counts N).
        self.user_commits = 0
        #: The most user commits in one commit call.
        self.max_commit_batch = 0
        #: User commits the inner adapter applied.
        self.applied = 0
        #: User commits rejected for a version conflict.
        self.conflicts = 0
        #: The most loads and commits of one user that were ever in flight at once.
        self.max_overlap = 0
        #: Calls that went on after the adapter was closed (a store must never do that).
        self.used_while_closed: list[str] = []
        self.closed = False
        self._in_flight: Counter[str] = Counter()
        self._gates: dict[str, tuple[Gate, str | None]] = {}
        self._faults: dict[str, list[_Fault]] = {}

    # -- test controls -------------------------------------------------------------------------

    def block(self, operation: str, *, user_id: str | None = None) -> Gate:
        """Hold the following calls of ``operation`` (of ``user_id`` only, if given) at a new
        gate until it is opened."""
        gate = Gate()
        self._gates[operation] = (gate, user_id)
        return gate

    def unblock(self, operation: str) -> None:
        """Open and remove the gate of ``operation``."""
        self._gates.pop(operation)[0].open()

    def fail(
        self, operation: str, error: BaseException, *, times: int = 1, after: bool = False
    ) -> None:
        """Make the next ``times`` calls of ``operation`` raise ``error``.

        With ``after``, a commit raises only after the inner adapter applied it (the caller
        cannot tell whether it was applied, as with a lost connection).
        """
        self._faults.setdefault(operation, []).append(_Fault(error, times, after))

    def heal(self, operation: str) -> None:
        """Forget the failures still planned for ``operation``."""
        self._faults.pop(operation, None)

    def _fault(self, operation: str, after: bool) -> None:
        faults = self._faults.get(operation)
        if not faults or faults[0].after is not after:
            return
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        raise fault.error

    async def _enter(self, operation: str, users: Sequence[str] = ()) -> None:
        self.calls[operation] += 1
        gated = self._gates.get(operation)
        if gated is not None and (gated[1] is None or gated[1] in users):
            await gated[0].pass_through()
        for _ in range(self.yields):
            await anyio.lowlevel.checkpoint()
        if self.closed:
            self.used_while_closed.append(operation)
        self._fault(operation, after=False)

    def _track(self, users: Sequence[str], delta: int) -> None:
        for user_id in users:
            self._in_flight[user_id] += delta
            self.max_overlap = max(self.max_overlap, self._in_flight[user_id])

    # -- the adapter contract ------------------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()

    async def load_user(self, user_id: str) -> UserSnapshot:
        self._track([user_id], 1)
        try:
            await self._enter("load", [user_id])
            return self.inner.load_user_nowait(user_id)
        finally:
            self._track([user_id], -1)

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        users = [c.user_id for c in commits]
        self._track(users, 1)
        try:
            await self._enter("commit", users)
            self.user_commits += len(commits)
            self.max_commit_batch = max(self.max_commit_batch, len(commits))
            rejections = self.inner.commit_nowait(commits)
            self.applied += rejections.count(None)
            self.conflicts += rejections.count(Rejection.VERSION)
            self._fault("commit", after=True)
            return rejections
        finally:
            self._track(users, -1)

    async def get(self, session_id: str) -> Session | None:
        await self._enter("get")
        return self.inner.get_nowait(session_id)

    async def find(self, query: SessionQuery) -> list[Session]:
        await self._enter("find")
        return self.inner.find_nowait(query)

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        # The candidates are read first, then the call may wait at the gate: the test can
        # change a candidate in between, as a concurrent caller could.
        self.calls["due"] += 1
        found = self.inner.due_nowait(state, before, limit, after=after)
        gated = self._gates.get("due")
        if gated is not None and found:
            await gated[0].pass_through()
        for _ in range(self.yields):
            await anyio.lowlevel.checkpoint()
        self._fault("due", after=False)
        return found


class GroupLoadSlowAdapter(SlowAdapter):
    """A :class:`SlowAdapter` that also reads many users in one call (a
    :class:`~assistant_sessions.adapters.GroupLoadAdapter`); such a call is one ``load``
    operation for gates, failures and :attr:`calls`."""

    def __init__(self, inner: InMemorySessionStoreAdapter | None = None, **options: Any) -> None:
        super().__init__(inner, **options)
        #: The most users read in one call.
        self.max_load_batch = 0

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        self._track(user_ids, 1)
        try:
            await self._enter("load", user_ids)
            self.max_load_batch = max(self.max_load_batch, len(user_ids))
            return [self.inner.load_user_nowait(user_id) for user_id in user_ids]
        finally:
            self._track(user_ids, -1)


class FastFaultyAdapter(SlowAdapter):
    """Like :class:`SlowAdapter`, plus the synchronous fast path (which cannot block)."""

    def load_user_nowait(self, user_id: str) -> UserSnapshot:
        self.calls["load"] += 1
        self._fault("load", after=False)
        return self.inner.load_user_nowait(user_id)

    def commit_nowait(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        self.calls["commit"] += 1
        self._fault("commit", after=False)
        self.user_commits += len(commits)
        rejections = self.inner.commit_nowait(commits)
        self.applied += rejections.count(None)
        self.conflicts += rejections.count(Rejection.VERSION)
        self._fault("commit", after=True)
        return rejections

    def get_nowait(self, session_id: str) -> Session | None:
        self.calls["get"] += 1
        self._fault("get", after=False)
        return self.inner.get_nowait(session_id)


def make_adapter(kind: str) -> InMemorySessionStoreAdapter | SlowAdapter:
    """``memory``: the plain in-memory adapter (fast path); ``slow``: a :class:`SlowAdapter`."""
    if kind == "memory":
        return InMemorySessionStoreAdapter()
    if kind == "slow":
        return SlowAdapter()
    raise ValueError(kind)


async def gather(count: int, call: Callable[[int], Awaitable[T]], *, within: float = 60) -> list[T]:
    """Run ``call(0)`` ... ``call(count - 1)`` concurrently; return their results in order."""
    results: list[T | None] = [None] * count

    async def one(i: int) -> None:
        results[i] = await call(i)

    with anyio.fail_after(within):
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)
    return results  # type: ignore[return-value]


async def resolve_all_while_held(
    store: SessionStore, adapter: SlowAdapter, users: list[str], operation: str
) -> list[Session | BaseException]:
    """Resolve once for each of ``users`` at the same time, with the first ``operation``
    (``load`` or ``commit``) held at a gate until every resolve waits; each outcome, in
    order."""
    outcomes: list[Session | BaseException] = [AssertionError("no outcome")] * len(users)
    gate = adapter.block(operation)

    async def resolve(i: int) -> None:
        try:
            outcomes[i] = await store.resolve(user_id=users[i])
        except Exception as exc:
            outcomes[i] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(len(users)):
                tg.start_soon(resolve, i)
            await gate.wait_for(1)
            await anyio.wait_all_tasks_blocked()
            adapter.unblock(operation)
    return outcomes


async def until(predicate: Callable[[], bool], *, within: float = 10) -> None:
    """Let other tasks run until ``predicate()`` holds (checkpoints only, no sleeping).

    Cheaper than ``anyio.wait_all_tasks_blocked()`` when the awaited state is observable:
    on asyncio that one sleeps 0.1 s each time it finds a task still running.
    """
    with anyio.fail_after(within):
        while not predicate():
            await anyio.lowlevel.checkpoint()


async def eventually(
    predicate: Callable[[], bool], *, interval: float = 0.005, within: float = 5
) -> None:
    """Poll ``predicate()`` every ``interval`` real seconds until it holds.

    Only for what the store does on its own real-time schedule (the supervisor's loop).
    """
    for _ in range(math.ceil(within / interval)):
        if predicate():
            return
        await anyio.sleep(interval)
    raise TimeoutError(f"not true after {within} s")
