"""Adapters for the reliability tests: the adapters under test, and wrappers that misbehave.

* :func:`adapter_kinds` / :func:`make_adapter`: every real adapter the suites run against
  (memory, SQLite, Redis and PostgreSQL), over a :class:`Storage` of the test's own;
  :func:`server_url` finds the server the ``redis`` and ``postgres`` kinds need.
* :class:`FailingAdapter`: raises on a seeded fraction of commits and loads, either before the
  inner adapter applied anything (a clean failure) or after it applied the commit (an
  ambiguous one), and logs what the inner adapter really applied.
* :class:`SyncFailingAdapter`: the same over the in-memory adapter's synchronous fast path.
* :class:`LaggingAdapter`: passes everything through after a seeded number of checkpoints, so
  cancellations and queued callers land while an actor is loading or committing.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import anyio
import anyio.lowlevel
import pytest

from assistant_sessions import InMemorySessionStoreAdapter, SessionQuery, SessionState
from assistant_sessions.adapters import (
    GroupLoadAdapter,
    Rejection,
    SessionStoreAdapter,
    UserCommit,
    UserSnapshot,
)
from assistant_sessions.adapters.postgres import PostgresSessionStoreAdapter
from assistant_sessions.adapters.redis import RedisSessionStoreAdapter
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter
from assistant_sessions.errors import AdapterError
from assistant_sessions.model import Session

__all__ = [
    "AFTER",
    "BEFORE",
    "CRASH",
    "ERROR",
    "FailingAdapter",
    "Fault",
    "LaggingAdapter",
    "Storage",
    "SyncFailingAdapter",
    "adapter_kinds",
    "make_adapter",
    "server_url",
]

#: Where a commit fault strikes: before the inner adapter applied anything, or after.
BEFORE: Final = "before"
AFTER: Final = "after"
#: What a fault raises: ``AdapterError`` (a storage failure) or ``RuntimeError`` (a crash).
ERROR: Final = "error"
CRASH: Final = "crash"


def _fresh_prefix() -> str:
    # Not uuid4: the model-based test replaces it with a replayable sequence, which would give
    # every example the same prefix, and so the previous example's sessions.
    return f"t{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Storage:
    """Where a test keeps its data: SQLite files under ``directory``, or, on the server at
    ``url`` (Redis or PostgreSQL), keys under a ``key_prefix`` of its own (Redis) or a schema
    of that name (PostgreSQL).

    Adapters made over one ``Storage`` share their data, as processes would; a new ``Storage``
    (with a new directory) starts empty.
    """

    directory: Path
    url: str | None = None
    key_prefix: str = field(default_factory=_fresh_prefix)


def adapter_kinds() -> list[str]:
    """The real adapters to run the suites against."""
    return ["memory", "sqlite", "redis", "postgres"]


def server_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    """The address of the session's private server for the ``redis`` (its url) and
    ``postgres`` (its DSN) kinds, else ``None``.

    The server fixture is asked for only then, so that without the server's binaries just
    those cases skip (or fail, under ``ASSISTANT_SESSIONS_REQUIRE_REDIS=1`` or
    ``ASSISTANT_SESSIONS_REQUIRE_POSTGRES=1``).
    """
    if kind == "redis":
        url: str = request.getfixturevalue("redis_server").url
        return url
    if kind == "postgres":
        dsn: str = request.getfixturevalue("postgres_server").dsn
        return dsn
    return None


def make_adapter(kind: str, storage: Storage | Path) -> SessionStoreAdapter:
    """A new adapter of ``kind`` over ``storage`` (``memory``: a new, empty one every time).

    A bare directory stands for a ``Storage`` without Redis.
    """
    if isinstance(storage, Path):
        storage = Storage(storage)
    if kind == "memory":
        return InMemorySessionStoreAdapter()
    if kind == "sqlite":
        # OFF: these suites test the store's logic, not the disk; the crash test tests the disk.
        return SqliteSessionStoreAdapter(storage.directory / "sessions.db", synchronous="OFF")
    if kind == "redis":
        assert storage.url is not None, "the redis kind needs server_url()"
        return RedisSessionStoreAdapter(storage.url, key_prefix=storage.key_prefix)
    if kind == "postgres":
        assert storage.url is not None, "the postgres kind needs server_url()"
        return PostgresSessionStoreAdapter(storage.url, schema=storage.key_prefix)
    raise ValueError(kind)


class Fault(Exception):
    """Marker base of the injected exceptions, so tests can tell them from real ones."""


class InjectedAdapterError(AdapterError, Fault):
    """An injected storage failure; ``where`` is :data:`BEFORE` or :data:`AFTER` (or "load")."""

    def __init__(self, where: str, number: int) -> None:
        super().__init__(f"injected storage failure #{number} ({where})")
        self.where = where


class InjectedCrash(RuntimeError, Fault):
    """An injected unexpected exception; ``where`` as in :class:`InjectedAdapterError`."""

    def __init__(self, where: str, number: int) -> None:
        super().__init__(f"injected crash #{number} ({where})")
        self.where = where


class Passthrough:
    """An adapter that passes every call to ``inner``: the base of the test wrappers, which
    override only what they change."""

    def __init__(self, inner: SessionStoreAdapter) -> None:
        self.inner = inner

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def load_user(self, user_id: str) -> UserSnapshot:
        return await self.inner.load_user(user_id)

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        return await self.inner.commit(commits)

    async def get(self, session_id: str) -> Session | None:
        return await self.inner.get(session_id)

    async def find(self, query: SessionQuery) -> list[Session]:
        return await self.inner.find(query)

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        return await self.inner.due(state, before, limit, after=after)


class FailingAdapter(Passthrough):
    """Wraps an adapter and fails a seeded fraction of its commits and loads.

    A commit fault strikes :data:`BEFORE` (nothing reaches the inner adapter: the failure is
    clean) or :data:`AFTER` (the inner adapter applied the commit, then the call raises: the
    outcome is unknown to the caller). Only users for which ``faulty(user_id)`` is true get
    faults. ``get``, ``find`` and ``due`` always pass through.

    With ``grouped``, it is a :class:`~assistant_sessions.adapters.GroupCommitAdapter`: the
    store hands it many users' commits in one call, and a fault strikes them all. A crash then
    strikes only :data:`BEFORE`, as the contract asks of an exception other than
    ``AdapterError``.

    Attributes:
        applied: Every user commit the inner adapter applied, in order.
        faults: How many faults were injected, by ``(kind, where)``.
        enabled: Set to false to stop injecting faults.
    """

    def __init__(
        self,
        inner: SessionStoreAdapter,
        *,
        seed: int,
        commit_rate: float = 0.2,
        load_rate: float = 0.1,
        crash_share: float = 0.3,
        faulty: Callable[[str], bool] = lambda _user: True,
        grouped: bool = False,
    ) -> None:
        self.inner = inner
        self.group_commit = grouped
        self.enabled = True
        self.applied: list[UserCommit] = []
        self.faults: dict[tuple[str, str], int] = {}
        self._random = random.Random(seed)
        self._commit_rate = commit_rate
        self._load_rate = load_rate
        self._crash_share = crash_share
        self._faulty = faulty

    def _draw(self, user_ids: Sequence[str], rate: float, places: Sequence[str]) -> Fault | None:
        if not self.enabled or not any(self._faulty(u) for u in user_ids):
            return None
        if self._random.random() >= rate:
            return None
        kind = CRASH if self._random.random() < self._crash_share else ERROR
        where = self._random.choice(places)
        if kind == CRASH and self.group_commit and where == AFTER:
            where = BEFORE
        key = (kind, where)
        self.faults[key] = number = self.faults.get(key, 0) + 1
        return (
            InjectedCrash(where, number) if kind == CRASH else InjectedAdapterError(where, number)
        )

    def _record(self, commits: Sequence[UserCommit], rejections: list[Rejection | None]) -> None:
        self.applied.extend(c for c, r in zip(commits, rejections, strict=True) if r is None)

    async def load_user(self, user_id: str) -> UserSnapshot:
        fault = self._draw([user_id], self._load_rate, ["load"])
        snapshot = await self.inner.load_user(user_id)
        if fault is not None:
            raise fault
        return snapshot

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """Each user's load (used only when grouped), with a fault drawn for each user as
        :meth:`load_user` draws it: an error is that user's entry alone, a crash raises from the
        whole call (a defect: the store loads each user again alone)."""
        snapshots: list[UserSnapshot | AdapterError] = []
        crash: Fault | None = None
        for user_id in user_ids:
            fault = self._draw([user_id], self._load_rate, ["load"])
            snapshot = await self.inner.load_user(user_id)
            if isinstance(fault, InjectedAdapterError):
                snapshots.append(fault)
            else:
                crash = crash or fault
                snapshots.append(snapshot)
        if crash is not None:
            raise crash
        return snapshots

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        fault = self._draw([c.user_id for c in commits], self._commit_rate, [BEFORE, AFTER])
        if fault is not None and fault.where == BEFORE:  # type: ignore[attr-defined]
            await anyio.lowlevel.checkpoint()
            raise fault
        rejections = await self.inner.commit(commits)
        self._record(commits, rejections)
        if fault is not None:
            raise fault
        return rejections


class SyncFailingAdapter(FailingAdapter):
    """A :class:`FailingAdapter` over the in-memory adapter that keeps its synchronous fast
    path, so the faults hit the store's no-await turns too."""

    inner: InMemorySessionStoreAdapter

    def __init__(self, inner: InMemorySessionStoreAdapter, **kwargs: object) -> None:
        super().__init__(inner, **kwargs)  # type: ignore[arg-type]

    def load_user_nowait(self, user_id: str) -> UserSnapshot:
        fault = self._draw([user_id], self._load_rate, ["load"])
        if fault is not None:
            raise fault
        return self.inner.load_user_nowait(user_id)

    def commit_nowait(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        fault = self._draw([c.user_id for c in commits], self._commit_rate, [BEFORE, AFTER])
        if fault is not None and fault.where == BEFORE:  # type: ignore[attr-defined]
            raise fault
        rejections = self.inner.commit_nowait(commits)
        self._record(commits, rejections)
        if fault is not None:
            raise fault
        return rejections

    def get_nowait(self, session_id: str) -> Session | None:
        return self.inner.get_nowait(session_id)


class LaggingAdapter:
    """Passes every call through after a seeded random number (up to ``delay``) of checkpoints,
    without any wall-clock sleep, so other tasks run (and queue, and cancel) meanwhile.

    It groups commits and loads as its inner adapter does (:attr:`group_commit`,
    :meth:`load_users`), so the store drives it as it would drive the inner adapter.

    Attributes:
        commits: How many commit calls reached the inner adapter.
        max_commit_batch: The most user commits seen in one call.
        max_load_batch: The most users seen in one ``load_users`` call.
    """

    def __init__(self, inner: SessionStoreAdapter, *, seed: int, delay: int = 4) -> None:
        self.inner = inner
        self.commits = 0
        self.max_commit_batch = 0
        self.max_load_batch = 0
        self._random = random.Random(seed)
        self._delay = delay

    @property
    def group_commit(self) -> bool:
        """Whether the inner adapter groups commits."""
        return getattr(self.inner, "group_commit", False) is True

    async def _lag(self) -> None:
        for _ in range(self._random.randint(0, self._delay)):
            await anyio.lowlevel.checkpoint()

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def load_user(self, user_id: str) -> UserSnapshot:
        await self._lag()
        return await self.inner.load_user(user_id)

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        await self._lag()
        self.max_load_batch = max(self.max_load_batch, len(user_ids))
        if isinstance(self.inner, GroupLoadAdapter):
            return await self.inner.load_users(user_ids)
        return [await self.inner.load_user(user_id) for user_id in user_ids]

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        await self._lag()
        self.commits += 1
        self.max_commit_batch = max(self.max_commit_batch, len(commits))
        result = await self.inner.commit(commits)
        await self._lag()
        return result

    async def get(self, session_id: str) -> Session | None:
        await self._lag()
        return await self.inner.get(session_id)

    async def find(self, query: SessionQuery) -> list[Session]:
        await self._lag()
        return await self.inner.find(query)

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        await self._lag()
        return await self.inner.due(state, before, limit, after=after)
