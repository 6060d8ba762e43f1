"""Surfaces (attach and detach, idempotent, in order) and metadata (shallow merge, frozen)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant_sessions import SessionState, SessionStore, create_session_store
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


# -- surfaces --------------------------------------------------------------------------------


async def test_attach_keeps_order_and_is_idempotent(store: SessionStore) -> None:
    await store.create(user_id="u1", id="s1", initial_surface_id="web")
    await store.attach_surface("s1", "slack")
    third = await store.attach_surface("s1", "phone")
    assert third.attached_surfaces == ("web", "slack", "phone")
    again = await store.attach_surface("s1", "slack")
    assert again == third
    assert await store.get("s1") == third


async def test_detach_keeps_order_and_is_idempotent(store: SessionStore) -> None:
    await store.create(user_id="u1", id="s1", initial_surface_id="web")
    await store.attach_surface("s1", "slack")
    await store.attach_surface("s1", "phone")
    detached = await store.detach_surface("s1", "slack")
    assert detached.attached_surfaces == ("web", "phone")
    assert await store.detach_surface("s1", "slack") == detached
    assert await store.detach_surface("s1", "never-attached") == detached
    assert await store.get("s1") == detached


async def test_detach_every_surface_then_attach_again(store: SessionStore) -> None:
    await store.create(user_id="u1", id="s1", initial_surface_id="web")
    empty = await store.detach_surface("s1", "web")
    assert empty.attached_surfaces == ()
    assert await store.find(surface_id="web") == []
    again = await store.attach_surface("s1", "web")
    assert again.attached_surfaces == ("web",)
    assert [s.id for s in await store.find(surface_id="web")] == ["s1"]


async def test_surfaces_change_on_created_and_suspended_sessions(
    store: SessionStore, clock: FakeClock
) -> None:
    await store.create(user_id="u1", id="suspended")
    await store.touch("suspended")
    clock.advance(100)
    await store.sweep_stale(10)
    await store.create(user_id="u1", id="created2")
    for session_id, state in (
        ("created2", SessionState.CREATED),
        ("suspended", SessionState.SUSPENDED),
    ):
        attached = await store.attach_surface(session_id, "tv")
        assert attached.attached_surfaces == ("tv",)
        assert attached.state is state
        detached = await store.detach_surface(session_id, "tv")
        assert detached.attached_surfaces == ()
        assert detached.state is state


async def test_surfaces_of_one_session_do_not_leak_to_others(store: SessionStore) -> None:
    await store.create(user_id="u1", id="a", initial_surface_id="web")
    await store.create(user_id="u2", id="b", initial_surface_id="web")
    await store.attach_surface("a", "slack")
    b = await store.get("b")
    assert b is not None
    assert b.attached_surfaces == ("web",)


# -- metadata --------------------------------------------------------------------------------


async def test_update_metadata_is_a_shallow_merge(store: SessionStore) -> None:
    await store.create(
        user_id="u1", id="s1", metadata={"keep": 1, "replace": "old", "nested": {"x": 1, "y": 2}}
    )
    merged = await store.update_metadata("s1", {"replace": "new", "nested": {"z": 3}, "add": []})
    assert _thaw(merged.metadata) == {
        "keep": 1,
        "replace": "new",
        "nested": {"z": 3},  # shallow: a nested mapping is replaced, not merged
        "add": [],
    }
    stored = await store.get("s1")
    assert stored is not None
    assert stored.metadata == merged.metadata


async def test_update_metadata_never_replaces_the_whole_mapping(store: SessionStore) -> None:
    await store.create(user_id="u1", id="s1", metadata={"a": 1, "b": 2})
    await store.update_metadata("s1", {"c": 3})
    updated = await store.update_metadata("s1", {"a": None})
    assert dict(updated.metadata) == {"a": None, "b": 2, "c": 3}


async def test_update_metadata_with_nothing_changes_nothing(
    store: SessionStore, clock: FakeClock
) -> None:
    created = await store.create(user_id="u1", id="s1", metadata={"a": 1})
    clock.advance(1)
    assert await store.update_metadata("s1", {}) == created
    assert await store.get("s1") == created


async def test_update_metadata_works_in_live_states(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="s1")
    await store.update_metadata("s1", {"when": "created"})
    await store.touch("s1")
    await store.update_metadata("s1", {"active": True})
    clock.advance(100)
    [suspended] = await store.sweep_stale(10)
    updated = await store.update_metadata("s1", {"suspended": True})
    assert updated.state is SessionState.SUSPENDED
    assert updated.state_changed_at == suspended.state_changed_at
    assert dict(updated.metadata) == {"when": "created", "active": True, "suspended": True}


async def test_returned_metadata_cannot_be_mutated(store: SessionStore) -> None:
    session = await store.create(
        user_id="u1", id="s1", metadata={"a": 1, "nested": {"x": 1}, "items": [1, {"y": 2}]}
    )
    with pytest.raises(TypeError):
        session.metadata["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del session.metadata["a"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        session.metadata["nested"]["x"] = 2
    with pytest.raises(TypeError):
        session.metadata["items"][1]["y"] = 3
    with pytest.raises((TypeError, AttributeError)):
        session.metadata["items"].append(3)
    stored = await store.get("s1")
    assert stored is not None
    assert _thaw(stored.metadata) == {"a": 1, "nested": {"x": 1}, "items": [1, {"y": 2}]}


async def test_caller_input_mutated_after_update_changes_nothing(store: SessionStore) -> None:
    await store.create(user_id="u1", id="s1")
    patch: dict[str, Any] = {"list": [1, 2], "map": {"k": "v"}}
    updated = await store.update_metadata("s1", patch)
    patch["list"].append(3)
    patch["map"]["k"] = "changed"
    patch["extra"] = 1
    stored = await store.get("s1")
    assert stored is not None
    assert _thaw(stored.metadata) == {"list": [1, 2], "map": {"k": "v"}}
    assert stored.metadata == updated.metadata


async def test_metadata_accepts_every_json_type(store: SessionStore) -> None:
    value = {
        "null": None,
        "true": True,
        "int": -(2**70),
        "float": 1.5,
        "str": "héllo ☃",
        "list": [1, "two", None, [3.0]],
        "tuple": (1, 2),
        "map": {"deep": {"deeper": {"deepest": []}}},
    }
    session = await store.create(user_id="u1", id="s1", metadata=value)
    assert _thaw(session.metadata) == {**value, "tuple": [1, 2]}


def _thaw(value: Any) -> Any:
    """Frozen metadata back to plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(item) for item in value]
    return value


# -- merge equals dict merge (hypothesis) ------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_metadata = st.dictionaries(_text, _json, max_size=6)


async def _check_merge(
    initial: dict[str, Any], patches: list[dict[str, Any]], create_with_none: bool
) -> None:
    async with create_session_store(clock=FakeClock()) as store:
        await store.create(user_id="u", id="s", metadata=None if create_with_none else initial)
        expected: dict[str, Any] = {} if create_with_none else dict(initial)
        for patch in patches:
            updated = await store.update_metadata("s", patch)
            expected = {**expected, **patch}
            assert _thaw(updated.metadata) == expected
        stored = await store.get("s")
        assert stored is not None
        assert _thaw(stored.metadata) == expected


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=75, deadline=None)
@given(initial=_metadata, patches=st.lists(_metadata, max_size=4), create_with_none=st.booleans())
def test_merge_equals_dict_merge(
    backend: str, initial: dict[str, Any], patches: list[dict[str, Any]], create_with_none: bool
) -> None:
    anyio.run(_check_merge, initial, patches, create_with_none, backend=backend)
