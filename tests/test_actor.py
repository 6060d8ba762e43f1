"""The user actor (invariant 1): turns one at a time in mailbox order, group commit, the
bounded mailbox's backpressure, the in-memory fast path, and conflict handling.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from _faults import SlowAdapter, gather, until
from assistant_sessions import (
    AdapterError,
    Session,
    SessionConflictError,
    SessionNotFoundError,
    create_session_store,
)
from assistant_sessions._runtime import pump as pump_module
from assistant_sessions._runtime.actor import MAX_CONFLICT_RETRIES, UserActor
from assistant_sessions._runtime.pump import Pump
from assistant_sessions._runtime.request import Request
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


class Recorder:
    """A selector that logs the order in which turns ran it (it runs inside each turn)."""

    def __init__(self, log: list[int], tag: int) -> None:
        self.log = log
        self.tag = tag

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        self.log.append(self.tag)
        return candidates[0] if candidates else None


async def test_turns_run_one_at_a_time_in_mailbox_order(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    log: list[int] = []
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.resolve(user_id="u")
        gate = adapter.block("commit")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, {"first": True})
                await gate.wait_for(1)
                for i in range(50):
                    tg.start_soon(lambda i=i: store.resolve(user_id="u", resolver=Recorder(log, i)))
                    # Each call is queued before the next one starts.
                    await until(lambda i=i: store.statistics().mailbox_depth_total == i + 1)
                assert store.statistics().mailbox_depth_total == 50
                adapter.unblock("commit")
        assert log == list(range(50))
        # Loads and commits of the user never overlapped.
        assert adapter.max_overlap == 1


async def test_queued_requests_are_committed_in_groups_of_max_batch(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, max_batch=10) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("commit")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, {"inline": True})
                await gate.wait_for(1)
                for i in range(95):
                    tg.start_soon(store.update_metadata, session.id, {f"k{i}": i})
                await anyio.wait_all_tasks_blocked()
                adapter.unblock("commit")
        # The create, the inline call, then 95 queued requests in batches of at most 10.
        assert adapter.calls["commit"] == 1 + 1 + 10
        assert adapter.applied == 12
        stored = await store.get(session.id)
        assert stored is not None
        assert len(stored.metadata) == 96


async def test_a_full_mailbox_makes_callers_wait_not_fail(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, mailbox_size=2) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("commit")
        results: list[Session] = []

        async def call(i: int) -> None:
            results.append(await store.update_metadata(session.id, {f"k{i}": i}))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                # The first call's commit hangs: the actor is busy with it...
                tg.start_soon(call, 0)
                await gate.wait_for(1)
                # ...so of the next 100 calls, two fit in the mailbox, the rest wait for room.
                for i in range(1, 101):
                    tg.start_soon(call, i)
                await anyio.wait_all_tasks_blocked()
                actor = store._registry.actors["u"]
                assert actor._send is not None
                mailbox = actor._send.statistics()
                assert mailbox.current_buffer_used == 2
                assert mailbox.tasks_waiting_send == 98
                stats = store.statistics()
                assert (stats.in_flight, stats.mailbox_depth_max) == (101, 100)
                adapter.unblock("commit")
        assert len(results) == 101
        stored = await store.get(session.id)
        assert stored is not None
        assert dict(stored.metadata) == {f"k{i}": i for i in range(101)}
        assert store.statistics().operations["update_metadata"].errors == 0


def _count_batches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the user of every batch the executor takes from now on."""
    taken: list[str] = []
    take_batch = UserActor.take_batch

    def counting_take_batch(actor: UserActor) -> list[Request] | None:
        taken.append(actor.user_id)
        return take_batch(actor)

    monkeypatch.setattr(UserActor, "take_batch", counting_take_batch)
    return taken


