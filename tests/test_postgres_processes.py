"""Many real processes on one real PostgreSQL server: exactly-once resolve, no lost update,
sweeps, and a server killed with SIGKILL and restarted mid-load.

What the workers saw is checked against the adapter and against the tables themselves.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
from psycopg import sql

from _lockstep import run_in_lockstep
from assistant_sessions import AdapterError, Session, SessionState, create_session_store
from assistant_sessions.adapters import UserCommit
from assistant_sessions.adapters.postgres import PostgresSessionStoreAdapter

if TYPE_CHECKING:
    from postgres_fixtures import PostgresServer

pytest_plugins = ["postgres_fixtures"]

WORKER = Path(__file__).parent / "_postgres_workers" / "postgres_worker.py"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def run_workers(
    mode: str, server: PostgresServer, schema: str, backend: str, params: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Start one worker per ``params``, let them all go at once, return their reports."""
    command = [sys.executable, str(WORKER), mode, server.dsn, schema, backend]
    reports = await run_in_lockstep([[*command, json.dumps(own)] for own in params])
    return [report for (report,) in reports]


async def rows(
    server: PostgresServer, schema: str, statement: str, *params: Any
) -> list[tuple[Any, ...]]:
    """Read the tables directly (``{schema}`` in ``statement`` names the test's schema)."""
    query = sql.SQL(statement).format(schema=sql.Identifier(schema))
    return await anyio.to_thread.run_sync(server.query, query, params)


def session(session_id: str, user_id: str, at: datetime, state: SessionState) -> Session:
    return Session(session_id, user_id, None, state, at, at, at)


def test_a_private_server_is_its_own_and_keeps_its_commits_through_sigkill(
    private_postgres_server: PostgresServer,
) -> None:
    server = private_postgres_server
    (directory,) = server.query("SHOW data_directory")[0]
    assert Path(directory).resolve() == server.data.resolve()
    assert server.port != 5432
    assert server.query("SHOW fsync") == [("on",)]
    server.query("CREATE TABLE kept (n integer)")
    server.query("INSERT INTO kept VALUES (1), (2)")
    assert server.process is not None
    first = server.process.pid
    server.kill()
    with pytest.raises(psycopg.OperationalError):
        server.query("SELECT 1")
    # Started again from the same directory and port, after crash recovery: it was a crash.
    server.start()
    assert server.process.pid != first
    assert "automatic recovery in progress" in server.log.read_text()
    assert server.query("SELECT n FROM kept ORDER BY n") == [(1,), (2,)]


@pytest.mark.anyio
async def test_concurrent_resolves_in_four_processes_create_one_session_per_user(
    postgres_server: PostgresServer, pg_schema: str, anyio_backend: str
) -> None:
    users = [f"user-{n}" for n in range(50)]
    params = {"users": users, "per_user": 100}
    # The schema does not exist yet: the four processes create it at once.
    with anyio.fail_after(90):
        reports = await run_workers(
            "resolve", postgres_server, pg_schema, anyio_backend, [params] * 4
        )

    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    await adapter.open()
    try:
        for user in users:
            snapshot = await adapter.load_user(user)
            # Exactly one session was created for the user, by whichever process won...
            assert len(snapshot.sessions) == 1
            (stored,) = snapshot.sessions
            # ...and each of the 400 resolves in every process returned that one.
            for report in reports:
                assert report["ids"][user] == [stored.id]
    finally:
        await adapter.aclose()
    # The tables hold that one session per user and nothing else.
    stored_ids = await rows(postgres_server, pg_schema, "SELECT user_id, id FROM {schema}.sessions")
    assert sorted(user for user, _ in stored_ids) == sorted(users)
    assert dict(stored_ids) == {user: reports[0]["ids"][user][0] for user in users}
    # Every process applied at least one commit per user (its resolves touch the session),
    # and never more than one per resolve.
    versions = dict(
        await rows(postgres_server, pg_schema, "SELECT user_id, version FROM {schema}.users")
    )
    assert set(versions) == set(users)
    assert all(4 <= version <= 400 for version in versions.values())


