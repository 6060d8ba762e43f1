"""Invariants 1 and 2 under load: exactly-once resolve and no lost update.

Each test runs over the in-memory adapter (turns run in the caller's task, without awaiting)
and over :class:`SlowAdapter` (no fast path, every adapter call yields: requests queue in the
mailbox and a drain task applies them in batches, one commit per batch).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _faults import SlowAdapter, gather, make_adapter
from assistant_sessions import (
    Session,
    SessionState,
    create_session_store,
    default_affinity_resolver,
    resolve_session,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

CALLS = 300


@pytest.fixture(params=["memory", "slow"])
def adapter_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def _assert_batched(adapter: Any, calls: int) -> None:
    """Over the slow adapter, queued calls must have been committed in groups."""
    if isinstance(adapter, SlowAdapter):
        assert adapter.calls["commit"] <= calls // 10, adapter.calls
        assert adapter.max_overlap == 1


async def test_concurrent_resolves_of_a_new_user_make_one_session(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock) as store:
        results = await gather(
            CALLS, lambda i: store.resolve(user_id="alice", surface_id=f"surface-{i % 7}")
        )
        ids = {s.id for s in results}
        assert len(ids) == 1
        stored = await store.find(user_id="alice")
        assert [s.id for s in stored] == list(ids)
        assert stored[0].state is SessionState.ACTIVE
        assert store.statistics().operations["resolve"].errors == 0
    _assert_batched(adapter, CALLS)


async def test_resolve_session_with_the_default_resolver_is_exactly_once(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock) as store:
        resolver = default_affinity_resolver(store)

        async def one(i: int) -> Session:
            message = {"user_id": "bob", "surface_id": f"s{i % 3}", "workspace_id": "w"}
            # Half pass the resolver explicitly, half rely on the default.
            return await resolve_session(message, store, resolver if i % 2 else None)

        results = await gather(CALLS, one)
        assert len({s.id for s in results}) == 1
        assert len(await store.find(user_id="bob")) == 1
        assert results[0].workspace_id == "w"
    _assert_batched(adapter, CALLS)


class OldestFirst:
    """A custom selector: always the oldest candidate; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.empty_calls = 0

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        self.calls += 1
        if not candidates:
            self.empty_calls += 1
            return None
        return candidates[-1]


async def test_resolve_session_with_a_custom_selector_is_exactly_once(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    selector = OldestFirst()

    class Message:
        def __init__(self, i: int) -> None:
            self.user_id = "carol"
            self.surface_id = f"s{i % 5}"
            self.workspace_id = None

    async with create_session_store(adapter, clock=clock) as store:
        results = await gather(CALLS, lambda i: resolve_session(Message(i), store, selector))
        assert len({s.id for s in results}) == 1
        assert len(await store.find(user_id="carol")) == 1
    # The selector really ran inside every turn, and saw no candidates exactly once.
    assert selector.calls >= CALLS
    assert selector.empty_calls == 1
    _assert_batched(adapter, CALLS)


async def test_concurrent_resolves_across_users_and_workspaces_make_one_each(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    users = [f"user-{u}" for u in range(20)]
    workspaces = [None, "w1", "w2"]
    keys = [(u, w) for u in users for w in workspaces] * 8
    random.Random(2).shuffle(keys)
    async with create_session_store(adapter, clock=clock) as store:
        results = await gather(
            len(keys),
            lambda i: store.resolve(
                user_id=keys[i][0], workspace_id=keys[i][1], surface_id=f"s{i % 4}"
            ),
        )
        by_key: dict[tuple[str, str | None], set[str]] = {}
        for key, session in zip(keys, results, strict=True):
            assert (session.user_id, session.workspace_id) == key
            by_key.setdefault(key, set()).add(session.id)
        assert all(len(ids) == 1 for ids in by_key.values())
        for user in users:
            stored = await store.find(user_id=user)
            assert sorted(str(s.workspace_id) for s in stored) == ["None", "w1", "w2"]
            assert {s.id for s in stored} == {next(iter(by_key[(user, w)])) for w in workspaces}


async def test_concurrent_metadata_updates_lose_nothing(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock) as store:
        session = await store.create(user_id="dave", metadata={"base": True})
        results = await gather(
            CALLS, lambda i: store.update_metadata(session.id, {f"k{i}": i, "last": i})
        )
        for i, returned in enumerate(results):
            assert returned.metadata[f"k{i}"] == i
        stored = await store.get(session.id)
        assert stored is not None
        expected = {f"k{i}": i for i in range(CALLS)}
        assert {k: v for k, v in stored.metadata.items() if k.startswith("k")} == expected
        assert stored.metadata["base"] is True
        # The merges were applied one at a time: the last applied one wrote "last".
        assert stored.metadata["last"] in range(CALLS)
    _assert_batched(adapter, CALLS)


async def test_concurrent_surface_attachments_lose_nothing(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock, max_surfaces=1000) as store:
        session = await store.create(user_id="erin")
        await gather(CALLS, lambda i: store.attach_surface(session.id, f"surface-{i}"))
        stored = await store.get(session.id)
        assert stored is not None
        assert sorted(stored.attached_surfaces) == sorted(f"surface-{i}" for i in range(CALLS))
        assert len(stored.attached_surfaces) == CALLS
    _assert_batched(adapter, CALLS)


async def test_mixed_operations_on_one_session_lose_nothing(
    adapter_kind: str, clock: FakeClock
) -> None:
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock, max_surfaces=1000) as store:
        session = await store.resolve(user_id="frank", surface_id="home")

        async def one(i: int) -> Session:
            match i % 4:
                case 0:
                    return await store.update_metadata(session.id, {f"k{i}": i})
                case 1:
                    return await store.attach_surface(session.id, f"s{i}")
                case 2:
                    return await store.touch(session.id)
                case _:
                    return await store.resolve(user_id="frank", surface_id="home")

        results = await gather(CALLS, one)
        assert {s.id for s in results} == {session.id}
        stored = await store.get(session.id)
        assert stored is not None
        assert set(stored.metadata) == {f"k{i}" for i in range(0, CALLS, 4)}
        assert set(stored.attached_surfaces) == {"home"} | {f"s{i}" for i in range(1, CALLS, 4)}
        assert len(await store.find(user_id="frank")) == 1


async def test_calls_of_other_users_do_not_wait_for_a_blocked_user(clock: FakeClock) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        gate = adapter.block("commit", user_id="slow")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: store.resolve(user_id="slow"))
            with anyio.fail_after(10):
                await gate.wait_for(1)
                # The slow user's commit is held; everyone else is served meanwhile.
                results = await gather(50, lambda i: store.resolve(user_id=f"other-{i % 10}"))
            assert len({s.id for s in results}) == 10
            assert not gate.is_open
            adapter.unblock("commit")
        assert len(await store.find(user_id="slow")) == 1


