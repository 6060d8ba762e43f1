"""The PostgreSQL adapter's reads, run in the reader thread on its connection.

The adapter turns each call into a :class:`Read` and submits it to the reader, which runs every
read pending at its start together: all the pending user loads in one statement
(:meth:`Reads.load_users`), all the pending gets by id in another (:meth:`Reads.get_sessions`),
and each query (``find``, ``due``) as a statement of its own. The connection is in autocommit
mode, so each statement sees one snapshot of committed data: a user's version and sessions
always come from the same one. Rows that do not decode fail ``get`` of their id and are skipped
(and logged) by the reads of many rows (:mod:`~assistant_sessions.adapters._rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, final

import attrs
import psycopg
from psycopg import sql

from ...model import Session, SessionQuery, SessionState
from .._encoding import encode_surfaces
from .._rows import decode_row, decoded_or_none, read_past_damaged
from ..base import UserSnapshot
from ._schema import statement

__all__ = ["Query", "Read", "Reads"]

#: A query of its own: runs in the reader thread with the reader connection.
Query = Callable[[psycopg.Connection[Any]], Any]


@final
@attrs.frozen(slots=True)
class Read:
    """One read job: a user's load (``user_id``), the loads of many (``user_ids``), a session by
    id (``session_id``), or a ``query`` of its own; exactly one is set."""

    user_id: str | None = None
    user_ids: Sequence[str] | None = None
    session_id: str | None = None
    query: Query | None = None


@final
class Reads:
    """The reads of the tables in one schema (their statements composed once)."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        # Every pending user at once. The LEFT JOINs keep a user with no version row or no
        # session (a NULL version or id).
        self._load = statement(
            "SELECT given.user_id, users.version, s.id, s.data "
            "FROM unnest(%b::text[]) AS given (user_id) "
            "LEFT JOIN {schema}.users ON users.user_id = given.user_id "
            "LEFT JOIN {schema}.sessions AS s ON s.user_id = given.user_id "
            "ORDER BY s.created_at, s.id",
            schema,
        )
        self._get = statement(
            "SELECT id, user_id, data FROM {schema}.sessions WHERE id = ANY (%b::text[])", schema
        )

    def load_users(
        self, connection: psycopg.Connection[Any], user_ids: Sequence[str]
    ) -> dict[str, UserSnapshot]:
        """Every session and the version of each user, read in one statement.

        Rows that do not decode are left out (and logged): the user's other sessions stay
        usable. The damaged session keeps its row and its id; ``get`` of it raises.
        """
        versions: dict[str, int] = {}
        sessions: dict[str, list[Session]] = {}
        for user_id, version, session_id, data in connection.execute(self._load, (list(user_ids),)):
            versions[user_id] = 0 if version is None else int(version)
            mine = sessions.setdefault(user_id, [])
            if session_id is not None:
                session = decoded_or_none(session_id, user_id, data, f"loading user {user_id!r}")
                if session is not None:
                    mine.append(session)
        return {
            user_id: UserSnapshot(user_id, versions[user_id], tuple(sessions[user_id]))
            for user_id in versions
        }

    def get_rows(
        self, connection: psycopg.Connection[Any], session_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """The ``(user_id, data)`` of the sessions with these ids that exist, in one statement
        (:meth:`decode` makes each a session)."""
        rows = connection.execute(self._get, (list(session_ids),))
        return {session_id: (user_id, data) for session_id, user_id, data in rows}

    @staticmethod
    def decode(session_id: str, row: tuple[str, str] | None) -> Session | None:
        """The session of a row of :meth:`get_rows`, or ``None`` for no row.

        Raises:
            AdapterError: The row does not decode.
        """
        return None if row is None else decode_row(session_id, row[0], row[1])

    def find(self, query: SessionQuery) -> Read:
        """The read of the sessions matching ``query``, most recently active first.

        Rows that do not decode are skipped (and logged); reading goes on past them until
        ``limit`` sessions are found.
        """
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, value in (("user_id", query.user_id), ("workspace_id", query.workspace_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                parameters.append(value)
        if query.state is not None:
            clauses.append("state = ANY (%s::text[])")
            parameters.append(sorted(state.value for state in query.state))
        if query.surface_id is not None:
            clauses.append("surfaces @> %s::jsonb")
            parameters.append(encode_surfaces((query.surface_id,)))
        if query.active_after is not None:
            clauses.append("last_activity_at > %s")
            parameters.append(query.active_after)
        if query.after is not None:
            # Keyset paging: the sessions that follow the cursor in the result order.
            clauses.append("(last_activity_at, id) < (%s, %s)")
            parameters.extend(query.after)
        select = "SELECT id, user_id, data, last_activity_at FROM {schema}.sessions"
        order = "ORDER BY last_activity_at DESC, id DESC LIMIT %s"
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        first = self._statement(f"{select} {where} {order}")
        # After skipping damaged rows: the rows past the last one read.
        more_where = " AND ".join([*clauses, "(last_activity_at, id) < (%s, %s)"])
        more = self._statement(f"{select} WHERE {more_where} {order}")
        limit = query.limit

        def read(connection: psycopg.Connection[Any]) -> list[Session]:
            return read_past_damaged(connection, first, more, parameters, limit, "find")

        return Read(query=read)

    def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> Read:
        """The read of up to ``limit`` sessions of ``state`` with a state clock before
        ``before``, ordered by (state clock, id), after ``after`` if given (keyset paging).

        Rows that do not decode are skipped (and logged), so one damaged session cannot stop
        sweeps.
        """
        clauses = ["state = %s", "state_clock < %s"]
        parameters: list[Any] = [state.value, before]
        if after is not None:
            clauses.append("(state_clock, id) > (%s, %s)")
            parameters.extend(after)
        select = "SELECT id, user_id, data, state_clock FROM {schema}.sessions WHERE"
        order = "ORDER BY state_clock, id LIMIT %s"
        first = self._statement(f"{select} {' AND '.join(clauses)} {order}")
        more_where = " AND ".join([*clauses, "(state_clock, id) > (%s, %s)"])
        more = self._statement(f"{select} {more_where} {order}")

        def read(connection: psycopg.Connection[Any]) -> list[Session]:
            return read_past_damaged(connection, first, more, parameters, limit, "a sweep")

        return Read(query=read)

    def _statement(self, text: str) -> sql.Composed:
        return statement(text, self._schema)
