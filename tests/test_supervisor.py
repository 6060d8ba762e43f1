"""The supervisor: sweeps (one round, and the periodic loop), idle retirement, restarts with a
restart-intensity limit, and adapter errors reaching callers without a restart.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from _faults import FastFaultyAdapter, SlowAdapter, eventually, gather
from assistant_sessions import (
    ActorFailedError,
    AdapterError,
    EventKind,
    InMemorySessionStoreAdapter,
    SessionState,
    SessionStore,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["fast", "slow"])
def faulty(request: pytest.FixtureRequest) -> SlowAdapter:
    """A failing adapter, with (``fast``) or without (``slow``) the synchronous fast path."""
    return FastFaultyAdapter() if request.param == "fast" else SlowAdapter()


async def _assert_consistent(store: SessionStore, adapter: SlowAdapter, user_id: str) -> None:
    """What the store serves for ``user_id`` is exactly what the adapter holds."""
    stored = {s.id: s for s in adapter.inner.load_user_nowait(user_id).sessions}
    assert {s.id: s for s in await store.find(user_id=user_id)} == stored
    for session in stored.values():
        if session.is_live:
            # A write through the actor starts from the stored snapshot, not a stale cache.
            updated = await store.update_metadata(session.id, {"check": True})
            assert updated.metadata == {**session.metadata, "check": True}
            assert updated.attached_surfaces == session.attached_surfaces


# -- sweeps ------------------------------------------------------------------------------------


async def test_sweep_once_suspends_stale_sessions_only(clock: FakeClock) -> None:
    async with create_session_store(clock=clock, default_ttl=600) as store:
        old = [await store.resolve(user_id=f"u{i}") for i in range(5)]
        clock.advance(300)
        recent = await store.resolve(user_id="u0", workspace_id="w")
        clock.advance(301)
        suspended, expired, purged = await store._runtime.sweeper.sweep_once()
        assert sorted(s.id for s in suspended) == sorted(s.id for s in old)
        assert all(s.state is SessionState.SUSPENDED for s in suspended)
        assert (expired, purged) == ([], [])
        for session in old:
            stored = await store.get(session.id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED
            assert stored.state_changed_at == clock()
        still = await store.get(recent.id)
        assert still == recent
        assert store.statistics().sweeps == 1
        assert store.statistics().sessions_suspended == 5
        # A second round finds nothing more to do.
        assert await store._runtime.sweeper.sweep_once() == ([], [], [])


async def test_sweep_once_expires_sessions_suspended_longer_than_expire_after(
    clock: FakeClock,
) -> None:
    async with create_session_store(
        clock=clock, default_ttl=600, expire_after=timedelta(hours=1)
    ) as store:
        early = await store.resolve(user_id="a")
        clock.advance(601)
        assert [s.id for s in (await store._runtime.sweeper.sweep_once())[0]] == [early.id]
        late = await store.resolve(user_id="b")
        clock.advance(601)
        suspended, expired, _ = await store._runtime.sweeper.sweep_once()
        assert [s.id for s in suspended] == [late.id]
        assert expired == []  # suspended only 601 s ago
        clock.advance(3000)  # the first was suspended 3601 s ago, the second 3000 s ago
        suspended, expired, _ = await store._runtime.sweeper.sweep_once()
        assert suspended == []
        assert [s.id for s in expired] == [early.id]
        assert expired[0].state is SessionState.EXPIRED
        stored = await store.get(late.id)
        assert stored is not None
        assert stored.state is SessionState.SUSPENDED
        assert store.statistics().sessions_expired == 1
        # A resolve no longer reuses the expired session.
        assert (await store.resolve(user_id="a")).id != early.id


async def test_sweep_once_spares_a_suspended_session_touched_since(clock: FakeClock) -> None:
    async with create_session_store(clock=clock, default_ttl=60, expire_after=60) as store:
        session = await store.resolve(user_id="a")
        clock.advance(61)
        await store._runtime.sweeper.sweep_once()
        await store.touch(session.id)  # active again
        clock.advance(61)
        suspended, expired, _ = await store._runtime.sweeper.sweep_once()
        assert [s.id for s in suspended] == [session.id]
        assert expired == []


async def test_the_loop_sweeps_every_sweep_interval(clock: FakeClock) -> None:
    async with create_session_store(
        clock=clock, default_ttl=60, sweep_interval=0.01, expire_after=60
    ) as store:
        session = await store.resolve(user_id="a")
        async with store.subscribe(kinds=["suspended", "expired"]) as events:
            clock.advance(61)
            with anyio.fail_after(5):
                first = await events.__anext__()
            assert (first.kind, first.session.id) == (EventKind.SUSPENDED, session.id)
            clock.advance(61)
            with anyio.fail_after(5):
                second = await events.__anext__()
            assert (second.kind, second.session.id) == (EventKind.EXPIRED, session.id)
            # And again: the loop keeps sweeping.
            later = await store.resolve(user_id="b")
            clock.advance(61)
            with anyio.fail_after(5):
                third = await events.__anext__()
            assert (third.kind, third.session.id) == (EventKind.SUSPENDED, later.id)
        # The counters are updated when a sweep ends; the loop goes on sweeping.
        await eventually(lambda: store.statistics().sweeps >= 3)
        assert store.statistics().sessions_suspended == 2


@pytest.mark.parametrize(
    "error", [AdapterError("index unavailable"), RuntimeError("bug in the adapter")]
)
async def test_the_loop_survives_a_failed_sweep(clock: FakeClock, error: Exception) -> None:
    adapter = SlowAdapter()
    adapter.fail("due", error, times=2)
    async with create_session_store(
        adapter, clock=clock, default_ttl=60, sweep_interval=0.01
    ) as store:
        session = await store.resolve(user_id="a")
        async with store.subscribe(kinds=["suspended"]) as events:
            clock.advance(61)
            with anyio.fail_after(5):
                event = await events.__anext__()
        assert event.session.id == session.id
        assert adapter.calls["due"] >= 3


async def test_no_sweep_runs_without_a_sweep_interval(clock: FakeClock) -> None:
    async with create_session_store(
        clock=clock, default_ttl=60, idle_after=0.01, sweep_interval=None
    ) as store:
        assert store._runtime.supervisor.sweep_interval is None
        session = await store.resolve(user_id="a")
        clock.advance(3600)
        # The loop still wakes up to retire idle actors; wait until it has done so.
        await eventually(lambda: store.statistics().live_actors == 0)
        assert store.statistics().sweeps == 0
        assert await store.get(session.id) == session


# -- idle retirement ---------------------------------------------------------------------------


async def test_retire_idle_retires_actors_unused_since_the_previous_call(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        registry = store._registry
        a = await store.resolve(user_id="a", surface_id="web")
        b = await store.update_metadata((await store.resolve(user_id="b")).id, {"keep": [1, 2]})
        assert store.statistics().live_actors == 2
        assert registry.retire_idle() == 0  # both were used since the (implicit) last call
        await store.touch(a.id)
        assert registry.retire_idle() == 1  # b was not
        assert store.statistics().live_actors == 1
        assert set(registry.actors) == {"a"}
        loads = adapter.calls["load"]
        # b comes back transparently, reloaded from the adapter, with nothing lost.
        again = await store.resolve(user_id="b")
        assert adapter.calls["load"] == loads + 1
        assert again.id == b.id
        assert again.metadata == {"keep": (1, 2)}
        assert store.statistics().live_actors == 2
        assert registry.retire_idle() == 1  # a, unused since the previous call
        assert registry.retire_idle() == 1  # b
        assert store.statistics().live_actors == 0
        await _assert_consistent(store, adapter, "a")
        await _assert_consistent(store, adapter, "b")


async def test_live_actors_track_live_users(clock: FakeClock) -> None:
    async with create_session_store(clock=clock) as store:
        await gather(100, lambda i: store.resolve(user_id=f"u{i}"))
        assert store.statistics().live_actors == 100
        store._registry.retire_idle()
        await gather(10, lambda i: store.resolve(user_id=f"u{i}"))
        assert store._registry.retire_idle() == 90
        assert store.statistics().live_actors == 10
        assert store._registry.retire_idle() == 10
        assert store.statistics().live_actors == 0
        assert len(await store.find(limit=1000)) == 100


async def test_a_busy_actor_is_not_retired(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.resolve(user_id="a")
        gate = adapter.block("commit")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, {"x": 1})
                tg.start_soon(store.update_metadata, session.id, {"y": 2})
                await gate.wait_for(1)
                await anyio.wait_all_tasks_blocked()
                assert store._registry.retire_idle() == 0
                assert store._registry.retire_idle() == 0
                assert store.statistics().busy_actors == 1
                adapter.unblock("commit")
        stored = await store.get(session.id)
        assert stored is not None
        assert stored.metadata == {"x": 1, "y": 2}


# -- restarts ----------------------------------------------------------------------------------


async def test_a_crashing_commit_fails_the_call_and_the_actor_restarts(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a", surface_id="web")
        boom = RuntimeError("boom")
        faulty.fail("commit", boom)
        with pytest.raises(ActorFailedError) as info:
            await store.update_metadata(session.id, {"lost": True})
        assert info.value.__cause__ is boom
        assert info.value.user_id == "a"
        assert store.statistics().restarts == 1
        stored = await store.get(session.id)
        assert stored is not None
        assert "lost" not in stored.metadata
        # Later calls succeed, starting from what storage holds.
        after = await store.update_metadata(session.id, {"kept": True})
        assert after.metadata == {"kept": True}
        await _assert_consistent(store, faulty, "a")


async def test_a_crash_after_the_commit_applied_reloads_from_storage(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a")
        faulty.fail("commit", RuntimeError("connection lost after commit"), after=True)
        with pytest.raises(ActorFailedError):
            await store.update_metadata(session.id, {"applied": 1})
        # The caller cannot know; the actor must serve what storage says, not its old cache.
        after = await store.update_metadata(session.id, {"next": 2})
        assert after.metadata == {"applied": 1, "next": 2}
        await _assert_consistent(store, faulty, "a")


async def test_a_crashing_load_fails_the_call_and_the_actor_restarts(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a")
        store._registry.retire_idle()
        store._registry.retire_idle()
        faulty.fail("load", RuntimeError("bad row"), times=1000)
        with pytest.raises(ActorFailedError) as info:
            await store.touch(session.id)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert store.statistics().restarts == 1
        faulty.heal("load")
        assert (await store.touch(session.id)).id == session.id
        await _assert_consistent(store, faulty, "a")


async def test_requests_queued_behind_a_crash_are_served_after_the_restart(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.resolve(user_id="a")
        gate = adapter.block("commit")
        outcomes: dict[str, object] = {}

        async def call(key: str) -> None:
            try:
                outcomes[key] = await store.update_metadata(session.id, {key: True})
            except ActorFailedError as exc:
                outcomes[key] = exc

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "crashes")
                await gate.wait_for(1)
                tg.start_soon(call, "queued-1")
                tg.start_soon(call, "queued-2")
                await anyio.wait_all_tasks_blocked()
                adapter.fail("commit", RuntimeError("boom"))
                adapter.unblock("commit")
        assert isinstance(outcomes["crashes"], ActorFailedError)
        assert not isinstance(outcomes["queued-1"], BaseException)
        assert not isinstance(outcomes["queued-2"], BaseException)
        stored = await store.get(session.id)
        assert stored is not None
        assert stored.metadata == {"queued-1": True, "queued-2": True}
        assert store.statistics().restarts == 1


async def test_past_the_restart_intensity_calls_fail_until_the_window_passes(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    window = 0.3
    async with create_session_store(
        faulty, clock=clock, max_restarts=2, restart_window=window
    ) as store:
        session = await store.resolve(user_id="a")
        other = await store.resolve(user_id="b")
        faulty.fail("commit", RuntimeError("boom"), times=3)
        for _ in range(3):
            with pytest.raises(ActorFailedError) as info:
                await store.update_metadata(session.id, {"lost": True})
            assert isinstance(info.value.__cause__, RuntimeError)
        assert store.statistics().restarts == 2
        # Broken: refused at once, without reaching the adapter (no silent restart loop).
        commits = faulty.calls["commit"]
        for call in (
            lambda: store.touch(session.id),
            lambda: store.resolve(user_id="a"),
            lambda: store.update_metadata(session.id, {"x": 1}),
        ):
            with pytest.raises(ActorFailedError, match="too often"):
                await call()
        assert faulty.calls["commit"] == commits
        assert store.statistics().restarts == 2
        # Other users are unaffected.
        assert (await store.touch(other.id)).id == other.id
        assert (await store.resolve(user_id="c")).user_id == "c"
        # A broken actor is not retired (it would forget it is broken).
        store._registry.retire_idle()
        store._registry.retire_idle()
        assert "a" in store._registry.actors
        await anyio.sleep(window * 1.2)
        after = await store.update_metadata(session.id, {"back": True})
        assert after.metadata == {"back": True}
        await _assert_consistent(store, faulty, "a")


async def test_breaking_an_actor_fails_its_queued_requests(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, max_restarts=0) as store:
        session = await store.resolve(user_id="a")
        gate = adapter.block("commit")
        outcomes: list[object] = []

        async def call(i: int) -> None:
            try:
                outcomes.append(await store.update_metadata(session.id, {f"k{i}": i}))
            except ActorFailedError as exc:
                outcomes.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(call, i)
                await gate.wait_for(1)
                await anyio.wait_all_tasks_blocked()
                adapter.fail("commit", RuntimeError("boom"))
                adapter.unblock("commit")
        assert len(outcomes) == 5
        assert all(isinstance(o, ActorFailedError) for o in outcomes)
        assert adapter.calls["commit"] == 2  # the resolve, and the one that crashed
        stored = await store.get(session.id)
        assert stored is not None
        assert stored.metadata == {}


# -- adapter errors ----------------------------------------------------------------------------


async def test_an_adapter_error_reaches_the_caller_and_changes_nothing(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a")
        error = AdapterError("disk full")
        faulty.fail("commit", error)
        with pytest.raises(AdapterError) as info:
            await store.update_metadata(session.id, {"lost": True})
        assert info.value is error
        stored = await store.get(session.id)
        assert stored == session
        stats = store.statistics()
        assert (stats.adapter_errors, stats.restarts) == (1, 0)
        assert stats.operations["update_metadata"].errors == 1
        # The actor keeps serving.
        after = await store.update_metadata(session.id, {"kept": True})
        assert after.metadata == {"kept": True}
        await _assert_consistent(store, faulty, "a")


async def test_an_adapter_error_on_load_reaches_the_caller(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a")
        store._registry.retire_idle()
        store._registry.retire_idle()
        faulty.fail("load", AdapterError("unreachable"), times=1000)
        with pytest.raises(AdapterError):
            await store.touch(session.id)
        assert store.statistics().restarts == 0
        faulty.heal("load")
        assert (await store.touch(session.id)).state is SessionState.ACTIVE


async def test_an_adapter_error_after_applying_is_reconciled(
    faulty: SlowAdapter, clock: FakeClock
) -> None:
    async with create_session_store(faulty, clock=clock) as store:
        session = await store.resolve(user_id="a")
        faulty.fail("commit", AdapterError("timeout"), after=True)
        with pytest.raises(AdapterError):
            await store.attach_surface(session.id, "phone")
        # Applied after all; the actor reloads instead of trusting its cache.
        again = await store.attach_surface(session.id, "phone")
        assert again.attached_surfaces == ("phone",)
        await _assert_consistent(store, faulty, "a")


async def test_restart_counters_are_per_store(clock: FakeClock) -> None:
    shared = InMemorySessionStoreAdapter()
    failing = FastFaultyAdapter(shared)
    async with (
        create_session_store(failing, clock=clock) as broken,
        create_session_store(shared, clock=clock) as healthy,
    ):
        session = await healthy.resolve(user_id="a")
        failing.fail("commit", RuntimeError("boom"))
        with pytest.raises(ActorFailedError):
            await broken.touch(session.id)
        assert (broken.statistics().restarts, healthy.statistics().restarts) == (1, 0)
        assert (await healthy.touch(session.id)).id == session.id


# -- one user's failure does not hold up the others' sweep -------------------------------------


async def test_a_broken_user_does_not_hold_up_the_sweep_of_others(clock: FakeClock) -> None:
    adapter = FastFaultyAdapter()
    async with create_session_store(
        adapter, clock=clock, default_ttl=60, expire_after=1000, max_restarts=0, restart_window=60
    ) as store:
        sweeper = store._runtime.sweeper
        # "a" has the oldest candidates of both phases: the sweep meets it first.
        a_suspended = await store.resolve(user_id="a", workspace_id="x")
        clock.advance(61)
        await sweeper.sweep_once()
        c_suspended = await store.resolve(user_id="c")
        clock.advance(61)
        await sweeper.sweep_once()
        clock.advance(1)
        a_active = await store.resolve(user_id="a", workspace_id="y")
        clock.advance(1)
        b_active = await store.resolve(user_id="b")
        clock.advance(1200)
        adapter.fail("commit", RuntimeError("boom"))
        with pytest.raises(ActorFailedError):
            await store.touch(a_active.id)  # "a" is now past its restart intensity
        with pytest.raises(ActorFailedError):
            await sweeper.sweep_once()
        # Everyone else was swept, and expiry ran too.
        states = {
            s.id: s.state
            for s in await store.find(limit=10)
            if s.id in {a_suspended.id, c_suspended.id, a_active.id, b_active.id}
        }
        assert states == {
            a_suspended.id: SessionState.SUSPENDED,
            c_suspended.id: SessionState.EXPIRED,
            a_active.id: SessionState.CREATED,
            b_active.id: SessionState.SUSPENDED,
        }
        assert store.statistics().sessions_suspended == 3
        assert store.statistics().sessions_expired == 1


async def test_an_adapter_error_for_one_user_does_not_hold_up_the_sweep(
    clock: FakeClock,
) -> None:
    adapter = FastFaultyAdapter()
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        first = await store.resolve(user_id="a")
        clock.advance(1)
        others = [await store.resolve(user_id=f"u{i}") for i in range(5)]
        clock.advance(61)
        adapter.fail("commit", AdapterError("row locked"))
        with pytest.raises(AdapterError):
            await store.sweep_stale()
        for session in others:
            stored = await store.get(session.id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED
        unswept = await store.get(first.id)
        assert unswept == first
        # The next sweep gets the one that failed.
        assert [s.id for s in await store.sweep_stale()] == [first.id]


async def test_the_loop_keeps_sweeping_others_while_one_user_is_broken(clock: FakeClock) -> None:
    adapter = FastFaultyAdapter()
    async with create_session_store(
        adapter,
        clock=clock,
        default_ttl=60,
        sweep_interval=0.01,
        max_restarts=0,
        restart_window=3600,
    ) as store:
        broken = await store.resolve(user_id="a")
        clock.advance(1)
        other = await store.resolve(user_id="b")
        adapter.fail("commit", RuntimeError("boom"))
        with pytest.raises(ActorFailedError):
            await store.update_metadata(broken.id, {"x": 1})
        async with store.subscribe(kinds=["suspended"]) as events:
            clock.advance(61)
            with anyio.fail_after(5):
                event = await events.__anext__()
        assert event.session.id == other.id
