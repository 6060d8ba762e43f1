"""The SQLite schema of the session store: its migrations, and how sessions map to rows.

A ``sessions`` row keeps the session's JSON text in ``data`` (the text the Redis adapter
stores too: :func:`assistant_sessions.adapters._encoding.encode_session`), the one source a
session is decoded from, so a session round-trips exactly (timestamps keep their offset,
metadata its types). The other columns copy what queries filter and order by: ids, the state,
the surfaces (a JSON array), and timestamps as integer microseconds since the Unix epoch, UTC
(:func:`~assistant_sessions.adapters._encoding.to_micros`), which order correctly in SQL
whatever offset the datetimes had. ``state_clock`` is the sweep clock
(:func:`~assistant_sessions.adapters.base.state_clock`). Triggers keep the ``session_surfaces``
side table equal to the ``surfaces`` column, so "sessions on this surface" is an index lookup;
they do their work only when a write changes the surfaces.

The indexes hold *bucket keys*, not the exact clocks: ``sweep_key`` and ``activity_key`` are the
state clock and the last activity rounded down to a whole :data:`KEY_MICROS` (one minute), so a
touch within the same minute leaves every index entry as it was. SQLite rewrites an index entry
whenever its column is in an ``UPDATE``'s ``SET`` list, even with an equal value, so the writer
(:mod:`._writes`) updates such a row with a statement that names no indexed column. The queries
stay exact: they order by ``(key, exact clock, id)``, which is the order of ``(exact clock, id)``
because the key is a non-decreasing function of the clock; SQLite reads the index in key order
and sorts the rows of one key at a time. A page of ``due`` or ``find`` therefore reads the whole
minute it starts in: one minute's sessions bound its cost.

Rows are written by :func:`encode_session` and read by
:func:`~assistant_sessions.adapters._rows.decode_row`, through the
converter alone. Rows written before the JSON text was ASCII hold UTF-8 text: they decode the
same.

The schema version lives in the one-row table ``schema_version``. :data:`MIGRATIONS` is the list
of forward steps: step ``i`` takes a database from version ``i`` to ``i + 1``. They run in order,
in the same ``BEGIN IMMEDIATE`` transaction as the version update, so processes opening one file
at once migrate it once, and a failed migration leaves the database as it was. Steps are
history: never edit one that has shipped, append a new one.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ...errors import AdapterError
from ...model import Session, SessionState
from .._encoding import encode_session as encode_document
from .._encoding import encode_surfaces, to_micros

__all__ = [
    "KEY_MICROS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SessionRow",
    "bucket",
    "check_known_version",
    "encode_session",
    "migrate",
    "read_schema_version",
]

#: A row of ``sessions`` as written, in the column order of ``INSERT``: id, user id,
#: workspace id, state, created, last activity, state changed, state clock, JSON text, surfaces,
#: sweep key, activity key.
SessionRow = tuple[str, str, str | None, str, int, int, int, int, str, str, int, int]

#: The width of an index bucket, microseconds. Stored keys were computed with it: changing it
#: needs a migration that recomputes them.
KEY_MICROS: Final = 60_000_000


def bucket(micros: int) -> int:
    """The bucket key of a clock: ``micros`` rounded down to a whole :data:`KEY_MICROS`."""
    return micros - micros % KEY_MICROS


def _bucket_sql(column: str) -> str:
    # SQLite's % keeps the dividend's sign; this is the floor, like Python's, before 1970 too.
    return f"{column} - ((({column}) % {KEY_MICROS}) + {KEY_MICROS}) % {KEY_MICROS}"


def _surfaces_of(row: str) -> str:
    """SQL for the ``surfaces`` of ``row`` (a table or ``NEW``), or ``[]`` if damaged."""
    return f"CASE WHEN json_valid({row}.surfaces) THEN {row}.surfaces ELSE '[]' END"


MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: users with their commit versions, sessions, and the indexes of the queries.
    (
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (0)",
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            workspace_id TEXT,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_activity_at INTEGER NOT NULL,
            state_changed_at INTEGER NOT NULL,
            state_clock INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        # resolve and find by user (and workspace), most recently active first.
        "CREATE INDEX sessions_by_user ON sessions (user_id, workspace_id, last_activity_at, id)",
        # due(): sweeps read the oldest sessions of one state.
        "CREATE INDEX sessions_by_state_clock ON sessions (state, state_clock, id)",
        # find() without a user: most recently active first over every session.
        "CREATE INDEX sessions_by_activity ON sessions (last_activity_at, id)",
    ),
    # 1 -> 2: surfaces, as a column (a JSON array) and as an indexed side table kept equal to
    # it by triggers; both filled from the documents of existing sessions.
    (
        "ALTER TABLE sessions ADD COLUMN surfaces TEXT NOT NULL DEFAULT '[]'",
        """UPDATE sessions SET surfaces = json_extract(data, '$.attached_surfaces')
        WHERE json_valid(data) AND json_type(data, '$.attached_surfaces') = 'array'""",
        """CREATE TABLE session_surfaces (
            session_id TEXT NOT NULL,
            surface_id TEXT NOT NULL,
            PRIMARY KEY (session_id, surface_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX session_surfaces_by_surface ON session_surfaces (surface_id, session_id)",
        # A write that leaves the surfaces alone (a touch) compares two short strings and stops.
        f"""CREATE TRIGGER sessions_surfaces_insert AFTER INSERT ON sessions BEGIN
            INSERT OR IGNORE INTO session_surfaces (session_id, surface_id)
            SELECT NEW.id, value FROM json_each({_surfaces_of("NEW")});
        END""",
        f"""CREATE TRIGGER sessions_surfaces_update AFTER UPDATE OF surfaces ON sessions
        WHEN OLD.surfaces IS NOT NEW.surfaces
        BEGIN
            DELETE FROM session_surfaces WHERE session_id = OLD.id;
            INSERT OR IGNORE INTO session_surfaces (session_id, surface_id)
            SELECT NEW.id, value FROM json_each({_surfaces_of("NEW")});
        END""",
        """CREATE TRIGGER sessions_surfaces_delete AFTER DELETE ON sessions BEGIN
            DELETE FROM session_surfaces WHERE session_id = OLD.id;
        END""",
        f"""INSERT OR IGNORE INTO session_surfaces (session_id, surface_id)
        SELECT sessions.id, surface.value
        FROM sessions, json_each({_surfaces_of("sessions")}) AS surface""",
    ),
    # 2 -> 3: the indexes key on one-minute buckets of the clocks (see the module
    # documentation), so that a touch within the minute rewrites no index entry.
    (
        "ALTER TABLE sessions ADD COLUMN sweep_key INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN activity_key INTEGER NOT NULL DEFAULT 0",
        f"""UPDATE sessions SET sweep_key = {_bucket_sql("state_clock")},
        activity_key = {_bucket_sql("last_activity_at")}""",
        "DROP INDEX sessions_by_user",
        "DROP INDEX sessions_by_state_clock",
        "DROP INDEX sessions_by_activity",
        # load_user, and find by user (and workspace). No clock: a touch never moves an entry
        # of it, and one user's sessions are few enough to sort.
        "CREATE INDEX sessions_by_user ON sessions (user_id, workspace_id, id)",
        # due(): sweeps read the oldest sessions of one state.
        "CREATE INDEX sessions_by_sweep_key ON sessions (state, sweep_key, id)",
        # find() without a user: most recently active first over every session.
        "CREATE INDEX sessions_by_activity_key ON sessions (activity_key, id)",
    ),
)

