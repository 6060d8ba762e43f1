"""Two stores over one adapter, as two processes over one database.

Each store has its own actors and caches; only the adapter's versioned per-user commit keeps
them consistent. Each store reaches the shared in-memory adapter through its own wrapper
(which counts version conflicts): ``fast`` keeps the synchronous fast path, ``slow`` has none
and yields on every call, so the two stores' turns interleave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from _faults import FastFaultyAdapter, SlowAdapter, gather
from assistant_sessions import (
    InMemorySessionStoreAdapter,
    Session,
    SessionNotFoundError,
    SessionState,
    SessionStore,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["fast", "slow"])
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@asynccontextmanager
async def two_stores(
    kind: str, clock: FakeClock, **options: Any
) -> AsyncIterator[
    tuple[SessionStore, SessionStore, list[SlowAdapter], InMemorySessionStoreAdapter]
]:
    shared = InMemorySessionStoreAdapter()
    wrapper = FastFaultyAdapter if kind == "fast" else SlowAdapter
    adapters = [wrapper(shared), wrapper(shared)]
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            create_session_store(adapters[0], clock=clock, **options)
        )
        b = await stack.enter_async_context(
            create_session_store(adapters[1], clock=clock, **options)
        )
        yield a, b, adapters, shared


async def _warm(a: SessionStore, b: SessionStore, users: list[str]) -> None:
    """Give both stores a live actor for each user, with ``a``'s cache one version behind."""
    for user in users:
        await a.resolve(user_id=user, workspace_id="warm")
        await b.resolve(user_id=user, workspace_id="warm")


async def test_concurrent_resolves_through_two_stores_make_one_session_per_user(
    kind: str, clock: FakeClock
) -> None:
    users = [f"user-{i}" for i in range(10)]
    async with two_stores(kind, clock) as (a, b, adapters, shared):
        await _warm(a, b, users)

        async def one(i: int) -> Session:
            store = a if i % 2 else b
            return await store.resolve(user_id=users[i % len(users)], surface_id=f"s{i % 3}")

        results = await gather(400, one)
        for user in users:
            ids = {s.id for s in results if s.user_id == user}
            assert len(ids) == 1
            sessions = [s for s in await a.find(user_id=user) if s.workspace_id is None]
            assert [s.id for s in sessions] == list(ids)
        # The stale caches really met version conflicts, and callers never saw them.
        assert sum(adapter.conflicts for adapter in adapters) > 0
        for store in (a, b):
            assert store.statistics().operations["resolve"].errors == 0
        assert len(shared) == 2 * len(users)


async def test_no_metadata_update_is_lost_across_stores(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock) as (a, b, adapters, _):
        session = await a.create(user_id="u")
        await b.touch(session.id)
        await gather(300, lambda i: (a if i % 2 else b).update_metadata(session.id, {f"k{i}": i}))
        for store in (a, b):
            stored = await store.get(session.id)
            assert stored is not None
            assert dict(stored.metadata) == {f"k{i}": i for i in range(300)}
        assert sum(adapter.conflicts for adapter in adapters) > 0


async def test_no_surface_is_lost_across_stores(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock, max_surfaces=1000) as (a, b, _, _):
        session = await a.create(user_id="u")
        await b.touch(session.id)
        await gather(200, lambda i: (a if i % 2 else b).attach_surface(session.id, f"s{i}"))
        stored = await b.get(session.id)
        assert stored is not None
        assert sorted(stored.attached_surfaces) == sorted(f"s{i}" for i in range(200))


async def test_a_session_created_by_the_other_store_is_found_by_a_live_actor(
    kind: str, clock: FakeClock
) -> None:
    async with two_stores(kind, clock) as (a, b, _, _):
        await a.resolve(user_id="u", workspace_id="warm")  # a's actor of "u" is live
        created = await b.create(user_id="u", workspace_id="other")
        clock.advance(1)
        touched = await a.touch(created.id)
        assert touched.id == created.id
        assert touched.state is SessionState.ACTIVE
        assert touched.last_activity_at == clock()


