"""Lifecycle events: every transition once, in per-user order; slow subscribers cannot stall."""

from __future__ import annotations

import random
from collections import defaultdict

import anyio
import pytest

from assistant_sessions import (
    EventKind,
    InvalidInputError,
    InvalidTypeError,
    SessionEvent,
    SessionStore,
    StoreClosedError,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_each_kind_of_transition_is_published(store: SessionStore, clock: FakeClock) -> None:
    async with store.subscribe() as events:
        session = await store.create(user_id="u", initial_surface_id="web")
        await store.touch(session.id)
        await store.touch(session.id)  # active stays active: no event
        await store.attach_surface(session.id, "slack")
        await store.attach_surface(session.id, "slack")  # idempotent: no event
        await store.detach_surface(session.id, "web")
        await store.update_metadata(session.id, {"locale": "en"})
        clock.advance(7200)
        await store.sweep_stale()
        await store.expire(session.id)
        await store.delete(session.id)
        got = [(e.kind, e.surface_id) for e in events.receive_nowait()]
    assert got == [
        (EventKind.CREATED, None),
        (EventKind.SURFACE_ATTACHED, "web"),
        (EventKind.ACTIVATED, None),
        (EventKind.SURFACE_ATTACHED, "slack"),
        (EventKind.SURFACE_DETACHED, "web"),
        (EventKind.METADATA_UPDATED, None),
        (EventKind.SUSPENDED, None),
        (EventKind.EXPIRED, None),
        (EventKind.DELETED, None),
    ]


async def test_event_carries_snapshot_and_time(store: SessionStore, clock: FakeClock) -> None:
    async with store.subscribe() as events:
        session = await store.create(user_id="u")
        clock.advance(5)
        touched = await store.touch(session.id)
        created, activated = events.receive_nowait()
    assert created.session == session
    assert created.at == session.created_at
    assert activated.session == touched
    assert activated.at == clock()


async def test_filters_by_user_and_kind(store: SessionStore) -> None:
    async with (
        store.subscribe(user_id="a") as only_a,
        store.subscribe(kinds=["created"]) as only_created,
    ):
        a = await store.create(user_id="a")
        b = await store.create(user_id="b")
        await store.touch(a.id)
        await store.touch(b.id)
        assert [(e.session.user_id, e.kind) for e in only_a.receive_nowait()] == [
            ("a", EventKind.CREATED),
            ("a", EventKind.ACTIVATED),
        ]
        assert [e.session.id for e in only_created.receive_nowait()] == [a.id, b.id]


async def test_concurrent_workload_every_transition_once_in_per_user_order() -> None:
    async with create_session_store() as store:
        subscription = store.subscribe(buffer_size=1_000_000)
        users = [f"user-{i}" for i in range(20)]

        async def client(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(50):
                user = rnd.choice(users)
                session = await store.resolve(user_id=user, surface_id=f"s{rnd.randrange(3)}")
                choice = rnd.random()
                if choice < 0.3:
                    await store.update_metadata(session.id, {f"k{seed}": rnd.random()})
                elif choice < 0.5:
                    await store.attach_surface(session.id, f"s{rnd.randrange(5)}")

        async with anyio.create_task_group() as tg:
            for seed in range(32):
                tg.start_soon(client, seed)
        events = subscription.receive_nowait()
        subscription.close()
        stats = store.statistics()
        final = {s.id: s for u in users for s in await store.find(user_id=u)}

    assert subscription.missed == 0
    by_session: defaultdict[str, list[SessionEvent]] = defaultdict(list)
    for event in events:
        by_session[event.session.id].append(event)
    # Replaying each session's events in order rebuilds exactly its final state.
    for session_id, session in final.items():
        history = by_session[session_id]
        assert history[0].kind is EventKind.CREATED
        surfaces: list[str] = []
        for event in history:
            if event.kind is EventKind.SURFACE_ATTACHED:
                assert event.surface_id not in surfaces
                surfaces.append(event.surface_id or "")
            elif event.kind is EventKind.SURFACE_DETACHED:
                surfaces.remove(event.surface_id or "")
        assert tuple(surfaces) == session.attached_surfaces
        assert history[-1].session.metadata == session.metadata
        snapshots = [e.session.last_activity_at for e in history]
        assert snapshots == sorted(snapshots)
    assert {e.session.id for e in events} == set(final)
    metadata_events = sum(1 for e in events if e.kind is EventKind.METADATA_UPDATED)
    assert metadata_events == stats.operations["update_metadata"].count


async def test_slow_subscriber_drops_oldest_and_learns_how_many(store: SessionStore) -> None:
    async with store.subscribe(buffer_size=3) as events:
        sessions = [await store.create(user_id=f"u{i}") for i in range(10)]
        assert events.missed == 7
        first = await events.__anext__()
        assert first.session.id == sessions[7].id
        assert first.missed_before == 7
        rest = events.receive_nowait()
        assert [e.session.id for e in rest] == [sessions[8].id, sessions[9].id]
        assert all(e.missed_before == 0 for e in rest)


async def test_subscriber_that_never_reads_does_not_block_the_store(
    store: SessionStore,
) -> None:
    subscription = store.subscribe(buffer_size=1)
    with anyio.fail_after(10):
        for i in range(2000):
            await store.resolve(user_id=f"u{i % 50}")
    assert subscription.missed > 0
    subscription.close()
    assert store.statistics().subscribers == 0


async def test_iteration_waits_for_events_and_ends_on_close(store: SessionStore) -> None:
    received: list[EventKind] = []
    subscription = store.subscribe()

    async def reader() -> None:
        async for event in subscription:
            received.append(event.kind)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        session = await store.create(user_id="u")
        await store.expire(session.id)
        await anyio.wait_all_tasks_blocked()
        subscription.close()
    assert received == [EventKind.CREATED, EventKind.EXPIRED]


async def test_store_exit_ends_iteration_after_buffered_events() -> None:
    async with create_session_store() as store:
        subscription = store.subscribe()
        await store.create(user_id="u")
    assert [e.kind async for e in subscription] == [EventKind.CREATED]
    with pytest.raises(StoreClosedError):
        store.subscribe()


async def test_bad_subscription_arguments(store: SessionStore) -> None:
    with pytest.raises(InvalidInputError):
        store.subscribe(buffer_size=0)
    with pytest.raises(InvalidTypeError):
        store.subscribe(buffer_size="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        store.subscribe(kinds=["exploded"])
    assert store.statistics().subscribers == 0
