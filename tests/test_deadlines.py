"""A caller's deadline holds while storage is slow.

With an async adapter, a caller whose scope is cancelled or times out gets control back at once,
whatever the storage does: a custom adapter that hangs, a SQLite file whose write lock another
connection holds, a Redis server that is paused. Its operation, if already handed to storage, is
completed (or rolled back) by the actor on its own time: never half-applied, and the actor's
view never diverges from storage. A queued call whose caller left is never applied.

Each call runs under ``move_on_after(DEADLINE)`` and must return within ``DEADLINE + MARGIN``
with its scope cancelled (not with a result, nor an error). Where the storage would otherwise
never answer, a watchdog releases it after ``RELEASE_AFTER`` seconds, so that a caller that
waits for storage shows up as a late return (with the time it took) instead of a hung test.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

from _faults import SlowAdapter, eventually
from assistant_sessions import (
    Session,
    SessionQuery,
    SessionState,
    SessionStore,
    SqliteSessionStoreAdapter,
    create_session_store,
)
from assistant_sessions.adapters.redis import RedisSessionStoreAdapter
from assistant_sessions.testing import FakeClock

if TYPE_CHECKING:
    from redis_fixtures import RedisServer

pytestmark = pytest.mark.anyio

#: The caller's deadline (seconds).
DEADLINE = 0.2
#: How late after its deadline a caller may get control back (CI noise, not a budget).
MARGIN = 0.25
#: When the watchdog releases storage that would otherwise never answer.
RELEASE_AFTER = 1.5
#: The bound on a whole test: nothing may hang.
TEST_BOUND = 30
#: How long the Redis server is paused (``CLIENT PAUSE ... ALL``), milliseconds. Redis 7.0
#: holds even ``CLIENT UNPAUSE`` back while paused, so the pause is left to expire.
PAUSE_MS = 1500

_NO_RESULT = object()


@dataclass
class Outcome:
    """How a call under a deadline ended."""

    deadline: float
    elapsed: float
    cancelled: bool
    result: object = _NO_RESULT
    error: BaseException | None = None

    @property
    def prompt(self) -> bool:
        """Control came back within the deadline and the margin, by the cancellation."""
        return (
            self.cancelled
            and self.result is _NO_RESULT
            and self.error is None
            and self.elapsed <= self.deadline + MARGIN
        )

    def __str__(self) -> str:
        if self.error is not None:
            ending = f"raising {self.error!r}"
        elif self.result is not _NO_RESULT:
            ending = f"with a result ({self.result!r})"
        elif self.cancelled:
            ending = "cancelled"
        else:
            ending = "without a result and without being cancelled"
        return (
            f"the caller got control back after {self.elapsed:.3f} s {ending}; deadline "
            f"{self.deadline} s, allowed up to {self.deadline + MARGIN:.2f} s"
        )


async def under_deadline(
    call: Callable[[], Awaitable[object]],
    deadline: float = DEADLINE,
    *,
    release: Callable[[], None] | None = None,
    release_after: float = RELEASE_AFTER,
) -> Outcome:
    """Run ``call()`` under ``move_on_after(deadline)`` and report how it ended.

    ``release``, if given, is called by a watchdog ``release_after`` seconds after the start,
    unless the call has returned by then: storage answers at last, and a caller that waited
    for it returns late instead of never.
    """
    result: object = _NO_RESULT
    error: BaseException | None = None

    async def watchdog() -> None:
        await anyio.sleep(release_after)
        assert release is not None
        release()

    async with anyio.create_task_group() as tg:
        if release is not None:
            tg.start_soon(watchdog)
        start = anyio.current_time()
        try:
            with anyio.move_on_after(deadline) as scope:
                result = await call()
        except Exception as exc:
            error = exc
        elapsed = anyio.current_time() - start
        tg.cancel_scope.cancel()
    return Outcome(deadline, elapsed, scope.cancelled_caught, result, error)


async def settled(store: SessionStore) -> None:
    """Wait until no actor is busy and no call is in flight or queued (the actor finished
    what its callers left behind)."""

    def quiet() -> bool:
        stats = store.statistics()
        return stats.busy_actors == 0 and stats.in_flight == 0 and stats.mailbox_depth_total == 0

    await eventually(quiet, within=10)


def whole(stored: Session | None, before: Session | None, after_at: datetime) -> bool:
    """Whether ``stored`` is ``before`` untouched, or ``before`` touched at ``after_at``
    as a whole (active, last active then, nothing else changed)."""
    if stored == before:
        return True
    return (
        stored is not None
        and before is not None
        and stored.state is SessionState.ACTIVE
        and stored.last_activity_at == after_at
        and stored.created_at == before.created_at
        and stored.attached_surfaces == before.attached_surfaces
        and stored.metadata == before.metadata
    )


def touched_from(stored: Session, result: Session, now: datetime) -> bool:
    """Whether ``result`` is ``stored``, as storage held it, touched at ``now``: the actor
    worked from storage's view, not from a cache that kept an abandoned change."""
    changed_at = stored.state_changed_at if stored.state is SessionState.ACTIVE else now
    return (
        result.id == stored.id
        and result.state is SessionState.ACTIVE
        and result.last_activity_at == now
        and result.state_changed_at == changed_at
        and result.created_at == stored.created_at
    )


