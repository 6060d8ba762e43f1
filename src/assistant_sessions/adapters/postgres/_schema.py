"""The PostgreSQL schema of the session store: its migrations, and how sessions map to rows.

Everything lives in one schema of the adapter's own (``assistant_sessions`` unless told
otherwise), so a database can hold several stores and the tables never meet an application's:

``users``
    One row per user that ever committed: the user's commit ``version``.
``sessions``
    Keyed by session ``id``. ``data`` is the session's JSON text (the text the SQLite and Redis
    adapters store too: :func:`assistant_sessions.adapters._encoding.encode_session`), the one
    source a session is decoded from, so a session round-trips exactly (timestamps keep their
    offset, metadata its types). The other columns copy what queries filter and order by: the
    ids, the state, the surfaces (a ``jsonb`` array), the times (``timestamptz``) and
    ``state_clock``, the key of the sweep index
    (:func:`~assistant_sessions.adapters.base.state_clock`).
    ``metadata`` is a ``jsonb`` copy of the metadata, for the team's own SQL (``WHERE metadata
    @> '{"plan": "pro"}'``); it is ``NULL`` for metadata that ``jsonb`` cannot hold (a string
    with a NUL character), which ``data`` still keeps.

Indexes: a user's sessions by workspace, most recently active first (``resolve``, ``find`` by
user); by state and state clock (sweeps); by activity (``find`` over every user); by surface (a
GIN index on ``surfaces``).

Commits go through one function, ``commit_users`` (:data:`COMMIT_FUNCTION`), so a group commit
of any number of users is one statement and one round trip (see ``_writes``).

The schema version lives in the one-row table ``schema_version``. :data:`MIGRATIONS` is the list
of forward steps: step ``i`` takes a schema from version ``i`` to ``i + 1``. They run in order,
in one transaction with the version update, under a transaction-scoped advisory lock named after
the schema, so processes opening one database at once migrate it once and a failed migration
leaves the schema as it was. Steps are history: never edit one that has shipped, append a new
one.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

import psycopg
from psycopg import sql

from ...errors import AdapterError
from ...model import Session, SessionState
from .._encoding import encode_metadata, encode_surfaces
from .._encoding import encode_session as encode_document

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SessionRow", "encode_session", "migrate"]

#: A row of ``sessions`` as ``commit_users`` takes it: id, user, workspace, state, created,
#: last activity, state changed, state clock, surfaces (JSON text), data (JSON text), metadata
#: (JSON text, or ``None`` where ``jsonb`` cannot hold it).
SessionRow = tuple[str, str, str | None, str, Any, Any, Any, Any, str, str, str | None]

#: Delete the given sessions of the owners that pass ``@``.
_DELETE: Final = """DELETE FROM {schema}.sessions
    USING unnest(p_deleted, p_deleted_owners) AS gone (id, owner)
    WHERE sessions.id = gone.id AND sessions.user_id = gone.owner AND @;"""

#: Upsert the given rows of the owners that pass ``@``.
_UPSERT: Final = """INSERT INTO {schema}.sessions AS stored (
        id, user_id, workspace_id, state, created_at, last_activity_at,
        state_changed_at, state_clock, surfaces, data, metadata)
    SELECT row.id, row.owner, row.workspace, row.state, row.created, row.activity,
           row.changed, row.clock, row.surfaces::jsonb, row.data, row.metadata::jsonb
    FROM unnest(p_ids, p_owners, p_workspaces, p_states, p_created, p_activity,
                p_changed, p_clocks, p_surfaces, p_data, p_metadata)
         AS row (id, owner, workspace, state, created, activity, changed, clock,
                 surfaces, data, metadata)
    WHERE @
    ON CONFLICT (id) DO UPDATE SET
        workspace_id = excluded.workspace_id, state = excluded.state,
        created_at = excluded.created_at, last_activity_at = excluded.last_activity_at,
        state_changed_at = excluded.state_changed_at, state_clock = excluded.state_clock,
        surfaces = excluded.surfaces, data = excluded.data, metadata = excluded.metadata
    -- An id owned by another user changes no row: that is the duplicate check.
    WHERE stored.user_id = excluded.user_id;"""


def _expand(body: str) -> str:
    """``body`` with each ``@DELETE(filter)`` and ``@UPSERT(filter)`` line written out."""
    lines = []
    for line in body.splitlines():
        stripped = line.strip()
        for name, template in (("@DELETE(", _DELETE), ("@UPSERT(", _UPSERT)):
            if stripped.startswith(name):
                indent = line[: len(line) - len(line.lstrip())]
                text = template.replace("@", stripped[len(name) : -1])
                line = "\n".join(indent + part for part in text.splitlines())
        lines.append(line)
    return "\n".join(lines)


#: The function a commit calls: applies every user's versioned commit of a group at once.
#: Arguments are arrays, one entry per user, per upserted row and per deleted id; the result
#: has one entry per user: ``NULL`` (applied), ``'version'`` or ``'duplicate_id'``.
COMMIT_FUNCTION: Final = _expand(
    """
