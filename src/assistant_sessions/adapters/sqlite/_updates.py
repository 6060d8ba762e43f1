"""Which statement writes each session row: an ``UPDATE`` of what changed, or the upsert.

SQLite rewrites the index entries of every column an ``UPDATE`` sets, even to an equal value,
and setting ``surfaces`` runs the trigger that keeps their side table. Most writes of a session
are touches that leave every indexed column as it was (user, workspace, state, surfaces and the
minute buckets of its clocks: see :mod:`._schema`). So the writer remembers what it last
committed to those columns (:class:`IndexedColumns`, a bounded map used by the writer thread
alone) and writes a row it knows with an ``UPDATE`` that sets the unindexed columns and only
the indexed ones that changed. Its ``WHERE`` checks every indexed column against the
remembered value, so a row another process changed meanwhile changes nothing, and the row
count shows it. Rows it does not remember (after a start, or written by another process) it
first reads, all in one statement, inside the transaction; a row that is not stored (a new
session) gets the upsert.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from typing import Final, final

from ..base import Rejection
from ._schema import SessionRow

__all__ = ["EncodedCommit", "IndexedColumns", "update_statement"]

#: One user commit, ready for SQL: user id, expected version, rows to upsert, ids to delete.
EncodedCommit = tuple[str, int, tuple[SessionRow, ...], tuple[str, ...]]

#: Columns no index holds, every update sets them: the row's items 4 to 8.
_UNINDEXED: Final = ("created_at", "last_activity_at", "state_changed_at", "state_clock", "data")
#: Columns an index holds that a write may change, with their place in a row. (The user id is
#: indexed too, but a session never changes user.)
_INDEXED: Final = (
    (2, "workspace_id"),
    (3, "state"),
    (9, "surfaces"),
    (10, "sweep_key"),
    (11, "activity_key"),
)

#: What is remembered of a row: its user id, then its ``_INDEXED`` columns in that order.
_Stored = tuple[object, ...]


#: The id, user id and ``_INDEXED`` columns of stored sessions, by ids given as a JSON array.
_READ_STORED: Final = (
    "SELECT id, user_id, workspace_id, state, surfaces, sweep_key, activity_key FROM sessions "
    "WHERE id IN (SELECT value FROM json_each(?))"
)


@functools.cache
def update_statement(changed: tuple[str, ...]) -> str:
    """The ``UPDATE`` of a known row whose indexed columns ``changed`` (names, in order).

    Parameters: the unindexed columns, the new values of ``changed``, then the id, the user id
    and the remembered values of every indexed column.
    """
    sets = ", ".join(f"{name} = ?" for name in (*_UNINDEXED, *changed))
    checks = " AND ".join(f"{name} IS ?" for _, name in _INDEXED)
    return f"UPDATE sessions SET {sets} WHERE id = ? AND user_id = ? AND {checks}"


def _stored(row: SessionRow) -> _Stored:
    return (row[1], row[2], row[3], row[9], row[10], row[11])


@final
class IndexedColumns:
    """What one writer last committed to the indexed columns of recently written sessions.

    A guess, never trusted: every update planned from it checks the stored columns (see the
    module documentation). Holds at most ``capacity`` sessions (a few hundred bytes each),
    letting go of those it has held longest; a session let go is read again when next written.
    """

    def __init__(self, capacity: int = 16384) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._rows: dict[str, _Stored] = {}
        #: Rows written without rewriting an index entry (no indexed column changed).
        self.touches = 0

    def __len__(self) -> int:
        return len(self._rows)

    def learn(self, connection: sqlite3.Connection, commits: list[EncodedCommit]) -> None:
        """Read what is stored of the rows of ``commits`` that are not remembered.

        Run it inside the write transaction, so that what it reads stays true until the end.
        """
        known = self._rows
        unknown = [row[0] for _, _, rows, _ in commits for row in rows if row[0] not in known]
        if unknown:
            for stored in connection.execute(_READ_STORED, (json.dumps(unknown),)):
                known[stored[0]] = stored[1:]

    def plan(
        self,
        rows: tuple[SessionRow, ...],
        upserts: list[SessionRow],
        updates: dict[tuple[str, ...], list[tuple[object, ...]]],
        planned: set[str],
    ) -> None:
        """Add each of ``rows`` to ``upserts``, or to ``updates`` under the indexed columns
        it changes (with the parameters of :func:`update_statement`).

        ``planned`` holds the ids planned so far in this transaction. A session written twice
        in one (two commits of one user in a group) is upserted the second time: upserts run
        in order, after the updates.
        """
        known = self._rows
        touches = updates.setdefault((), [])
        for row in rows:
            session_id = row[0]
            stored = known.get(session_id)
            if stored is None or stored[0] != row[1] or session_id in planned:
                planned.add(session_id)
                upserts.append(row)
                continue
            planned.add(session_id)
            if stored == _stored(row):
                # The common case, first: nothing indexed changed.
                touches.append((*row[4:9], session_id, *stored))
                continue
            changed: list[str] = []
            values: list[object] = []
            for (at, name), old in zip(_INDEXED, stored[1:], strict=True):
                if row[at] != old:
                    changed.append(name)
                    values.append(row[at])
            updates.setdefault(tuple(changed), []).append((*row[4:9], *values, row[0], *stored))

    def committed(self, commits: list[EncodedCommit], results: list[Rejection | None]) -> None:
        """Remember the rows of the applied ``commits`` (they are now stored)."""
        known = self._rows
        for (_, _, rows, deletes), result in zip(commits, results, strict=True):
            if result is not None:
                continue
            for session_id in deletes:
                known.pop(session_id, None)
            for row in rows:
                known[row[0]] = _stored(row)
        excess = len(known) - self._capacity
        if excess > 0:
            for session_id in list(itertools.islice(known, excess)):
                del known[session_id]

    def forget(self, commits: list[EncodedCommit]) -> None:
        """Drop what is remembered of the rows of ``commits``."""
        known = self._rows
        for _, _, rows, deletes in commits:
            for session_id in deletes:
                known.pop(session_id, None)
            for row in rows:
                known.pop(row[0], None)
