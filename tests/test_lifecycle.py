"""Lifecycle transitions: touch, expire, and what an expired session refuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from assistant_sessions import (
    SessionError,
    SessionNotFoundError,
    SessionState,
    SessionStateError,
    SessionStore,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

Call = Callable[[SessionStore], Awaitable[Any]]


async def test_touch_created_becomes_active(store: SessionStore, clock: FakeClock) -> None:
    created = await store.create(user_id="u1", id="s1")
    now = clock.advance(10)
    touched = await store.touch("s1")
    assert touched.state is SessionState.ACTIVE
    assert touched.created_at == created.created_at
    assert touched.last_activity_at == now
    assert touched.state_changed_at == now
    assert await store.get("s1") == touched


async def test_touch_active_moves_only_last_activity(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="s1", initial_surface_id="web", metadata={"k": 1})
    activated_at = clock.advance(10)
    first = await store.touch("s1")
    now = clock.advance(25)
    second = await store.touch("s1")
    assert second.state is SessionState.ACTIVE
    assert second.state_changed_at == activated_at
    assert second.last_activity_at == now
    # Nothing else moves.
    assert (second.id, second.user_id, second.workspace_id, second.created_at) == (
        first.id,
        first.user_id,
        first.workspace_id,
        first.created_at,
    )
    assert second.attached_surfaces == first.attached_surfaces
    assert second.metadata == first.metadata


async def test_touch_suspended_becomes_active(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="s1")
    clock.advance(1)
    await store.touch("s1")
    suspended_at = clock.advance(120)
    [suspended] = await store.sweep_stale(60)
    assert suspended.state is SessionState.SUSPENDED
    assert suspended.state_changed_at == suspended_at
    now = clock.advance(5)
    touched = await store.touch("s1")
    assert touched.state is SessionState.ACTIVE
    assert touched.state_changed_at == now
    assert touched.last_activity_at == now


async def test_touch_expired_raises_and_changes_nothing(
    store: SessionStore, clock: FakeClock
) -> None:
    await store.create(user_id="u1", id="s1")
    clock.advance(3)
    expired = await store.expire("s1")
    clock.advance(3)
    with pytest.raises(SessionStateError) as info:
        await store.touch("s1")
    error = info.value
    assert isinstance(error, SessionError)
    assert error.session_id == "s1"
    assert error.current_state == SessionState.EXPIRED
    assert error.attempted_transition == "touch"
    assert "s1" in str(error)
    assert await store.get("s1") == expired


async def test_expire_from_every_live_state(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="active")
    await store.create(user_id="u1", id="suspended")
    clock.advance(1)
    await store.touch("active")
    await store.touch("suspended")
    clock.advance(100)
    await store.touch("active")
    await store.sweep_stale(50)
    await store.create(user_id="u1", id="created")
    states = {s.id: s.state for s in await store.find()}
    assert states == {
        "created": SessionState.CREATED,
        "active": SessionState.ACTIVE,
        "suspended": SessionState.SUSPENDED,
    }
    now = clock.advance(7)
    for session_id in ("created", "active", "suspended"):
        before = await store.get(session_id)
        assert before is not None
        expired = await store.expire(session_id)
        assert expired.state is SessionState.EXPIRED
        assert expired.state_changed_at == now
        assert expired.last_activity_at == before.last_activity_at
        assert await store.get(session_id) == expired


async def test_expire_is_idempotent_and_terminal(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="s1")
    clock.advance(2)
    first = await store.expire("s1")
    clock.advance(60)
    again = await store.expire("s1")
    assert again == first
    assert again.state_changed_at == first.state_changed_at
    # Terminal: a sweep does not move it and resolve does not pick it.
    clock.advance(10_000)
    assert await store.sweep_stale(1) == []
    resolved = await store.resolve(user_id="u1")
    assert resolved.id != "s1"
    assert await store.get("s1") == first


@pytest.mark.parametrize(
    ("call", "transition"),
    [
        (lambda store: store.attach_surface("s1", "phone"), "attach a surface to"),
        (lambda store: store.detach_surface("s1", "web"), "detach a surface from"),
        (lambda store: store.update_metadata("s1", {"k": 2}), "update the metadata of"),
    ],
    ids=["attach_surface", "detach_surface", "update_metadata"],
)
async def test_expired_session_refuses_changes(
    store: SessionStore, clock: FakeClock, call: Call, transition: str
) -> None:
    await store.create(user_id="u1", id="s1", initial_surface_id="web", metadata={"k": 1})
    expired = await store.expire("s1")
    clock.advance(1)
    with pytest.raises(SessionStateError) as info:
        await call(store)
    assert info.value.session_id == "s1"
    assert info.value.current_state == "expired"
    assert info.value.attempted_transition == transition
    assert await store.get("s1") == expired


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.touch("ghost"),
        lambda store: store.expire("ghost"),
        lambda store: store.attach_surface("ghost", "web"),
        lambda store: store.detach_surface("ghost", "web"),
        lambda store: store.update_metadata("ghost", {"k": 1}),
    ],
    ids=["touch", "expire", "attach_surface", "detach_surface", "update_metadata"],
)
async def test_unknown_session_raises_not_found(store: SessionStore, call: Call) -> None:
    await store.create(user_id="u1", id="s1")
    before = await store.find()
    with pytest.raises(SessionNotFoundError) as info:
        await call(store)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, SessionError)
    assert info.value.session_id == "ghost"
    assert "ghost" in str(info.value)
    assert await store.find() == before
    assert await store.get("ghost") is None


async def test_state_errors_leave_the_actor_usable(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="dead")
    await store.create(user_id="u1", id="live")
    await store.expire("dead")
    for _ in range(3):
        with pytest.raises(SessionStateError):
            await store.touch("dead")
    now = clock.advance(1)
    touched = await store.touch("live")
    assert touched.last_activity_at == now


async def test_full_lifecycle_walk(store: SessionStore, clock: FakeClock) -> None:
    """created -> active -> suspended -> active -> expired, each with its timestamps."""
    t0 = clock()
    session = await store.create(user_id="u1", id="s1")
    assert (session.state, session.state_changed_at) == (SessionState.CREATED, t0)
    t1 = clock.advance(1)
    session = await store.touch("s1")
    assert (session.state, session.state_changed_at) == (SessionState.ACTIVE, t1)
    t2 = clock.advance(3601)
    [session] = await store.sweep_stale()
    assert (session.state, session.state_changed_at) == (SessionState.SUSPENDED, t2)
    assert session.last_activity_at == t1
    t3 = clock.advance(1)
    session = await store.touch("s1")
    assert (session.state, session.state_changed_at) == (SessionState.ACTIVE, t3)
    t4 = clock.advance(1)
    session = await store.expire("s1")
    assert (session.state, session.state_changed_at) == (SessionState.EXPIRED, t4)
    assert session.created_at == t0
    assert session.last_activity_at == t3
