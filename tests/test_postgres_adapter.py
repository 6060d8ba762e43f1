"""The PostgreSQL adapter against a private real server: the adapter contract, the store on
PostgreSQL end to end, group commit, schemas and migrations, damaged rows, and outages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs
import psycopg
import pytest
from psycopg import sql

from assistant_sessions import (
    AdapterError,
    InvalidInputError,
    InvalidTypeError,
    PostgresSessionStoreAdapter,
    Session,
    SessionConflictError,
    SessionQuery,
    SessionState,
    SessionStateError,
    create_session_store,
)
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.adapters._encoding import encode_session
from assistant_sessions.adapters.postgres import _schema
from assistant_sessions.testing import AdapterContract, FakeClock

if TYPE_CHECKING:
    from postgres_fixtures import PostgresServer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class TestPostgresContract(AdapterContract):
    @pytest.fixture
    def adapter(
        self, postgres_server: PostgresServer, pg_schema: str
    ) -> PostgresSessionStoreAdapter:
        return PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)


class TestPostgresOneTransactionPerCallContract(AdapterContract):
    @pytest.fixture
    def adapter(
        self, postgres_server: PostgresServer, pg_schema: str
    ) -> PostgresSessionStoreAdapter:
        return PostgresSessionStoreAdapter(
            postgres_server.dsn, schema=pg_schema, group_commit=False
        )


def make(session_id: str, user_id: str, at: datetime = T0, **changes: Any) -> Session:
    session = Session(
        session_id,
        user_id,
        None,
        SessionState.ACTIVE,
        at,
        at,
        at,
        (),
        MappingProxyType({"id": session_id}),
    )
    return attrs.evolve(session, **changes)


@pytest.fixture
async def adapter(
    postgres_server: PostgresServer, pg_schema: str
) -> AsyncIterator[PostgresSessionStoreAdapter]:
    opened = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


def table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


async def test_the_store_runs_on_postgres_end_to_end(
    postgres_server: PostgresServer, pg_schema: str, clock: FakeClock
) -> None:
    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        first = await store.resolve(user_id="ann", surface_id="web", workspace_id="w")
        assert first.state is SessionState.CREATED
        again = await store.resolve(user_id="ann", surface_id="web", workspace_id="w")
        assert again == attrs.evolve(first, state=SessionState.ACTIVE)
        other = await store.create(user_id="bob", id="bob-1", metadata={"a": 1})
        clock.advance(10)
        await store.attach_surface(first.id, "phone")
        updated = await store.update_metadata(first.id, {"lang": "en", "n": [1, 2]})
        assert dict(updated.metadata) == {"lang": "en", "n": (1, 2)}
        assert await store.get(first.id) == updated
        assert await store.find(user_id="ann") == [updated]
        assert await store.find(state=SessionState.CREATED) == [other]
        assert await store.find(surface_id="phone") == [updated]
        clock.advance(120)
        await store.touch(other.id)
        swept = await store.sweep_stale()
        assert [s.id for s in swept] == [first.id]
        assert await store.find(workspace_id="w") == [swept[0]]
        expired = await store.expire(first.id)
        with pytest.raises(SessionStateError):
            await store.touch(first.id)
        with pytest.raises(SessionConflictError):
            await store.create(user_id="ann", id="bob-1")
        fresh = await store.resolve(user_id="ann", surface_id="web", workspace_id="w")
        assert fresh.id not in (first.id, other.id)
    # What the store acknowledged is in PostgreSQL for the next store.
    async with create_session_store(adapter, clock=clock) as store:
        assert await store.get(first.id) == expired
        assert {s.id for s in await store.find(user_id="ann")} == {first.id, fresh.id}


async def test_stores_sharing_a_schema_never_serve_a_stale_view(
    postgres_server: PostgresServer, pg_schema: str, clock: FakeClock
) -> None:
    def open_store() -> Any:
        adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
        return create_session_store(adapter, clock=clock)

    async with open_store() as a, open_store() as b:
        await a.create(user_id="u", id="mine", initial_surface_id="web")
        theirs = await b.create(user_id="u", id="theirs", workspace_id="w")
        assert (await a.touch("theirs")).state is SessionState.ACTIVE
        await b.detach_surface("mine", "web")
        assert (await a.attach_surface("mine", "web")).attached_surfaces == ("web",)
        assert (await b.get("mine")).attached_surfaces == ("web",)  # type: ignore[union-attr]
        await b.expire("mine")
        with pytest.raises(SessionStateError):
            await a.update_metadata("mine", {})
        assert (await a.resolve(user_id="u", workspace_id="w")).id == theirs.id
        assert len(await b.find(user_id="u")) == 2


async def test_metadata_is_a_jsonb_column_for_the_teams_own_sql(
    adapter: PostgresSessionStoreAdapter, postgres_server: PostgresServer
) -> None:
    plain = make("plain", "u", metadata=MappingProxyType({"plan": "pro", "n": 1.5}))
    odd = make("odd", "v", metadata=MappingProxyType({"nul": "a\x00b", "zero": -0.0}))
    assert await adapter.commit([UserCommit("u", 0, (plain,)), UserCommit("v", 0, (odd,))]) == [
        None,
        None,
    ]
    rows = postgres_server.query(
        sql.SQL("SELECT id, metadata FROM {} ORDER BY id").format(table(adapter.schema, "sessions"))
    )
    # jsonb cannot hold a NUL character: that column is NULL, the session itself is whole.
    assert rows == [("odd", None), ("plain", {"plan": "pro", "n": 1.5})]
    found = postgres_server.query(
        sql.SQL("SELECT id FROM {} WHERE metadata @> %s").format(table(adapter.schema, "sessions")),
        [json.dumps({"plan": "pro"})],
    )
    assert found == [("plain",)]
    assert await adapter.get("odd") == odd
    text = postgres_server.query(
        sql.SQL("SELECT data FROM {} WHERE id = 'odd'").format(table(adapter.schema, "sessions"))
    )
    assert text == [(encode_session(odd),)]


async def test_concurrent_commits_of_many_users_share_transactions(
    adapter: PostgresSessionStoreAdapter,
) -> None:
    results: dict[str, list[Rejection | None]] = {}

    async def commit(user: str) -> None:
        results[user] = await adapter.commit([UserCommit(user, 0, (make(f"s-{user}", user),))])

    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(commit, f"user-{n}")
    assert results == {f"user-{n}": [None] for n in range(60)}
    statistics = adapter.statistics()
    assert statistics.user_commits == 60
    # The first call went alone; the ones made while it was in flight went together.
    assert statistics.transactions < 10
    for n in range(60):
        assert (await adapter.load_user(f"user-{n}")).version == 1


async def test_without_group_commit_each_call_is_its_own_transaction(
    postgres_server: PostgresServer, pg_schema: str
) -> None:
    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema, group_commit=False)
    assert "group_commit=False" in repr(adapter)
    await adapter.open()
    try:
        async with anyio.create_task_group() as tg:
            for n in range(30):
                commit = [UserCommit(f"u{n}", 0, (make(f"s{n}", f"u{n}"),))]
                tg.start_soon(adapter.commit, commit)
        assert adapter.statistics().transactions == 30
        # A call with several users still writes them in one transaction.
        commits = [UserCommit(f"o{n}", 0, (make(f"o{n}", f"o{n}"),)) for n in range(3)]
        assert await adapter.commit(commits) == [None] * 3
        assert adapter.statistics().transactions == 31
    finally:
        await adapter.aclose()


async def test_one_users_rejection_never_fails_another_in_the_same_group(
    adapter: PostgresSessionStoreAdapter,
) -> None:
    assert await adapter.commit([UserCommit("owner", 0, (make("taken", "owner"),))]) == [None]
    assert await adapter.commit([UserCommit("stale", 0, (make("st", "stale"),))]) == [None]
    commits = [
        UserCommit("a", 0, (make("a1", "a"),)),
        UserCommit("thief", 0, (make("t1", "thief"), make("taken", "thief"))),
        UserCommit("stale", 0, (make("st2", "stale"),)),
        UserCommit("b", 0, (make("b1", "b"),), ()),
        # Two new users of one group wanting the same new id: the first one gets it.
        UserCommit("c", 0, (make("twin", "c"),)),
        UserCommit("d", 0, (make("twin", "d"),)),
    ]
    assert await adapter.commit(commits) == [
        None,
        Rejection.DUPLICATE_ID,
        Rejection.VERSION,
        None,
        None,
        Rejection.DUPLICATE_ID,
    ]
    assert (await adapter.load_user("thief")).version == 0
    assert await adapter.get("t1") is None
    assert (await adapter.get("taken")).user_id == "owner"  # type: ignore[union-attr]
    assert (await adapter.load_user("stale")).sessions == (make("st", "stale"),)
    assert (await adapter.get("twin")).user_id == "c"  # type: ignore[union-attr]
    assert [s.id for s in (await adapter.load_user("a")).sessions] == ["a1"]
    assert (await adapter.load_user("d")).version == 0


async def test_opening_at_once_migrates_once_and_a_newer_schema_is_refused(
    postgres_server: PostgresServer, pg_schema: str
) -> None:
    adapters = [
        PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema) for _ in range(6)
    ]
    async with anyio.create_task_group() as tg:
        for each in adapters:
            tg.start_soon(each.open)
    for each in adapters:
        await each.aclose()
    version = table(pg_schema, "schema_version")
    assert postgres_server.query(sql.SQL("SELECT version FROM {}").format(version)) == [
        (_schema.SCHEMA_VERSION,)
    ]
    postgres_server.query(sql.SQL("UPDATE {} SET version = version + 1").format(version))
    with pytest.raises(AdapterError, match="newer"):
        await adapters[0].open()
    with pytest.raises(AdapterError, match="not open"):
        await adapters[0].get("x")


async def test_an_undecodable_session_fails_alone(
    adapter: PostgresSessionStoreAdapter, postgres_server: PostgresServer
) -> None:
    await adapter.commit(
        [
            UserCommit("u", 0, (make("bad", "u"), make("fine", "u"))),
            UserCommit("v", 0, (make("good", "v"),)),
        ]
    )
    postgres_server.query(
        sql.SQL("UPDATE {} SET data = %s WHERE id = 'bad'").format(
            table(adapter.schema, "sessions")
        ),
        ['{"id": 1}'],
    )
    with pytest.raises(AdapterError, match="'bad'"):
        await adapter.get("bad")
    # The owner's other session stays readable; the damaged one is left out, its id kept.
    snapshot = await adapter.load_user("u")
    assert (snapshot.version, snapshot.sessions) == (1, (make("fine", "u"),))
    assert [s.id for s in await adapter.find(SessionQuery(user_id="u"))] == ["fine"]
    due = await adapter.due(SessionState.ACTIVE, datetime(2027, 1, 1, tzinfo=UTC), 10)
    assert sorted(s.id for s in due) == ["fine", "good"]
    assert await adapter.commit([UserCommit("w", 0, (make("bad", "w"),))]) == [
        Rejection.DUPLICATE_ID
    ]


async def test_calls_fail_while_the_server_is_down_and_work_again_after(
    private_postgres_server: PostgresServer, pg_schema: str, clock: FakeClock
) -> None:
    server = private_postgres_server
    adapter = PostgresSessionStoreAdapter(server.dsn, schema=pg_schema, connect_timeout=1)
    async with create_session_store(adapter, clock=clock) as store:
        kept = await store.resolve(user_id="u", surface_id="web")
        await anyio.to_thread.run_sync(server.stop)
        for call in (
            store.resolve(user_id="u", surface_id="web"),
            store.resolve(user_id="v"),
            store.touch(kept.id),
            store.get(kept.id),
            store.find(user_id="u"),
            store.find(),
            store.sweep_stale(),
        ):
            with pytest.raises(AdapterError) as raised:
                await call
            assert isinstance(raised.value.__cause__, psycopg.Error)
        await anyio.to_thread.run_sync(server.start)
        # The same store serves again: nothing was lost, nothing half-applied.
        again = await store.resolve(user_id="u", surface_id="web")
        assert again.id == kept.id
        assert len(await store.find(user_id="u")) == 1
        assert len(await store.find(user_id="v")) <= 1


async def test_a_connection_the_server_ended_is_replaced_without_a_failed_call(
    adapter: PostgresSessionStoreAdapter, postgres_server: PostgresServer
) -> None:
    assert await adapter.commit([UserCommit("u", 0, (make("a", "u"),))]) == [None]
    assert (await adapter.load_user("u")).version == 1
    ours = "WHERE application_name = 'assistant-sessions' AND pid <> pg_backend_pid()"
    ended = postgres_server.query(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity {ours}")
    assert ended
    assert all(row == (True,) for row in ended)
    # The server ends them on its own time: wait until it has (their sockets then say so).
    gone = f"SELECT count(*) = 0 FROM pg_stat_activity {ours}"
    for _ in range(1000):
        if postgres_server.query(gone) == [(True,)]:
            break
        await anyio.sleep(0.01)  # the server's own processes: nothing to wait on here
    else:
        pytest.fail("the server did not end the adapter's connections")
    assert await adapter.commit([UserCommit("u", 1, (make("b", "u"),))]) == [None]
    assert (await adapter.load_user("u")).version == 2


async def test_opening_fails_cleanly_when_the_server_is_unreachable() -> None:
    from postgres_fixtures import free_port

    port = free_port()
    adapter = PostgresSessionStoreAdapter(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=1
    )
    with pytest.raises(AdapterError, match=str(port)):
        async with create_session_store(adapter):
            pass
    with pytest.raises(AdapterError, match="not open"):
        await adapter.get("x")


async def test_a_caller_leaves_at_its_deadline_while_the_tables_are_locked(
    postgres_server: PostgresServer, pg_schema: str, clock: FakeClock
) -> None:
    adapter = PostgresSessionStoreAdapter(postgres_server.dsn, schema=pg_schema)
    async with create_session_store(adapter, clock=clock) as store:
        kept = await store.resolve(user_id="u", surface_id="web")
        with (
            psycopg.connect(postgres_server.dsn, autocommit=True) as blocker,
            blocker.transaction(),
        ):
            blocker.execute(
                sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(
                    table(pg_schema, "users"), table(pg_schema, "sessions")
                )
            )
            for call in (store.touch(kept.id), store.resolve(user_id="new")):
                started = anyio.current_time()
                with anyio.move_on_after(0.3) as scope:
                    await call
                assert scope.cancelled_caught
                assert anyio.current_time() - started < 0.3 + 0.25
        # The lock is gone: the store serves, and storage and the actor agree.
        touched = await store.touch(kept.id)
        assert await store.get(kept.id) == touched


async def test_an_adapter_never_opened_refuses_every_call() -> None:
    adapter = PostgresSessionStoreAdapter("host=127.0.0.1 port=1")
    calls = [
        adapter.load_user("u"),
        adapter.commit([UserCommit("u", 0, ())]),
        adapter.get("x"),
        adapter.due(SessionState.ACTIVE, T0, 10),
        adapter.find(SessionQuery()),
    ]
    for call in calls:
        with pytest.raises(AdapterError, match="not open"):
            await call


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("host=x",), {"schema": ""}, InvalidInputError),
        (("host=x",), {"schema": "a-b"}, InvalidInputError),
        (("host=x",), {"schema": "1a"}, InvalidInputError),
        (("host=x",), {"schema": "a" * 64}, InvalidInputError),
        (("host=x",), {"schema": 5}, InvalidTypeError),
        (("host=x",), {"max_group": 0}, InvalidInputError),
        (("host=x",), {"max_group": "2"}, InvalidTypeError),
        (("host=x",), {"connect_timeout": 0}, InvalidInputError),
        (("host=x",), {"connect_timeout": float("inf")}, InvalidInputError),
        (("host=x",), {"connect_timeout": "1"}, InvalidTypeError),
        ((b"host=x",), {}, InvalidTypeError),
        (("host='x",), {}, InvalidInputError),
    ],
)
def test_bad_arguments_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        PostgresSessionStoreAdapter(*args, **kwargs)


def test_the_repr_never_shows_a_password() -> None:
    adapter = PostgresSessionStoreAdapter("postgresql://app:secret@db.example:5433/sessions")
    assert "secret" not in repr(adapter)
    assert "db.example:5433/sessions" in repr(adapter)
