"""The SQLite adapter's minute-bucket indexes and the writes that leave them alone.

The indexes key on the minute of each clock (``_schema.bucket``), and a row the writer knows is
written by an ``UPDATE`` of what changed (``_updates``). These tests check that the queries stay
exactly ordered (against the in-memory adapter as the oracle), that touches really skip the
indexes, that a row changed by another writer is still written right, and the migration.
Real database files in ``tmp_path``.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistant_sessions import (
    InMemorySessionStoreAdapter,
    Session,
    SessionQuery,
    SessionState,
    create_session_store,
)
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.adapters._encoding import to_micros
from assistant_sessions.adapters.base import state_clock
from assistant_sessions.adapters.sqlite import (
    IndexedColumns,
    SqliteSessionStoreAdapter,
    connect,
    encode_session,
    write_transaction,
)
from assistant_sessions.adapters.sqlite._schema import KEY_MICROS, MIGRATIONS, bucket, migrate
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

#: A minute boundary, so that offsets in seconds put sessions on either side of one.
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

_ROW_COLUMNS = (
    "id, user_id, workspace_id, state, created_at, last_activity_at, state_changed_at, "
    "state_clock, data, surfaces, sweep_key, activity_key"
)


def session(
    session_id: str,
    user_id: str,
    at: datetime,
    *,
    state: SessionState = SessionState.ACTIVE,
    changed_at: datetime | None = None,
    surfaces: tuple[str, ...] = (),
    workspace_id: str | None = None,
) -> Session:
    return Session(session_id, user_id, workspace_id, state, at, at, changed_at or at, surfaces)


def stored_row(raw: sqlite3.Connection, session_id: str) -> tuple[object, ...]:
    row: tuple[object, ...] = raw.execute(
        f"SELECT {_ROW_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    return row


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_the_bucket_is_the_clock_rounded_down_to_a_minute_in_python_and_in_sql(
    micros: int,
) -> None:
    key = bucket(micros)
    assert key % KEY_MICROS == 0
    assert key <= micros < key + KEY_MICROS
    # The migration computes the same key in SQL, before 1970 too.
    sql = MIGRATIONS[2][2].split("sweep_key = ")[1].split(",")[0].replace("state_clock", "?")
    connection = sqlite3.connect(":memory:")
    try:
        assert connection.execute(f"SELECT {sql}", (micros,) * sql.count("?")).fetchone() == (key,)
    finally:
        connection.close()


# -- the queries stay exact -------------------------------------------------------------------


def scattered_sessions(seed: int) -> list[Session]:
    """Sessions of a few users whose clocks cluster around minute boundaries, with ties."""
    rng = random.Random(seed)
    states = (SessionState.ACTIVE, SessionState.CREATED, SessionState.SUSPENDED)
    made = []
    for n in range(120):
        at = T0 + timedelta(minutes=rng.randrange(-2, 3), seconds=rng.choice((0, 1, 30, 59)))
        if rng.random() < 0.3:
            at += timedelta(microseconds=rng.randrange(1, 10))
        state = rng.choice(states)
        changed = at - timedelta(seconds=rng.randrange(0, 90)) if state is states[0] else at
        made.append(
            session(
                f"s{rng.randrange(1000):03d}-{n}",
                f"u{n % 4}",
                at,
                state=state,
                changed_at=changed,
                surfaces=(rng.choice(("web", "slack")),),
                workspace_id=rng.choice((None, "w")),
            )
        )
    return made


async def fill(adapter: object, sessions: list[Session]) -> None:
    by_user: dict[str, list[Session]] = {}
    for made in sessions:
        by_user.setdefault(made.user_id, []).append(made)
    commits = [UserCommit(user, 0, tuple(owned)) for user, owned in by_user.items()]
    assert await adapter.commit(commits) == [None] * len(commits)  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", range(3))
async def test_due_and_find_order_exactly_across_and_within_minutes(
    adapter: SqliteSessionStoreAdapter, seed: int
) -> None:
    sessions = scattered_sessions(seed)
    oracle = InMemorySessionStoreAdapter()
    await fill(oracle, sessions)
    await fill(adapter, sessions)
    cutoffs = [T0 + timedelta(minutes=m, seconds=s) for m in (-2, -1, 0, 1, 3) for s in (0, 30)]
    for state in (SessionState.ACTIVE, SessionState.CREATED, SessionState.SUSPENDED):
        for cutoff in cutoffs:
            assert [s.id for s in await adapter.due(state, cutoff, 1000)] == [
                s.id for s in await oracle.due(state, cutoff, 1000)
            ]
            # Paging by keyset from inside a minute gives the same sequence.
            paged: list[str] = []
            after = None
            while page := await adapter.due(state, cutoff, 7, after=after):
                paged.extend(s.id for s in page)
                after = (state_clock(page[-1]), page[-1].id)
            assert paged == [s.id for s in await oracle.due(state, cutoff, 1000)]
    queries = [
        SessionQuery(limit=1000),
        SessionQuery(user_id="u1", limit=1000),
        SessionQuery(user_id="u2", workspace_id="w", limit=5),
        SessionQuery(surface_id="web", limit=1000),
        SessionQuery(state=SessionState.SUSPENDED, limit=1000),
        SessionQuery(active_after=T0 - timedelta(seconds=1), limit=1000),
        SessionQuery(active_after=T0 + timedelta(seconds=30), limit=3),
    ]
    for query in queries:
        assert [s.id for s in await adapter.find(query)] == [
            s.id for s in await oracle.find(query)
        ], query
        paged = []
        cursor = attrs.evolve(query, limit=4)
        while page := await adapter.find(cursor):
            paged.extend(s.id for s in page)
            cursor = attrs.evolve(cursor, after=(page[-1].last_activity_at, page[-1].id))
        assert paged == [s.id for s in await oracle.find(attrs.evolve(query, limit=1000))]


async def test_queries_read_the_bucket_indexes(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    due = (
        "SELECT id FROM sessions WHERE state = ? AND sweep_key <= ? AND state_clock < ? "
        "AND sweep_key >= ? AND (state_clock, id) > (?, ?) ORDER BY sweep_key, state_clock, id "
        "LIMIT ?"
    )
    plan = " ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {due}", (1,) * 7))
    assert "USING INDEX sessions_by_sweep_key" in plan
    recent = (
        "SELECT id FROM sessions WHERE activity_key <= ? AND (last_activity_at, id) < (?, ?) "
        "ORDER BY activity_key DESC, last_activity_at DESC, id DESC LIMIT ?"
    )
    plan = " ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {recent}", (1,) * 4))
    assert "USING INDEX sessions_by_activity_key" in plan


# -- touches ----------------------------------------------------------------------------------


async def test_a_touch_within_the_minute_rewrites_no_index_entry(
    path: Path, raw: sqlite3.Connection
) -> None:
    clock = FakeClock(T0)
    adapter = SqliteSessionStoreAdapter(path)
    async with create_session_store(adapter, clock=clock) as store:
        first = await store.resolve(user_id="u", surface_id="web")
        assert first.state is SessionState.CREATED
        clock.advance(10)
        active = await store.resolve(user_id="u", surface_id="web")
        assert active.state is SessionState.ACTIVE
        # A new row, then a change of state: both rewrite index entries.
        assert adapter.statistics().touches == 0
        assert stored_row(raw, first.id) == encode_session(active)
        clock.advance(10)
        touched = await store.resolve(user_id="u", surface_id="web")
        assert adapter.statistics().touches == 1
        assert stored_row(raw, first.id) == encode_session(touched)
        clock.advance(45)  # into the next minute: the activity key moves
        moved = await store.resolve(user_id="u", surface_id="web")
        assert adapter.statistics().touches == 1
        assert stored_row(raw, first.id) == encode_session(moved)
        clock.advance(1)
        attached = await store.resolve(user_id="u", surface_id="slack")  # surfaces change
        assert adapter.statistics().touches == 1
        assert stored_row(raw, first.id) == encode_session(attached)
        assert [s.id for s in await store.find(surface_id="slack")] == [first.id]
        clock.advance(1)
        await store.resolve(user_id="u", surface_id="slack")
        assert adapter.statistics().touches == 2
    # Counted across reopening, like every counter.
    assert adapter.statistics().touches == 2


async def test_after_reopening_the_writer_reads_what_is_stored_and_still_touches(
    path: Path, raw: sqlite3.Connection
) -> None:
    clock = FakeClock(T0)
    adapter = SqliteSessionStoreAdapter(path)
    async with create_session_store(adapter, clock=clock) as store:
        made = await store.resolve(user_id="u", surface_id="web")
        clock.advance(1)
        await store.resolve(user_id="u", surface_id="web")
    clock.advance(1)
    reopened = SqliteSessionStoreAdapter(path)
    async with create_session_store(reopened, clock=clock) as store:
        touched = await store.resolve(user_id="u", surface_id="web")
    assert reopened.statistics().touches == 1
    assert stored_row(raw, made.id) == encode_session(touched)


@pytest.mark.parametrize("seed", range(3))
async def test_the_surface_side_table_follows_every_change_of_surfaces(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    current = session("a", "u", T0)
    for step in range(40):
        surfaces = tuple(rng.sample(("web", "slack", "phone", "x"), rng.randrange(0, 4)))
        current = attrs.evolve(
            current,
            last_activity_at=T0 + timedelta(seconds=step * rng.choice((1, 40))),
            attached_surfaces=surfaces,
        )
        assert await adapter.commit([UserCommit("u", step, (current,))]) == [None]
        side = raw.execute("SELECT surface_id FROM session_surfaces WHERE session_id = 'a'")
        assert sorted(side.fetchall()) == sorted((surface,) for surface in surfaces)
    assert adapter.statistics().touches > 0


async def test_a_row_another_writer_changed_is_still_written_whole(
    path: Path, adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    original = session("a", "u", T0, surfaces=("web",))
    assert await adapter.commit([UserCommit("u", 0, (original,))]) == [None]
    # Another process suspends it and moves it to another surface (its indexed columns).
    other = SqliteSessionStoreAdapter(path)
    await other.open()
    try:
        suspended = attrs.evolve(
            original,
            state=SessionState.SUSPENDED,
            state_changed_at=T0 + timedelta(seconds=5),
            attached_surfaces=("slack",),
        )
        assert await other.commit([UserCommit("u", 1, (suspended,))]) == [None]
    finally:
        await other.aclose()
    # This adapter still remembers the first row, and writes a touch planned from it: the
    # stored columns are not what it expects, so it writes the row the slow way.
    touched = attrs.evolve(original, last_activity_at=T0 + timedelta(seconds=10))
    assert await adapter.commit([UserCommit("u", 2, (touched,))]) == [None]
    assert stored_row(raw, "a") == encode_session(touched)
    assert adapter.statistics().touches == 0
    assert [s.id for s in await adapter.find(SessionQuery(surface_id="web"))] == ["a"]
    assert await adapter.find(SessionQuery(surface_id="slack")) == []
    assert await adapter.due(SessionState.SUSPENDED, T0 + timedelta(days=1), 10) == []
    assert await adapter.due(SessionState.ACTIVE, T0 + timedelta(days=1), 10) == [touched]
    # And from then on it knows the row again.
    again = attrs.evolve(touched, last_activity_at=T0 + timedelta(seconds=11))
    assert await adapter.commit([UserCommit("u", 3, (again,))]) == [None]
    assert adapter.statistics().touches == 1
    assert stored_row(raw, "a") == encode_session(again)


def test_one_session_written_twice_in_one_transaction_ends_as_the_second(path: Path) -> None:
    writer, reader = connect(str(path), "NORMAL", 5.0)
    reader.close()
    try:
        indexed = IndexedColumns()
        first = session("a", "u", T0, surfaces=("web",))
        assert write_transaction(writer, [("u", 0, (encode_session(first),), ())], indexed) == [
            None
        ]
        touch = attrs.evolve(first, last_activity_at=T0 + timedelta(seconds=1))
        attach = attrs.evolve(
            touch, last_activity_at=T0 + timedelta(seconds=2), attached_surfaces=("web", "x")
        )
        commits = [
            ("u", 1, (encode_session(touch),), ()),
            ("u", 2, (encode_session(attach),), ()),
        ]
        assert write_transaction(writer, commits, indexed) == [None, None]
        assert indexed.touches == 1
        columns = f"SELECT {_ROW_COLUMNS} FROM sessions WHERE id = 'a'"
        assert writer.execute(columns).fetchone() == encode_session(attach)
        surfaces = writer.execute("SELECT surface_id FROM session_surfaces ORDER BY 1")
        assert surfaces.fetchall() == [("web",), ("x",)]
    finally:
        writer.close()


def test_what_the_writer_remembers_is_bounded_and_follows_deletes() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IndexedColumns(0)
    indexed = IndexedColumns(capacity=3)
    rows = [encode_session(session(f"s{n}", "u", T0)) for n in range(5)]
    indexed.committed([("u", 0, tuple(rows), ())], [None])
    assert len(indexed) == 3
    upserts: list[object] = []
    updates: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
    indexed.plan(tuple(rows), upserts, updates, set())  # type: ignore[arg-type]
    # The oldest two were let go: they get the upsert; the newest three an update.
    assert upserts == rows[:2]
    assert len(updates[()]) == 3
    indexed.committed([("u", 1, (), ("s4",))], [None])
    indexed.committed([("u", 2, (rows[0],), ())], [Rejection.VERSION])
    assert len(indexed) == 2


# -- migration --------------------------------------------------------------------------------


async def test_a_version_2_database_gets_its_bucket_keys_and_indexes(path: Path) -> None:
    old = session("old", "u", datetime(1969, 12, 31, 23, 59, 30, 5, tzinfo=UTC))
    new = session(
        "new",
        "u",
        T0 + timedelta(seconds=59),
        state=SessionState.SUSPENDED,
        changed_at=T0 + timedelta(minutes=1, seconds=1),
        surfaces=("web",),
    )
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(connection, "old", steps=MIGRATIONS[:2]) == 0
        for made in (old, new):
            connection.execute(
                "INSERT INTO sessions (id, user_id, workspace_id, state, created_at, "
                "last_activity_at, state_changed_at, state_clock, data, surfaces) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                encode_session(made)[:10],
            )
        connection.execute("INSERT INTO users VALUES ('u', 1)")
    finally:
        connection.close()
    adapter = SqliteSessionStoreAdapter(path)
    await adapter.open()
    try:
        raw = sqlite3.connect(path)
        try:
            assert stored_row(raw, "old") == encode_session(old)
            assert stored_row(raw, "new") == encode_session(new)
            assert to_micros(old.last_activity_at) < 0
            indexes = {
                name
                for (name,) in raw.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            }
        finally:
            raw.close()
        assert indexes == {
            "sessions_by_user",
            "sessions_by_sweep_key",
            "sessions_by_activity_key",
        }
        assert await adapter.due(SessionState.ACTIVE, T0, 10) == [old]
        assert await adapter.due(
            SessionState.SUSPENDED, T0 + timedelta(minutes=1, seconds=2), 10
        ) == [new]
        assert [s.id for s in await adapter.find(SessionQuery(user_id="u"))] == ["new", "old"]
    finally:
        await adapter.aclose()
