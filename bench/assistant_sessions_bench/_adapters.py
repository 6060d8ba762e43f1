"""Which storage the benchmark runs on: a registry of adapter factories, imported lazily.

Each entry names a factory ``"module:function"`` and the modules it needs. Nothing is imported
until the benchmark asks for that adapter, so an adapter whose driver is not installed costs
nothing until it is chosen, and then fails with a message that says what to install.

A factory takes an :class:`AdapterContext` and returns a new, empty, not yet opened adapter; it is
called once per measured run, so every run starts from the same empty storage. To add an adapter
(say, in the issue that adds it), write its factory and call :func:`register_adapter`, or add a
line to ``_BUILTIN`` below.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast, final

import attrs

from assistant_sessions import InMemorySessionStoreAdapter
from assistant_sessions.adapters.base import SessionStoreAdapter

from ._cleanup import RedisKeyLog
from ._postgres import NEEDS_DSN, PostgresSchemaLog, schema_name

__all__ = [
    "AdapterContext",
    "AdapterEntry",
    "AdapterFactory",
    "AdapterUnavailableError",
    "BenchmarkError",
    "UnknownAdapterError",
    "adapter_entries",
    "adapter_entry",
    "load_adapter_factory",
    "register_adapter",
]


class BenchmarkError(Exception):
    """A benchmark that cannot run as asked (the command exits with status 2)."""


class UnknownAdapterError(BenchmarkError, LookupError):
    """No adapter is registered under this name."""


class AdapterUnavailableError(BenchmarkError):
    """The adapter is registered, but its modules cannot be imported here."""


@final
@attrs.frozen
class AdapterContext:
    """What a factory may use to build a fresh adapter.

    Attributes:
        workdir: A private temporary directory, removed when the benchmark ends (for files).
        url: The ``--adapter-url`` option (for servers), or ``None``.
        instance: A number distinct for every adapter built in this process (for file names
            or key prefixes, so runs never see each other's data).
        redis_keys: Where a factory of a Redis adapter records its key prefix before the
            adapter writes anything, so that the command deletes those keys when it ends.
        postgres_schemas: Where a factory of a PostgreSQL adapter records its schema before
            the adapter creates it, so that the command drops those schemas when it ends.
    """

    workdir: Path
    url: str | None
    instance: int
    redis_keys: RedisKeyLog | None = attrs.field(default=None, eq=False)
    postgres_schemas: PostgresSchemaLog | None = attrs.field(default=None, eq=False)


AdapterFactory = Callable[[AdapterContext], SessionStoreAdapter]


@final
@attrs.frozen
class AdapterEntry:
    """One registered adapter.

    Attributes:
        name: The ``--adapter`` value.
        target: The factory, as ``"module:function"``; imported on first use.
        summary: One line for ``--list-adapters``.
        requires: Modules that must import for the adapter to be available.
        hint: What to do when they do not (install an extra, a later release...).
        needs_url: Why the adapter cannot run without ``--adapter-url`` (it has no default
            server), or ``""``.
    """

    name: str
    target: str
    summary: str
    requires: tuple[str, ...] = ()
    hint: str = ""
    needs_url: str = ""


def memory_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """A new in-memory adapter (the library's default)."""
    return InMemorySessionStoreAdapter()


def sqlite_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """A SQLite adapter on a new database file in the benchmark's private directory."""
    module = importlib.import_module("assistant_sessions.adapters.sqlite")
    path = context.workdir / f"bench-{context.instance}.db"
    return cast(SessionStoreAdapter, module.SqliteSessionStoreAdapter(path))


def sqlite_process_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """Like ``sqlite``, with the writer in a child process (``writer="process"``)."""
    module = importlib.import_module("assistant_sessions.adapters.sqlite")
    path = context.workdir / f"bench-{context.instance}.db"
    return cast(SessionStoreAdapter, module.SqliteSessionStoreAdapter(path, writer="process"))


def sqlite_single_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """Like ``sqlite``, with one transaction per commit call (no group commit): for comparison."""
    module = importlib.import_module("assistant_sessions.adapters.sqlite")
    path = context.workdir / f"bench-{context.instance}.db"
    return cast(SessionStoreAdapter, module.SqliteSessionStoreAdapter(path, group_commit=False))


def redis_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """A Redis adapter at ``--adapter-url`` (default ``redis://127.0.0.1:6379/0``), under a key
    prefix of its own so that runs never see each other's data; the prefix is recorded in
    ``context.redis_keys``, and the command deletes its keys when it ends.
    """
    module = importlib.import_module("assistant_sessions.adapters.redis")
    url = context.url or "redis://127.0.0.1:6379/0"
    prefix = f"bench-{os.getpid()}-{context.instance}"
    if context.redis_keys is not None:
        context.redis_keys.record(url, prefix)
    return cast(SessionStoreAdapter, module.RedisSessionStoreAdapter(url, key_prefix=prefix))


def _postgres(context: AdapterContext, *, group_commit: bool) -> SessionStoreAdapter:
    module = importlib.import_module("assistant_sessions.adapters.postgres")
    if context.url is None:
        raise BenchmarkError(NEEDS_DSN)
    schema = schema_name()
    if context.postgres_schemas is not None:
        context.postgres_schemas.record(context.url, schema)
    return cast(
        SessionStoreAdapter,
        module.PostgresSessionStoreAdapter(context.url, schema=schema, group_commit=group_commit),
    )


def postgres_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """A PostgreSQL adapter on the server at ``--adapter-url`` (required), in a schema of its
    own (``bench_<pid>_<token>_<n>``) so that runs never see each other's data; the schema is
    recorded in ``context.postgres_schemas``, and the command drops it when it ends.
    """
    return _postgres(context, group_commit=True)


def postgres_single_adapter(context: AdapterContext) -> SessionStoreAdapter:
    """Like ``postgres``, with one transaction per commit call (no group commit)."""
    return _postgres(context, group_commit=False)


_POSTGRES_HINT = "install the extra: pip install 'assistant-sessions[postgres]'"

_BUILTIN = (
    AdapterEntry(
        "memory",
        f"{__name__}:memory_adapter",
        "InMemorySessionStoreAdapter: this process's memory (the default)",
    ),
    AdapterEntry(
        "sqlite",
        f"{__name__}:sqlite_adapter",
        "SqliteSessionStoreAdapter: a database file in a temporary directory",
        requires=("sqlite3", "assistant_sessions.adapters.sqlite"),
        hint="this installation of assistant-sessions has no SQLite adapter",
    ),
    AdapterEntry(
        "sqlite-process",
        f"{__name__}:sqlite_process_adapter",
        "SqliteSessionStoreAdapter(writer='process'): transactions written by a child process",
        requires=("sqlite3", "assistant_sessions.adapters.sqlite"),
        hint="this installation of assistant-sessions has no SQLite adapter",
    ),
    AdapterEntry(
        "sqlite-single",
        f"{__name__}:sqlite_single_adapter",
        "SqliteSessionStoreAdapter(group_commit=False): one transaction per commit call",
        requires=("sqlite3", "assistant_sessions.adapters.sqlite"),
        hint="this installation of assistant-sessions has no SQLite adapter",
    ),
    AdapterEntry(
        "redis",
        f"{__name__}:redis_adapter",
        "RedisSessionStoreAdapter: a Redis server at --adapter-url",
        requires=("coredis", "assistant_sessions.adapters.redis"),
        hint="install the extra: pip install 'assistant-sessions[redis]'",
    ),
    AdapterEntry(
        "postgres",
        f"{__name__}:postgres_adapter",
        "PostgresSessionStoreAdapter: a PostgreSQL server at --adapter-url DSN (required)",
        requires=("psycopg", "assistant_sessions.adapters.postgres"),
        hint=_POSTGRES_HINT,
        needs_url=NEEDS_DSN,
    ),
    AdapterEntry(
        "postgres-single",
        f"{__name__}:postgres_single_adapter",
        "PostgresSessionStoreAdapter(group_commit=False): one transaction per commit call",
        requires=("psycopg", "assistant_sessions.adapters.postgres"),
        hint=_POSTGRES_HINT,
        needs_url=NEEDS_DSN,
    ),
)

_REGISTRY: dict[str, AdapterEntry] = {entry.name: entry for entry in _BUILTIN}


def register_adapter(entry: AdapterEntry) -> None:
    """Add or replace an adapter in the registry (nothing is imported yet)."""
    _REGISTRY[entry.name] = entry


def adapter_entries() -> list[AdapterEntry]:
    """Every registered adapter, by name."""
    return sorted(_REGISTRY.values(), key=lambda entry: entry.name)


def adapter_entry(name: str) -> AdapterEntry:
    """The adapter called ``name``.

    Raises:
        UnknownAdapterError: No adapter has this name.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownAdapterError(f"unknown adapter {name!r}; known adapters: {known}")
    return entry


def load_adapter_factory(name: str) -> AdapterFactory:
    """Import the factory of the adapter called ``name``.

    Raises:
        UnknownAdapterError: No adapter has this name.
        AdapterUnavailableError: A module it needs does not import.
    """
    entry = adapter_entry(name)
    module_name, _, attribute = entry.target.partition(":")
    try:
        for required in entry.requires:
            importlib.import_module(required)
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; {entry.hint}" if entry.hint else ""
        raise AdapterUnavailableError(
            f"the {name!r} adapter is not available: {exc}{hint}"
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AdapterUnavailableError(f"the {name!r} adapter's factory {entry.target} is missing")
    return cast(AdapterFactory, factory)
