"""Surface slots: a surface is attached to at most one live session of a user."""

from __future__ import annotations

import anyio
import pytest

from assistant_sessions import SessionStore, create_session_store

pytestmark = pytest.mark.anyio


async def test_attach_moves_the_surface(store: SessionStore) -> None:
    a = await store.create(user_id="u", workspace_id="w1", initial_surface_id="slack")
    b = await store.create(user_id="u", workspace_id="w2")
    moved = await store.attach_surface(b.id, "slack")
    assert moved.attached_surfaces == ("slack",)
    a_now = await store.get(a.id)
    assert a_now is not None
    assert a_now.attached_surfaces == ()


async def test_create_and_resolve_claim_their_surface(store: SessionStore) -> None:
    a = await store.create(user_id="u", workspace_id="w1", initial_surface_id="web")
    b = await store.resolve(user_id="u", workspace_id="w2", surface_id="web")
    assert b.id != a.id
    assert b.attached_surfaces == ("web",)
    a_now = await store.get(a.id)
    assert a_now is not None
    assert a_now.attached_surfaces == ()


async def test_other_users_and_expired_sessions_keep_theirs(store: SessionStore) -> None:
    other = await store.create(user_id="v", initial_surface_id="web")
    gone = await store.create(user_id="u", initial_surface_id="web")
    await store.expire(gone.id)
    mine = await store.create(user_id="u", workspace_id="w", initial_surface_id="web")
    assert mine.attached_surfaces == ("web",)
    for session_id in (other.id, gone.id):
        session = await store.get(session_id)
        assert session is not None
        assert session.attached_surfaces == ("web",)


async def test_turned_off_surfaces_may_be_shared() -> None:
    async with create_session_store(exclusive_surfaces=False) as store:
        a = await store.create(user_id="u", initial_surface_id="web")
        b = await store.create(user_id="u", initial_surface_id="web")
        assert (await store.get(a.id)) is not None
        assert [s.attached_surfaces for s in await store.find(user_id="u")] == [("web",)] * 2
        assert b.attached_surfaces == ("web",)


async def test_concurrent_attaches_of_one_surface_end_on_exactly_one_session(
    store: SessionStore,
) -> None:
    sessions = [await store.create(user_id="u", workspace_id=f"w{i}") for i in range(20)]
    async with anyio.create_task_group() as tg:
        for round_ in range(10):
            for session in sessions[round_ % 3 :: 2]:
                tg.start_soon(store.attach_surface, session.id, "phone")
    holders = [s for s in await store.find(user_id="u") if "phone" in s.attached_surfaces]
    assert len(holders) == 1