async def resolve_agrees(
    store: SessionStore, clock: FakeClock, user_id: str, surface_id: str | None = None
) -> Session:
    """Once the actor settled, resolve ``user_id`` again: it must answer from storage's view
    (the stored session touched, or a new one if there is none), and leave one session."""
    stored = await store.find(user_id=user_id)  # reads storage
    assert len(stored) <= 1, stored
    now = clock.advance(60)
    again = await store.resolve(user_id=user_id, surface_id=surface_id)
    if stored:
        assert touched_from(stored[0], again, now), (stored[0], again)
    else:
        assert again.created_at == now, again  # new: not a session an actor's cache kept
    assert await store.find(user_id=user_id) == [again]
    assert await store.get(again.id) == again
    return again


# -- a custom async adapter that hangs ---------------------------------------------------------


async def test_resolve_returns_at_its_deadline_while_its_commit_hangs(clock: FakeClock) -> None:
    adapter = SlowAdapter()  # the async contract only: no *_nowait fast path
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            kept = await store.create(user_id="u")
            after_at = clock.advance(60)
            gate = adapter.block("commit", user_id="u")
            try:
                outcome = await under_deadline(
                    lambda: store.resolve(user_id="u"), release=gate.open
                )
                handed_over = gate.arrived
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            assert handed_over == 1  # the touch had reached storage before the deadline
            await settled(store)
            stored = adapter.inner.get_nowait(kept.id)
            assert whole(stored, kept, after_at)
            assert await store.get(kept.id) == stored
            # The actor's view is storage's: the next resolve touches the stored session.
            again = await resolve_agrees(store, clock, "u")
            assert again.id == kept.id
            assert adapter.inner.get_nowait(kept.id) == again
            assert adapter.max_overlap == 1


