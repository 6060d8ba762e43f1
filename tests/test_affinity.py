"""Affinity: resolve, resolve_session and the default resolver, with custom selectors."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from assistant_sessions import (
    AffinityResolver,
    InvalidInputError,
    Session,
    SessionSelector,
    SessionState,
    SessionStore,
    default_affinity_resolver,
    resolve_session,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def _everything(store: SessionStore) -> list[Session]:
    return await store.find(limit=10_000)


# -- the default resolver's read-only lookup ---------------------------------------------------


async def test_default_resolver_lookup_is_read_only(store: SessionStore, clock: FakeClock) -> None:
    resolver = default_affinity_resolver(store)
    assert isinstance(resolver, AffinityResolver)
    assert isinstance(resolver, SessionSelector)
    assert await resolver.resolve("u1") is None
    assert await _everything(store) == []  # looking up created nothing

    created = await store.create(user_id="u1", id="s1")
    clock.advance(5)
    assert await resolver.resolve("u1") == created
    # Not touched: still created, last activity unchanged.
    assert await store.get("s1") == created


async def test_default_resolver_lookup_prefers_surface_then_recency(
    store: SessionStore, clock: FakeClock
) -> None:
    resolver = default_affinity_resolver(store)
    await store.create(user_id="u1", id="on-web", initial_surface_id="web")
    clock.advance(1)
    await store.create(user_id="u1", id="recent", initial_surface_id="slack")
    clock.advance(1)
    await store.create(user_id="u1", id="dead", initial_surface_id="phone")
    await store.expire("dead")

    async def lookup(surface_id: str | None = None) -> str | None:
        found = await resolver.resolve("u1", surface_id)
        return None if found is None else found.id

    assert await lookup("web") == "on-web"
    assert await lookup("slack") == "recent"
    assert await lookup() == "recent"
    assert await lookup("phone") == "recent"  # the expired session is not a candidate
    assert await lookup("unknown") == "recent"
    assert await resolver.resolve("u2", "web") is None


async def test_default_resolver_lookup_matches_workspace(store: SessionStore) -> None:
    resolver = default_affinity_resolver(store)
    in_w1 = await store.create(user_id="u1", workspace_id="w1")
    assert await resolver.resolve("u1") is None  # None matches only None
    assert await resolver.resolve("u1", workspace_id="w1") == in_w1
    assert await resolver.resolve("u1", workspace_id="w2") is None


# -- resolve and resolve_session ---------------------------------------------------------------


async def test_resolve_creates_then_reuses_created_sessions(
    store: SessionStore, clock: FakeClock
) -> None:
    first = await store.resolve(user_id="u1", surface_id="web")
    assert first.state is SessionState.CREATED
    assert first.attached_surfaces == ("web",)
    assert first.workspace_id is None
    now = clock.advance(3)
    # The original skipped created sessions and made a second one here.
    second = await store.resolve(user_id="u1", surface_id="web")
    assert second.id == first.id
    assert second.state is SessionState.ACTIVE
    assert second.last_activity_at == now
    assert len(await store.find(user_id="u1")) == 1


async def test_resolve_reuses_a_session_made_by_create(store: SessionStore) -> None:
    created = await store.create(user_id="u1", id="mine")
    resolved = await store.resolve(user_id="u1", surface_id="web")
    assert resolved.id == created.id
    assert resolved.state is SessionState.ACTIVE
    # Resolving attaches the message's surface to the session it reuses (attach_surface=True).
    assert resolved.attached_surfaces == ("web",)


async def test_resolve_resumes_suspended_and_skips_expired(
    store: SessionStore, clock: FakeClock
) -> None:
    await store.create(user_id="u1", id="s1")
    await store.touch("s1")
    clock.advance(7200)
    [suspended] = await store.sweep_stale()
    now = clock.advance(1)
    resumed = await store.resolve(user_id="u1")
    assert resumed.id == "s1"
    assert resumed.state is SessionState.ACTIVE
    assert resumed.state_changed_at == now
    assert suspended.state is SessionState.SUSPENDED

    await store.expire("s1")
    fresh = await store.resolve(user_id="u1")
    assert fresh.id != "s1"
    assert fresh.state is SessionState.CREATED


async def test_resolve_prefers_the_surface_then_the_most_recent(
    store: SessionStore, clock: FakeClock
) -> None:
    await store.create(user_id="u1", id="on-web", initial_surface_id="web")
    clock.advance(1)
    await store.create(user_id="u1", id="on-slack", initial_surface_id="slack")
    clock.advance(1)
    assert (await store.resolve(user_id="u1", surface_id="web")).id == "on-web"
    clock.advance(1)
    # on-web is now the most recently active; the slack surface still wins for slack.
    assert (await store.resolve(user_id="u1", surface_id="slack")).id == "on-slack"
    clock.advance(1)
    assert (await store.resolve(user_id="u1", surface_id="phone")).id == "on-slack"
    clock.advance(1)
    assert (await store.resolve(user_id="u1")).id == "on-slack"
    assert len(await store.find(user_id="u1")) == 2


async def test_resolve_matches_the_workspace_and_none_only_none(store: SessionStore) -> None:
    in_w1 = await store.resolve(user_id="u1", workspace_id="w1", surface_id="web")
    assert in_w1.workspace_id == "w1"
    no_workspace = await store.resolve(user_id="u1", surface_id="web")
    assert no_workspace.id != in_w1.id
    assert no_workspace.workspace_id is None
    in_w2 = await store.resolve(user_id="u1", workspace_id="w2")
    assert in_w2.id not in (in_w1.id, no_workspace.id)
    assert (await store.resolve(user_id="u1", workspace_id="w1")).id == in_w1.id
    assert (await store.resolve(user_id="u1")).id == no_workspace.id
    assert len(await store.find(user_id="u1")) == 3


async def test_resolve_never_returns_another_users_session(store: SessionStore) -> None:
    theirs = await store.resolve(user_id="u1", surface_id="web")
    mine = await store.resolve(user_id="u2", surface_id="web")
    assert mine.id != theirs.id
    assert mine.user_id == "u2"
    u1 = await store.get(theirs.id)
    assert u1 is not None
    assert u1.attached_surfaces == ("web",)


async def test_resolve_session_with_a_mapping(store: SessionStore) -> None:
    message = {"user_id": "u1", "workspace_id": "w1", "surface_id": "web", "text": "hi"}
    session = await resolve_session(message, store, default_affinity_resolver(store))
    assert (session.user_id, session.workspace_id, session.attached_surfaces) == (
        "u1",
        "w1",
        ("web",),
    )
    again = await resolve_session(message, store)
    assert again.id == session.id
    assert again.state is SessionState.ACTIVE


async def test_resolve_session_with_an_object(store: SessionStore) -> None:
    @attrs.frozen
    class Inbound:
        user_id: str
        surface_id: str | None = None
        workspace_id: str | None = None

    first = await resolve_session(Inbound("u1", "web", "w1"), store)
    assert (first.workspace_id, first.attached_surfaces) == ("w1", ("web",))
    # Missing optional attributes are None.
    other = await resolve_session(SimpleNamespace(user_id="u1"), store)
    assert other.workspace_id is None
    assert other.id != first.id
    same = await resolve_session(SimpleNamespace(user_id="u1", workspace_id="w1"), store)
    assert same.id == first.id


@pytest.mark.parametrize(
    "message",
    [{}, {"surface_id": "web"}, {"user_id": None}, SimpleNamespace(surface_id="web"), object()],
    ids=["empty-map", "map-without-user", "map-with-none", "object-without-user", "bare-object"],
)
async def test_resolve_session_without_user_id(store: SessionStore, message: object) -> None:
    with pytest.raises(InvalidInputError):
        await resolve_session(message, store)
    assert await _everything(store) == []


async def test_the_readme_example(store: SessionStore) -> None:
    resolver = default_affinity_resolver(store)
    session = await resolve_session(
        {"user_id": "user-123", "workspace_id": "workspace-456", "surface_id": "web-thread-1"},
        store,
        resolver,
    )
    await store.attach_surface(session.id, "slack-dm-99")
    updated = await store.update_metadata(session.id, {"locale": "en-US"})
    assert updated.attached_surfaces == ("web-thread-1", "slack-dm-99")
    assert dict(updated.metadata) == {"locale": "en-US"}
    assert await resolver.resolve("user-123", "slack-dm-99", workspace_id="workspace-456") == (
        updated
    )


# -- custom selectors --------------------------------------------------------------------------


class Recorder:
    """A selector that records what it was given and answers with ``choose``."""

    def __init__(self, choose: Any) -> None:
        self.choose = choose
        self.calls: list[tuple[tuple[Session, ...], str | None]] = []

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        self.calls.append((tuple(candidates), surface_id))
        return self.choose(candidates) if callable(self.choose) else self.choose


async def _three(store: SessionStore, clock: FakeClock) -> None:
    await store.create(user_id="u1", id="oldest", workspace_id="w")
    clock.advance(1)
    await store.create(user_id="u1", id="middle", workspace_id="w")
    clock.advance(1)
    await store.create(user_id="u1", id="newest", workspace_id="w")
    await store.create(user_id="u1", id="elsewhere", workspace_id="other")
    await store.create(user_id="u2", id="stranger", workspace_id="w")
    await store.create(user_id="u1", id="dead", workspace_id="w")
    await store.expire("dead")
    clock.advance(1)


async def test_custom_selector_gets_candidates_and_its_choice_is_used(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)
    selector = Recorder(lambda candidates: candidates[-1])
    chosen = await store.resolve(
        user_id="u1", workspace_id="w", surface_id="web", resolver=selector
    )
    [(candidates, surface_id)] = selector.calls
    # Live sessions of this user and workspace, most recently active first.
    assert [c.id for c in candidates] == ["newest", "middle", "oldest"]
    assert surface_id == "web"
    assert chosen.id == "oldest"
    assert chosen.state is SessionState.ACTIVE
    assert chosen.last_activity_at == clock()


async def test_custom_selector_returning_none_creates(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)
    before = {s.id for s in await _everything(store)}
    created = await store.resolve(
        user_id="u1", workspace_id="w", surface_id="web", resolver=Recorder(None)
    )
    assert created.id not in before
    assert (created.user_id, created.workspace_id) == ("u1", "w")
    assert created.attached_surfaces == ("web",)
    assert created.state is SessionState.CREATED


async def test_custom_selector_returning_a_non_candidate_is_refused(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)
    stranger = await store.get("stranger")
    elsewhere = await store.get("elsewhere")
    dead = await store.get("dead")
    assert stranger is not None
    assert elsewhere is not None
    assert dead is not None
    fake = attrs.evolve(stranger, id="made-up", user_id="u1")
    before = await _everything(store)
    for wrong in (stranger, elsewhere, dead, fake, "newest"):
        with pytest.raises(InvalidInputError):
            await store.resolve(user_id="u1", workspace_id="w", resolver=Recorder(wrong))
        assert await _everything(store) == before


async def test_custom_selector_returning_a_changed_copy_gets_the_stored_candidate(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)

    def forged(candidates: Sequence[Session]) -> Session:
        return attrs.evolve(candidates[0], attached_surfaces=("forged",))

    chosen = await store.resolve(user_id="u1", workspace_id="w", resolver=Recorder(forged))
    assert chosen.id == "newest"
    assert chosen.attached_surfaces == ()


async def test_custom_selector_that_raises_propagates_and_changes_nothing(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)
    before = await _everything(store)

    class Boom(Exception):
        pass

    def explode(candidates: Sequence[Session]) -> Session:
        raise Boom("selector failed")

    with pytest.raises(Boom):
        await store.resolve(user_id="u1", workspace_id="w", resolver=Recorder(explode))
    assert await _everything(store) == before
    # The actor is still fine.
    assert (await store.resolve(user_id="u1", workspace_id="w")).id == "newest"


async def test_resolve_session_with_a_custom_selector(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)
    selector = Recorder(lambda candidates: candidates[1])
    chosen = await resolve_session(
        {"user_id": "u1", "workspace_id": "w", "surface_id": "sms"}, store, selector
    )
    assert chosen.id == "middle"
    assert selector.calls[0][1] == "sms"


async def test_subclassed_affinity_resolver_rule_is_used(
    store: SessionStore, clock: FakeClock
) -> None:
    await _three(store, clock)

    class OldestFirst(AffinityResolver):
        def select(
            self, candidates: Sequence[Session], *, surface_id: str | None
        ) -> Session | None:
            return min(candidates, key=lambda s: s.created_at, default=None)

    resolver = OldestFirst(store)
    looked_up = await resolver.resolve("u1", workspace_id="w")
    assert looked_up is not None
    assert looked_up.id == "oldest"
    resolved = await resolve_session({"user_id": "u1", "workspace_id": "w"}, store, resolver)
    assert resolved.id == "oldest"
