"""``assistant-sessions inspect PATH``: print the sessions of a SQLite database as a table.

The database is opened read-only (``mode=ro``), so inspecting never changes it, and it is safe
while stores are using the file: the table shows what they have committed. (SQLite may create
the empty ``-wal`` and ``-shm`` companion files of a write-ahead-log database if none exist, as
every reader does; the database file itself is never written.) Rows that do not decode are
listed too, marked ``DAMAGED``, so they can be found and repaired.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from .adapters._encoding import from_micros
from .adapters._rows import decode_row
from .adapters.sqlite._schema import check_known_version
from .adapters.sqlite._schema import read_schema_version as schema_version
from .errors import AdapterError
from .model import SessionState

__all__ = ["main"]

_HEADER = ("ID", "USER", "WORKSPACE", "STATE", "LAST ACTIVITY", "STATE CHANGED", "SURFACES")
_METADATA_WIDTH = 60


def main(argv: Sequence[str]) -> int:
    """Run ``inspect`` with its arguments; return the exit status (0 ok, 1 failed, 2 usage)."""
    parser = argparse.ArgumentParser(
        prog="assistant-sessions inspect",
        description="Print the sessions in a SQLite session database, most recently active "
        "first. The database is opened read-only.",
    )
    parser.add_argument("path", help="the database file")
    parser.add_argument("--user", help="only this user's sessions")
    parser.add_argument(
        "--state", choices=[state.value for state in SessionState], help="only this state"
    )
    parser.add_argument(
        "--limit", type=int, default=100, help="print at most this many (default 100)"
    )
    args = parser.parse_args(list(argv))
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        rows, total = _read(args.path, args.user, args.state, args.limit)
    except (AdapterError, sqlite3.Error) as exc:
        print(f"assistant-sessions inspect: {exc}", file=sys.stderr)
        return 1
    _print_table(rows, total)
    return 0


def _connect_read_only(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise AdapterError(f"{path}: no such database file")
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True)


def _read(
    path: str, user: str | None, state: str | None, limit: int
) -> tuple[list[tuple[str, ...]], int]:
    connection = _connect_read_only(path)
    try:
        connection.execute("BEGIN")  # one snapshot for the rows and their count
        version = schema_version(connection)
        if version == 0:
            raise AdapterError(f"{path} is not a database of assistant-sessions")
        check_known_version(version, path)
        clauses: list[str] = []
        parameters: list[Any] = []
        if user is not None:
            clauses.append("user_id = ?")
            parameters.append(user)
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        total = connection.execute(f"SELECT count(*) FROM sessions {where}", parameters)
        count: int = total.fetchone()[0]
        cursor = connection.execute(
            "SELECT id, user_id, workspace_id, state, last_activity_at, state_changed_at, data "
            f"FROM sessions {where} ORDER BY last_activity_at DESC, id DESC LIMIT ?",
            [*parameters, limit],
        )
        rows = [_describe(*row) for row in cursor]
    finally:
        connection.close()
    return rows, count


def _describe(
    session_id: str,
    user_id: str,
    workspace_id: str | None,
    state: str,
    last_activity: int,
    state_changed: int,
    data: Any,
) -> tuple[str, ...]:
    try:
        session = decode_row(session_id, user_id, data)
    except AdapterError as exc:
        surfaces, metadata = "?", f"DAMAGED: {exc.__cause__ or exc}"
    else:
        surfaces = ",".join(session.attached_surfaces) or "-"
        metadata = json.dumps(json.loads(data).get("metadata", {}), ensure_ascii=False)
    if len(metadata) > _METADATA_WIDTH:
        metadata = metadata[: _METADATA_WIDTH - 3] + "..."
    return (
        session_id,
        user_id,
        workspace_id if workspace_id is not None else "-",
        state,
        _timestamp(last_activity),
        _timestamp(state_changed),
        surfaces,
        metadata,
    )


def _timestamp(micros: Any) -> str:
    try:
        return from_micros(int(micros)).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError):
        return "?"


def _print_table(rows: list[tuple[str, ...]], total: int) -> None:
    header = (*_HEADER, "METADATA")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    noun = "session" if total == 1 else "sessions"
    if len(rows) < total:
        print(f"({len(rows)} of {total} {noun} shown; use --limit to see more)")
    else:
        print(f"({total} {noun})")
