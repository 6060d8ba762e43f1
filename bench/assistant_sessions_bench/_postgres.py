"""What a benchmark run creates on a PostgreSQL server, dropped afterwards: schemas of its own.

Every PostgreSQL adapter the benchmark builds, and the Google ADK baseline, keeps its tables in
a schema of its own, ``bench_<pid>_<token>_<n>`` (``<token>`` random per run, so that two
machines benchmarking one server never share a name). Each schema is recorded
(:class:`PostgresSchemaLog`) *before* anything creates it, and the command drops every recorded
schema with ``DROP SCHEMA IF EXISTS ... CASCADE`` when it ends, however it ends (normally, on
an error, or on Ctrl-C). No other schema or table of the server is read or touched.

The DSN is what ``--adapter-url`` gives: a libpq conninfo (``host=127.0.0.1 port=5432
dbname=bench user=postgres``) or a ``postgresql://`` URL. The cleanup uses psycopg (3), the
driver of the PostgreSQL adapter.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = [
    "NEEDS_DSN",
    "PostgresSchemaLog",
    "create_schema",
    "drop_schemas",
    "schema_exists",
    "schema_name",
    "search_path_connect_args",
]

#: Why ``-a postgres`` cannot run without ``--adapter-url``.
NEEDS_DSN: Final = (
    "-a postgres needs a PostgreSQL server: --adapter-url DSN, a libpq conninfo "
    "('host=127.0.0.1 port=5432 dbname=bench user=postgres') or a postgresql:// URL; the "
    "benchmark keeps its tables in schemas of its own (bench_*) and drops them when it ends"
)

#: Seconds the cleanup waits to connect, and for a lock on a schema still in use.
_CLEANUP_TIMEOUT: Final = 10

_RUN_TOKEN: Final = secrets.token_hex(3)
_NUMBERS = itertools.count()


def schema_name(kind: str = "") -> str:
    """A schema name no other run uses: ``bench_<pid>_<token>_<n>`` (``bench_<kind>_...``)."""
    middle = f"{kind}_" if kind else ""
    return f"bench_{middle}{os.getpid()}_{_RUN_TOKEN}_{next(_NUMBERS)}"


def _drop_statement(schema: str) -> sql.Composed:
    from psycopg import sql

    return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))


def drop_schemas(dsn: str, schemas: Iterable[str]) -> int:
    """Drop each of ``schemas`` (and everything in it) on the server at ``dsn``; return how
    many existed."""
    import psycopg

    dropped = 0
    with psycopg.connect(dsn, autocommit=True, connect_timeout=_CLEANUP_TIMEOUT) as connection:
        # A connection of a killed worker may still hold a lock for a moment: wait, not forever.
        connection.execute(f"SET lock_timeout = '{_CLEANUP_TIMEOUT}s'")
        for schema in schemas:
            if schema_exists(connection, schema):
                dropped += 1
            connection.execute(_drop_statement(schema))
    return dropped


def schema_exists(connection: psycopg.Connection[Any], schema: str) -> bool:
    """Whether ``schema`` exists, on an open psycopg connection."""
    cursor = connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cursor.fetchone() is not None


def create_schema(dsn: str, schema: str) -> None:
    """Create ``schema`` (for a client, such as ADK's, that only creates tables)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=_CLEANUP_TIMEOUT) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def search_path_connect_args(dsn: str, schema: str) -> dict[str, str]:
    """The connection parameters of ``dsn`` as keywords, with ``schema`` as the search path:
    for SQLAlchemy's ``postgresql+psycopg://`` engine, so that a client which creates its
    tables in the default schema creates them in ``schema``."""
    from psycopg.conninfo import conninfo_to_dict

    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    options = params.get("options", "")
    params["options"] = f"{options} -c search_path={schema}".strip()
    return params


@final
class PostgresSchemaLog:
    """The schemas a run has created (or may have), by server, for :meth:`drop_all`."""

    def __init__(self) -> None:
        self._schemas: dict[str, list[str]] = {}

    def record(self, dsn: str, schema: str) -> None:
        """Note that ``schema`` on the server at ``dsn`` is the run's (call before creating it)."""
        self._schemas.setdefault(dsn, []).append(schema)

    def __bool__(self) -> bool:
        return bool(self._schemas)

    def drop_all(self) -> int:
        """Drop every recorded schema; forget them; return how many existed.

        A failure (the server went away) is reported on stderr, naming what is left behind;
        it does not raise, so it cannot hide the benchmark's own outcome.
        """
        dropped = 0
        while self._schemas:
            dsn, schemas = self._schemas.popitem()
            try:
                dropped += drop_schemas(dsn, schemas)
            except Exception as exc:
                print(
                    "assistant-sessions bench: could not drop the benchmark's schemas "
                    f"({exc}); left behind: {', '.join(schemas)} "
                    "(drop them with DROP SCHEMA ... CASCADE)",
                    file=sys.stderr,
                )
        return dropped
