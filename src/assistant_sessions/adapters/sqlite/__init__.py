"""The SQLite adapter: the embedded, durable store (stdlib ``sqlite3`` in worker threads)."""

from .adapter import SqliteSessionStoreAdapter, SqliteStatistics, Synchronous

__all__ = ["SqliteSessionStoreAdapter", "SqliteStatistics", "Synchronous"]