CREATE FUNCTION {schema}.commit_users(
    p_users text[], p_expected bigint[],
    p_ids text[], p_owners text[], p_workspaces text[], p_states text[],
    p_created timestamptz[], p_activity timestamptz[], p_changed timestamptz[],
    p_clocks timestamptz[], p_surfaces text[], p_data text[], p_metadata text[],
    p_deleted text[], p_deleted_owners text[]
) RETURNS text[] LANGUAGE plpgsql AS $body$
DECLARE
    outcome text[] := array_fill(NULL::text, ARRAY[cardinality(p_users)]);
    refused text[];
    written bigint;
    i integer;
BEGIN
    -- Lock the version rows of the users that have one, always in user order (so that two
    -- group commits never deadlock), and refuse every user whose version moved on.
    WITH current AS (
        SELECT user_id, version FROM {schema}.users
        WHERE user_id = ANY (p_users) ORDER BY user_id FOR UPDATE
    )
    SELECT coalesce(array_agg(given.user_id), ARRAY[]::text[]) INTO refused
    FROM unnest(p_users, p_expected) AS given (user_id, expected)
    LEFT JOIN current ON current.user_id = given.user_id
    WHERE coalesce(current.version, 0) <> given.expected;

    -- Every remaining user at once; if an upsert meets an id another user owns, undo the
    -- block and go user by user below.
    BEGIN
        WITH claimed AS (
            INSERT INTO {schema}.users (user_id, version)
            SELECT given.user_id, 1 FROM unnest(p_users, p_expected) AS given (user_id, expected)
            WHERE given.expected = 0 AND given.user_id <> ALL (refused)
            ORDER BY given.user_id
            ON CONFLICT (user_id) DO NOTHING
            RETURNING user_id
        )
        -- A user created by another writer since the versions were read: refused too.
        SELECT refused || coalesce(array_agg(given.user_id), ARRAY[]::text[]) INTO refused
        FROM unnest(p_users, p_expected) AS given (user_id, expected)
        WHERE given.expected = 0 AND given.user_id <> ALL (refused)
          AND given.user_id NOT IN (SELECT user_id FROM claimed);

        UPDATE {schema}.users SET version = given.expected + 1
        FROM unnest(p_users, p_expected) AS given (user_id, expected)
        WHERE users.user_id = given.user_id AND given.expected > 0
          AND users.version = given.expected AND given.user_id <> ALL (refused);

        @DELETE(gone.owner <> ALL (refused))

        @UPSERT(row.owner <> ALL (refused))
        GET DIAGNOSTICS written = ROW_COUNT;
        IF written <> (SELECT count(*) FROM unnest(p_owners) AS owner
                       WHERE owner <> ALL (refused)) THEN
            RAISE EXCEPTION USING ERRCODE = 'AS001';
        END IF;
        FOR i IN 1 .. cardinality(p_users) LOOP
            IF p_users[i] = ANY (refused) THEN
                outcome[i] := 'version';
            END IF;
        END LOOP;
        RETURN outcome;
    EXCEPTION
        -- AS001: an id is taken; 21000: two upserts of one id in the group.
        WHEN SQLSTATE 'AS001' OR cardinality_violation THEN NULL;
    END;

    FOR i IN 1 .. cardinality(p_users) LOOP
        IF p_users[i] = ANY (refused) THEN
            outcome[i] := 'version';
            CONTINUE;
        END IF;
        BEGIN
            IF p_expected[i] = 0 THEN
                INSERT INTO {schema}.users (user_id, version) VALUES (p_users[i], 1)
                ON CONFLICT (user_id) DO NOTHING;
            ELSE
                UPDATE {schema}.users SET version = p_expected[i] + 1
                WHERE user_id = p_users[i] AND version = p_expected[i];
            END IF;
            GET DIAGNOSTICS written = ROW_COUNT;
            IF written <> 1 THEN
                outcome[i] := 'version';
                CONTINUE;
            END IF;
            @DELETE(gone.owner = p_users[i])
            @UPSERT(row.owner = p_users[i])
            GET DIAGNOSTICS written = ROW_COUNT;
            IF written <> (SELECT count(*) FROM unnest(p_owners) AS owner
                           WHERE owner = p_users[i]) THEN
                RAISE EXCEPTION USING ERRCODE = 'AS001';
            END IF;
        EXCEPTION
            WHEN SQLSTATE 'AS001' OR cardinality_violation THEN
                outcome[i] := 'duplicate_id';
        END;
    END LOOP;
    RETURN outcome;
