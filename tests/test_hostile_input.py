"""Hostile values fed to the whole public API: only documented errors come out, a refused call
changes nothing, and what a call accepted reads back exactly -- on the memory, SQLite and Redis
adapters, on asyncio and on trio."""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fault_adapter import Storage, adapter_kinds, make_adapter, server_url
from assistant_sessions import (
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionConflictError,
    SessionNotFoundError,
    SessionStateError,
    SessionStore,
    create_session_store,
)
from assistant_sessions.testing import FakeClock

#: What the API documents for bad input, or for a call on a session that cannot take it.
DOCUMENTED = (
    InvalidInputError,
    InvalidTypeError,
    SessionNotFoundError,
    SessionStateError,
    SessionConflictError,
)


class LyingStr(str):
    __slots__ = ()

    def __str__(self) -> str:
        return "lie"


class SelfStr(str):
    __slots__ = ()

    def __str__(self) -> str:
        return self


_strange_text = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "{b0}",
        "}{",
        "'",
        '"',
        "\\",
        "%s",
        ":",
        "2:u1s1",
        " ",
        "",
        "\ud800",
        "x" * 600,
        "u1",
        "s1",
        "w",
        "web",
    ]
)
ids = st.one_of(
    _strange_text,
    st.text(max_size=8),
    st.builds(LyingStr, st.sampled_from(["u1", "s1", "a\x00", "web"])),
    st.builds(SelfStr, st.sampled_from(["u1", "s1", "x"])),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.floats(),
    st.tuples(st.text(max_size=2)),
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.just(10**5000),
    st.just(-(2**14_001)),
    st.text(max_size=6),
    _strange_text,
    st.builds(LyingStr, st.text(max_size=3)),
    st.lists(st.floats(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=3),
)
metadata = st.one_of(
    st.dictionaries(
        st.one_of(st.text(max_size=4), _strange_text, st.integers(), st.none()), values, max_size=3
    ),
    st.integers(),
    st.text(max_size=3),
    st.none(),
)
limits = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(),
    st.none(),
    st.text(max_size=2),
)
durations = st.one_of(
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.timedeltas(),
    st.just(timedelta.max),
    st.text(max_size=2),
    st.none(),
)

Call = Callable[[SessionStore], Awaitable[Any]]

calls: st.SearchStrategy[tuple[str, Call]] = st.one_of(
    st.builds(
        lambda u, i, w, s, m: (
            "create",
            lambda st_: st_.create(
                user_id=u, id=i, workspace_id=w, initial_surface_id=s, metadata=m
            ),
        ),
        ids,
        ids,
        ids,
        ids,
        metadata,
    ),
    st.builds(
        lambda u, w, s: (
            "resolve",
            lambda st_: st_.resolve(user_id=u, workspace_id=w, surface_id=s),
        ),
        ids,
        ids,
        ids,
    ),
    st.builds(lambda i: ("get", lambda st_: st_.get(i)), ids),
    st.builds(
        lambda u, w, s, n: (
            "find",
            lambda st_: st_.find(user_id=u, workspace_id=w, surface_id=s, limit=n),
        ),
        ids,
        ids,
        ids,
        limits,
    ),
    st.builds(lambda i: ("touch", lambda st_: st_.touch(i)), ids),
    st.builds(lambda i, s: ("attach", lambda st_: st_.attach_surface(i, s)), ids, ids),
    st.builds(lambda i, s: ("detach", lambda st_: st_.detach_surface(i, s)), ids, ids),
    st.builds(lambda i, m: ("metadata", lambda st_: st_.update_metadata(i, m)), ids, metadata),
    st.builds(lambda i: ("expire", lambda st_: st_.expire(i)), ids),
    st.builds(lambda i: ("delete", lambda st_: st_.delete(i)), ids),
    st.builds(lambda t: ("sweep", lambda st_: st_.sweep_stale(t)), durations),
)


async def _snapshot(store: SessionStore) -> list[Session]:
    return await store.find(limit=10_000)


async def _run(kind: str, directory: Path, url: str | None, batch: list[tuple[str, Call]]) -> None:
    clock = FakeClock()
    # A new storage (directory, or Redis key prefix) for every example.
    adapter = make_adapter(kind, Storage(directory, url))
    async with create_session_store(adapter, clock=clock, sweep_interval=None) as store:
        await store.create(user_id="u1", id="s1", initial_surface_id="web")
        await store.create(user_id="u2", id="s2", workspace_id="w")
        for _name, call in batch:
            before = await _snapshot(store)
            try:
                result = await call(store)
            except DOCUMENTED:
                assert await _snapshot(store) == before
                continue
            # Whatever was accepted reads back exactly as it was returned.
            if isinstance(result, Session) and await store.get(result.id) is not None:
                assert await store.get(result.id) == result
                assert type(result.id) is str
                assert type(result.user_id) is str
            clock.advance(1)


@pytest.mark.parametrize("kind", adapter_kinds())
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_hostile_input_gets_only_documented_errors(
    kind: str, backend: str, request: pytest.FixtureRequest
) -> None:
    url = server_url(kind, request)

    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(calls, min_size=1, max_size=6))
    def check(batch: list[tuple[str, Call]]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            anyio.run(_run, kind, Path(directory), url, batch, backend=backend)

    check()