@pytest.mark.anyio
async def test_updates_from_four_processes_on_one_session_are_all_kept(
    postgres_server: PostgresServer, pg_schema: str, anyio_backend: str
) -> None:
    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    async with create_session_store(adapter) as store:
        created = await store.create(user_id="owner", metadata={"base": 0})
    tags = [f"w{n}" for n in range(4)]
    params = [{"session_id": created.id, "tag": tag, "count": 12} for tag in tags]
    with anyio.fail_after(90):
        await run_workers("update", postgres_server, pg_schema, anyio_backend, params)

    await adapter.open()
    try:
        stored = await adapter.get(created.id)
    finally:
        await adapter.aclose()
    assert stored is not None
    expected_metadata = {"base": 0} | {f"{tag}-{n}": n for tag in tags for n in range(12)}
    expected_surfaces = {f"{tag}-s{n}" for tag in tags for n in range(12)}
    assert dict(stored.metadata) == expected_metadata
    assert set(stored.attached_surfaces) == expected_surfaces
    assert len(stored.attached_surfaces) == 48
    # The row itself, as another reader of the database sees it.
    ((metadata, surfaces),) = await rows(
        postgres_server,
        pg_schema,
        "SELECT metadata, surfaces FROM {schema}.sessions WHERE id = %s",
        created.id,
    )
    assert metadata == expected_metadata
    assert sorted(surfaces) == sorted(expected_surfaces)


@pytest.mark.anyio
async def test_two_processes_sweeping_at_once_suspend_each_stale_session_once(
    postgres_server: PostgresServer, pg_schema: str, anyio_backend: str
) -> None:
    now = T0 + timedelta(hours=2)
    ttl = 3600.0
    cutoff = now - timedelta(seconds=ttl)
    commits = []
    stale: set[str] = set()
    fresh: set[str] = set()
    for u in range(20):
        user = f"user-{u}"
        sessions = []
        for n in range(8):
            state = SessionState.CREATED if n % 4 == 0 else SessionState.ACTIVE
            sessions.append(
                session(f"{user}-old-{n}", user, T0 + timedelta(seconds=u * 8 + n), state)
            )
            stale.add(sessions[-1].id)
        sessions.append(
            session(f"{user}-new", user, cutoff + timedelta(seconds=1), SessionState.ACTIVE)
        )
        fresh.add(sessions[-1].id)
        commits.append(UserCommit(user, 0, tuple(sessions)))
    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    await adapter.open()
    try:
        assert await adapter.commit(commits) == [None] * len(commits)
    finally:
        await adapter.aclose()
    # Each sweeper also touches (at `now`, after the cutoff) sessions the other may be sweeping.
    ordered = sorted(stale)
    touch = [ordered[0:60:3], ordered[1:60:3]]
    touched = set(touch[0]) | set(touch[1])
    params = [{"now": now.isoformat(), "ttl": ttl, "touch": ids} for ids in touch]
    with anyio.fail_after(90):
        reports = await run_workers("sweep", postgres_server, pg_schema, anyio_backend, params)

    suspended = [s for report in reports for s in report["suspended"]]
    counts = Counter(s["id"] for s in suspended)
    # Never one suspended twice, never one touched after the cutoff (its snapshot says when).
    assert max(counts.values()) == 1
    assert all(datetime.fromisoformat(s["last_activity_at"]) < cutoff for s in suspended)
    assert not set(counts) & fresh
    # Every stale session nobody touched was suspended by exactly one of the two.
    assert stale - touched <= set(counts) <= stale
    # Every touch was answered with the session active at `now`.
    answered = [t for report in reports for t in report["touched"]]
    assert sorted(t["id"] for t in answered) == sorted(touched)
    assert all(t["state"] == "active" for t in answered)
    await adapter.open()
    try:
        for session_id in stale | fresh:
            stored = await adapter.get(session_id)
            assert stored is not None
            if session_id in touched:
                assert stored.state is SessionState.ACTIVE
                assert stored.last_activity_at == now
            elif session_id in fresh:
                assert stored.state is SessionState.ACTIVE
                assert stored.last_activity_at < now
            else:
                assert stored.state is SessionState.SUSPENDED
                assert stored.state_changed_at == now
    finally:
        await adapter.aclose()
    # The tables agree: the untouched stale sessions suspended, all the others active.
    states = dict(await rows(postgres_server, pg_schema, "SELECT id, state FROM {schema}.sessions"))
    assert states == {
        session_id: "suspended" if session_id in stale - touched else "active"
        for session_id in stale | fresh
    }


