"""The value types: Session is a frozen, hashable snapshot; SessionState is a StrEnum."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import attrs
import pytest

from assistant_sessions import Session, SessionState, SessionStore
from assistant_sessions.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(**changes: object) -> Session:
    fields: dict[str, object] = {
        "id": "s1",
        "user_id": "u1",
        "workspace_id": "w1",
        "state": SessionState.ACTIVE,
        "created_at": T0,
        "last_activity_at": T0 + timedelta(seconds=5),
        "state_changed_at": T0 + timedelta(seconds=1),
        "attached_surfaces": ("web", "slack"),
        "metadata": MappingProxyType({"k": 1, "nested": MappingProxyType({"x": (1, 2)})}),
    }
    fields.update(changes)
    return Session(**fields)  # type: ignore[arg-type]


def test_session_is_frozen() -> None:
    session = make()
    for name in attrs.fields_dict(Session):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(session, name, None)
    with pytest.raises((AttributeError, TypeError)):
        session.extra = 1  # type: ignore[attr-defined]


def test_equality_is_by_value() -> None:
    assert make() == make()
    assert make() != make(id="s2")
    assert make() != make(state=SessionState.SUSPENDED)
    assert make() != make(attached_surfaces=("slack", "web"))
    assert make() != make(metadata=MappingProxyType({"k": 2}))
    assert make() != make(last_activity_at=T0)
    assert make() != "s1"


def test_session_is_hashable_even_with_metadata() -> None:
    a, b = make(), make()
    assert hash(a) == hash(b)
    assert len({a, b, make(id="s2")}) == 2
    # Metadata does not take part in the hash (a mapping is not hashable), only in equality.
    c = make(metadata=MappingProxyType({"other": True}))
    assert hash(c) == hash(a)
    assert c != a
    assert {a: 1}[b] == 1


def test_repr_shows_the_fields() -> None:
    text = repr(make())
    assert text.startswith("Session(")
    for part in ("id='s1'", "user_id='u1'", "workspace_id='w1'", "'web', 'slack'", "'k': 1"):
        assert part in text
    assert "active" in text.lower()
    # Metadata shows as a plain mapping, not as a mappingproxy wrapper.
    assert "metadata={'k': 1, " in text


def test_defaults() -> None:
    session = Session("s", "u", None, SessionState.CREATED, T0, T0, T0)
    assert session.attached_surfaces == ()
    assert dict(session.metadata) == {}
    with pytest.raises(TypeError):
        session.metadata["k"] = 1  # type: ignore[index]


def test_is_live() -> None:
    for state in SessionState:
        assert make(state=state).is_live is (state is not SessionState.EXPIRED)


def test_session_state_is_a_str_enum() -> None:
    assert issubclass(SessionState, enum.StrEnum)
    assert [s.value for s in SessionState] == ["created", "active", "suspended", "expired"]
    assert SessionState("active") is SessionState.ACTIVE
    assert SessionState.ACTIVE == "active"
    assert str(SessionState.EXPIRED) == "expired"
    assert f"{SessionState.SUSPENDED}" == "suspended"
    with pytest.raises(ValueError, match="bogus"):
        SessionState("bogus")


@pytest.mark.anyio
async def test_sessions_from_the_store_are_hashable_snapshots(
    store: SessionStore, clock: FakeClock
) -> None:
    first = await store.create(user_id="u1", id="s1", metadata={"n": [1, {"x": 2}]})
    clock.advance(1)
    second = await store.touch("s1")
    assert first != second
    assert len({first, second, await store.get("s1")}) == 2
    # The first snapshot did not change when the session did.
    assert first.state is SessionState.CREATED
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        second.state = SessionState.EXPIRED  # type: ignore[misc]
    stored = await store.get("s1")
    assert stored is not None
    assert stored.state is SessionState.ACTIVE
