"""Input at the edges of what the API documents: each gets a documented error (or is taken as
documented), at the call that brings it, on every adapter it concerns."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from _fault_adapter import FailingAdapter, Storage, make_adapter
from assistant_sessions import (
    AdapterError,
    EventKind,
    InMemorySessionStoreAdapter,
    InvalidInputError,
    SessionStore,
    WrongThreadError,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[SessionStore]:
    adapter = make_adapter(request.param, Storage(tmp_path))
    async with create_session_store(adapter, clock=clock) as opened:
        yield opened


class EvilStr(str):
    """A str subclass whose ``__str__`` lies."""

    __slots__ = ()

    def __str__(self) -> str:
        return "someone-else"


class SelfStr(str):
    """A str subclass whose ``__str__`` returns itself."""

    __slots__ = ()

    def __str__(self) -> str:
        return self


async def test_str_subclass_ids_are_taken_by_their_string_value(any_store: SessionStore) -> None:
    session = await any_store.create(user_id=EvilStr("alice"), id=SelfStr("s1"))
    assert (session.user_id, session.id) == ("alice", "s1")
    assert type(session.user_id) is str
    assert type(session.id) is str
    again = await any_store.resolve(user_id=SelfStr("alice"), surface_id=EvilStr("web"))
    assert again.id == "s1"
    assert again.attached_surfaces == ("web",)
    assert await any_store.find(user_id=EvilStr("someone-else")) == []
    updated = await any_store.update_metadata("s1", {EvilStr("k"): EvilStr("v")})
    assert dict(updated.metadata) == {"k": "v"}
    assert all(type(k) is str and type(v) is str for k, v in updated.metadata.items())


@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "s\x00"])
async def test_ids_with_nul_are_refused_and_change_nothing(
    any_store: SessionStore, bad: str
) -> None:
    await any_store.create(user_id="a", id="s")
    before = await any_store.find(limit=100)
    calls = [
        lambda: any_store.create(user_id=bad),
        lambda: any_store.create(user_id="a", id=bad),
        lambda: any_store.create(user_id="a", workspace_id=bad),
        lambda: any_store.resolve(user_id="a", surface_id=bad),
        lambda: any_store.get(bad),
        lambda: any_store.find(user_id=bad),
        lambda: any_store.attach_surface("s", bad),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="NUL"):
            await call()
    assert await any_store.find(limit=100) == before


async def test_out_of_range_numbers_are_invalid_input(any_store: SessionStore) -> None:
    await any_store.create(user_id="a")
    before = await any_store.find(limit=100)
    for limit in (2**63, 10**100):
        with pytest.raises(InvalidInputError):
            await any_store.find(limit=limit)
    assert len(await any_store.find(limit=2**63 - 1)) == 1
    for ttl in (10**12, 1e20, timedelta(days=10**6), timedelta.max):
        with pytest.raises(InvalidInputError):
            await any_store.sweep_stale(ttl=ttl)
    assert await any_store.find(limit=100) == before


@pytest.mark.parametrize(
    "options",
    [
        {"default_ttl": 1e20},
        {"default_ttl": timedelta(days=10**6)},
        {"sweep_interval": 10**30},
        {"expire_after": timedelta.max},
        {"purge_after": 1e300},
    ],
)
def test_out_of_range_durations_are_refused_when_the_store_is_created(
    options: dict[str, object],
) -> None:
    with pytest.raises(InvalidInputError):
        create_session_store(**options)  # type: ignore[arg-type]


async def test_the_longest_duration_still_sweeps() -> None:
    """A duration at the bound works in every periodic sweep: the cutoff is a valid time."""
    async with create_session_store(
        default_ttl=timedelta(days=1000 * 365), expire_after=timedelta(days=1000 * 365)
    ) as store:
        await store.create(user_id="a")
        assert await store._runtime.sweeper.sweep_once() == ([], [], [])


async def test_a_clock_in_another_zone_gives_utc_times(tmp_path: Path) -> None:
    zone = timezone(timedelta(hours=5, minutes=30))
    fixed = datetime(2026, 3, 1, 12, 0, tzinfo=zone)
    for kind in ("memory", "sqlite"):
        (tmp_path / kind).mkdir()
        adapter = make_adapter(kind, Storage(tmp_path / kind))
        async with create_session_store(adapter, clock=lambda: fixed) as store:
            session = await store.create(user_id="a")
            assert session.created_at == fixed
            for stamp in (session.created_at, session.last_activity_at, session.state_changed_at):
                assert stamp.tzinfo is UTC
                assert (stamp.hour, stamp.minute) == (6, 30)
            assert await store.get(session.id) == session


async def test_subscribe_takes_one_kind_as_a_string(store: SessionStore) -> None:
    async with (
        store.subscribe(kinds="created") as created,
        store.subscribe(kinds=EventKind.DELETED) as deleted,
    ):
        session = await store.create(user_id="u")
        await store.touch(session.id)
        await store.delete(session.id)
        assert [e.kind for e in created.receive_nowait()] == [EventKind.CREATED]
        assert [e.kind for e in deleted.receive_nowait()] == [EventKind.DELETED]
    with pytest.raises(InvalidInputError):
        store.subscribe(kinds="c")


async def test_a_call_from_another_thread_says_how_to_make_it(store: SessionStore) -> None:
    session = await store.create(user_id="u")

    def elsewhere() -> None:
        # Another event loop in another thread: refused clearly, nothing breaks.
        with pytest.raises(WrongThreadError, match="from_thread"):
            asyncio.run(store.get(session.id))
        with pytest.raises(WrongThreadError):
            asyncio.run(store.resolve(user_id="u"))
        # Through the store's own loop, it works.
        assert anyio.from_thread.run(store.get, session.id) == session

    await anyio.to_thread.run_sync(elsewhere)
    assert await store.touch(session.id) is not None
    assert store.statistics().restarts == 0


@pytest.mark.parametrize(
    ("blocked", "statement", "extra"),
    [
        ("opentelemetry", "import assistant_sessions.otel", "[otel]"),
        ("coredis", "from assistant_sessions import RedisSessionStoreAdapter", "[redis]"),
    ],
)
def test_a_missing_extra_is_named(blocked: str, statement: str, extra: str) -> None:
    code = f"import sys; sys.modules[{blocked!r}] = None\n{statement}"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert f"pip install 'assistant-sessions{extra}'" in result.stderr


async def test_storage_failures_are_logged_without_a_traceback(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingAdapter(
        InMemorySessionStoreAdapter(), seed=1, commit_rate=1.0, load_rate=0.0, crash_share=0.0
    )
    caplog.set_level(logging.DEBUG, logger="assistant_sessions")
    async with create_session_store(failing, clock=clock) as store:
        with pytest.raises(AdapterError):
            await store.create(user_id="u")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings
    assert all(r.exc_info is None for r in warnings)
    # The traceback is there for whoever asks for debug logs.
    assert any(r.exc_info is not None for r in caplog.records if r.levelno == logging.DEBUG)


async def test_metadata_integers_too_long_to_write_are_invalid(any_store: SessionStore) -> None:
    session = await any_store.create(user_id="a", metadata={"n": 2**1000})
    for huge in (10**5000, -(2**14_001)):
        with pytest.raises(InvalidInputError, match="bits"):
            await any_store.update_metadata(session.id, {"n": huge})
    assert await any_store.get(session.id) == session
