"""sweep_stale: which sessions a sweep suspends, with the default and explicit TTLs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from assistant_sessions import SessionState, SessionStore, create_session_store
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def _active(store: SessionStore, session_id: str, user_id: str = "u1") -> None:
    await store.create(user_id=user_id, id=session_id)
    await store.touch(session_id)


async def test_default_ttl_is_one_hour(store: SessionStore, clock: FakeClock) -> None:
    await _active(store, "s1")
    clock.advance(3599)
    assert await store.sweep_stale() == []
    # Exactly one hour is not *older* than one hour.
    clock.advance(1)
    assert await store.sweep_stale() == []
    now = clock.advance(1)
    [swept] = await store.sweep_stale()
    assert swept.id == "s1"
    assert swept.state is SessionState.SUSPENDED
    assert swept.state_changed_at == now
    assert await store.get("s1") == swept


@pytest.mark.parametrize("ttl", [60, 60.0, timedelta(minutes=1)], ids=["int", "float", "td"])
async def test_configured_default_ttl(clock: FakeClock, ttl: float | timedelta) -> None:
    async with create_session_store(clock=clock, default_ttl=ttl) as store:
        await _active(store, "s1")
        clock.advance(60)
        assert await store.sweep_stale() == []
        clock.advance(0.001)
        assert [s.id for s in await store.sweep_stale()] == ["s1"]


@pytest.mark.parametrize(
    "ttl", [30, 30.0, timedelta(seconds=30)], ids=["int", "float", "timedelta"]
)
async def test_explicit_ttl_overrides_the_default(
    store: SessionStore, clock: FakeClock, ttl: float | timedelta
) -> None:
    await _active(store, "s1")
    clock.advance(31)
    assert [s.id for s in await store.sweep_stale(ttl)] == ["s1"]


async def test_fractional_ttl(store: SessionStore, clock: FakeClock) -> None:
    await _active(store, "s1")
    clock.advance(0.25)
    assert await store.sweep_stale(0.5) == []
    clock.advance(0.5)
    assert [s.id for s in await store.sweep_stale(0.5)] == ["s1"]


async def test_only_stale_active_sessions_are_suspended_and_returned(
    store: SessionStore, clock: FakeClock
) -> None:
    await _active(store, "old", "u1")
    await _active(store, "old-other-user", "u2")
    await _active(store, "already-suspended", "u1")
    clock.advance(100)
    await store.sweep_stale(50)  # suspends every session above
    await _active(store, "expired", "u2")
    await store.expire("expired")
    await store.touch("old")
    await store.touch("old-other-user")
    clock.advance(100)
    await _active(store, "fresh", "u1")
    await store.create(user_id="u1", id="fresh-created")
    before = {s.id: s for s in await store.find()}

    swept = await store.sweep_stale(50)

    assert sorted(s.id for s in swept) == ["old", "old-other-user"]
    after = {s.id: s for s in await store.find()}
    for session in swept:
        assert session.state is SessionState.SUSPENDED
        assert session.state_changed_at == clock()
        assert session.last_activity_at == before[session.id].last_activity_at
        assert after[session.id] == session
    for unchanged in ("already-suspended", "expired", "fresh", "fresh-created"):
        assert after[unchanged] == before[unchanged]


async def test_sweep_returns_nothing_when_nothing_is_stale(
    store: SessionStore, clock: FakeClock
) -> None:
    assert await store.sweep_stale() == []
    await _active(store, "s1")
    clock.advance(10)
    assert await store.sweep_stale() == []
    assert (await store.find())[0].state is SessionState.ACTIVE


async def test_a_second_sweep_finds_nothing_new(store: SessionStore, clock: FakeClock) -> None:
    for i in range(5):
        await _active(store, f"s{i}", f"u{i % 2}")
    clock.advance(61)
    assert len(await store.sweep_stale(60)) == 5
    clock.advance(61)
    assert await store.sweep_stale(60) == []


async def test_touched_session_is_not_swept(store: SessionStore, clock: FakeClock) -> None:
    await _active(store, "kept")
    await _active(store, "dropped")
    clock.advance(50)
    await store.touch("kept")
    clock.advance(50)
    assert [s.id for s in await store.sweep_stale(60)] == ["dropped"]
    kept = await store.get("kept")
    assert kept is not None
    assert kept.state is SessionState.ACTIVE


async def test_suspended_by_sweep_can_be_resumed(store: SessionStore, clock: FakeClock) -> None:
    await _active(store, "s1")
    clock.advance(61)
    await store.sweep_stale(60)
    now = clock.advance(1)
    resumed = await store.touch("s1")
    assert resumed.state is SessionState.ACTIVE
    assert resumed.state_changed_at == now
    assert await store.sweep_stale(60) == []


async def test_stale_created_sessions_are_suspended_too(
    store: SessionStore, clock: FakeClock
) -> None:
    # Issue 6: sessions left in `created` longer than the TTL are swept like active ones (the
    # original never swept them, so they leaked). Fresh created sessions stay.
    await store.create(user_id="u1", id="old-created")
    clock.advance(61)
    await store.create(user_id="u1", id="new-created")
    [swept] = await store.sweep_stale(60)
    assert swept.id == "old-created"
    assert swept.state is SessionState.SUSPENDED
    fresh = await store.get("new-created")
    assert fresh is not None
    assert fresh.state is SessionState.CREATED


async def test_sweep_covers_many_sessions_and_users(store: SessionStore, clock: FakeClock) -> None:
    stale = set()
    for i in range(300):
        await _active(store, f"s{i}", f"u{i % 7}")
        stale.add(f"s{i}")
    clock.advance(30)
    for i in range(300, 320):
        await _active(store, f"s{i}", f"u{i % 7}")
    clock.advance(31)
    swept = await store.sweep_stale(60)
    assert {s.id for s in swept} == stale
    assert len(swept) == len(stale)
    assert len(await store.find(state="active", limit=1000)) == 20
