"""Reading sessions out of SQL rows, shared by the SQL adapters (SQLite, PostgreSQL).

A row keeps a session's JSON text (:func:`~assistant_sessions.adapters._encoding.encode_session`)
beside copies of the columns queries use. :func:`decode_row` decodes the text and checks it
against the row's ``id`` and ``user_id``. A row that does not decode fails ``get`` of its id, and
is skipped (and logged) by the reads of many rows, which go on past it
(:func:`read_past_damaged`): one damaged session cannot hide its owner's others or stop sweeps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import AdapterError
from ..model import Session
from ._encoding import decode_session

__all__ = ["Connection", "decode_row", "decoded_or_none", "read_past_damaged"]

logger = logging.getLogger("assistant_sessions")


class _Rows(Protocol):
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the shared reads need of a DB-API connection: ``execute(...).fetchall()``."""

    def execute(self, query: Any, parameters: Any = ..., /) -> _Rows: ...


def decode_row(session_id: str, user_id: str, data: Any) -> Session:
    """Decode the ``data`` of the row with these ``id`` and ``user_id`` columns.

    Raises:
        AdapterError: The row does not decode into a session, or its document disagrees with
            its columns. The decoding error is the ``__cause__``.
    """
    session = decode_session(data, session_id)
    if session.id != session_id or session.user_id != user_id:
        raise AdapterError(
            f"stored session {session_id!r} of user {user_id!r} holds the document of session "
            f"{session.id!r} of user {session.user_id!r}"
        )
    return session


def decoded_or_none(session_id: str, user_id: str, data: Any, reader: str) -> Session | None:
    """The session of a row, or ``None`` (logging a warning) if it does not decode."""
    try:
        return decode_row(session_id, user_id, data)
    except AdapterError as exc:
        logger.warning("%s skips stored session %r: %s", reader, session_id, exc)
        return None


def read_past_damaged(
    connection: Connection,
    first: Any,
    more: Any,
    parameters: Sequence[Any],
    limit: int,
    reader: str,
) -> list[Session]:
    """Up to ``limit`` decoded sessions: ``first`` with ``parameters`` and a row limit, then,
    as long as damaged rows were skipped, ``more`` for the rows past the last one read (its
    parameters also take that row's sort key and id, before the row limit).

    Each row is ``(id, user_id, data, sort key)``.
    """
    found: list[Session] = []
    asked = limit
    rows = connection.execute(first, (*parameters, asked)).fetchall()
    while True:
        for session_id, user_id, data, _ in rows:
            session = decoded_or_none(session_id, user_id, data, reader)
            if session is not None:
                found.append(session)
        if len(found) >= limit or len(rows) < asked:
            return found
        asked = limit - len(found)
        last = rows[-1]
        rows = connection.execute(more, (*parameters, last[3], last[0], asked)).fetchall()
