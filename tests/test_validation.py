"""Bad input gets a clear exception of the right family and changes nothing.

Also the store's lifetime errors: using a store that is not open raises ``StoreClosedError``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from assistant_sessions import (
    InMemorySessionStoreAdapter,
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionError,
    SessionStore,
    StoreClosedError,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

Call = Callable[[SessionStore], Awaitable[Any]]

LONGEST_ID = "x" * 512
TOO_LONG_ID = "x" * 513


@pytest.fixture
async def populated(store: SessionStore, clock: FakeClock) -> SessionStore:
    await store.create(user_id="u1", id="s1", initial_surface_id="web", metadata={"k": [1]})
    clock.advance(1)
    await store.create(user_id="u2", id="s2", workspace_id="w")
    await store.touch("s2")
    return store


async def _everything(store: SessionStore) -> list[Session]:
    return await store.find(limit=10_000)


def test_error_families() -> None:
    assert issubclass(InvalidInputError, SessionError)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidTypeError, SessionError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(StoreClosedError, SessionError)


# -- ids -------------------------------------------------------------------------------------

_BAD_ID_VALUES: list[tuple[object, type[SessionError]]] = [
    ("", InvalidInputError),
    ("   ", InvalidInputError),
    ("\t\n", InvalidInputError),
    (TOO_LONG_ID, InvalidInputError),
    ("lone \ud800 surrogate", InvalidInputError),
    (123, InvalidTypeError),
    (b"bytes", InvalidTypeError),
    (["s1"], InvalidTypeError),
]


def _id_calls(bad: Any) -> list[tuple[str, Call]]:
    """Every call of the API with ``bad`` in one id argument."""
    return [
        ("create.user_id", lambda s: s.create(user_id=bad)),
        ("create.id", lambda s: s.create(user_id="u1", id=bad)),
        ("create.workspace_id", lambda s: s.create(user_id="u1", workspace_id=bad)),
        ("create.initial_surface_id", lambda s: s.create(user_id="u1", initial_surface_id=bad)),
        ("get", lambda s: s.get(bad)),
        ("touch", lambda s: s.touch(bad)),
        ("expire", lambda s: s.expire(bad)),
        ("attach.session_id", lambda s: s.attach_surface(bad, "web")),
        ("attach.surface_id", lambda s: s.attach_surface("s1", bad)),
        ("detach.session_id", lambda s: s.detach_surface(bad, "web")),
        ("detach.surface_id", lambda s: s.detach_surface("s1", bad)),
        ("update_metadata", lambda s: s.update_metadata(bad, {"a": 1})),
        ("find.user_id", lambda s: s.find(user_id=bad)),
        ("find.workspace_id", lambda s: s.find(workspace_id=bad)),
        ("find.surface_id", lambda s: s.find(surface_id=bad)),
        ("resolve.user_id", lambda s: s.resolve(user_id=bad)),
        ("resolve.surface_id", lambda s: s.resolve(user_id="u1", surface_id=bad)),
        ("resolve.workspace_id", lambda s: s.resolve(user_id="u1", workspace_id=bad)),
    ]


@pytest.mark.parametrize(
    ("bad", "error"),
    _BAD_ID_VALUES,
    ids=["empty", "blank", "whitespace", "long", "surrogate", "int", "bytes", "list"],
)
async def test_bad_ids_are_rejected_and_change_nothing(
    populated: SessionStore, bad: object, error: type[SessionError]
) -> None:
    before = await _everything(populated)
    for name, call in _id_calls(bad):
        with pytest.raises(error):
            await call(populated)
        assert await _everything(populated) == before, name


async def test_none_for_a_required_id_is_a_type_error(populated: SessionStore) -> None:
    before = await _everything(populated)
    calls: list[Call] = [
        lambda s: s.create(user_id=None),  # type: ignore[arg-type]
        lambda s: s.get(None),  # type: ignore[arg-type]
        lambda s: s.touch(None),  # type: ignore[arg-type]
        lambda s: s.attach_surface("s1", None),  # type: ignore[arg-type]
        lambda s: s.resolve(user_id=None),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidTypeError):
            await call(populated)
    assert await _everything(populated) == before


async def test_longest_id_is_accepted(store: SessionStore) -> None:
    session = await store.create(user_id=LONGEST_ID, id=LONGEST_ID, initial_surface_id=LONGEST_ID)
    assert await store.get(LONGEST_ID) == session


async def test_non_ascii_ids_are_accepted(store: SessionStore) -> None:
    session = await store.create(user_id="ユーザー", id="séance-☃", initial_surface_id="канал")
    assert await store.get("séance-☃") == session
    assert [s.id for s in await store.find(user_id="ユーザー", surface_id="канал")] == ["séance-☃"]


async def test_str_subclass_ids_are_stored_as_plain_str(store: SessionStore) -> None:
    class Name(str):
        pass

    session = await store.create(user_id=Name("u1"), id=Name("s1"))
    assert type(session.id) is str
    assert type(session.user_id) is str


# -- metadata --------------------------------------------------------------------------------

_BAD_METADATA: list[tuple[object, type[SessionError]]] = [
    (["not", "a", "mapping"], InvalidTypeError),
    ("text", InvalidTypeError),
    (42, InvalidTypeError),
    ({1: "int key"}, InvalidTypeError),
    ({("tuple",): "key"}, InvalidTypeError),
    ({"nested": {2: "int key"}}, InvalidTypeError),
    ({"obj": object()}, InvalidTypeError),
    ({"set": {1, 2}}, InvalidTypeError),
    ({"bytes": b"x"}, InvalidTypeError),
    ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, InvalidTypeError),
    ({"deep": [{"list": [object()]}]}, InvalidTypeError),
    ({"nan": math.nan}, InvalidInputError),
    ({"inf": math.inf}, InvalidInputError),
    ({"ninf": [-math.inf]}, InvalidInputError),
    ({"surrogate": "\udc80"}, InvalidInputError),
    ({"key \ud800": 1}, InvalidInputError),
    ({"nested": [{"k": "ok \udfff"}]}, InvalidInputError),
]


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


@pytest.mark.parametrize(("bad", "error"), _BAD_METADATA)
async def test_bad_metadata_is_rejected_and_changes_nothing(
    populated: SessionStore, bad: Any, error: type[SessionError]
) -> None:
    before = await _everything(populated)
    with pytest.raises(error):
        await populated.create(user_id="u1", metadata=bad)
    with pytest.raises(error):
        await populated.update_metadata("s1", bad)
    assert await _everything(populated) == before


async def test_metadata_nested_too_deep_is_rejected(populated: SessionStore) -> None:
    before = await _everything(populated)
    with pytest.raises(InvalidInputError):
        await populated.update_metadata("s1", _deep(1000))
    assert await _everything(populated) == before
    # A reasonable depth is fine.
    updated = await populated.update_metadata("s1", _deep(10))
    assert "d" in updated.metadata


async def test_bad_metadata_on_unknown_session_is_still_invalid_input(
    populated: SessionStore,
) -> None:
    # Input is checked before the session is looked up.
    with pytest.raises(InvalidTypeError):
        await populated.update_metadata("ghost", {1: 2})  # type: ignore[dict-item]


# -- find arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (0, InvalidInputError),
        (-1, InvalidInputError),
        (1.0, InvalidTypeError),
        (2.5, InvalidTypeError),
        ("10", InvalidTypeError),
        (True, InvalidTypeError),
        (None, InvalidTypeError),
    ],
)
async def test_bad_limit(populated: SessionStore, limit: Any, error: type[SessionError]) -> None:
    with pytest.raises(error):
        await populated.find(limit=limit)


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("bogus", InvalidInputError),
        ("ACTIVE", InvalidInputError),
        ("", InvalidInputError),
        (1, InvalidTypeError),
        (object(), InvalidTypeError),
    ],
)
async def test_unknown_state(
    populated: SessionStore, state: Any, error: type[SessionError]
) -> None:
    with pytest.raises(error):
        await populated.find(state=state)


@pytest.mark.parametrize(
    ("moment", "error"),
    [
        (datetime(2026, 1, 1), InvalidInputError),  # naive
        ("2026-01-01T00:00:00+00:00", InvalidTypeError),
        (1767225600, InvalidTypeError),
    ],
    ids=["naive", "iso-string", "epoch-number"],
)
async def test_bad_active_after(
    populated: SessionStore, moment: Any, error: type[SessionError]
) -> None:
    with pytest.raises(error):
        await populated.find(active_after=moment)


# -- durations -------------------------------------------------------------------------------

_BAD_DURATIONS: list[tuple[object, type[SessionError]]] = [
    (0, InvalidInputError),
    (0.0, InvalidInputError),
    (-1, InvalidInputError),
    (timedelta(0), InvalidInputError),
    (timedelta(seconds=-5), InvalidInputError),
    (math.nan, InvalidInputError),
    (math.inf, InvalidInputError),
    ("60", InvalidTypeError),
    (True, InvalidTypeError),
    ([60], InvalidTypeError),
]


@pytest.mark.parametrize(("ttl", "error"), _BAD_DURATIONS)
async def test_bad_sweep_ttl(
    populated: SessionStore, clock: FakeClock, ttl: Any, error: type[SessionError]
) -> None:
    clock.advance(10_000)
    before = await _everything(populated)
    with pytest.raises(error):
        await populated.sweep_stale(ttl)
    assert await _everything(populated) == before


@pytest.mark.parametrize(
    "name",
    ["default_ttl", "sweep_interval", "expire_after", "idle_after", "restart_window"],
)
@pytest.mark.parametrize(("value", "error"), _BAD_DURATIONS)
def test_bad_durations_of_create_session_store(
    name: str, value: Any, error: type[SessionError]
) -> None:
    with pytest.raises(error):
        create_session_store(**{name: value})


def test_default_ttl_cannot_be_none() -> None:
    with pytest.raises(InvalidTypeError):
        create_session_store(default_ttl=None)  # type: ignore[arg-type]


def test_optional_durations_accept_none_and_timedelta() -> None:
    stores = [
        create_session_store(
            default_ttl=timedelta(minutes=30), sweep_interval=None, expire_after=None
        ),
        create_session_store(default_ttl=0.5, sweep_interval=timedelta(seconds=1), expire_after=2),
    ]
    assert all(isinstance(store, SessionStore) for store in stores)


def test_bad_clock() -> None:
    with pytest.raises(InvalidTypeError):
        create_session_store(clock="now")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        create_session_store(clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(InvalidTypeError):
        create_session_store(clock=lambda: 1767225600.0)  # type: ignore[arg-type,return-value]


def test_bad_adapter() -> None:
    with pytest.raises(InvalidTypeError):
        create_session_store(adapter={})  # type: ignore[arg-type]


async def test_bad_resolver_is_a_type_error(populated: SessionStore) -> None:
    before = await _everything(populated)
    with pytest.raises(InvalidTypeError):
        await populated.resolve(user_id="u9", resolver=lambda c, **kw: None)  # type: ignore[arg-type]
    assert await _everything(populated) == before


# -- the store's lifetime --------------------------------------------------------------------


def _every_call() -> list[tuple[str, Call]]:
    return [
        ("create", lambda s: s.create(user_id="u1")),
        ("get", lambda s: s.get("s1")),
        ("find", lambda s: s.find()),
        ("touch", lambda s: s.touch("s1")),
        ("attach_surface", lambda s: s.attach_surface("s1", "web")),
        ("detach_surface", lambda s: s.detach_surface("s1", "web")),
        ("expire", lambda s: s.expire("s1")),
        ("sweep_stale", lambda s: s.sweep_stale()),
        ("update_metadata", lambda s: s.update_metadata("s1", {"a": 1})),
        ("resolve", lambda s: s.resolve(user_id="u1")),
    ]


async def test_store_used_before_entering_raises(clock: FakeClock) -> None:
    store = create_session_store(clock=clock)
    for _name, call in _every_call():
        with pytest.raises(StoreClosedError):
            await call(store)


async def test_store_used_after_exit_raises(clock: FakeClock) -> None:
    async with create_session_store(clock=clock) as store:
        await store.create(user_id="u1", id="s1")
    for _name, call in _every_call():
        with pytest.raises(StoreClosedError):
            await call(store)


async def test_store_cannot_be_entered_twice(clock: FakeClock) -> None:
    store = create_session_store(clock=clock)
    async with store:
        with pytest.raises(StoreClosedError):
            async with store:
                pass
        # The failed second entry did not disturb the open store.
        session = await store.create(user_id="u1", id="s1")
        assert await store.get("s1") == session
    with pytest.raises(StoreClosedError):
        async with store:
            pass


async def test_entering_one_store_from_two_tasks_at_once(clock: FakeClock) -> None:
    """The second of two concurrent entries raises StoreClosedError, even while the first is
    still opening the adapter; the first opens and works."""
    adapter = InMemorySessionStoreAdapter()
    opening, release = anyio.Event(), anyio.Event()
    real_open = adapter.open

    async def gated_open() -> None:
        opening.set()
        await release.wait()
        await real_open()

    adapter.open = gated_open  # type: ignore[method-assign]
    store = create_session_store(adapter, clock=clock)
    outcomes: dict[str, object] = {}

    async def enter(name: str) -> None:
        try:
            async with store:
                outcomes[name] = await store.create(user_id=name)
        except StoreClosedError as exc:
            outcomes[name] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(enter, "first")
            await opening.wait()
            tg.start_soon(enter, "second")
            await anyio.wait_all_tasks_blocked()
            assert isinstance(outcomes.get("second"), StoreClosedError)
            release.set()
    assert isinstance(outcomes["first"], Session)


async def test_a_new_store_on_the_same_adapter_sees_the_sessions(clock: FakeClock) -> None:
    adapter = InMemorySessionStoreAdapter()
    async with create_session_store(adapter, clock=clock) as first:
        created = await first.create(user_id="u1", id="s1")
    async with create_session_store(adapter, clock=clock) as second:
        assert await second.get("s1") == created
