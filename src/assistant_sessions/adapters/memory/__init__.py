"""The in-memory adapter: the default, for tests and single-process local use."""

from .adapter import InMemorySessionStoreAdapter

__all__ = ["InMemorySessionStoreAdapter"]
