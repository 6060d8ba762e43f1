"""Creation, retrieval and find: the read and create half of the SessionStore API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant_sessions import (
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionConflictError,
    SessionError,
    SessionState,
    SessionStateError,
    SessionStore,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


# -- creation --------------------------------------------------------------------------------


async def test_create_with_generated_id(store: SessionStore, clock: FakeClock) -> None:
    session = await store.create(user_id="u1")
    assert isinstance(session, Session)
    assert str(uuid.UUID(session.id)) == session.id
    assert session.user_id == "u1"
    assert session.workspace_id is None
    assert session.state is SessionState.CREATED
    assert session.created_at == session.last_activity_at == session.state_changed_at == clock()
    assert session.created_at.tzinfo is not None
    assert session.created_at.utcoffset() == timedelta(0)
    assert session.attached_surfaces == ()
    assert dict(session.metadata) == {}


async def test_generated_ids_are_unique(store: SessionStore) -> None:
    ids = {(await store.create(user_id="u1")).id for _ in range(20)}
    assert len(ids) == 20


async def test_create_with_explicit_id_workspace_surface_and_metadata(
    store: SessionStore,
) -> None:
    session = await store.create(
        user_id="u1",
        id="s-1",
        workspace_id="w1",
        initial_surface_id="web",
        metadata={"locale": "en-US", "n": 3},
    )
    assert session.id == "s-1"
    assert session.workspace_id == "w1"
    assert session.attached_surfaces == ("web",)
    assert dict(session.metadata) == {"locale": "en-US", "n": 3}
    assert await store.get("s-1") == session


async def test_create_duplicate_id_conflicts_and_keeps_the_original(store: SessionStore) -> None:
    original = await store.create(user_id="u1", id="same", metadata={"v": 1})
    with pytest.raises(SessionConflictError) as info:
        await store.create(user_id="u1", id="same", metadata={"v": 2})
    assert info.value.session_id == "same"
    assert isinstance(info.value, SessionError)
    assert await store.get("same") == original
    assert [s.id for s in await store.find(user_id="u1")] == ["same"]


async def test_create_duplicate_id_of_another_user_conflicts(store: SessionStore) -> None:
    original = await store.create(user_id="u1", id="same")
    with pytest.raises(SessionConflictError) as info:
        await store.create(user_id="u2", id="same")
    assert info.value.session_id == "same"
    assert await store.get("same") == original
    assert await store.find(user_id="u2") == []
    # The failed create left u2 usable.
    assert (await store.create(user_id="u2", id="other")).user_id == "u2"


async def test_create_copies_metadata(store: SessionStore) -> None:
    nested: dict[str, Any] = {"tags": ["a"], "inner": {"x": 1}}
    metadata: dict[str, Any] = {"nested": nested, "top": 1}
    session = await store.create(user_id="u1", id="s", metadata=metadata)
    metadata["top"] = 2
    metadata["new"] = True
    nested["tags"].append("b")
    nested["inner"]["x"] = 99
    stored = await store.get("s")
    assert stored is not None
    for snapshot in (session, stored):
        assert snapshot.metadata["top"] == 1
        assert "new" not in snapshot.metadata
        assert tuple(snapshot.metadata["nested"]["tags"]) == ("a",)
        assert snapshot.metadata["nested"]["inner"]["x"] == 1


async def test_create_uses_the_clock(store: SessionStore, clock: FakeClock) -> None:
    first = await store.create(user_id="u1")
    later = clock.advance(90)
    second = await store.create(user_id="u1")
    assert first.created_at == later - timedelta(seconds=90)
    assert second.created_at == second.last_activity_at == second.state_changed_at == later


# -- retrieval -------------------------------------------------------------------------------


async def test_get_unknown_returns_none(store: SessionStore) -> None:
    assert await store.get("nope") is None
    await store.create(user_id="u1", id="s1")
    assert await store.get("s2") is None


async def test_get_returns_the_latest_snapshot(store: SessionStore, clock: FakeClock) -> None:
    created = await store.create(user_id="u1", id="s1")
    clock.advance(5)
    touched = await store.touch("s1")
    assert await store.get("s1") == touched
    assert touched != created


# -- find ------------------------------------------------------------------------------------


async def _population(store: SessionStore, clock: FakeClock) -> dict[str, Session]:
    """A few sessions with distinct activity times, for the filter tests."""
    await store.create(user_id="u1", id="a", workspace_id="w1", initial_surface_id="web")
    clock.advance(1)
    await store.create(user_id="u1", id="b", workspace_id="w2", initial_surface_id="slack")
    clock.advance(1)
    await store.create(user_id="u2", id="c", workspace_id="w1", initial_surface_id="web")
    clock.advance(1)
    await store.create(user_id="u1", id="d")
    clock.advance(1)
    await store.touch("a")  # a: active, most recent
    clock.advance(1)
    await store.create(user_id="u2", id="e", workspace_id="w1")
    await store.expire("e")
    sessions = {s.id: s for s in await store.find(limit=100)}
    assert set(sessions) == {"a", "b", "c", "d", "e"}
    return sessions


async def ids_of(store: SessionStore, **filters: Any) -> list[str]:
    return [s.id for s in await store.find(**filters)]


async def test_find_without_filters_returns_most_recent_first(
    store: SessionStore, clock: FakeClock
) -> None:
    await _population(store, clock)
    assert await ids_of(store) == ["e", "a", "d", "c", "b"]


async def test_find_by_user(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, user_id="u1") == ["a", "d", "b"]
    assert await ids_of(store, user_id="u2") == ["e", "c"]
    assert await ids_of(store, user_id="nobody") == []


async def test_find_by_workspace(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, workspace_id="w1") == ["e", "a", "c"]
    assert await ids_of(store, workspace_id="w2") == ["b"]


async def test_find_by_state_as_enum_or_str(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, state=SessionState.CREATED) == ["d", "c", "b"]
    assert await ids_of(store, state="created") == ["d", "c", "b"]
    assert await ids_of(store, state=SessionState.ACTIVE) == ["a"]
    assert await ids_of(store, state="active") == ["a"]
    assert await ids_of(store, state="expired") == ["e"]
    assert await ids_of(store, state="suspended") == []


async def test_find_by_several_states(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    live = [SessionState.CREATED, SessionState.ACTIVE, SessionState.SUSPENDED]
    assert await ids_of(store, state=live) == ["a", "d", "c", "b"]
    assert await ids_of(store, state=("active", "expired")) == ["e", "a"]
    assert await ids_of(store, state={"expired"}) == ["e"]
    assert await ids_of(store, state=(s for s in ["created"]), user_id="u2") == ["c"]
    assert [s.id async for s in store.find_iter(state=live, page_size=1)] == ["a", "d", "c", "b"]
    with pytest.raises(InvalidInputError, match="at least one state"):
        await store.find(state=[])
    with pytest.raises(InvalidInputError, match="unknown state"):
        await store.find(state=["active", "gone"])
    with pytest.raises(InvalidTypeError):
        await store.find(state=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        store.find_iter(state=[SessionState.ACTIVE, 3])  # type: ignore[list-item]


async def test_find_by_surface(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, surface_id="web") == ["a", "c"]
    assert await ids_of(store, surface_id="slack") == ["b"]
    assert await ids_of(store, surface_id="phone") == []


async def test_find_active_after_is_strict(store: SessionStore, clock: FakeClock) -> None:
    sessions = await _population(store, clock)
    c_time = sessions["c"].last_activity_at
    assert await ids_of(store, active_after=c_time) == ["e", "a", "d"]
    assert await ids_of(store, active_after=c_time - timedelta(microseconds=1)) == [
        "e",
        "a",
        "d",
        "c",
    ]
    assert await ids_of(store, active_after=clock()) == []
    # Any timezone works: the instant is what counts.
    plus_two = timezone_plus_two(c_time)
    assert await ids_of(store, active_after=plus_two) == ["e", "a", "d"]


def timezone_plus_two(moment: datetime) -> datetime:
    return moment.astimezone(timezone(timedelta(hours=2)))


async def test_find_combines_filters(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, user_id="u1", workspace_id="w1", surface_id="web") == ["a"]
    assert await ids_of(store, user_id="u2", state="created", workspace_id="w1") == ["c"]
    assert await ids_of(store, user_id="u1", state="expired") == []


async def test_find_limit(store: SessionStore, clock: FakeClock) -> None:
    await _population(store, clock)
    assert await ids_of(store, limit=1) == ["e"]
    assert await ids_of(store, limit=3) == ["e", "a", "d"]
    assert await ids_of(store, user_id="u1", limit=2) == ["a", "d"]


async def test_find_default_limit_is_50(store: SessionStore, clock: FakeClock) -> None:
    for i in range(60):
        await store.create(user_id=f"u{i % 3}", id=f"s{i:02}")
        clock.advance(1)
    found = await store.find()
    assert [s.id for s in found] == [f"s{i:02}" for i in range(59, 9, -1)]
    assert len(await store.find(limit=100)) == 60


async def test_find_ties_are_ordered_by_id(store: SessionStore) -> None:
    # Same clock for every session: the order is decided by id alone, deterministically.
    for session_id in ["m", "b", "z", "a", "q"]:
        await store.create(user_id="u1", id=session_id)
    found = await store.find()
    assert [s.id for s in found] == ["z", "q", "m", "b", "a"]
    assert found == sorted(found, key=lambda s: (s.last_activity_at, s.id), reverse=True)
    assert [s.id for s in await store.find(limit=2)] == ["z", "q"]


async def test_find_returns_current_snapshots(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="s1")
    clock.advance(10)
    touched = await store.touch("s1")
    assert await store.find(user_id="u1") == [touched]


# -- find against a plain filter over every session (hypothesis) ------------------------------

_USERS = ["u1", "u2", "u3"]
_WORKSPACES = [None, "w1", "w2"]
_SURFACES = ["web", "slack", "phone"]

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("create"),
            st.sampled_from(_USERS),
            st.sampled_from(_WORKSPACES),
            st.sampled_from([None, *_SURFACES]),
        ),
        st.tuples(st.just("touch"), st.integers(0, 1000)),
        st.tuples(st.just("expire"), st.integers(0, 1000)),
        st.tuples(st.just("attach"), st.integers(0, 1000), st.sampled_from(_SURFACES)),
        st.tuples(st.just("detach"), st.integers(0, 1000), st.sampled_from(_SURFACES)),
        st.tuples(st.just("advance"), st.integers(1, 120)),
        st.tuples(st.just("sweep"), st.integers(1, 300)),
    ),
    max_size=40,
)

_queries = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "user_id": st.sampled_from([*_USERS, "nobody"]),
            "workspace_id": st.sampled_from(["w1", "w2", "w3"]),
            "state": st.sampled_from([*SessionState, *(s.value for s in SessionState)]),
            "surface_id": st.sampled_from(_SURFACES),
            # A session's last activity (picked at run time) moved by -1, 0 or +1 microsecond,
            # so the strict boundary of active_after is hit often.
            "active_after": st.tuples(st.integers(0, 1000), st.sampled_from([-1, 0, 1])),
            "limit": st.integers(1, 60),
        },
    ),
    min_size=1,
    max_size=8,
)


def _plain_find(sessions: list[Session], query: dict[str, Any]) -> list[Session]:
    """The reference: filter every session one by one, sort, cut."""
    after = query.get("active_after")
    matched = [
        s
        for s in sessions
        if ("user_id" not in query or s.user_id == query["user_id"])
        and ("workspace_id" not in query or s.workspace_id == query["workspace_id"])
        and ("state" not in query or s.state.value == str(query["state"]))
        and ("surface_id" not in query or query["surface_id"] in s.attached_surfaces)
        and (after is None or s.last_activity_at > after)
    ]
    matched.sort(key=lambda s: (s.last_activity_at, s.id), reverse=True)
    return matched[: query.get("limit", 50)]


async def _check_find(ops: list[tuple[Any, ...]], queries: list[dict[str, Any]]) -> None:
    clock = FakeClock()
    async with create_session_store(clock=clock) as store:
        ids: list[str] = []
        for op in ops:
            kind = op[0]
            if kind == "create":
                session = await store.create(
                    user_id=op[1], workspace_id=op[2], initial_surface_id=op[3]
                )
                ids.append(session.id)
            elif kind == "advance":
                clock.advance(op[1])
            elif kind == "sweep":
                await store.sweep_stale(op[1])
            elif ids:
                target = ids[op[1] % len(ids)]
                try:
                    if kind == "touch":
                        await store.touch(target)
                    elif kind == "expire":
                        await store.expire(target)
                    elif kind == "attach":
                        await store.attach_surface(target, op[2])
                    else:
                        await store.detach_surface(target, op[2])
                except SessionStateError:
                    pass
        everything = [s for s in [await store.get(i) for i in ids] if s is not None]
        assert len(everything) == len(ids)
        for query in queries:
            filters = dict(query)
            if "active_after" in filters:
                index, shift = filters["active_after"]
                base = everything[index % len(everything)].last_activity_at if ids else clock()
                filters["active_after"] = base + timedelta(microseconds=shift)
            assert await store.find(**filters) == _plain_find(everything, filters)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(ops=_ops, queries=_queries)
def test_find_matches_a_plain_filter(
    backend: str, ops: list[tuple[Any, ...]], queries: list[dict[str, Any]]
) -> None:
    anyio.run(_check_find, ops, queries, backend=backend)


async def test_find_sees_sessions_of_every_user_with_utc_timestamps(
    store: SessionStore,
) -> None:
    await store.create(user_id="u1")
    await store.create(user_id="u2")
    found = await store.find()
    assert {s.user_id for s in found} == {"u1", "u2"}
    assert all(s.created_at.utcoffset() == timedelta(0) for s in found)
    assert all(s.created_at.tzinfo is UTC for s in found)
