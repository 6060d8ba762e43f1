"""Invariant 7 (users and workspaces are isolated) and invariant 6 (nothing a caller passes in
or gets back can change what is stored).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _faults import SlowAdapter, gather, make_adapter
from assistant_sessions import (
    InvalidInputError,
    Session,
    SessionConflictError,
    SessionState,
    create_session_store,
    resolve_session,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

USERS = [f"user-{i}" for i in range(4)]
WORKSPACES = [None, "w1", "w2"]
SURFACES = [None, "web", "phone"]

operation = st.tuples(
    st.sampled_from(["resolve", "create", "expire", "resolve_session"]),
    st.sampled_from(USERS),
    st.sampled_from(WORKSPACES),
    st.sampled_from(SURFACES),
)


@given(operations=st.lists(operation, min_size=1, max_size=40), slow=st.booleans())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_concurrent_operations_never_cross_users_or_workspaces(
    operations: list[tuple[str, str, str | None, str | None]], slow: bool
) -> None:
    adapter = make_adapter("slow" if slow else "memory")
    async with create_session_store(adapter, clock=FakeClock()) as store:

        async def run(i: int) -> Session | None:
            kind, user, workspace, surface = operations[i]
            if kind == "create":
                return await store.create(
                    user_id=user, workspace_id=workspace, initial_surface_id=surface
                )
            if kind == "expire":
                found = await store.find(user_id=user, workspace_id=workspace, limit=1)
                if found:
                    expired = await store.expire(found[0].id)
                    assert (expired.user_id, expired.state) == (user, SessionState.EXPIRED)
                return None
            if kind == "resolve_session":
                message = {"user_id": user, "workspace_id": workspace, "surface_id": surface}
                return await resolve_session(message, store)
            return await store.resolve(user_id=user, workspace_id=workspace, surface_id=surface)

        results = await gather(len(operations), run)
        owner: dict[str, tuple[str, str | None]] = {}
        for (kind, user, workspace, _), session in zip(operations, results, strict=True):
            if session is None:
                continue
            assert (session.user_id, session.workspace_id) == (user, workspace)
            if kind.startswith("resolve"):
                # A resolve touches or creates what it returns: never an expired session.
                assert session.state in (SessionState.ACTIVE, SessionState.CREATED)
            assert owner.setdefault(session.id, (user, workspace)) == (user, workspace)
        for user in USERS:
            for session in await store.find(user_id=user, limit=1000):
                assert session.user_id == user
                assert owner.get(session.id, (user, session.workspace_id)) == (
                    user,
                    session.workspace_id,
                )


@pytest.mark.parametrize("kind", ["memory", "slow"])
async def test_many_users_and_workspaces_resolving_at_once(kind: str, clock: FakeClock) -> None:
    rng = random.Random(7)
    adapter = make_adapter(kind)
    users = [f"u{i}" for i in range(50)]
    workspaces = [None, "w1", "w2", "w3", "w4"]
    requests = [
        (rng.choice(users), rng.choice(workspaces), rng.choice(SURFACES)) for _ in range(1000)
    ]
    async with create_session_store(adapter, clock=clock) as store:
        results = await gather(
            len(requests),
            lambda i: store.resolve(
                user_id=requests[i][0], workspace_id=requests[i][1], surface_id=requests[i][2]
            ),
        )
        chosen: dict[tuple[str, str | None], set[str]] = {}
        for (user, workspace, _), session in zip(requests, results, strict=True):
            assert (session.user_id, session.workspace_id) == (user, workspace)
            chosen.setdefault((user, workspace), set()).add(session.id)
        assert all(len(ids) == 1 for ids in chosen.values())
        all_ids = [next(iter(ids)) for ids in chosen.values()]
        assert len(set(all_ids)) == len(all_ids)  # no session serves two (user, workspace)
        stored = await store.find(limit=10_000)
        assert {(s.user_id, s.workspace_id) for s in stored} == set(chosen)


async def test_a_session_id_cannot_be_taken_from_another_user(clock: FakeClock) -> None:
    async with create_session_store(SlowAdapter(), clock=clock) as store:
        mine = await store.create(user_id="alice", id="shared-id", metadata={"owner": "alice"})
        with pytest.raises(SessionConflictError):
            await store.create(user_id="mallory", id="shared-id", metadata={"owner": "mallory"})
        assert await store.get("shared-id") == mine
        assert await store.find(user_id="mallory") == []
        # And the other user's resolve makes its own session.
        theirs = await store.resolve(user_id="mallory")
        assert theirs.id != mine.id


class Smuggler:
    """A selector that returns a session that is not one of its candidates."""

    def __init__(self, foreign: Session) -> None:
        self.foreign = foreign

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        return self.foreign


@pytest.mark.parametrize("kind", ["memory", "slow"])
async def test_a_selector_cannot_return_a_foreign_session(kind: str, clock: FakeClock) -> None:
    async with create_session_store(make_adapter(kind), clock=clock) as store:
        alice = await store.resolve(user_id="alice")
        other_workspace = await store.resolve(user_id="bob", workspace_id="w2")
        await store.resolve(user_id="bob", workspace_id="w1")
        before = await store.find()
        clock.advance(5)
        for foreign, workspace in ((alice, None), (alice, "w1"), (other_workspace, "w1")):
            with pytest.raises(InvalidInputError):
                await store.resolve(
                    user_id="bob", workspace_id=workspace, resolver=Smuggler(foreign)
                )
            # A look-alike copy of a candidate from elsewhere is refused as well.
            forged = attrs.evolve(foreign, user_id="bob", workspace_id=workspace)
            if workspace != "w1":
                with pytest.raises(InvalidInputError):
                    await store.resolve(
                        user_id="bob", workspace_id=workspace, resolver=Smuggler(forged)
                    )
        assert await store.find() == before


# -- invariant 6 -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "slow"])
async def test_mutating_inputs_afterwards_changes_nothing(kind: str, clock: FakeClock) -> None:
    async with create_session_store(make_adapter(kind), clock=clock) as store:
        nested: dict[str, Any] = {"list": [1, {"deep": "x"}], "map": {"k": "v"}}
        metadata: dict[str, Any] = {"nested": nested, "plain": 1}
        session = await store.create(user_id="u", metadata=metadata)
        update: dict[str, Any] = {"added": ["a"]}
        updated = await store.update_metadata(session.id, update)
        # The caller keeps using (and changing) its own objects.
        nested["list"].append(2)
        nested["list"][1]["deep"] = "changed"
        nested["map"]["k"] = "changed"
        metadata["plain"] = 2
        metadata["new"] = True
        update["added"].append("b")
        update["sneaky"] = True
        stored = await store.get(session.id)
        assert stored == updated
        assert stored is not None
        assert stored.metadata["plain"] == 1
        assert "new" not in stored.metadata
        assert "sneaky" not in stored.metadata
        assert stored.metadata["added"] == ("a",)
        assert stored.metadata["nested"]["list"] == (1, {"deep": "x"})
        assert stored.metadata["nested"]["map"] == {"k": "v"}


@pytest.mark.parametrize("kind", ["memory", "slow"])
async def test_returned_sessions_are_immutable_snapshots(kind: str, clock: FakeClock) -> None:
    async with create_session_store(make_adapter(kind), clock=clock) as store:
        session = await store.create(
            user_id="u",
            initial_surface_id="web",
            metadata={"nested": {"list": [1, 2], "map": {"k": "v"}}, "n": 1},
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            session.state = SessionState.EXPIRED  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            session.attached_surfaces = ()  # type: ignore[misc]
        with pytest.raises(TypeError):
            session.metadata["n"] = 2  # type: ignore[index]
        with pytest.raises(TypeError):
            session.metadata["nested"]["map"]["k"] = "changed"
        with pytest.raises(AttributeError):
            session.metadata["nested"]["list"].append(3)
        with pytest.raises(AttributeError):
            session.attached_surfaces.append("phone")  # type: ignore[attr-defined]
        # A snapshot does not follow later changes either.
        await store.update_metadata(session.id, {"n": 2})
        await store.attach_surface(session.id, "phone")
        assert session.metadata["n"] == 1
        assert session.attached_surfaces == ("web",)
        stored = await store.get(session.id)
        assert stored is not None
        assert stored.metadata["n"] == 2
        assert stored.attached_surfaces == ("web", "phone")
        assert stored.metadata["nested"] == {"list": (1, 2), "map": {"k": "v"}}


async def test_snapshots_handed_to_a_selector_cannot_change_the_store(clock: FakeClock) -> None:
    class Vandal:
        def select(
            self, candidates: Sequence[Session], *, surface_id: str | None
        ) -> Session | None:
            for candidate in candidates:
                with pytest.raises(attrs.exceptions.FrozenInstanceError):
                    candidate.state = SessionState.EXPIRED  # type: ignore[misc]
                with pytest.raises(TypeError):
                    candidate.metadata["x"] = 1  # type: ignore[index]
            if isinstance(candidates, list):
                candidates.clear()
            return candidates[0] if candidates else None

    async with create_session_store(clock=clock) as store:
        first = await store.resolve(user_id="u", resolver=Vandal())
        again = await store.resolve(user_id="u", resolver=Vandal())
        assert again.id == first.id
        assert again.metadata == {}
        with anyio.fail_after(5):
            assert len(await store.find(user_id="u")) == 1
