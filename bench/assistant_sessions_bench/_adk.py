"""Baselines from Google ADK: its session services doing the same lookup-or-create.

ADK (``google-adk``) has no lookup-or-create; its users write it with its own API, as
:func:`lookup_or_create` does: ``list_sessions(app_name=..., user_id=...)``, the most recently
updated session if there is one, else ``create_session(...)``. Two baselines run it:

* :data:`ADK_SUBJECT`: ``InMemorySessionService``, a subject of the in-process comparison on the
  in-memory adapter, run in the same rounds as the store, on the same workload (prefilled with
  the same sessions, under the same ids), its exactly-once check read through its own
  ``list_sessions``. ADK asks for asyncio: it runs at asyncio points only, and only on the
  workloads made of resolves (``resolve``, ``hot``).
* :func:`run_adk_database`: ``DatabaseSessionService`` on the PostgreSQL server of
  ``-a postgres --processes``, in this process, on asyncio, with the same users, concurrency,
  operations and per-client random streams as a worker of the one-process run; on new tables in
  a schema of its own (the connection's ``search_path``), dropped afterwards.

A store whose list-then-create is not atomic makes two sessions for one user when two of its
first messages arrive together: a baseline's duplicates are what it measured, reported, and do
not fail the run (only the store's own exactly-once check does). google-adk is optional: when it
is not installed the baselines are skipped with a note (:func:`adk_missing`).
"""

from __future__ import annotations

import importlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final

import anyio
import attrs

from assistant_sessions.adapters.base import SessionStoreAdapter, UserCommit

from ._check import ExactlyOnce, count_sessions
from ._postgres import PostgresSchemaLog, create_schema, schema_name, search_path_connect_args
from ._results import ADK, ADK_WORKLOADS
from ._run import Subject

__all__ = [
    "ADK",
    "ADK_SUBJECT",
    "ADK_WORKLOADS",
    "AdkDatabaseResult",
    "adk_missing",
    "lookup_or_create",
    "run_adk_database",
]

#: The ``app_name`` of every ADK session the benchmark makes.
APP_NAME: Final = "assistant-sessions-bench"

_INSTALL: Final = "pip install 'google-adk[db]'"


def adk_missing(*, database: bool = False) -> str | None:
    """Why the ADK baseline cannot run here (what to install), or ``None`` when it can.

    ``database``: the ``DatabaseSessionService`` baseline, which also needs SQLAlchemy's
    asyncio support (``google-adk[db]``) and psycopg.
    """
    try:
        module = importlib.import_module("google.adk.sessions")
        if database:
            importlib.import_module("psycopg")
            module.DatabaseSessionService  # noqa: B018 (imported lazily: needs SQLAlchemy)
    except ImportError as exc:
        return f"google-adk is not importable here ({exc}): {_INSTALL}"
    return None


async def lookup_or_create(service: Any, user_id: str) -> Any:
    """ADK's lookup-or-create, as its users write it: list the user's sessions, take the most
    recently updated, or create one when there is none. Not atomic: two concurrent calls for a
    user with no session may both create one."""
    found = (await service.list_sessions(app_name=APP_NAME, user_id=user_id)).sessions
    if found:
        return max(found, key=lambda session: session.last_update_time)
    return await service.create_session(app_name=APP_NAME, user_id=user_id)


async def _count_per_user(service: Any, users: Iterable[str]) -> dict[str, int]:
    """How many sessions each of ``users`` has, read with one ``list_sessions`` of the app."""
    listed = (await service.list_sessions(app_name=APP_NAME)).sessions
    stored = Counter(session.user_id for session in listed)
    return {user: stored[user] for user in users}


# -- InMemorySessionService, a subject of the in-process comparison -------------------------


