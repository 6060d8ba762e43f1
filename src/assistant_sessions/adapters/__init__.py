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

__all__ = [
    "InMemorySessionStoreAdapter",
    "Rejection",
    "SessionStoreAdapter",
    "SynchronousAdapter",
    "UserCommit",
    "UserSnapshot",
]
