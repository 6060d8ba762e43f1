"""The SQLite adapter: the adapter contract, the store on SQLite, migrations, group commit,
corrupt rows, cancellation and driver errors. Real database files in ``tmp_path``."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import pytest
from hypothesis import given, settings

from _strategies import sessions
from assistant_sessions import (
    AdapterError,
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionQuery,
    SessionState,
    create_session_store,
)
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.adapters._batching import Batcher, Job
from assistant_sessions.adapters._encoding import encode_session as encode_document
from assistant_sessions.adapters._encoding import to_micros
from assistant_sessions.adapters._rows import decode_row
from assistant_sessions.adapters.base import state_clock
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter, Writer
from assistant_sessions.adapters.sqlite._schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    encode_session,
    migrate,
)
from assistant_sessions.testing import AdapterContract, FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class TestSqliteContract(AdapterContract):
    @pytest.fixture
    def adapter(self, tmp_path: Path) -> SqliteSessionStoreAdapter:
        return SqliteSessionStoreAdapter(tmp_path / "contract.db")


def make(
    session_id: str,
    user_id: str,
    at: datetime = T0,
    *,
    state: SessionState = SessionState.ACTIVE,
    surfaces: tuple[str, ...] = (),
    workspace_id: str | None = None,
) -> Session:
    return Session(
        session_id,
        user_id,
        workspace_id,
        state,
        at,
        at,
        at,
        surfaces,
        MappingProxyType({"k": session_id}),
    )


# -- the store on SQLite ----------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_store_on_sqlite_end_to_end_and_across_reopening(
    path: Path, clock: FakeClock, writer: Writer
) -> None:
    adapter = SqliteSessionStoreAdapter(path, writer=writer)
    async with create_session_store(adapter, clock=clock) as store:
        first = await store.resolve(user_id="u1", surface_id="web", workspace_id="w")
        assert first.state is SessionState.CREATED
        again = await store.resolve(user_id="u1", surface_id="web", workspace_id="w")
        assert (again.id, again.state) == (first.id, SessionState.ACTIVE)
        other = await store.resolve(user_id="u2", surface_id="slack")
        await store.touch(other.id)
        await store.update_metadata(first.id, {"topic": "taxes", "n": [1, 2]})
        await store.attach_surface(first.id, "phone")
        clock.advance(3601)
        fresh = await store.resolve(user_id="u3")
        swept = await store.sweep_stale()
        assert sorted(s.id for s in swept) == sorted([first.id, other.id])
        assert [s.id for s in await store.find(surface_id="phone")] == [first.id]
        assert [s.id for s in await store.find(state=SessionState.CREATED)] == [fresh.id]
        before_close = await store.get(first.id)
    reopened_adapter = SqliteSessionStoreAdapter(path, writer=writer)
    async with create_session_store(reopened_adapter, clock=clock) as store:
        reopened = await store.get(first.id)
        assert reopened == before_close
        assert reopened is not None
        assert reopened.state is SessionState.SUSPENDED
        assert dict(reopened.metadata) == {"topic": "taxes", "n": (1, 2)}
        assert reopened.attached_surfaces == ("web", "phone")
        resumed = await store.resolve(user_id="u1", surface_id="phone", workspace_id="w")
        assert resumed.id == first.id
        assert resumed.state is SessionState.ACTIVE
        assert len(await store.find(user_id="u1")) == 1


async def test_group_commit_coalesces_concurrent_resolves(path: Path, clock: FakeClock) -> None:
    adapter = SqliteSessionStoreAdapter(path)
    ids: dict[str, str] = {}

    async def resolve(user: str) -> None:
        ids[user] = (await store.resolve(user_id=user, surface_id="web")).id

    async with create_session_store(adapter, clock=clock) as store:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(256):
                    tg.start_soon(resolve, f"user-{n}")
        stats = adapter.statistics()
    assert len(set(ids.values())) == 256
    assert stats.user_commits == 256
    # Without grouping this would be 256 transactions: one per commit.
    assert stats.transactions <= 256 // 8, stats


async def test_without_group_commit_every_commit_is_a_transaction(
    path: Path, clock: FakeClock
) -> None:
    adapter = SqliteSessionStoreAdapter(path, group_commit=False, synchronous="OFF")

    async def resolve(user: str) -> None:
        await store.resolve(user_id=user)

    async with create_session_store(adapter, clock=clock) as store:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(64):
                    tg.start_soon(resolve, f"user-{n}")
    stats = adapter.statistics()
    assert stats.user_commits == stats.transactions == 64
    assert stats.write_calls < 64  # the calls were still batched; the transactions were not


# -- group commit in the adapter --------------------------------------------------------------


async def test_one_transaction_rejects_users_one_by_one(
    adapter: SqliteSessionStoreAdapter,
) -> None:
    assert await adapter.commit([UserCommit("u1", 0, (make("a", "u1"),))]) == [None]
    results: dict[str, list[Rejection | None]] = {}

    async def commit(name: str, commit: UserCommit) -> None:
        results[name] = await adapter.commit([commit])

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit, "stale", UserCommit("u1", 0, (make("b", "u1"),)))
        tg.start_soon(commit, "taken id", UserCommit("u2", 0, (make("a", "u2"),)))
        tg.start_soon(commit, "c", UserCommit("u3", 0, (make("c", "u3"),)))
        tg.start_soon(commit, "c again", UserCommit("u4", 0, (make("c", "u4"),)))
        tg.start_soon(commit, "fresh", UserCommit("u1", 1, (make("d", "u1"),)))
    # Whichever of u3 and u4 came first in the transaction got "c"; the other was refused.
    winner = "u3" if results["c"] == [None] else "u4"
    assert {results["c"][0], results["c again"][0]} == {None, Rejection.DUPLICATE_ID}
    assert results["stale"] == [Rejection.VERSION]
    assert results["taken id"] == [Rejection.DUPLICATE_ID]
    assert results["fresh"] == [None]
    assert {s.id for s in (await adapter.load_user("u1")).sessions} == {"a", "d"}
    assert (await adapter.load_user("u2")).version == 0
    loser = {"u3": "u4", "u4": "u3"}[winner]
    assert (await adapter.load_user(loser)).version == 0
    assert (await adapter.load_user(winner)).version == 1
    found = await adapter.get("c")
    assert found is not None
    assert found.user_id == winner
    assert adapter.statistics().transactions <= 3


async def test_a_second_adapter_on_the_file_is_version_checked(
    path: Path, adapter: SqliteSessionStoreAdapter
) -> None:
    other = SqliteSessionStoreAdapter(path)
    await other.open()
    try:
        assert (await other.load_user("u")).version == 0
        assert await adapter.commit([UserCommit("u", 0, (make("a", "u"),))]) == [None]
        assert await other.commit([UserCommit("u", 0, (make("b", "u"),))]) == [Rejection.VERSION]
        snapshot = await other.load_user("u")
        assert (snapshot.version, [s.id for s in snapshot.sessions]) == (1, ["a"])
    finally:
        await other.aclose()


async def test_commit_of_another_users_session_is_refused(
    adapter: SqliteSessionStoreAdapter,
) -> None:
    with pytest.raises(InvalidInputError):
        await adapter.commit([UserCommit("u1", 0, (make("a", "u2"),))])
    assert await adapter.get("a") is None


async def test_deleted_sessions_leave_the_surface_index(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    await adapter.commit([UserCommit("u", 0, (make("a", "u", surfaces=("web", "phone")),))])
    assert raw.execute("SELECT count(*) FROM session_surfaces").fetchone() == (2,)
    await adapter.commit([UserCommit("u", 1, (make("a", "u", surfaces=("web",)),))])
    assert raw.execute("SELECT surface_id FROM session_surfaces").fetchall() == [("web",)]
    await adapter.commit([UserCommit("u", 2, (), ("a",))])
    assert raw.execute("SELECT count(*) FROM session_surfaces").fetchone() == (0,)
    assert await adapter.find(SessionQuery(surface_id="web")) == []


async def test_non_ascii_ids_are_stored_as_ascii_and_found_by_surface(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    surfaces = ("caf\u00e9", "\U0001f600 chat", "\u6587")
    session = make("s\u00e9", "\u00fc", surfaces=surfaces)
    await adapter.commit([UserCommit("\u00fc", 0, (session,))])
    data, stored = raw.execute("SELECT data, surfaces FROM sessions").fetchone()
    assert data.isascii()
    assert stored.isascii()
    # SQLite decodes the escapes (surrogate pairs too) into the surface index.
    assert sorted(raw.execute("SELECT surface_id FROM session_surfaces").fetchall()) == sorted(
        (surface,) for surface in surfaces
    )
    for surface in surfaces:
        assert await adapter.find(SessionQuery(surface_id=surface)) == [session]
    assert await adapter.get("s\u00e9") == session


async def test_rows_written_as_utf8_text_still_read_and_update(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    """Rows used to hold UTF-8 JSON text (``ensure_ascii=False``): they decode the same, and
    the first write in the ASCII form keeps the surface index right."""
    session = make("s\u00e9", "u", surfaces=("caf\u00e9", "\U0001f600"))
    row = list(encode_session(session))
    row[8] = json.dumps(json.loads(row[8]), ensure_ascii=False, separators=(",", ":"))
    row[9] = json.dumps(list(session.attached_surfaces), ensure_ascii=False, separators=(",", ":"))
    assert not row[8].isascii()
    raw.execute("INSERT INTO users VALUES ('u', 1)")
    raw.execute(f"INSERT INTO sessions VALUES ({', '.join('?' * len(row))})", row)
    assert await adapter.get("s\u00e9") == session
    assert (await adapter.load_user("u")).sessions == (session,)
    assert await adapter.find(SessionQuery(surface_id="\U0001f600")) == [session]
    later = make("s\u00e9", "u", T0 + timedelta(seconds=1), surfaces=("caf\u00e9", "\U0001f600"))
    assert await adapter.commit([UserCommit("u", 1, (later,))]) == [None]
    assert await adapter.find(SessionQuery(surface_id="caf\u00e9")) == [later]
    assert raw.execute("SELECT count(*) FROM session_surfaces").fetchone() == (2,)


async def test_timestamps_round_trip_and_order_across_offsets(
    adapter: SqliteSessionStoreAdapter,
) -> None:
    plus2 = timezone(timedelta(hours=2))
    early = make("early", "u", datetime(2026, 1, 1, 13, 0, 0, 1, tzinfo=plus2))  # 11:00 UTC
    late = make("late", "u", datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    await adapter.commit([UserCommit("u", 0, (early, late))])
    stored = await adapter.get("early")
    assert stored == early
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(hours=2)  # the offset is kept exactly
    assert [s.id for s in await adapter.find(SessionQuery(user_id="u"))] == ["late", "early"]
    cutoff = datetime(2026, 1, 1, 11, 0, 0, 2, tzinfo=UTC)
    assert [s.id for s in await adapter.due(SessionState.ACTIVE, cutoff, 10)] == ["early"]


@settings(max_examples=200, deadline=None)
@given(session=sessions)
def test_a_row_is_the_session_text_and_columns_copied_from_it(session: Session) -> None:
    """The row holds the one JSON text of a session (the Redis adapter's too), and copies of
    what queries filter and order by; it decodes back through the converter."""
    row = encode_session(session)
    assert row[8] == encode_document(session)
    assert row[8].isascii()
    assert row[:8] == (
        session.id,
        session.user_id,
        session.workspace_id,
        session.state.value,
        to_micros(session.created_at),
        to_micros(session.last_activity_at),
        to_micros(session.state_changed_at),
        to_micros(state_clock(session)),
    )
    assert json.loads(row[9]) == list(session.attached_surfaces)
    assert decode_row(session.id, session.user_id, row[8]) == session


async def test_due_reads_past_many_rows_in_order(adapter: SqliteSessionStoreAdapter) -> None:
    sessions = tuple(make(f"s{n:03}", "u", T0 + timedelta(seconds=n)) for n in range(300))
    await adapter.commit([UserCommit("u", 0, sessions)])
    due = await adapter.due(SessionState.ACTIVE, T0 + timedelta(seconds=250), 1000)
    assert [s.id for s in due] == [f"s{n:03}" for n in range(250)]
    assert [s.id for s in await adapter.due(SessionState.ACTIVE, T0 + timedelta(days=1), 7)] == [
        f"s{n:03}" for n in range(7)
    ]


# -- migrations -------------------------------------------------------------------------------


async def test_an_older_database_is_migrated_forward(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(connection, "old", steps=MIGRATIONS[:1]) == 0
        assert connection.execute("SELECT version FROM schema_version").fetchone() == (1,)
        session = make("a", "u", surfaces=("web",))
        from assistant_sessions.adapters._encoding import session_to_dict

        connection.execute(
            "INSERT INTO sessions VALUES (?, ?, NULL, 'active', ?, ?, ?, ?, ?)",
            ("a", "u", *[to_micros(T0)] * 4, json.dumps(session_to_dict(session))),
        )
        connection.execute("INSERT INTO users VALUES ('u', 1)")
    finally:
        connection.close()
    adapter = SqliteSessionStoreAdapter(path)
    await adapter.open()
    try:
        assert await adapter.find(SessionQuery(surface_id="web")) == [session]
        assert (await adapter.load_user("u")).version == 1
    finally:
        await adapter.aclose()
    connection = sqlite3.connect(path)
    try:
        version = connection.execute("SELECT version FROM schema_version").fetchone()
        assert version == (SCHEMA_VERSION,)
    finally:
        connection.close()


async def test_a_newer_database_is_refused(path: Path) -> None:
    adapter = SqliteSessionStoreAdapter(path)
    await adapter.open()
    await adapter.aclose()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    with pytest.raises(AdapterError, match=r"newer than version \d+ .* upgrade assistant-sessions"):
        await adapter.open()
    with pytest.raises(AdapterError, match="not open"):
        await adapter.get("a")


async def test_adapters_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL fails at once (not after busy_timeout) for all but one of
    # the connections that try together; the adapter retries. Many small races, to hit it.
    for trial in range(40):
        adapters = [SqliteSessionStoreAdapter(tmp_path / f"new-{trial}.db") for _ in range(4)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for adapter in adapters:
                    tg.start_soon(adapter.open)
        try:
            for adapter in adapters:
                assert (await adapter.load_user("u")).version == 0
        finally:
            for adapter in adapters:
                await adapter.aclose()


async def test_a_file_that_is_not_a_database_is_an_adapter_error(path: Path) -> None:
    await anyio.Path(path).write_bytes(
        b"this is not a database, just some text that is long enough" * 20
    )
    with pytest.raises(AdapterError) as caught:
        await SqliteSessionStoreAdapter(path).open()
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


# -- corrupt rows -----------------------------------------------------------------------------


async def test_a_row_that_does_not_decode_fails_alone(
    adapter: SqliteSessionStoreAdapter,
    raw: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = T0 - timedelta(hours=2)
    await adapter.commit(
        [
            UserCommit("u1", 0, (make("bad", "u1", old), make("good", "u1", old))),
            UserCommit("u2", 0, (make("other", "u2", old),)),
        ]
    )
    raw.execute("UPDATE sessions SET data = '{\"id\": \"bad\", oops' WHERE id = 'bad'")
    # Reading the damaged session by id: a clear error naming it, with its cause.
    with pytest.raises(AdapterError, match="'bad' cannot be decoded") as caught:
        await adapter.get("bad")
    assert caught.value.__cause__ is not None
    # Everything else reads as before; loads, finds and sweeps leave the row out, with a warning.
    assert await adapter.get("good") == make("good", "u1", old)
    with caplog.at_level(logging.WARNING, logger="assistant_sessions"):
        snapshot = await adapter.load_user("u1")
    assert (snapshot.version, snapshot.sessions) == (1, (make("good", "u1", old),))
    assert "'bad'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="assistant_sessions"):
        many = await adapter.load_users(["u2", "u1", "nobody"])
    assert many == [await adapter.load_user(user) for user in ("u2", "u1", "nobody")]
    assert many[1] == snapshot
    assert "'bad'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="assistant_sessions"):
        assert [s.id for s in await adapter.find(SessionQuery(user_id="u1"))] == ["good"]
    assert "'bad'" in caplog.text
    assert [s.id for s in (await adapter.load_user("u2")).sessions] == ["other"]
    assert [s.id for s in await adapter.find(SessionQuery(user_id="u2"))] == ["other"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="assistant_sessions"):
        due = await adapter.due(SessionState.ACTIVE, T0, 2)
    assert sorted(s.id for s in due) == ["good", "other"]
    assert "'bad'" in caplog.text
    # The owner's healthy sessions stay writable, and the damaged row stays as it was: its id
    # is still taken, so another user's session cannot have it.
    damaged = raw.execute("SELECT data FROM sessions WHERE id = 'bad'").fetchone()
    assert await adapter.commit([UserCommit("u1", 1, (make("good", "u1", T0),))]) == [None]
    assert await adapter.get("good") == make("good", "u1", T0)
    assert await adapter.commit([UserCommit("u2", 1, (make("bad", "u2", T0),))]) == [
        Rejection.DUPLICATE_ID
    ]
    assert raw.execute("SELECT data FROM sessions WHERE id = 'bad'").fetchone() == damaged
    assert (await adapter.load_user("u2")).version == 1
    # A document that decodes but belongs to another row is damage too.
    good = raw.execute("SELECT data FROM sessions WHERE id = 'good'").fetchone()[0]
    raw.execute("UPDATE sessions SET data = ? WHERE id = 'other'", (good,))
    with pytest.raises(AdapterError, match="holds the document of session 'good'"):
        await adapter.get("other")
    assert (await adapter.load_user("u2")).sessions == ()


async def test_find_reads_past_rows_that_do_not_decode(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    sessions = tuple(make(f"s{n:03}", "u", T0 + timedelta(seconds=n)) for n in range(40))
    await adapter.commit([UserCommit("u", 0, sessions)])
    # The 10 most recent sessions are damaged: a find of 5 must read past all of them.
    raw.execute("UPDATE sessions SET data = 'garbage' WHERE id >= 's030'")
    found = await adapter.find(SessionQuery(user_id="u", limit=5))
    assert [s.id for s in found] == ["s029", "s028", "s027", "s026", "s025"]
    found = await adapter.find(SessionQuery(limit=12, after=(T0 + timedelta(seconds=35), "s035")))
    assert [s.id for s in found] == [f"s{n:03}" for n in range(29, 17, -1)]
    after = T0 + timedelta(seconds=28)
    assert [s.id for s in await adapter.find(SessionQuery(user_id="u", active_after=after))] == [
        "s029"
    ]
    assert await adapter.find(SessionQuery(active_after=T0 + timedelta(seconds=29))) == []


async def test_store_keeps_serving_other_users_beside_a_corrupt_row(
    path: Path, raw: sqlite3.Connection, clock: FakeClock
) -> None:
    async with create_session_store(SqliteSessionStoreAdapter(path), clock=clock) as store:
        broken = await store.resolve(user_id="u1")
        raw.execute("UPDATE sessions SET state = 'active', data = '[]' WHERE id = ?", (broken.id,))
        with pytest.raises(AdapterError):
            await store.get(broken.id)
        fine = await store.resolve(user_id="u2")
        assert (await store.resolve(user_id="u2")).id == fine.id
        clock.advance(7200)
        assert [s.id for s in await store.sweep_stale()] == [fine.id]


# -- cancellation, locks and driver errors ----------------------------------------------------


async def test_cancelled_while_waiting_applies_nothing_and_a_started_commit_completes(
    adapter: SqliteSessionStoreAdapter, raw: sqlite3.Connection
) -> None:
    raw.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    outcome: list[object] = []

    async def commit(commit: UserCommit, scope: anyio.CancelScope) -> None:
        with scope:
            outcome.append(await adapter.commit([commit]))

    first, second = anyio.CancelScope(), anyio.CancelScope()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commit, UserCommit("u1", 0, (make("a", "u1"),)), first)
            await anyio.wait_all_tasks_blocked()  # its transaction waits for the lock
            tg.start_soon(commit, UserCommit("u2", 0, (make("b", "u2"),)), second)
            await anyio.wait_all_tasks_blocked()  # queued behind it
            first.cancel()
            second.cancel()
            await anyio.wait_all_tasks_blocked()
            # Reads go on while the writer waits: they have their own connection.
            assert await adapter.get("a") is None
            raw.execute("ROLLBACK")
    assert await adapter.get("a") == make("a", "u1")  # the started commit completed
    assert await adapter.get("b") is None  # the waiting one never ran
    assert outcome in ([], [[None]])  # and nobody was told the cancelled one ran
    assert (await adapter.load_user("u2")).version == 0


async def test_a_lock_held_past_the_busy_timeout_is_an_adapter_error(
    path: Path, raw: sqlite3.Connection
) -> None:
    adapter = SqliteSessionStoreAdapter(path, busy_timeout=0.05)
    await adapter.open()
    try:
        raw.execute("BEGIN IMMEDIATE")
        with pytest.raises(AdapterError, match="locked") as caught:
            await adapter.commit([UserCommit("u", 0, (make("a", "u"),))])
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        raw.execute("ROLLBACK")
        assert await adapter.commit([UserCommit("u", 0, (make("a", "u"),))]) == [None]
    finally:
        await adapter.aclose()


async def test_closed_adapter_refuses_calls_and_reopens(path: Path) -> None:
    adapter = SqliteSessionStoreAdapter(path)
    with pytest.raises(AdapterError, match="not open"):
        await adapter.load_user("u")
    await adapter.open()
    await adapter.open()  # a second user of the same adapter
    await adapter.commit([UserCommit("u", 0, (make("a", "u"),))])
    await adapter.aclose()
    assert await adapter.get("a") is not None  # still open for the second user
    await adapter.aclose()
    await adapter.aclose()  # closing a closed adapter does nothing
    with pytest.raises(AdapterError, match="not open"):
        await adapter.commit([UserCommit("u", 1)])
    await adapter.open()
    try:
        assert (await adapter.load_user("u")).version == 1
        assert adapter.statistics().transactions == 1
    finally:
        await adapter.aclose()
    assert not await anyio.Path(f"{path}-wal").exists()  # a clean close checkpoints the log away


def test_constructor_checks_its_arguments(path: Path) -> None:
    assert SqliteSessionStoreAdapter(path, synchronous="normal").synchronous == "NORMAL"
    with pytest.raises(InvalidInputError, match="synchronous"):
        SqliteSessionStoreAdapter(path, synchronous="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        SqliteSessionStoreAdapter(":memory:")
    with pytest.raises(InvalidInputError):
        SqliteSessionStoreAdapter(path, busy_timeout=0)
    with pytest.raises(InvalidInputError):
        SqliteSessionStoreAdapter(path, max_group=0)
    with pytest.raises(InvalidTypeError):
        SqliteSessionStoreAdapter(42)  # type: ignore[arg-type]


async def test_synchronous_setting_reaches_the_connection(path: Path) -> None:
    for setting, level in (("FULL", 2), ("NORMAL", 1)):
        adapter = SqliteSessionStoreAdapter(path, synchronous=setting)  # type: ignore[arg-type]
        await adapter.open()
        try:
            writer = adapter._database()._writer  # the setting is per connection
            pragma = await anyio.to_thread.run_sync(writer.execute, "PRAGMA synchronous")
            assert pragma.fetchone() == (level,)
        finally:
            await adapter.aclose()


# -- the batcher: batching, hand-over and cancellation ----------------------------------------
# (The one batcher of both durable adapters; the Redis tests cover its use for pipelines.)


def threaded(run_batch: Callable[[list[Job[int, int]]], None]) -> Callable[[Any], Any]:
    """A batch run that calls ``run_batch`` in a worker thread, as the SQLite adapter does."""
    return partial(anyio.to_thread.run_sync, run_batch)


async def test_batcher_batches_what_waits_and_survives_cancelled_waiters() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def run_batch(jobs: list[Job[int, int]]) -> None:
        release.wait(10)
        batches.append([job.payload for job in jobs])
        for job in jobs:
            job.succeed(job.payload * 10)

    batcher: Batcher[int, int] = Batcher(threaded(run_batch), max_batch=3)
    results: dict[int, int] = {}
    scopes = {n: anyio.CancelScope() for n in range(6)}

    async def submit(n: int) -> None:
        with scopes[n]:
            results[n] = await batcher.submit(n)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, 0)
            await anyio.wait_all_tasks_blocked()  # 0 leads, its thread call blocks
            for n in range(1, 6):
                tg.start_soon(submit, n)
                await anyio.wait_all_tasks_blocked()
            scopes[0].cancel()  # the leader's batch has started: it completes
            scopes[1].cancel()  # the oldest waiter: withdrawn, so 2 leads next
            scopes[4].cancel()
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert batches == [[0], [2, 3, 5]]
    assert results == {0: 0, 2: 20, 3: 30, 5: 50}
    assert batcher.batches == 2


async def test_batcher_takes_at_most_max_batch_and_gives_each_job_its_outcome() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def run_batch(jobs: list[Job[int, int]]) -> None:
        release.wait(10)
        batches.append([job.payload for job in jobs])
        for job in jobs:
            if job.payload == 4:
                job.fail(ValueError(4))
            else:
                job.succeed(job.payload)

    batcher: Batcher[int, int] = Batcher(threaded(run_batch), max_batch=2)
    errors: list[int] = []
    results: list[int] = []

    async def submit(n: int) -> None:
        try:
            results.append(await batcher.submit(n))
        except ValueError as exc:
            errors.append(exc.args[0])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(submit, n)
                await anyio.wait_all_tasks_blocked()
            release.set()
    assert batches == [[0], [1, 2], [3, 4], [5]]
    assert errors == [4]  # only the job that failed raises
    assert sorted(results) == [0, 1, 2, 3, 5]


async def test_batcher_takes_jobs_up_to_their_size() -> None:
    gate = anyio.Event()
    batches: list[list[list[int]]] = []

    async def run(jobs: list[Job[list[int], int]]) -> None:
        await gate.wait()
        batches.append([job.payload for job in jobs])
        for job in jobs:
            job.succeed(len(job.payload))

    batcher: Batcher[list[int], int] = Batcher(run, max_batch=4, size=len)
    payloads = [[0], [1, 1, 1], [2, 2], [3, 3], [4] * 5, [5]]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for payload in payloads:
                tg.start_soon(batcher.submit, payload)
                await anyio.wait_all_tasks_blocked()
            gate.set()
    # A batch takes what fits, and always at least one job, however big.
    assert batches == [[[0]], [[1, 1, 1]], [[2, 2], [3, 3]], [[4] * 5], [[5]]]


async def test_a_lead_handed_to_a_cancelled_job_passes_on() -> None:
    gate = anyio.Event()
    batches: list[list[int]] = []
    scopes = {n: anyio.CancelScope() for n in range(3)}

    async def run(jobs: list[Job[int, int]]) -> None:
        await gate.wait()
        batches.append([job.payload for job in jobs])
        if jobs[0].payload == 0:
            scopes[1].cancel()  # 1 is cancelled just as the lead is handed to it
        for job in jobs:
            job.succeed(job.payload)

    batcher: Batcher[int, int] = Batcher(run, max_batch=1)

    async def submit(n: int) -> None:
        with scopes[n]:
            await batcher.submit(n)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(submit, n)
                await anyio.wait_all_tasks_blocked()
            gate.set()
    assert batches == [[0], [2]]
    assert scopes[1].cancelled_caught


async def test_a_taken_follower_that_is_cancelled_leaves_when_its_batch_ended() -> None:
    gates = [anyio.Event(), anyio.Event()]
    events: list[str] = []
    scope = anyio.CancelScope()

    async def run(jobs: list[Job[int, int]]) -> None:
        await gates[len(events)].wait()
        events.append(f"ran {[job.payload for job in jobs]}")
        for job in jobs:
            job.succeed(job.payload)

    batcher: Batcher[int, int] = Batcher(run, max_batch=8)

    async def follower() -> None:
        with scope:
            await batcher.submit(2)
        events.append("follower left")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(batcher.submit, 0)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(batcher.submit, 1)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(follower)
            await anyio.wait_all_tasks_blocked()
            gates[0].set()  # 1 leads the next batch, with 2 in it
            await anyio.wait_all_tasks_blocked()
            scope.cancel()  # 2 is taken: it waits for its batch, then leaves cancelled
            await anyio.wait_all_tasks_blocked()
            assert events == ["ran [0]"]
            gates[1].set()
    assert events == ["ran [0]", "ran [1, 2]", "follower left"]
    assert scope.cancelled_caught


async def test_a_run_that_raises_fails_every_job_with_an_error_of_its_own() -> None:
    gate = anyio.Event()
    down = ConnectionError("connection lost")

    async def run(jobs: list[Job[int, int]]) -> None:
        await gate.wait()
        if len(jobs) > 1:
            jobs[0].succeed(0)  # an outcome set before the failure stays
            raise AdapterError("could not send") from down
        raise KeyError("a defect")

    batcher: Batcher[int, int] = Batcher(run, max_batch=8)
    errors: dict[int, BaseException] = {}

    async def submit(n: int) -> None:
        try:
            await batcher.submit(n)
        except AdapterError as exc:
            errors[n] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(submit, n)
                await anyio.wait_all_tasks_blocked()
            gate.set()
    assert "a defect" in str(errors.pop(0))
    assert sorted(errors) == [2, 3]
    assert errors[2] is not errors[3]  # each task raises its own exception
    for error in errors.values():
        assert str(error) == "could not send"
        assert error.__cause__ is down
