"""The Redis adapter: a server shared by many processes and machines (needs the ``redis`` extra)."""

from .adapter import RedisSessionStoreAdapter

__all__ = ["RedisSessionStoreAdapter"]
