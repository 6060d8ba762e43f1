"""assistant-sessions: session continuity for async chat assistants, on asyncio and trio.

Start with :func:`create_session_store` and :meth:`SessionStore.resolve`.
"""

from ._affinity import AffinityResolver, SessionSelector, default_affinity_resolver, resolve_session
from ._clock import Clock
from ._factory import create_session_store
from ._host import SessionLookup, SurfacedSession
from ._pages import SessionPages
from ._runtime.events import EventKind, SessionEvent, Subscription
from ._store import SessionStore
from ._version import __version__ as __version__
from .adapters.base import SessionStoreAdapter
from .adapters.memory import InMemorySessionStoreAdapter
from .adapters.sqlite import SqliteSessionStoreAdapter
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
    WrongThreadError,
)
from .model import OperationStatistics, Session, SessionQuery, SessionState, StoreStatistics

__all__ = [
    "ActorFailedError",
    "AdapterError",
    "AffinityResolver",
    "Clock",
    "EventKind",
    "InMemorySessionStoreAdapter",
    "InvalidInputError",
    "InvalidTypeError",
    "OperationStatistics",
    "Session",
    "SessionConflictError",
    "SessionError",
    "SessionEvent",
    "SessionLookup",
    "SessionNotFoundError",
    "SessionPages",
    "SessionQuery",
    "SessionSelector",
    "SessionState",
    "SessionStateError",
    "SessionStore",
    "SessionStoreAdapter",
    "SqliteSessionStoreAdapter",
    "StoreClosedError",
    "StoreStatistics",
    "Subscription",
    "SurfacedSession",
    "WrongThreadError",
    "create_session_store",
    "default_affinity_resolver",
    "resolve_session",
]


def __getattr__(name: str) -> object:
    # The Redis adapter needs the optional coredis (the ``redis`` extra): import it on first use,
    # so that importing this package never requires it.
    if name == "RedisSessionStoreAdapter":
        from .adapters.redis import RedisSessionStoreAdapter

        return RedisSessionStoreAdapter
    # The PostgreSQL adapter needs the optional psycopg (the ``postgres`` extra).
    if name == "PostgresSessionStoreAdapter":
        from .adapters.postgres import PostgresSessionStoreAdapter

        return PostgresSessionStoreAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
