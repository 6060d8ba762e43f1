"""Per-session limits: surfaces and metadata size; exceeding one is invalid input."""

from __future__ import annotations

import pytest

from assistant_sessions import InvalidInputError, InvalidTypeError, create_session_store

pytestmark = pytest.mark.anyio


async def test_max_surfaces() -> None:
    async with create_session_store(max_surfaces=2) as store:
        session = await store.create(user_id="u", initial_surface_id="a")
        await store.attach_surface(session.id, "b")
        await store.attach_surface(session.id, "b")  # already there: fine
        with pytest.raises(InvalidInputError, match="maximum of 2"):
            await store.attach_surface(session.id, "c")
        after = await store.get(session.id)
        assert after is not None
        assert after.attached_surfaces == ("a", "b")


async def test_max_metadata_bytes() -> None:
    async with create_session_store(max_metadata_bytes=40) as store:
        session = await store.create(user_id="u", metadata={"a": "x" * 10})
        with pytest.raises(InvalidInputError, match="limit is 40"):
            await store.update_metadata(session.id, {"b": "y" * 30})
        after = await store.get(session.id)
        assert after is not None
        assert dict(after.metadata) == {"a": "x" * 10}
        with pytest.raises(InvalidInputError):
            await store.create(user_id="u", metadata={"big": "z" * 100})
        assert len(await store.find(user_id="u")) == 1


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("max_surfaces", 0, InvalidInputError),
        ("max_metadata_bytes", -1, InvalidInputError),
        ("max_surfaces", 2.5, InvalidTypeError),
        ("exclusive_surfaces", "yes", InvalidTypeError),
        ("purge_after", 0, InvalidInputError),
    ],
)
def test_bad_limit_options(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        create_session_store(**{option: value})  # type: ignore[arg-type]
