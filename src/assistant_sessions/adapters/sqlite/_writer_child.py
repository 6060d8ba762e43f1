"""The SQLite writer process (``writer="process"``): the child's side.

The child owns the writer connection and runs write transactions for its parent, one request
at a time, with its own interpreter lock: the parent's event loop and reader thread never wait
for it to bind parameters or encode pages. It talks over its standard input and output in
frames (:mod:`._frames`).

1. The parent sends ``(path, synchronous, busy_timeout)``; the child opens the writer connection
   and answers ``("ready", pid)``, or ``("failed", error)`` and exits.
2. Then each request is a list of groups of user commits, each group one transaction
   (:func:`~assistant_sessions.adapters.sqlite._writes.write_transaction`). The answer holds
   one outcome per group: ``("ok", results, touches)``, ``("error", error)`` for a
   ``sqlite3`` error (rolled back: nothing of the group was applied), or ``("crash",
   traceback)`` for any other exception.
3. A ``None`` request (the parent closes the adapter) or the end of input (the parent exited or
   was killed) closes the connection and ends the child, after the transaction it is writing,
   if any.

``error`` is ``(class name, message, SQLite error code, SQLite error name)``. The child ignores
SIGINT and SIGTERM: a Ctrl-C or a stop signal sent to the whole process group reaches the
parent, which then decides when writing ends (by closing the adapter).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import traceback
from typing import Any, BinaryIO

from ...errors import AdapterError
from ._db import open_writer
from ._frames import describe, pack, read
from ._writes import EncodedCommit, IndexedColumns, counted_transaction

__all__ = ["main"]


def _write(stream: BinaryIO, value: object) -> None:
    stream.write(pack(value))
    stream.flush()


def _transaction(
    connection: sqlite3.Connection, commits: list[EncodedCommit], indexed: IndexedColumns
) -> tuple[Any, ...]:
    try:
        results, touches = counted_transaction(connection, commits, indexed)
    except sqlite3.Error as exc:
        return ("error", describe(exc))
    except Exception:
        return ("crash", traceback.format_exc())
    return ("ok", results, touches)


def main() -> None:
    """Serve the parent until its end of input (see the module documentation)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    # Only frames may reach the parent's pipe: anything printed goes to standard error.
    sys.stdout = sys.stderr
    opening = read(requests)
    if opening is None:
        return
    path, synchronous, busy_timeout = opening
    try:
        connection = open_writer(path, synchronous, busy_timeout)
    except (sqlite3.Error, AdapterError) as exc:
        _write(replies, ("failed", describe(exc)))
        return
    try:
        _write(replies, ("ready", os.getpid()))
        indexed = IndexedColumns()
        while (groups := read(requests)) is not None:
            _write(replies, [_transaction(connection, group, indexed) for group in groups])
    except BrokenPipeError:
        pass  # the parent is gone: nobody waits for the answer
    finally:
        connection.close()
