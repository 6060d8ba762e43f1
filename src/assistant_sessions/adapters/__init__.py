"""Storage adapters: where a store keeps its sessions.

See :mod:`assistant_sessions.adapters.base` for the contract every adapter fulfils.
"""

from .base import (
    GroupCommitAdapter,
    GroupLoadAdapter,
    Rejection,
    SessionStoreAdapter,
    SynchronousAdapter,
    UserCommit,
    UserSnapshot,
)
from .memory import InMemorySessionStoreAdapter
from .sqlite import SqliteSessionStoreAdapter

__all__ = [
    "GroupCommitAdapter",
    "GroupLoadAdapter",
    "InMemorySessionStoreAdapter",
    "Rejection",
    "SessionStoreAdapter",
    "SqliteSessionStoreAdapter",
    "SynchronousAdapter",
    "UserCommit",
    "UserSnapshot",
]


def __getattr__(name: str) -> object:
    # The Redis adapter needs the optional coredis (the ``redis`` extra): import it on first use,
    # so that importing this package never requires it.
    if name == "RedisSessionStoreAdapter":
        from .redis import RedisSessionStoreAdapter

        return RedisSessionStoreAdapter
    # The PostgreSQL adapter needs the optional psycopg (the ``postgres`` extra).
    if name == "PostgresSessionStoreAdapter":
        from .postgres import PostgresSessionStoreAdapter

        return PostgresSessionStoreAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