@final
class AdkMemoryClient:
    """ADK's ``InMemorySessionService`` behind the calls the benchmark drives (resolves only)."""

    def __init__(self) -> None:
        from google.adk.sessions import InMemorySessionService

        self._service = InMemorySessionService()

    async def load_prefill(self, prefill: Sequence[UserCommit]) -> None:
        """Store the workload's prefill: the same users' sessions, under the same ids."""
        for commit in prefill:
            for session in commit.upserts:
                await self._service.create_session(
                    app_name=APP_NAME, user_id=commit.user_id, session_id=session.id
                )

    async def resolve(self, *, user_id: str, surface_id: str | None = None) -> Any:
        """:func:`lookup_or_create` (ADK sessions have no surfaces: ``surface_id`` is unused)."""
        return await lookup_or_create(self._service, user_id)

    async def check_exactly_once(self, users: Iterable[str]) -> ExactlyOnce:
        """How many sessions each resolved user ended with, read through ADK's API."""
        return count_sessions(await _count_per_user(self._service, users))

    async def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the ADK baseline runs the resolve workloads only")

    find = update_metadata = attach_surface = detach_surface = _unsupported


@asynccontextmanager
async def _open_adk_memory(adapter: SessionStoreAdapter) -> AsyncIterator[AdkMemoryClient]:
    yield AdkMemoryClient()


#: ADK's ``InMemorySessionService`` as a subject (``own_memory``: the adapter is unused).
ADK_SUBJECT: Final = Subject(ADK, concurrent=True, open=_open_adk_memory, own_memory=True)


# -- DatabaseSessionService on PostgreSQL -----------------------------------------------------


@final
@attrs.frozen
class AdkDatabaseResult:
    """One run of ADK's ``DatabaseSessionService`` (see :func:`run_adk_database`).

    Attributes:
        operations: Lookup-or-creates made (failed ones included).
        seconds: Wall-clock seconds of the timed phase.
        errors: Calls that raised.
        first_error: The first of those, as text.
        check: Sessions per user afterwards, for every user picked.
        extra_sessions: Sessions beyond one per user (the duplicates).
    """

    operations: int
    seconds: float
    errors: int
    first_error: str | None
    check: ExactlyOnce
    extra_sessions: int

    @property
    def throughput(self) -> float:
        """Lookup-or-creates per second."""
        return self.operations / self.seconds if self.seconds else 0.0


def run_adk_database(
    *,
    dsn: str,
    schemas: PostgresSchemaLog,
    users: int,
    operations: int,
    concurrency: int,
    seed: int,
) -> AdkDatabaseResult:
    """Time ADK's ``DatabaseSessionService`` on the server at ``dsn``, on asyncio.

    ``concurrency`` tasks each make ``operations // concurrency`` lookup-or-creates of random
    users among ``users``, drawn exactly as the store's workers draw them (client ``n`` of the
    one-process run uses ``random.Random(seed * 7919 + n)``), on new tables in a new schema,
    recorded in ``schemas`` before it is created (the caller drops it).
    """
    schema = schema_name("adk")
    schemas.record(dsn, schema)
    create_schema(dsn, schema)
    return anyio.run(
        _run_database, dsn, schema, users, operations, concurrency, seed, backend="asyncio"
    )


async def _run_database(
    dsn: str, schema: str, users: int, operations: int, concurrency: int, seed: int
) -> AdkDatabaseResult:
    from google.adk.sessions import DatabaseSessionService

    # SQLAlchemy's asyncio engine over psycopg 3; the pool and every other setting ADK's own.
    service = DatabaseSessionService(
        db_url="postgresql+psycopg://", connect_args=search_path_connect_args(dsn, schema)
    )
    try:
        await service.prepare_tables()  # what ADK recommends at startup: not timed
        per_client = operations // concurrency
        picked: set[str] = set()
        errors: list[Exception] = []

        async def client(n: int) -> None:
            rnd = random.Random(seed * 7919 + n)
            for _ in range(per_client):
                user = f"user-{rnd.randrange(users)}"
                picked.add(user)
                try:
                    await lookup_or_create(service, user)
                except Exception as exc:
                    errors.append(exc)

        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(concurrency):
                tg.start_soon(client, n)
        seconds = time.perf_counter() - began
        counts = await _count_per_user(service, picked)
    finally:
        await service.db_engine.dispose()
    return AdkDatabaseResult(
        operations=per_client * concurrency,
        seconds=seconds,
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        check=count_sessions(counts),
        extra_sessions=sum(count - 1 for count in counts.values() if count > 1),
    )