async def test_resolve_counts_in_statistics_match_calls(clock: FakeClock) -> None:
    async with create_session_store(clock=clock) as store:
        await gather(CALLS, lambda i: store.resolve(user_id=f"u{i % 3}"))
        stats = store.statistics()
        assert stats.operations["resolve"].count == CALLS
        assert stats.in_flight == 0
        assert stats.busy_actors == 0
        assert Counter(s.user_id for s in await store.find()) == {"u0": 1, "u1": 1, "u2": 1}


# -- invariant 3: a sweep never suspends a session touched after its cutoff --------------------


async def test_a_sweep_spares_a_session_touched_after_it_read_its_candidates(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        session = await store.resolve(user_id="u")
        other = await store.resolve(user_id="v")
        clock.advance(61)
        gate = adapter.block("due")
        swept: list[list[Session]] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def sweep() -> None:
                    swept.append(await store.sweep_stale())

                tg.start_soon(sweep)
                await gate.wait_for(1)  # both sessions are the sweep's candidates now
                touched = await store.touch(session.id)
                adapter.unblock("due")
        assert [s.id for s in swept[0]] == [other.id]
        stored = await store.get(session.id)
        assert stored == touched
        assert stored.state is SessionState.ACTIVE


async def test_a_sweep_queued_behind_a_touch_spares_the_touched_session(
    clock: FakeClock,
) -> None:
    adapter = SlowAdapter()
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        touched_later = await store.resolve(user_id="u", workspace_id="a")
        untouched = await store.resolve(user_id="u", workspace_id="b")
        clock.advance(61)
        gate = adapter.block("commit")
        swept: list[list[Session]] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                # The user's actor is busy; a touch, then the sweep's turn queue behind it.
                tg.start_soon(store.update_metadata, untouched.id, {"x": 1})
                await gate.wait_for(1)
                tg.start_soon(store.touch, touched_later.id)
                await anyio.wait_all_tasks_blocked()

                async def sweep() -> None:
                    swept.append(await store.sweep_stale())

                tg.start_soon(sweep)
                await anyio.wait_all_tasks_blocked()
                # The sweep read both as candidates (the touch is not committed yet).
                assert store.statistics().mailbox_depth_total == 2
                adapter.unblock("commit")
        assert [s.id for s in swept[0]] == [untouched.id]
        stored = await store.get(touched_later.id)
        assert stored is not None
        assert stored.state is SessionState.ACTIVE
        assert stored.last_activity_at == clock()


@pytest.mark.parametrize("seed", range(3))
async def test_sweep_and_touch_storm(adapter_kind: str, clock: FakeClock, seed: int) -> None:
    rng = random.Random(seed)
    adapter = make_adapter(adapter_kind)
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        start = clock()
        sessions = [
            await store.touch((await store.create(user_id=f"u{i % 20}", workspace_id=f"w{i}")).id)
            for i in range(200)
        ]
        clock.advance(61)
        now = clock()
        to_touch = rng.sample(sessions, 100)
        touched: dict[str, Session] = {}
        swept: list[Session] = []

        async def touch(session: Session) -> None:
            for _ in range(rng.randrange(6)):
                await anyio.lowlevel.checkpoint()
            touched[session.id] = await store.touch(session.id)

        async def sweep() -> None:
            swept.extend(await store.sweep_stale())

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sweep)
                for session in to_touch:
                    tg.start_soon(touch, session)

        swept_ids = {s.id for s in swept}
        for session in sessions:
            stored = await store.get(session.id)
            assert stored is not None
            result = touched.get(session.id)
            if result is None:
                assert stored.state is SessionState.SUSPENDED
                assert session.id in swept_ids
                continue
            assert stored.state is SessionState.ACTIVE
            assert stored.last_activity_at == now
            # The touch found the session active (applied before any suspension) exactly when
            # the sweep did not suspend it; a touch after the suspension reactivated it.
            touched_first = result.state_changed_at == start
            assert touched_first == (session.id not in swept_ids)
