"""resolve(attach_surface=...): the message's surface is attached in the same turn, on the
in-memory and the SQLite adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from assistant_sessions import (
    EventKind,
    InvalidInputError,
    InvalidTypeError,
    SessionStore,
    SqliteSessionStoreAdapter,
    create_session_store,
    resolve_session,
)
from assistant_sessions.adapters.base import SessionStoreAdapter
from assistant_sessions.adapters.memory import InMemorySessionStoreAdapter
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> SessionStoreAdapter:
    if request.param == "memory":
        return InMemorySessionStoreAdapter()
    return SqliteSessionStoreAdapter(tmp_path / "sessions.db")


@pytest.fixture
async def small(adapter: SessionStoreAdapter, clock: FakeClock) -> AsyncIterator[SessionStore]:
    """A store whose sessions take at most two surfaces."""
    async with create_session_store(adapter, clock=clock, max_surfaces=2) as store:
        yield store


async def test_resolve_attaches_the_surface_to_a_reused_session(small: SessionStore) -> None:
    first = await small.resolve(user_id="u", surface_id="web")
    again = await small.resolve(user_id="u", surface_id="slack")
    assert again.id == first.id
    assert again.attached_surfaces == ("web", "slack")
    assert await small.get(first.id) == again
    # The next message from slack now prefers this session.
    other = await small.create(user_id="u")
    await small.touch(other.id)
    assert (await small.resolve(user_id="u", surface_id="slack")).id == first.id


async def test_attach_surface_false_only_guides_the_choice(small: SessionStore) -> None:
    reused = await small.create(user_id="u")
    got = await small.resolve(user_id="u", surface_id="web", attach_surface=False)
    assert got.id == reused.id
    assert got.attached_surfaces == ()
    new = await small.resolve(user_id="u", surface_id="web", workspace_id="w", attach_surface=False)
    assert new.id != reused.id
    assert new.attached_surfaces == ()


async def test_resolve_attach_detaches_an_exclusive_surface_elsewhere(
    small: SessionStore,
) -> None:
    # "web" is on a session of workspace w; a message from web in no workspace reuses the
    # other session, and web moves to it.
    elsewhere = await small.resolve(user_id="u", surface_id="web", workspace_id="w")
    here = await small.create(user_id="u")
    got = await small.resolve(user_id="u", surface_id="web")
    assert got.id == here.id
    assert got.attached_surfaces == ("web",)
    moved = await small.get(elsewhere.id)
    assert moved is not None
    assert moved.attached_surfaces == ()


async def test_resolve_attach_keeps_other_sessions_without_exclusive_surfaces(
    adapter: SessionStoreAdapter, clock: FakeClock
) -> None:
    async with create_session_store(adapter, clock=clock, exclusive_surfaces=False) as store:
        elsewhere = await store.resolve(user_id="u", surface_id="web", workspace_id="w")
        await store.create(user_id="u")
        got = await store.resolve(user_id="u", surface_id="web")
        assert got.attached_surfaces == ("web",)
        kept = await store.get(elsewhere.id)
        assert kept is not None
        assert kept.attached_surfaces == ("web",)


async def test_resolve_on_a_full_session_fails_and_changes_nothing(
    small: SessionStore, clock: FakeClock
) -> None:
    session = await small.create(user_id="u", initial_surface_id="a")
    session = await small.attach_surface(session.id, "b")
    clock.advance(10)
    with pytest.raises(InvalidInputError, match="maximum of 2 surfaces"):
        await small.resolve(user_id="u", surface_id="c")
    assert await small.get(session.id) == session  # not touched, nothing detached
    # A surface already attached needs no room; attach_surface=False never does.
    assert (await small.resolve(user_id="u", surface_id="a")).id == session.id
    got = await small.resolve(user_id="u", surface_id="c", attach_surface=False)
    assert got.attached_surfaces == ("a", "b")


async def test_resolve_attach_publishes_surface_attached(small: SessionStore) -> None:
    first = await small.resolve(user_id="u", surface_id="web", workspace_id="w")
    other = await small.create(user_id="u")
    async with small.subscribe() as events:
        await small.resolve(user_id="u", surface_id="web")
        got = {(e.kind, e.session.id, e.surface_id) for e in events.receive_nowait()}
    assert got == {
        (EventKind.ACTIVATED, other.id, None),
        (EventKind.SURFACE_ATTACHED, other.id, "web"),
        (EventKind.SURFACE_DETACHED, first.id, "web"),
    }


async def test_resolve_session_attaches_by_default_and_on_request_not(
    small: SessionStore,
) -> None:
    session = await small.create(user_id="u")
    got = await resolve_session(SimpleNamespace(user_id="u", surface_id="sms"), small)
    assert got.id == session.id
    assert got.attached_surfaces == ("sms",)
    got = await resolve_session(
        {"user_id": "u", "surface_id": "voice"}, small, attach_surface=False
    )
    assert got.attached_surfaces == ("sms",)


async def test_attach_surface_must_be_a_bool(small: SessionStore) -> None:
    with pytest.raises(InvalidTypeError):
        await small.resolve(user_id="u", surface_id="web", attach_surface=1)  # type: ignore[arg-type]