END
$body$
"""
)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: users with their commit versions, sessions, the indexes of the queries, and the
    # commit function.
    (
        "CREATE TABLE {schema}.schema_version (version integer NOT NULL)",
        "INSERT INTO {schema}.schema_version (version) VALUES (0)",
        "CREATE TABLE {schema}.users (user_id text PRIMARY KEY, version bigint NOT NULL)",
        """CREATE TABLE {schema}.sessions (
            id text PRIMARY KEY,
            user_id text NOT NULL,
            workspace_id text,
            state text NOT NULL,
            created_at timestamptz NOT NULL,
            last_activity_at timestamptz NOT NULL,
            state_changed_at timestamptz NOT NULL,
            state_clock timestamptz NOT NULL,
            surfaces jsonb NOT NULL,
            data text NOT NULL,
            metadata jsonb
        )""",
        # resolve and find by user (and workspace), most recently active first.
        "CREATE INDEX sessions_by_user ON {schema}.sessions "
        "(user_id, workspace_id, last_activity_at, id)",
        # due(): sweeps read the oldest sessions of one state.
        "CREATE INDEX sessions_by_state_clock ON {schema}.sessions (state, state_clock, id)",
        # find() without a user: most recently active first over every session.
        "CREATE INDEX sessions_by_activity ON {schema}.sessions (last_activity_at, id)",
        # find() by surface.
        "CREATE INDEX sessions_by_surface ON {schema}.sessions USING gin (surfaces jsonb_path_ops)",
        COMMIT_FUNCTION,
    ),
)

#: The schema version this library writes.
SCHEMA_VERSION: Final = len(MIGRATIONS)


def statement(text: str, schema: str) -> sql.Composed:
    """``text`` with ``{schema}`` replaced by the quoted schema name."""
    return sql.SQL(text).format(schema=sql.Identifier(schema))


def _lock_key(schema: str) -> int:
    # A stable 63-bit key per schema for pg_advisory_xact_lock.
    return zlib.crc32(f"assistant_sessions:{schema}".encode()) & 0x7FFFFFFF


def migrate(
    connection: psycopg.Connection[Any],
    schema: str,
    *,
    steps: tuple[tuple[str, ...], ...] = MIGRATIONS,
) -> int:
    """Create ``schema`` if needed and bring it forward to ``len(steps)``; return the version it
    was at.

    Runs in one transaction under an advisory lock, so processes opening one database at once
    migrate it once. The connection must be in autocommit mode.

    Raises:
        AdapterError: The schema is newer than ``steps`` know, or its version is damaged.
        psycopg.Error: A step failed; nothing was changed.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        connection.execute(statement("CREATE SCHEMA IF NOT EXISTS {schema}", schema))
        exists = connection.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_version'",
            (schema,),
        ).fetchone()
        found = 0
        if exists is not None:
            read = statement("SELECT version FROM {schema}.schema_version", schema)
            row = connection.execute(read).fetchone()
            if row is None or type(row[0]) is not int:
                raise AdapterError(f"the schema_version table of schema {schema!r} is damaged")
            found = row[0]
        if found > len(steps):
            raise AdapterError(
                f"schema {schema!r} has schema version {found}, newer than version "
                f"{len(steps)} that this assistant-sessions knows; upgrade assistant-sessions "
                "to open it"
            )
        for step in steps[found:]:
            for text in step:
                connection.execute(statement(text, schema))
        if found < len(steps):
            connection.execute(
                statement("UPDATE {schema}.schema_version SET version = %s", schema),
                (len(steps),),
            )
    return found


def encode_session(session: Session) -> SessionRow:
    """The ``sessions`` row of ``session``: its JSON text, and the columns copied from it."""
    state = session.state
    surfaces = encode_surfaces(session.attached_surfaces)
    metadata = encode_metadata(session.metadata)
    last_activity = session.last_activity_at
    state_changed = session.state_changed_at
    return (
        session.id,
        session.user_id,
        session.workspace_id,
        str(state),
        session.created_at,
        last_activity,
        state_changed,
        # base.state_clock, inlined: the sweep index key.
        last_activity
        if state is SessionState.CREATED or state is SessionState.ACTIVE
        else state_changed,
        surfaces,
        encode_document(session, surfaces, metadata),
        # jsonb refuses the NUL character (an escaped one in the JSON text).
        None if "\\u0000" in metadata else metadata,
    )
