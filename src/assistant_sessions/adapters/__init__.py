"""Storage adapters: where a store keeps its sessions.

See :mod:`assistant_sessions.adapters.base` for the contract every adapter fulfils.
"""

from .base import (
    Rejection,
    SessionStoreAdapter,
    SynchronousAdapter,
    UserCommit,
    UserSnapshot,
)
from .memory import InMemorySessionStoreAdapter
from .sqlite import SqliteSessionStoreAdapter

__all__ = [
    "InMemorySessionStoreAdapter",
    "Rejection",
    "SessionStoreAdapter",
    "SqliteSessionStoreAdapter",
    "SynchronousAdapter",
    "UserCommit",
    "UserSnapshot",
]