async def test_resolve_of_a_new_user_returns_at_its_deadline_while_its_create_hangs(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            gate = adapter.block("commit", user_id="n")
            try:
                outcome = await under_deadline(
                    lambda: store.resolve(user_id="n", surface_id="web"), release=gate.open
                )
                handed_over = gate.arrived
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            assert handed_over == 1
            await settled(store)
            abandoned = adapter.inner.find_nowait(SessionQuery(user_id="n"))
            assert len(abandoned) <= 1  # created whole, or not at all
            # If the abandoned create was committed, resolve returns that session: never a
            # second one; if not, a new one, never one the actor's cache kept.
            again = await resolve_agrees(store, clock, "n", "web")
            if abandoned:
                assert again.id == abandoned[0].id
            assert adapter.inner.find_nowait(SessionQuery(user_id="n")) == [again]
            assert adapter.max_overlap == 1


async def test_create_returns_at_its_deadline_while_its_commit_hangs(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            gate = adapter.block("commit", user_id="c")
            try:
                outcome = await under_deadline(
                    lambda: store.create(user_id="c", id="left-behind"), release=gate.open
                )
                handed_over = gate.arrived
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            assert handed_over == 1
            await settled(store)
            stored = adapter.inner.get_nowait("left-behind")
            assert stored is None or (stored.user_id, stored.state) == ("c", SessionState.CREATED)
            assert await store.get("left-behind") == stored
            again = await resolve_agrees(store, clock, "c")
            assert (again.id == "left-behind") is (stored is not None)
            assert adapter.inner.find_nowait(SessionQuery(user_id="c")) == [again]
            assert adapter.max_overlap == 1


async def test_touch_returns_at_its_deadline_while_its_commit_hangs(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            kept = await store.create(user_id="u")
            after_at = clock.advance(60)
            gate = adapter.block("commit", user_id="u")
            try:
                outcome = await under_deadline(lambda: store.touch(kept.id), release=gate.open)
                handed_over = gate.arrived
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            assert handed_over == 1
            await settled(store)
            stored = adapter.inner.get_nowait(kept.id)
            assert whole(stored, kept, after_at)
            assert stored is not None
            assert await store.get(kept.id) == stored
            later_at = clock.advance(60)
            touched = await store.touch(kept.id)
            assert touched_from(stored, touched, later_at), (stored, touched)
            assert adapter.inner.get_nowait(kept.id) == touched
            assert adapter.max_overlap == 1


async def test_resolve_returns_at_its_deadline_while_the_load_hangs(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            gate = adapter.block("load", user_id="n")
            try:
                outcome = await under_deadline(
                    lambda: store.resolve(user_id="n"), release=gate.open
                )
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            await settled(store)
            again = await resolve_agrees(store, clock, "n")
            assert adapter.inner.find_nowait(SessionQuery(user_id="n")) == [again]


@pytest.mark.parametrize("operation", ["get", "find"])
async def test_reads_return_at_their_deadline_while_storage_hangs(
    operation: str, clock: FakeClock
) -> None:
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            kept = await store.create(user_id="u")
            gate = adapter.block(operation)
            read: Callable[[], Awaitable[object]] = (
                partial(store.get, kept.id)
                if operation == "get"
                else partial(store.find, user_id="u")
            )
            try:
                outcome = await under_deadline(read, release=gate.open)
            finally:
                gate.open()
            assert outcome.prompt, str(outcome)
            assert await store.get(kept.id) == kept
            assert await store.find(user_id="u") == [kept]


@pytest.mark.parametrize("holder", ["waits", "leaves"])
async def test_a_queued_call_whose_caller_left_is_never_applied(
    holder: str, clock: FakeClock
) -> None:
    """A create queued behind a hung commit of the same user, given up by its caller, never
    happens; whether the caller of the hung commit waits for it or leaves at its deadline."""
    adapter = SlowAdapter()
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            kept = await store.create(user_id="u")
            gate = adapter.block("commit", user_id="u")
            try:
                if holder == "waits":
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(store.touch, kept.id)
                        await gate.wait_for(1)
                        queued = await under_deadline(
                            lambda: store.create(user_id="u", id="queued"), release=gate.open
                        )
                        gate.open()
                else:
                    first = await under_deadline(lambda: store.touch(kept.id), release=gate.open)
                    # The touch's commit still hangs in storage: this call queues behind it.
                    queued = await under_deadline(
                        lambda: store.create(user_id="u", id="queued"), release=gate.open
                    )
                    gate.open()
                    assert first.prompt, f"the hung touch: {first}"
            finally:
                gate.open()
            assert queued.prompt, f"the queued create: {queued}"
            await settled(store)
            assert await store.get("queued") is None
            assert adapter.inner.get_nowait("queued") is None
            assert [s.id for s in await store.find(user_id="u")] == [kept.id]
            assert adapter.max_overlap == 1
            # The actor serves on, from storage's view.
            extra = await store.create(user_id="u", id="after")
            assert adapter.inner.get_nowait("after") == extra


# -- SQLite: another connection holds the write lock -------------------------------------------


class _Lock:
    """The write lock of a SQLite file, held by a plain connection (another process's)."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, timeout=5)

    def take(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self._connection.close()


async def test_resolve_of_a_new_user_returns_at_its_deadline_while_sqlite_is_locked(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "sessions.db"
    adapter = SqliteSessionStoreAdapter(path, busy_timeout=5)
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            lock = _Lock(path)  # after the store opened (and set up) the file
            try:
                lock.take()
                outcome = await under_deadline(
                    lambda: store.resolve(user_id="n", surface_id="web"), release=lock.release
                )
            finally:
                lock.close()
            assert outcome.prompt, str(outcome)
            await settled(store)
            await resolve_agrees(store, clock, "n", "web")


async def test_touch_returns_at_its_deadline_while_sqlite_is_locked(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "sessions.db"
    adapter = SqliteSessionStoreAdapter(path, busy_timeout=5)
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            # Known to its actor before the lock; created, so a touch changes its state.
            kept = await store.create(user_id="u", initial_surface_id="web")
            after_at = clock.advance(60)
            lock = _Lock(path)
            try:
                lock.take()
                outcome = await under_deadline(lambda: store.touch(kept.id), release=lock.release)
            finally:
                lock.close()
            assert outcome.prompt, str(outcome)
            await settled(store)
            stored = await store.get(kept.id)
            assert whole(stored, kept, after_at)
            assert stored is not None
            later_at = clock.advance(60)
            touched = await store.touch(kept.id)
            assert touched_from(stored, touched, later_at), (stored, touched)
            assert await store.get(kept.id) == touched
            assert await store.find(user_id="u") == [touched]


# -- Redis: the server is paused ---------------------------------------------------------------


def _redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    # Imported late: pytest must register redis_fixtures as a plugin before its first import.
    from redis_fixtures import command

    return command(port, *args, timeout=timeout)


@pytest.mark.parametrize("call", ["get", "find", "resolve", "resolve-new-user"])
async def test_calls_return_at_their_deadline_while_redis_is_paused(
    call: str, private_redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    server = private_redis_server
    # Longer than the pause: a caller that waits for Redis gets its reply when the pause ends.
    adapter = RedisSessionStoreAdapter(
        server.url, key_prefix=key_prefix, connect_timeout=5, command_timeout=5
    )
    deadline = 0.1
    with anyio.fail_after(TEST_BOUND):
        async with create_session_store(adapter, clock=clock) as store:
            kept = await store.resolve(user_id="u", surface_id="web")
            user = "n" if call == "resolve-new-user" else "u"
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "get": partial(store.get, kept.id),
                "find": partial(store.find, user_id="u"),
                "resolve": partial(store.resolve, user_id="u", surface_id="web"),
                "resolve-new-user": partial(store.resolve, user_id="n", surface_id="web"),
            }
            reply = _redis_command(server.port, "CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
            assert reply.startswith(b"+OK"), reply
            try:
                outcome = await under_deadline(calls[call], deadline)
            finally:
                # PING is held back until the pause ends.
                await anyio.to_thread.run_sync(
                    partial(_redis_command, server.port, "PING", timeout=10)
                )
            assert outcome.prompt, str(outcome)
            await settled(store)
            # Calls succeed again, and the user has exactly one session.
            again = await resolve_agrees(store, clock, user, "web")
            if user == "u":
                assert again.id == kept.id


# -- the store's own scope is cancelled ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
async def test_cancelling_the_stores_own_scope_comes_out_as_cancellation(
    seed: int, redis_server: RedisServer, key_prefix: str
) -> None:
    """``move_on_after`` around the whole ``async with``, with calls in flight at every moment:
    the scope catches its cancellation, and no storage error escapes it."""
    rng = random.Random(seed)
    completed = 0
    for attempt in range(8):
        adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=f"{key_prefix}{attempt}")
        done = 0

        async def client(store: SessionStore, i: int) -> None:
            nonlocal done
            while True:
                session = await store.resolve(user_id=f"u{i % 7}", surface_id=f"s{i}")
                await store.get(session.id)
                await store.touch(session.id)
                done += 1

        with anyio.fail_after(TEST_BOUND), anyio.move_on_after(rng.uniform(0.02, 0.2)) as scope:
            async with create_session_store(adapter) as store, anyio.create_task_group() as tg:
                for i in range(30):
                    tg.start_soon(client, store, i)
        assert scope.cancelled_caught
        completed += done
    assert completed > 0  # calls were in flight when the scopes were cancelled
