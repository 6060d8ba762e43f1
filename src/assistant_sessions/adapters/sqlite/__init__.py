"""The SQLite adapter: the embedded, durable store (stdlib ``sqlite3`` in worker threads, or its
writer in a child process).

:class:`SqliteSessionStoreAdapter` is what applications use. ``EncodedCommit``,
``IndexedColumns``, ``connect``, ``encode_session`` and ``write_transaction`` are the adapter's
own write path, exported for the
load benchmark's write ceiling (``assistant-sessions bench --write-ceiling``), which times that
path without the store around it; they are not part of the adapter's API for applications.
"""

from ._db import EncodedCommit, IndexedColumns, connect, write_transaction
from ._schema import encode_session
from .adapter import SqliteSessionStoreAdapter, SqliteStatistics, Synchronous, Writer

__all__ = [
    "EncodedCommit",
    "IndexedColumns",
    "SqliteSessionStoreAdapter",
    "SqliteStatistics",
    "Synchronous",
    "Writer",
    "connect",
    "encode_session",
    "write_transaction",
]