#: The schema version this library writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)


def read_schema_version(connection: sqlite3.Connection) -> int:
    """The schema version of the open database: 0 for a new, empty one."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = connection.execute("SELECT version FROM schema_version").fetchone()
    if row is None or type(row[0]) is not int:
        raise AdapterError("the schema_version table of the database is damaged")
    version: int = row[0]
    return version


def check_known_version(version: int, where: str, known: int = SCHEMA_VERSION) -> None:
    """Refuse a database written by a newer version of the library.

    Raises:
        AdapterError: ``version`` is newer than ``known``.
    """
    if version > known:
        raise AdapterError(
            f"{where} has schema version {version}, newer than version {known} that this "
            "assistant-sessions knows; upgrade assistant-sessions to open it"
        )


def migrate(
    connection: sqlite3.Connection,
    where: str,
    *,
    steps: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> int:
    """Bring the database forward to ``len(steps)``; return the version it was at.

    The connection must be in autocommit mode (``isolation_level=None``) and outside a
    transaction. Everything runs in one ``BEGIN IMMEDIATE`` transaction.

    Raises:
        AdapterError: The database is newer than ``steps`` know, or its version is damaged.
        sqlite3.Error: A step failed; nothing was changed.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = read_schema_version(connection)
        check_known_version(found, where, len(steps))
        for step in steps[found:]:
            for statement in step:
                connection.execute(statement)
        if found < len(steps):
            connection.execute("UPDATE schema_version SET version = ?", (len(steps),))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return found


def encode_session(session: Session) -> SessionRow:
    """The ``sessions`` row of ``session``: its JSON text, and the columns copied from it."""
    last_activity = to_micros(session.last_activity_at)
    state_changed = to_micros(session.state_changed_at)
    state = session.state
    surfaces = encode_surfaces(session.attached_surfaces)
    # base.state_clock, inlined.
    clock = (
        last_activity
        if state is SessionState.CREATED or state is SessionState.ACTIVE
        else state_changed
    )
    return (
        session.id,
        session.user_id,
        session.workspace_id,
        str(state),
        to_micros(session.created_at),
        last_activity,
        state_changed,
        clock,
        encode_document(session, surfaces),
        surfaces,
        clock - clock % KEY_MICROS,
        last_activity - last_activity % KEY_MICROS,
    )