async def test_an_attach_is_not_swallowed_by_a_stale_cache(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock) as (a, b, _, _):
        session = await a.create(user_id="u", initial_surface_id="web")
        await b.detach_surface(session.id, "web")
        # a's cache still shows "web" attached; the store must not take its word for it.
        attached = await a.attach_surface(session.id, "web")
        assert attached.attached_surfaces == ("web",)
        stored = await b.get(session.id)
        assert stored is not None
        assert stored.attached_surfaces == ("web",)


async def test_a_no_op_does_not_return_a_stale_snapshot(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock) as (a, b, _, _):
        session = await a.create(user_id="u", initial_surface_id="web")
        await b.update_metadata(session.id, {"from": "b"})
        # Attaching an attached surface changes nothing, and returns the session as stored.
        same = await a.attach_surface(session.id, "web")
        assert same.metadata == {"from": "b"}
        assert same == await a.get(session.id)
        gone = await a.detach_surface(session.id, "never-attached")
        assert gone.metadata == {"from": "b"}


async def test_errors_are_not_computed_from_a_stale_cache(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock, max_surfaces=1) as (a, b, _, _):
        session = await a.create(user_id="u", initial_surface_id="web")
        await b.detach_surface(session.id, "web")
        # With one surface allowed and none attached, attaching is valid.
        attached = await a.attach_surface(session.id, "phone")
        assert attached.attached_surfaces == ("phone",)


async def test_expiry_by_the_other_store_is_respected(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock) as (a, b, _, _):
        first = await a.resolve(user_id="u")
        await b.expire(first.id)
        second = await a.resolve(user_id="u")
        assert second.id != first.id
        stored = await a.get(first.id)
        assert stored is not None
        assert stored.state is SessionState.EXPIRED
        assert {s.state for s in await b.find(user_id="u")} == {
            SessionState.EXPIRED,
            SessionState.CREATED,
        }


async def test_a_deletion_by_the_other_store_is_seen(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock) as (a, b, _, _):
        session = await a.resolve(user_id="u")
        await b.delete(session.id)
        with pytest.raises(SessionNotFoundError):
            await a.touch(session.id)
        fresh = await a.resolve(user_id="u")
        assert fresh.id != session.id
        assert [s.id for s in await b.find(user_id="u")] == [fresh.id]


async def test_a_sweep_with_a_stale_cache_spares_a_session_the_other_store_touched(
    clock: FakeClock,
) -> None:
    async with two_stores("slow", clock) as (a, b, adapters, _):
        session = await a.resolve(user_id="u")
        await b.touch(session.id)  # b's actor is live too
        clock.advance(7200)
        gate = adapters[0].block("due")
        swept: list[list[Session]] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def sweep() -> None:
                    swept.append(await a.sweep_stale(3600))

                tg.start_soon(sweep)
                # a's sweep has read the session as a candidate; b touches it meanwhile.
                await gate.wait_for(1)
                await b.touch(session.id)
                adapters[0].unblock("due")
        assert swept == [[]]
        stored = await a.get(session.id)
        assert stored is not None
        assert stored.state is SessionState.ACTIVE
        assert stored.last_activity_at == clock()


async def test_a_resolve_after_the_other_store_created_reuses_its_session(
    kind: str, clock: FakeClock
) -> None:
    async with two_stores(kind, clock) as (a, b, adapters, _):
        await a.resolve(user_id="u", workspace_id="warm")  # a's cache of "u" goes stale next
        created = await b.resolve(user_id="u", surface_id="web")
        reused = await a.resolve(user_id="u", surface_id="web")
        assert reused.id == created.id
        assert adapters[0].conflicts == 1
        assert len(await a.find(user_id="u")) == 2


async def test_a_sweep_suspends_what_the_other_store_created(kind: str, clock: FakeClock) -> None:
    async with two_stores(kind, clock, default_ttl=60) as (a, b, _, _):
        await a.resolve(user_id="u", workspace_id="warm")
        created = await b.create(user_id="u", workspace_id="other")
        clock.advance(61)
        swept = await a.sweep_stale()
        assert created.id in {s.id for s in swept}
        stored = await b.get(created.id)
        assert stored is not None
        assert stored.state is SessionState.SUSPENDED
