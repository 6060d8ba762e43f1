"""find_iter: every match, in order, page by page."""

from __future__ import annotations

import pytest

from assistant_sessions import InvalidInputError, SessionStore
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_iterates_every_match_in_order(store: SessionStore, clock: FakeClock) -> None:
    created = []
    for i in range(25):
        created.append(await store.create(user_id=f"u{i % 3}", workspace_id="w"))
        if i % 4:  # several sessions share a timestamp: ties are ordered by id
            clock.advance(1)
    everything = [s async for s in store.find_iter(page_size=4)]
    expected = sorted(created, key=lambda s: (s.last_activity_at, s.id), reverse=True)
    assert [s.id for s in everything] == [s.id for s in expected]
    mine = [s.id async for s in store.find_iter(user_id="u1", page_size=3)]
    assert mine == [s.id for s in expected if s.user_id == "u1"]
    assert [s async for s in store.find_iter(user_id="nobody")] == []


async def test_exact_multiple_of_page_size(store: SessionStore, clock: FakeClock) -> None:
    for _ in range(6):
        await store.create(user_id="u")
        clock.advance(1)
    assert len([s async for s in store.find_iter(page_size=3)]) == 6


async def test_bad_page_size_fails_at_once(store: SessionStore) -> None:
    with pytest.raises(InvalidInputError):
        store.find_iter(page_size=0)
