import pytest

from assistant_sessions import SessionStore

pytestmark = pytest.mark.anyio


async def test_resolve_twice_reuses_the_session(store: SessionStore) -> None:
    first = await store.resolve(user_id="u", surface_id="web")
    second = await store.resolve(user_id="u", surface_id="web")
    assert first.id == second.id
