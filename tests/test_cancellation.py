"""Invariant 4 under cancellation: a cancelled call changes nothing or completes; never half.

Cancellation reaches calls at every point where they wait: the initial checkpoint, the id
lookup, the adapter load, the mailbox (queued behind a blocked commit, or waiting for room in a
full mailbox) and the commit itself. Afterwards the actor still serves and the state is whole.
Each metadata update below writes two keys, so "half applied" would show as one key without
the other.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _faults import SlowAdapter, make_adapter
from assistant_sessions import (
    Session,
    SessionStore,
    StoreClosedError,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "slow"])
def adapter_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def _pair(i: int | str) -> dict[str, int | str]:
    return {f"{i}-a": i, f"{i}-b": i}


async def _metadata(store: SessionStore, session_id: str) -> dict[str, Any]:
    session = await store.get(session_id)
    assert session is not None
    return dict(session.metadata)


async def _assert_serves(store: SessionStore, session_id: str) -> None:
    with anyio.fail_after(10):
        after = await store.update_metadata(session_id, {"after": True})
    assert after.metadata["after"] is True
    stats = store.statistics()
    assert (stats.busy_actors, stats.mailbox_depth_total, stats.in_flight) == (0, 0, 0)


async def test_cancelled_at_the_first_checkpoint_changes_nothing(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        calls = [
            lambda: store.update_metadata(session.id, _pair(1)),
            lambda: store.attach_surface(session.id, "web"),
            lambda: store.expire(session.id),
            lambda: store.resolve(user_id="new-user"),
            lambda: store.create(user_id="u", id="never"),
        ]
        for call in calls:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await call()
            assert scope.cancelled_caught
        assert await store.get(session.id) == session
        assert await store.find(user_id="new-user") == []
        assert await store.get("never") is None
        await _assert_serves(store, session.id)


async def test_cancelled_during_the_id_lookup_changes_nothing(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("get")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def call() -> None:
                    with scope:
                        await store.update_metadata(session.id, _pair(1))

                tg.start_soon(call)
                await gate.wait_for(1)
                scope.cancel()
        assert scope.cancelled_caught
        adapter.unblock("get")
        assert await _metadata(store, session.id) == {}
        await _assert_serves(store, session.id)


async def test_queued_call_cancelled_behind_a_blocked_commit_is_skipped(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("commit")
        first: list[Session] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def holder() -> None:
                    first.append(await store.update_metadata(session.id, _pair("first")))

                tg.start_soon(holder)
                await gate.wait_for(1)
                # Queued behind the blocked commit: given up by a timeout, and by a cancel.
                with anyio.move_on_after(0.01) as timed_out:
                    await store.update_metadata(session.id, _pair("timeout"))
                assert timed_out.cancelled_caught
                scope = anyio.CancelScope()

                async def queued() -> None:
                    with scope:
                        await store.update_metadata(session.id, _pair("cancelled"))

                tg.start_soon(queued)
                await anyio.wait_all_tasks_blocked()
                assert store.statistics().mailbox_depth_total == 2
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                adapter.unblock("commit")
        assert scope.cancelled_caught
        assert first[0].metadata == _pair("first")
        # Only the holder's commit and nothing for the abandoned requests.
        assert await _metadata(store, session.id) == _pair("first")
        assert adapter.calls["commit"] == 2  # the create, and the holder's update
        await _assert_serves(store, session.id)


async def test_cancelled_while_its_commit_is_in_flight_returns_at_once_and_completes_whole(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("commit")
        scope = anyio.CancelScope()
        finished = anyio.Event()

        async def call() -> None:
            with scope:
                await store.update_metadata(session.id, _pair(1))
            finished.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await gate.wait_for(1)
                scope.cancel()
                # The caller gets control back at once, while its commit is still in flight...
                await finished.wait()
                assert scope.cancelled_caught
                assert adapter.applied == 1
                adapter.unblock("commit")
                await anyio.wait_all_tasks_blocked()
        # ...and the actor completes the commit whole on its own time.
        assert adapter.applied == 2
        assert await _metadata(store, session.id) == _pair(1)
        await _assert_serves(store, session.id)


async def test_cancelled_while_its_batch_is_committing_completes_whole(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        first_gate = adapter.block("commit")
        scope = anyio.CancelScope()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, _pair("inline"))
                await first_gate.wait_for(1)

                async def queued() -> None:
                    with scope:
                        await store.update_metadata(session.id, _pair("batched"))

                tg.start_soon(queued)
                tg.start_soon(store.update_metadata, session.id, _pair("batched-too"))
                await anyio.wait_all_tasks_blocked()
                # Let the first commit through; the drain task's batch commit is held next.
                batch_gate = adapter.block("commit")
                first_gate.open()
                await batch_gate.wait_for(1)
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                adapter.unblock("commit")
        # The caller gave up, but its request was already part of a batch being committed.
        assert scope.cancelled_caught
        assert await _metadata(store, session.id) == {
            **_pair("inline"),
            **_pair("batched"),
            **_pair("batched-too"),
        }
        await _assert_serves(store, session.id)


async def test_executor_cancelled_while_loading_hands_the_queue_on(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="u")
        # Retire the actor twice over, so the next call must load the user from the adapter.
        store._registry.retire_idle()
        store._registry.retire_idle()
        assert store.statistics().live_actors == 0
        gate = adapter.block("load")
        scope = anyio.CancelScope()
        done: list[Session] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def executor() -> None:
                    with scope:
                        await store.update_metadata(session.id, _pair("loader"))

                async def queued(i: int) -> None:
                    done.append(await store.update_metadata(session.id, _pair(i)))

                tg.start_soon(executor)
                await gate.wait_for(1)
                for i in range(5):
                    tg.start_soon(queued, i)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                adapter.unblock("load")
        assert scope.cancelled_caught
        assert len(done) == 5
        expected: dict[str, Any] = {}
        for i in range(5):
            expected.update(_pair(i))
        assert await _metadata(store, session.id) == expected
        await _assert_serves(store, session.id)


async def test_cancelled_while_waiting_for_mailbox_room_changes_nothing(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, mailbox_size=1) as store:
        session = await store.create(user_id="u")
        gate = adapter.block("commit")
        scope = anyio.CancelScope()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.update_metadata, session.id, _pair("inline"))
                await gate.wait_for(1)
                tg.start_soon(store.update_metadata, session.id, _pair("buffered"))
                await anyio.wait_all_tasks_blocked()

                async def waiting() -> None:
                    with scope:
                        await store.update_metadata(session.id, _pair("waiting"))

                tg.start_soon(waiting)
                await anyio.wait_all_tasks_blocked()
                assert store.statistics().mailbox_depth_total == 2
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                assert store.statistics().mailbox_depth_total == 1
                adapter.unblock("commit")
        assert scope.cancelled_caught
        assert await _metadata(store, session.id) == {**_pair("inline"), **_pair("buffered")}
        await _assert_serves(store, session.id)


@pytest.mark.parametrize("seed", range(3))
async def test_cancel_storm_leaves_every_call_whole_or_absent(
    adapter_kind: str, clock: FakeClock, seed: int
) -> None:
    rng = random.Random(seed)
    adapter = make_adapter(adapter_kind)
    calls = 200
    async with create_session_store(adapter, clock=clock, mailbox_size=8) as store:
        session = await store.create(user_id="u")
        scopes = [anyio.CancelScope() for _ in range(calls)]
        completed: set[int] = set()
        resolved: dict[int, str] = {}

        async def one(i: int) -> None:
            with scopes[i]:
                if i % 5 == 0:
                    # Resolves of a few new users, cancelled at random too.
                    resolved[i] = (await store.resolve(user_id=f"new-{i % 3}")).id
                else:
                    await store.update_metadata(session.id, _pair(i))
                completed.add(i)

        async def canceller() -> None:
            for i in rng.sample(range(calls), calls // 2):
                for _ in range(rng.randrange(4)):
                    await anyio.lowlevel.checkpoint()
                scopes[i].cancel()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(one, i)
                tg.start_soon(canceller)

        metadata = await _metadata(store, session.id)
        for i in range(calls):
            if i % 5 == 0:
                continue
            has_a, has_b = f"{i}-a" in metadata, f"{i}-b" in metadata
            assert has_a == has_b, f"call {i} half applied"
            if i in completed:
                assert has_a, f"call {i} returned but its update is missing"
        assert len(metadata) % 2 == 0
        for user in range(3):
            sessions = await store.find(user_id=f"new-{user}")
            assert len(sessions) <= 1
            returned = {sid for i, sid in resolved.items() if i % 3 == user}
            assert returned <= {s.id for s in sessions}
        await _assert_serves(store, session.id)


async def test_leaving_the_store_drains_calls_in_flight(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    results: dict[int, Session] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with create_session_store(adapter, clock=clock) as store:
                session = await store.create(user_id="u")
                gate = adapter.block("commit")

                async def call(i: int) -> None:
                    results[i] = await store.update_metadata(session.id, _pair(i))

                for i in range(20):
                    tg.start_soon(call, i)
                await gate.wait_for(1)
                await anyio.wait_all_tasks_blocked()
                assert store.statistics().in_flight == 20

                async def release() -> None:
                    # Runs only once the exit below is waiting for the drain.
                    await anyio.wait_all_tasks_blocked()
                    adapter.unblock("commit")

                tg.start_soon(release)
            # The exit returned only after every call in flight had completed.
            assert len(results) == 20
    assert adapter.used_while_closed == []
    expected: dict[str, Any] = {}
    for i in range(20):
        expected.update(_pair(i))
    stored = adapter.inner.get_nowait(session.id)
    assert stored is not None
    assert dict(stored.metadata) == expected
    with pytest.raises(StoreClosedError):
        await store.touch(session.id)


async def test_leaving_the_store_drains_calls_still_looking_up_their_session(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    outcomes: dict[int, object] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with create_session_store(adapter, clock=clock) as store:
                session = await store.create(user_id="u")
                adapter.block("get")

                async def call(i: int) -> None:
                    try:
                        outcomes[i] = await store.update_metadata(session.id, _pair(i))
                    except StoreClosedError as exc:
                        outcomes[i] = exc

                for i in range(5):
                    tg.start_soon(call, i)
                await anyio.wait_all_tasks_blocked()

                async def release() -> None:
                    await anyio.wait_all_tasks_blocked()
                    adapter.unblock("get")

                tg.start_soon(release)
            # Whatever was in flight when the exit began is finished when the exit returns.
            assert len(outcomes) == 5
    assert adapter.used_while_closed == []
    stored = adapter.inner.get_nowait(session.id)
    assert stored is not None
    for i, outcome in outcomes.items():
        # Each call either completed before the store closed, or was refused whole.
        if isinstance(outcome, Session):
            assert outcome.metadata[f"{i}-a"] == i
            assert stored.metadata[f"{i}-a"] == i
        else:
            assert isinstance(outcome, StoreClosedError)
            assert f"{i}-a" not in stored.metadata


async def test_leaving_the_store_waits_for_reads_in_flight(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    found: list[object] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with create_session_store(adapter, clock=clock) as store:
                session = await store.create(user_id="u")
                adapter.block("find")
                adapter.block("get")

                async def find() -> None:
                    found.append(await store.find(user_id="u"))

                async def get() -> None:
                    found.append(await store.get(session.id))

                tg.start_soon(find)
                tg.start_soon(get)
                await anyio.wait_all_tasks_blocked()

                async def release() -> None:
                    await anyio.wait_all_tasks_blocked()
                    adapter.unblock("find")
                    adapter.unblock("get")

                tg.start_soon(release)
            assert len(found) == 2
    assert adapter.used_while_closed == []
    assert [session] in found
    assert session in found