async def test_the_in_memory_fast_path_never_goes_to_the_executor(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with create_session_store(clock=clock) as store:
        taken = _count_batches(monkeypatch)
        await gather(300, lambda i: store.resolve(user_id=f"u{i % 5}", surface_id=f"s{i}"))
        session = await store.resolve(user_id="u0")
        await gather(100, lambda i: store.update_metadata(session.id, {f"k{i}": i}))
        assert taken == []
        assert store.statistics().busy_actors == 0


async def test_the_slow_path_takes_what_queued_meanwhile_as_one_batch(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        taken = _count_batches(monkeypatch)
        gate = adapter.block("commit")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(lambda i=i: store.resolve(user_id=f"u{i % 4}"))
                await gate.wait_for(4)
                await anyio.wait_all_tasks_blocked()
                adapter.unblock("commit")
        # The 50 calls of each user, queued before its executor ran, are one batch.
        assert sorted(taken) == ["u0", "u1", "u2", "u3"]
        assert adapter.calls["commit"] == 4
        assert store.statistics().busy_actors == 0


def _count_workers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record the first job of every storage worker (task) started from now on."""
    started: list[object] = []
    work = Pump._work

    async def counting_work(pump: Pump, job: tuple[int, object] | None) -> None:
        started.append(job)
        await work(pump, job)  # type: ignore[arg-type]

    monkeypatch.setattr(Pump, "_work", counting_work)
    return started


async def test_jobs_are_handed_to_waiting_workers_not_new_tasks(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, sweep_interval=None) as store:
        await store.resolve(user_id="first")
        started = _count_workers(monkeypatch)
        for i in range(50):
            await store.resolve(user_id=f"u{i}")
            await anyio.wait_all_tasks_blocked()
        # One call at a time: every job went to the one worker already waiting.
        assert started == []
        # Retirement ends the waiting workers: the next call needs a new one.
        store._runtime.registry.retire_idle()
        await anyio.wait_all_tasks_blocked()
        await store.resolve(user_id="after")
        assert len(started) == 1


async def test_at_most_max_idle_workers_wait_after_a_burst(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pump_module, "MAX_IDLE_WORKERS", 3)
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, sweep_interval=None) as store:
        started = _count_workers(monkeypatch)
        gate = adapter.block("commit")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(lambda i=i: store.resolve(user_id=f"u{i}"))
                await gate.wait_for(8)
                adapter.unblock("commit")
        await anyio.wait_all_tasks_blocked()
        assert len(started) == 8
        pump = store._runtime.registry.pump
        assert len(pump._idle) == 3
        # Three calls at once reuse the three waiting workers.
        await gather(3, lambda i: store.resolve(user_id=f"v{i}"))
        assert len(started) == 8


async def test_a_duplicate_id_fails_only_its_own_request_in_a_batch(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        taken = await store.create(user_id="a", id="taken")
        session = await store.create(user_id="b")
        gate = adapter.block("commit")
        outcomes: dict[str, object] = {}

        async def create(session_id: str) -> None:
            try:
                outcomes[session_id] = await store.create(user_id="b", id=session_id)
            except SessionConflictError as exc:
                outcomes[session_id] = exc

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, {"x": 1})
                await gate.wait_for(1)
                for depth, session_id in enumerate(("fresh-1", "taken", "fresh-2"), start=1):
                    tg.start_soon(create, session_id)
                    await until(lambda d=depth: store.statistics().mailbox_depth_total == d)
                adapter.unblock("commit")
        assert isinstance(outcomes["taken"], SessionConflictError)
        assert outcomes["taken"].session_id == "taken"
        assert isinstance(outcomes["fresh-1"], Session)
        assert isinstance(outcomes["fresh-2"], Session)
        assert await store.get("taken") == taken
        assert {s.id for s in await store.find(user_id="b")} == {session.id, "fresh-1", "fresh-2"}


async def test_a_duplicate_id_on_the_fast_path(clock: FakeClock) -> None:
    async with create_session_store(clock=clock) as store:
        taken = await store.create(user_id="a", id="taken")
        await store.create(user_id="b")
        with pytest.raises(SessionConflictError):
            await store.create(user_id="b", id="taken")
        with pytest.raises(SessionConflictError):
            await store.create(user_id="a", id="taken")
        assert await store.get("taken") == taken
        assert len(await store.find(user_id="b")) == 1
        assert (await store.create(user_id="b", id="free")).id == "free"


class AlwaysContended(SlowAdapter):
    """Another writer commits to the user just before each of the store's commits."""

    def __init__(self) -> None:
        super().__init__()
        self.contended = True

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        if self.contended:
            for commit in commits:
                version = self.inner.load_user_nowait(commit.user_id).version
                assert self.inner.commit_nowait([UserCommit(commit.user_id, version)]) == [None]
        return await super().commit(commits)


async def test_endless_version_conflicts_give_up_with_an_adapter_error(clock: FakeClock) -> None:
    adapter = AlwaysContended()
    adapter.contended = False
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        adapter.contended = True
        with anyio.fail_after(10), pytest.raises(AdapterError, match="concurrent writers"):
            await store.update_metadata(session.id, {"x": 1})
        assert adapter.conflicts == MAX_CONFLICT_RETRIES
        assert await store.get(session.id) == session
        adapter.contended = False
        assert (await store.update_metadata(session.id, {"y": 2})).metadata == {"y": 2}


async def test_a_failing_request_does_not_spoil_its_batch(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        expired = await store.create(user_id="u")
        await store.expire(expired.id)
        await store.delete((await store.create(user_id="u", id="gone")).id)
        gate = adapter.block("commit")
        outcomes: dict[int, object] = {}

        async def call(i: int, target: str) -> None:
            try:
                outcomes[i] = await store.update_metadata(target, {f"k{i}": i})
            except Exception as exc:
                outcomes[i] = exc

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, 0, session.id)
                await gate.wait_for(1)
                for i, target in enumerate([session.id, expired.id, session.id], start=1):
                    tg.start_soon(call, i, target)
                    await until(lambda i=i: store.statistics().mailbox_depth_total == i)
                adapter.unblock("commit")
        assert type(outcomes[2]).__name__ == "SessionStateError"
        stored = await store.get(session.id)
        assert stored is not None
        assert dict(stored.metadata) == {"k0": 0, "k1": 1, "k3": 3}
        still = await store.get(expired.id)
        assert still is not None
        assert still.metadata == {}
        with pytest.raises(SessionNotFoundError):
            await store.touch("gone")
