"""Host-runtime integration (the original's "Core Integration").

A minimal host registers components by name, registers the store under ``"sessions"``, and when
it has something to say in a session asks ``get(session_id)`` which surfaces to answer on. It
depends only on the :class:`SessionLookup` protocol, never on the store's class.
"""

from __future__ import annotations

from typing import Any

import pytest

from assistant_sessions import (
    SessionLookup,
    SessionStore,
    SurfacedSession,
    create_session_store,
    resolve_session,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


class HostRuntime:
    """The smallest host: named components, and an emit that fans out to surfaces."""

    def __init__(self) -> None:
        self._components: dict[str, Any] = {}
        self.sent: list[tuple[str, str]] = []

    def register(self, name: str, component: Any) -> None:
        if name in self._components:
            raise KeyError(f"{name!r} is already registered")
        self._components[name] = component

    def get(self, name: str) -> Any:
        return self._components[name]

    async def emit(self, session_id: str, text: str) -> list[str]:
        """Send ``text`` to every surface of the session; return the surfaces used."""
        sessions = self.get("sessions")
        assert isinstance(sessions, SessionLookup)
        session = await sessions.get(session_id)
        if session is None:
            return []
        assert isinstance(session, SurfacedSession)
        for surface in session.attached_surfaces:
            self.sent.append((surface, text))
        return list(session.attached_surfaces)


async def test_store_satisfies_the_lookup_protocol(store: SessionStore) -> None:
    assert isinstance(store, SessionLookup)
    session = await store.create(user_id="u1", initial_surface_id="web")
    assert isinstance(session, SurfacedSession)


def test_an_unrelated_object_is_not_a_session_lookup() -> None:
    assert not isinstance(object(), SessionLookup)


async def test_host_answers_on_the_sessions_surfaces(clock: FakeClock) -> None:
    host = HostRuntime()
    async with create_session_store(clock=clock) as store:
        host.register("sessions", store)
        session = await resolve_session(
            {"user_id": "u1", "workspace_id": "w1", "surface_id": "web-thread-1"}, store
        )
        await store.attach_surface(session.id, "slack-dm-99")

        assert await host.emit(session.id, "hello") == ["web-thread-1", "slack-dm-99"]
        assert host.sent == [("web-thread-1", "hello"), ("slack-dm-99", "hello")]

        # The host sees surfaces change as soon as the store acknowledged the change.
        await store.detach_surface(session.id, "web-thread-1")
        assert await host.emit(session.id, "again") == ["slack-dm-99"]
        # Unknown sessions have nowhere to answer.
        assert await host.emit("no-such-session", "lost") == []
        assert host.sent[-1] == ("slack-dm-99", "again")


async def test_host_can_use_any_lookup_component() -> None:
    class Fixed:
        async def get(self, session_id: str) -> SurfacedSession | None:
            class Found:
                id = session_id
                user_id = "u"
                attached_surfaces = ("sms",)

            return Found()

    host = HostRuntime()
    host.register("sessions", Fixed())
    assert await host.emit("any", "hi") == ["sms"]