@pytest.mark.anyio
async def test_a_postgres_killed_mid_load_keeps_acknowledged_writes_and_serves_again(
    private_postgres_server: PostgresServer, pg_schema: str
) -> None:
    server = private_postgres_server
    adapter = PostgresSessionStoreAdapter(server.dsn, schema=pg_schema, connect_timeout=1)
    writers = 8
    created: dict[str, str] = {}  # acknowledged creates: session id -> user
    updated: dict[str, int] = {}  # the last acknowledged metadata value of each session
    errors: list[AdapterError] = []
    unexpected: list[AdapterError] = []
    successes_after_restart = Counter[int]()
    failed_writers: set[int] = set()
    phase = {"killed": False, "restarted": False}
    acknowledged = anyio.Event()
    everyone_failed = anyio.Event()
    restarted = anyio.Event()

    async def writer(store: Any, w: int) -> None:
        n = 0
        while successes_after_restart[w] < 20:
            n += 1
            user = f"user-{w}-{n % 3}"
            try:
                made = await store.create(user_id=user, id=f"w{w}-{n}")
                created[made.id] = user
                await store.update_metadata(made.id, {"n": n})
                updated[made.id] = n
                await store.resolve(user_id=user, surface_id="web")
                await store.find(user_id=user)
            except AdapterError as exc:
                # Only while the server is down; the outcome of the call is unknown.
                (errors if phase["killed"] and not phase["restarted"] else unexpected).append(exc)
                failed_writers.add(w)
                if len(failed_writers) == writers:
                    everyone_failed.set()
                await restarted.wait()
                continue
            if phase["restarted"]:
                successes_after_restart[w] += 1
            if len(updated) >= 200:
                acknowledged.set()

    with anyio.fail_after(60):
        async with create_session_store(adapter) as store, anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, store, w)
            await acknowledged.wait()
            phase["killed"] = True
            await anyio.to_thread.run_sync(server.kill)
            await everyone_failed.wait()
            # While PostgreSQL is down, reads fail the same clear way.
            with pytest.raises(AdapterError):
                await store.get(next(iter(created)))
            with pytest.raises(AdapterError):
                await store.find(workspace_id="w")
            await anyio.to_thread.run_sync(server.start)
            phase["restarted"] = True
            restarted.set()
    # The same store served again after the restart, without being restarted itself.
    assert all(successes_after_restart[w] >= 20 for w in range(writers))
    # Calls during the outage failed with AdapterError (anything else would have ended the
    # test), and no call failed before the kill or after the restart.
    assert errors
    assert unexpected == []

    # Every acknowledged write survived the SIGKILL: each commit was flushed (fsync on).
    checker = PostgresSessionStoreAdapter(server.dsn, schema=pg_schema)
    await checker.open()
    try:
        for session_id, user in created.items():
            stored = await checker.get(session_id)
            assert stored is not None
            assert stored.user_id == user
            if session_id in updated:
                assert stored.metadata["n"] == updated[session_id]
    finally:
        await checker.aclose()
    kept = await rows(server, pg_schema, "SELECT id, user_id, metadata->'n' FROM {schema}.sessions")
    in_table = {session_id: (user, n) for session_id, user, n in kept}
    for session_id, user in created.items():
        assert in_table[session_id][0] == user
        if session_id in updated:
            assert in_table[session_id][1] == updated[session_id]
