"""Lifecycle completion: created sessions are swept, expiry and purging by age, explicit delete."""

from __future__ import annotations

import pytest

from assistant_sessions import (
    SessionNotFoundError,
    SessionState,
    SessionStore,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_sweep_suspends_created_sessions_older_than_ttl(
    store: SessionStore, clock: FakeClock
) -> None:
    old = await store.create(user_id="u")
    clock.advance(3000)
    young = await store.create(user_id="v")
    clock.advance(1000)  # old is 4000 s idle, young 1000 s; default ttl is 3600
    swept = await store.sweep_stale()
    assert [s.id for s in swept] == [old.id]
    assert swept[0].state is SessionState.SUSPENDED
    assert swept[0].state_changed_at == clock()
    still = await store.get(young.id)
    assert still is not None
    assert still.state is SessionState.CREATED


async def test_expire_after_and_purge_after() -> None:
    clock = FakeClock()
    async with create_session_store(
        clock=clock, default_ttl=60, expire_after=600, purge_after=3600
    ) as store:
        sweeper = store._runtime.sweeper
        session = await store.resolve(user_id="u")
        await store.touch(session.id)
        clock.advance(61)
        suspended, expired, purged = await sweeper.sweep_once()
        assert [s.id for s in suspended] == [session.id]
        assert (expired, purged) == ([], [])
        clock.advance(599)  # suspended for 599 s: not yet
        assert (await sweeper.sweep_once())[1] == []
        clock.advance(2)
        _, expired, _ = await sweeper.sweep_once()
        assert [(s.id, s.state) for s in expired] == [(session.id, SessionState.EXPIRED)]
        clock.advance(3601)
        *_, purged = await sweeper.sweep_once()
        assert [s.id for s in purged] == [session.id]
        assert await store.get(session.id) is None
        assert await store.find(user_id="u") == []
        stats = store.statistics()
        assert (stats.sessions_suspended, stats.sessions_expired, stats.sessions_purged) == (
            1,
            1,
            1,
        )
        # The user resolves again: a new session, the purged one is gone for good.
        again = await store.resolve(user_id="u")
        assert again.id != session.id


async def test_purge_spares_recently_expired_and_live(clock: FakeClock) -> None:
    async with create_session_store(clock=clock, purge_after=100) as store:
        early = await store.create(user_id="u")
        await store.expire(early.id)
        clock.advance(50)
        late = await store.create(user_id="u")
        await store.expire(late.id)
        live = await store.create(user_id="u")
        clock.advance(60)
        *_, purged = await store._runtime.sweeper.sweep_once()
        assert [s.id for s in purged] == [early.id]
        assert {s.id for s in await store.find(user_id="u")} == {late.id, live.id}


async def test_delete_removes_any_state(store: SessionStore) -> None:
    a = await store.create(user_id="u", metadata={"k": 1})
    b = await store.create(user_id="u")
    await store.expire(b.id)
    assert await store.delete(a.id) == a
    deleted_b = await store.delete(b.id)
    assert deleted_b.state is SessionState.EXPIRED
    assert await store.get(a.id) is None
    assert await store.find(user_id="u") == []
    with pytest.raises(SessionNotFoundError):
        await store.delete(a.id)
    with pytest.raises(SessionNotFoundError):
        await store.touch(a.id)


async def test_deleted_id_can_be_reused(store: SessionStore) -> None:
    await store.create(user_id="u", id="fixed")
    await store.delete("fixed")
    again = await store.create(user_id="v", id="fixed")
    assert again.user_id == "v"
