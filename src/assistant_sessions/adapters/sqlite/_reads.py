"""The SQLite adapter's reads: each a function of the reader connection, run in its thread.

The adapter turns each call into a :data:`Read` and submits it to the reader; every read pending
when the reader starts runs in one read transaction, so each sees committed data only. A row
that does not decode fails ``get`` of its id and is skipped (and logged) by the other reads,
which go on past it: one damaged session cannot hide its owner's others or stop sweeps.

The indexes key on minute buckets of the clocks (see :mod:`._schema`), so the orders are
``(key, clock, id)``: the same order as ``(clock, id)``, read from the index a bucket at a time.
Every bound on a clock is also given as a bound on its key, so that SQLite starts and stops
reading the index where the clock's bucket does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ...model import Session, SessionQuery, SessionState
from .._encoding import to_micros
from .._rows import decode_row, decoded_or_none, read_past_damaged
from ..base import UserSnapshot
from ._schema import bucket

__all__ = ["Read", "due", "find", "get", "load_user", "load_users"]

#: A read job: runs in the reader thread with the reader connection.
Read = Callable[[sqlite3.Connection], Any]


def load_user(user_id: str) -> Read:
    """The read of one user's sessions and version.

    Rows that do not decode are left out (and logged): the user's other sessions stay usable.
    The damaged session keeps its row and its id; ``get`` of it raises.
    """

    def read(connection: sqlite3.Connection) -> UserSnapshot:
        row = connection.execute("SELECT version FROM users WHERE user_id = ?", (user_id,))
        found = row.fetchone()
        rows = connection.execute(
            "SELECT id, data FROM sessions WHERE user_id = ? ORDER BY rowid", (user_id,)
        ).fetchall()
        reader = f"loading user {user_id!r}"
        sessions = [
            session
            for session_id, data in rows
            if (session := decoded_or_none(session_id, user_id, data, reader)) is not None
        ]
        return UserSnapshot(user_id, 0 if found is None else int(found[0]), tuple(sessions))

    return read


#: Every given user's version and sessions, in one statement: a row per session (its columns
#: NULL for a user with none), the users in the order given and each one's sessions by rowid.
_LOAD_USERS = """
SELECT given.key, users.version, s.id, s.data
FROM json_each(?) AS given
LEFT JOIN users ON users.user_id = given.value
LEFT JOIN sessions AS s ON s.user_id = given.value
ORDER BY given.key, s.rowid
"""


def load_users(user_ids: Sequence[str]) -> Read:
    """The read of :func:`load_user` of each of ``user_ids``, in one statement: one snapshot
    each, in order."""
    given = json.dumps(list(user_ids))

    def read(connection: sqlite3.Connection) -> list[UserSnapshot]:
        versions = [0] * len(user_ids)
        sessions: list[list[Session]] = [[] for _ in user_ids]
        for index, version, session_id, data in connection.execute(_LOAD_USERS, (given,)):
            if version is not None:
                versions[index] = int(version)
            if session_id is not None:
                user_id = user_ids[index]
                found = decoded_or_none(session_id, user_id, data, f"loading user {user_id!r}")
                if found is not None:
                    sessions[index].append(found)
        return [
            UserSnapshot(user_id, version, tuple(own))
            for user_id, version, own in zip(user_ids, versions, sessions, strict=True)
        ]

    return read


def get(session_id: str) -> Read:
    """The read of one session by id (a row that does not decode raises ``AdapterError``)."""

    def read(connection: sqlite3.Connection) -> Session | None:
        row = connection.execute(
            "SELECT user_id, data FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return None if row is None else decode_row(session_id, row[0], row[1])

    return read


def find(query: SessionQuery) -> Read:
    """The read of the sessions matching ``query``, most recently active first.

    Rows that do not decode are skipped (and logged), and reading goes on past them until
    ``limit`` sessions are found.
    """
    clauses: list[str] = []
    parameters: list[Any] = []
    for column, value in (("user_id", query.user_id), ("workspace_id", query.workspace_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if query.state is not None:
        # One state or several: an IN list, which the (state, ...) index serves either way.
        states = sorted(state.value for state in query.state)
        clauses.append(f"state IN ({', '.join('?' * len(states))})")
        parameters.extend(states)
    if query.surface_id is not None:
        clauses.append("id IN (SELECT session_id FROM session_surfaces WHERE surface_id = ?)")
        parameters.append(query.surface_id)
    if query.active_after is not None:
        active_after = to_micros(query.active_after)
        clauses.append("activity_key >= ? AND last_activity_at > ?")
        parameters.extend((bucket(active_after), active_after))
    if query.after is not None:
        # Keyset paging: the sessions that follow the cursor in the result order.
        after = to_micros(query.after[0])
        clauses.append("activity_key <= ? AND (last_activity_at, id) < (?, ?)")
        parameters.extend((bucket(after), after, query.after[1]))
    select = "SELECT id, user_id, data, last_activity_at FROM sessions"
    order = "ORDER BY activity_key DESC, last_activity_at DESC, id DESC LIMIT ?"
    first = f"{select} {'WHERE' if clauses else ''} {' AND '.join(clauses)} {order}"
    # After skipping damaged rows: the rows past the last one read.
    more = f"{select} WHERE {' AND '.join([*clauses, '(last_activity_at, id) < (?, ?)'])} {order}"
    limit = query.limit

    def read(connection: sqlite3.Connection) -> list[Session]:
        return read_past_damaged(connection, first, more, parameters, limit, "find")

    return read


def due(
    state: SessionState,
    before: datetime,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> Read:
    """The read of up to ``limit`` sessions of ``state`` with a state clock before ``before``,
    ordered by (state clock, id), and after ``after`` if given (keyset paging).

    Rows that do not decode are skipped (and logged), so one damaged session cannot stop
    sweeps; reading goes on past them until ``limit`` sessions are found.
    """
    cutoff = to_micros(before)
    clauses = ["state = ?", "sweep_key <= ?", "state_clock < ?"]
    parameters: list[Any] = [state.value, bucket(cutoff), cutoff]
    if after is not None:
        start = to_micros(after[0])
        clauses.append("sweep_key >= ? AND (state_clock, id) > (?, ?)")
        parameters.extend((bucket(start), start, after[1]))
    select = "SELECT id, user_id, data, state_clock FROM sessions WHERE"
    order = "ORDER BY sweep_key, state_clock, id LIMIT ?"
    first = f"{select} {' AND '.join(clauses)} {order}"
    more = f"{select} {' AND '.join([*clauses, '(state_clock, id) > (?, ?)'])} {order}"

    def read(connection: sqlite3.Connection) -> list[Session]:
        return read_past_damaged(connection, first, more, parameters, limit, "a sweep")

    return read
