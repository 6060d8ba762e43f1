"""assistant-sessions: session continuity for async chat assistants, on asyncio and trio.

Start with :func:`create_session_store` and :meth:`SessionStore.resolve`.
"""

from ._affinity import AffinityResolver, SessionSelector, default_affinity_resolver, resolve_session
from ._clock import Clock
from ._host import SessionLookup, SurfacedSession
from ._store import SessionStore, create_session_store
from .adapters.base import SessionStoreAdapter
from .adapters.memory import InMemorySessionStoreAdapter
from .errors import (
    ActorFailedError,
    AdapterError,
    InvalidInputError,
    InvalidTypeError,
    SessionConflictError,
    SessionError,
    SessionNotFoundError,
    SessionStateError,
    StoreClosedError,
)
from .model import Session, SessionQuery, SessionState, StoreStatistics

__all__ = [
    "ActorFailedError",
    "AdapterError",
    "AffinityResolver",
    "Clock",
    "InMemorySessionStoreAdapter",
    "InvalidInputError",
    "InvalidTypeError",
    "Session",
    "SessionConflictError",
    "SessionError",
    "SessionLookup",
    "SessionNotFoundError",
    "SessionQuery",
    "SessionSelector",
    "SessionState",
    "SessionStateError",
    "SessionStore",
    "SessionStoreAdapter",
    "StoreClosedError",
    "StoreStatistics",
    "SurfacedSession",
    "create_session_store",
    "default_affinity_resolver",
    "resolve_session",
]
