"""The Redis adapter against a private real server: the adapter contract, the store on Redis
end to end, cross-store freshness, the claim protocol, and connection loss."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import methodcaller
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from assistant_sessions import (
    AdapterError,
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionConflictError,
    SessionNotFoundError,
    SessionQuery,
    SessionState,
    SessionStateError,
    create_session_store,
)
from assistant_sessions.adapters import Rejection, UserCommit, UserSnapshot
from assistant_sessions.adapters._encoding import session_to_dict
from assistant_sessions.adapters.redis import RedisSessionStoreAdapter
from assistant_sessions.adapters.redis._entries import Entry
from assistant_sessions.model import recency_key
from assistant_sessions.testing import AdapterContract, FakeClock

if TYPE_CHECKING:
    from redis_fixtures import RedisServer


def redis_command(port: int, *args: str) -> bytes:
    # Imported late: pytest must register redis_fixtures as a plugin before its first import.
    from redis_fixtures import command

    return command(port, *args)


pytest_plugins = ["redis_fixtures"]

pytestmark = pytest.mark.anyio


class TestRedisContract(AdapterContract):
    @pytest.fixture
    def adapter(self, redis_server: RedisServer, key_prefix: str) -> RedisSessionStoreAdapter:
        return RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)


class TestRedisBucketedContract(AdapterContract):
    """Several buckets on one server: the cluster's claim protocol, without a cluster."""

    @pytest.fixture
    def adapter(self, redis_server: RedisServer, key_prefix: str) -> RedisSessionStoreAdapter:
        return RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=16)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(
    session_id: str,
    user_id: str,
    at: datetime = T0,
    *,
    state: SessionState = SessionState.ACTIVE,
    workspace_id: str | None = None,
    surfaces: tuple[str, ...] = (),
    changed_at: datetime | None = None,
) -> Session:
    return Session(
        session_id,
        user_id,
        workspace_id,
        state,
        at,
        at,
        changed_at or at,
        surfaces,
        MappingProxyType({"id": session_id}),
    )


@pytest.fixture(params=[1, 16], ids=["one-bucket", "16-buckets"])
def buckets(request: pytest.FixtureRequest) -> int:
    value: int = request.param
    return value


@pytest.fixture
async def adapter(
    redis_server: RedisServer, key_prefix: str, buckets: int
) -> AsyncIterator[RedisSessionStoreAdapter]:
    opened = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=buckets)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_the_store_runs_on_redis_end_to_end(
    redis_server: RedisServer, key_prefix: str, buckets: int, clock: FakeClock
) -> None:
    adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=buckets)
    async with create_session_store(adapter, clock=clock, default_ttl=60) as store:
        first = await store.resolve(user_id="ann", surface_id="web", workspace_id="w")
        assert first.state is SessionState.CREATED
        assert await store.resolve(
            user_id="ann", surface_id="web", workspace_id="w"
        ) == attrs.evolve(first, state=SessionState.ACTIVE)
        other = await store.create(user_id="bob", id="bob-1", metadata={"a": 1})
        clock.advance(10)
        await store.attach_surface(first.id, "phone")
        updated = await store.update_metadata(first.id, {"lang": "en", "n": [1, 2]})
        assert dict(updated.metadata) == {"lang": "en", "n": (1, 2)}
        assert updated.attached_surfaces == ("web", "phone")
        assert await store.get(first.id) == updated
        assert await store.find(user_id="ann") == [updated]
        assert await store.find(state=SessionState.CREATED) == [other]
        assert await store.find(surface_id="phone") == [updated]
        clock.advance(120)
        touched = await store.touch(other.id)
        assert touched.state is SessionState.ACTIVE
        swept = await store.sweep_stale()
        assert [s.id for s in swept] == [first.id]
        assert (await store.get(first.id)).state is SessionState.SUSPENDED  # type: ignore[union-attr]
        assert await store.find(workspace_id="w") == [swept[0]]
        expired = await store.expire(first.id)
        with pytest.raises(SessionStateError):
            await store.touch(first.id)
        with pytest.raises(SessionConflictError):
            await store.create(user_id="ann", id="bob-1")
        with pytest.raises(SessionNotFoundError):
            await store.touch("nobody's")
        # A resolve never returns an expired session: it makes a new one.
        again = await store.resolve(user_id="ann", surface_id="web", workspace_id="w")
        assert again.id not in (first.id, other.id)
    # What the store acknowledged is in Redis for the next store.
    async with create_session_store(adapter, clock=clock) as store:
        assert await store.get(first.id) == expired
        assert {s.id for s in await store.find(user_id="ann")} == {first.id, again.id}


async def test_stores_sharing_redis_never_serve_a_stale_view(
    redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    def open_store() -> Any:
        adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
        return create_session_store(adapter, clock=clock)

    async with open_store() as a, open_store() as b:
        mine = await a.create(user_id="u", id="mine", initial_surface_id="web")
        # `b` changes the user behind `a`'s back; `a` has the user cached.
        theirs = await b.create(user_id="u", id="theirs", workspace_id="w")
        assert (await a.touch("theirs")).state is SessionState.ACTIVE
        await b.detach_surface("mine", "web")
        # Attaching what `a` still believes attached must attach it for real.
        assert (await a.attach_surface("mine", "web")).attached_surfaces == ("web",)
        assert (await b.get("mine")).attached_surfaces == ("web",)  # type: ignore[union-attr]
        await b.expire("mine")
        with pytest.raises(SessionStateError):
            await a.update_metadata("mine", {})
        assert (await a.expire("mine")).state is SessionState.EXPIRED
        # Resolve sees the other store's session instead of creating a second one.
        assert (await a.resolve(user_id="u", workspace_id="w")).id == theirs.id
        assert len(await b.find(user_id="u")) == 2
        assert mine.id == "mine"


async def test_find_without_a_user_matches_a_plain_filter(
    adapter: RedisSessionStoreAdapter,
) -> None:
    sessions = []
    for n in range(150):
        # Few distinct times: many ties, which must be ordered by id across batches.
        at = T0 + timedelta(seconds=n % 9)
        state = list(SessionState)[n % 4]
        sessions.append(
            make(
                f"s{n:03d}",
                f"user-{n % 13}",
                at,
                state=state,
                workspace_id=f"w{n % 3}",
                surfaces=("web",) if n % 5 == 0 else (),
                changed_at=at + timedelta(seconds=n % 4),
            )
        )
    by_user: dict[str, list[Session]] = {}
    for s in sessions:
        by_user.setdefault(s.user_id, []).append(s)
    commits = [UserCommit(user, 0, tuple(own)) for user, own in by_user.items()]
    assert await adapter.commit(commits) == [None] * len(commits)
    queries = [
        SessionQuery(limit=1),
        SessionQuery(limit=7),
        SessionQuery(limit=150),
        SessionQuery(workspace_id="w1", limit=20),
        SessionQuery(state=SessionState.ACTIVE, limit=9),
        SessionQuery(state=SessionState.CREATED, limit=50),
        SessionQuery(state=SessionState.EXPIRED, workspace_id="w2"),
        SessionQuery(surface_id="web", limit=5),
        SessionQuery(active_after=T0 + timedelta(seconds=5), limit=30),
        SessionQuery(after=(T0 + timedelta(seconds=4), "s100"), limit=25),
        SessionQuery(after=(T0 + timedelta(seconds=4), "s100"), state=SessionState.ACTIVE),
    ]
    for query in queries:
        expected = sorted(filter(query.matches, sessions), key=recency_key, reverse=True)
        assert await adapter.find(query) == expected[: query.limit], query


async def test_due_reads_the_oldest_across_all_users(adapter: RedisSessionStoreAdapter) -> None:
    sessions = [
        make(f"s{n}", f"user-{n % 11}", T0 + timedelta(seconds=(n * 37) % 100)) for n in range(100)
    ]
    suspended = [
        make(
            f"z{n}",
            f"user-{n}",
            T0,
            state=SessionState.SUSPENDED,
            changed_at=T0 + timedelta(seconds=50 - n),
        )
        for n in range(5)
    ]
    by_user: dict[str, list[Session]] = {}
    for s in sessions + suspended:
        by_user.setdefault(s.user_id, []).append(s)
    commits = [UserCommit(user, 0, tuple(own)) for user, own in by_user.items()]
    assert await adapter.commit(commits) == [None] * len(commits)
    oldest = sorted(sessions, key=lambda s: s.last_activity_at)
    cutoff = T0 + timedelta(seconds=40)
    assert await adapter.due(SessionState.ACTIVE, cutoff, 7) == oldest[:7]
    assert await adapter.due(SessionState.ACTIVE, cutoff, 1000) == oldest[:40]
    assert await adapter.due(SessionState.SUSPENDED, T0 + timedelta(seconds=48), 10) == [
        suspended[4],
        suspended[3],
    ]
    assert await adapter.due(SessionState.CREATED, T0 + timedelta(days=1), 10) == []


async def test_odd_ids_round_trip_and_stay_apart(adapter: RedisSessionStoreAdapter) -> None:
    # Braces would move a key to another slot if ids were part of the hash tag; colons and
    # lengths could make two users' keys or index members collide if they were not encoded.
    users = ["{u}", "}{", "a:1", "a", "1:a", "ü☃", "x" * 512]
    commits = [
        UserCommit(user, 0, (make(f"{{s}}:{i}", user), make(f"s-{i}-ü", user)))
        for i, user in enumerate(users)
    ]
    assert await adapter.commit(commits) == [None] * len(users)
    for i, user in enumerate(users):
        snapshot = await adapter.load_user(user)
        assert {s.id for s in snapshot.sessions} == {f"{{s}}:{i}", f"s-{i}-ü"}
        stored = await adapter.get(f"{{s}}:{i}")
        assert stored is not None
        assert stored.user_id == user
    found = await adapter.find(SessionQuery(limit=100))
    assert len(found) == 2 * len(users)
    assert len(await adapter.due(SessionState.ACTIVE, T0 + timedelta(seconds=1), 100)) == 14


async def test_a_deleted_session_id_can_be_used_by_another_user(
    adapter: RedisSessionStoreAdapter,
) -> None:
    assert await adapter.commit([UserCommit("u1", 0, (make("X", "u1"),))]) == [None]
    assert await adapter.commit([UserCommit("u1", 1, (), ("X",))]) == [None]
    assert await adapter.get("X") is None
    assert await adapter.commit([UserCommit("u2", 0, (make("X", "u2"),))]) == [None]
    stored = await adapter.get("X")
    assert stored is not None
    assert stored.user_id == "u2"
    assert (await adapter.load_user("u1")).version == 2
    # The first owner cannot take it back while the second one has it.
    assert await adapter.commit([UserCommit("u1", 2, (make("X", "u1"),))]) == [
        Rejection.DUPLICATE_ID
    ]


async def test_a_claim_left_behind_is_taken_after_fencing_its_holder(
    redis_server: RedisServer, key_prefix: str
) -> None:
    adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=16)
    await adapter.open()
    try:
        # u1 claims "X" and is about to commit it (a lost race or a crash would leave it so).
        assert await adapter._claim(b"u1", b"X")
        # While u1's create may still be in flight, the id is u1's.
        assert await adapter.commit([UserCommit("u2", 0, (make("X", "u2"),))]) == [
            Rejection.DUPLICATE_ID
        ]
        # Later u2 takes it: u1 does not have it, so u1 is fenced and the claim goes to u2.
        adapter._claim_grace = 0
        assert await adapter.commit([UserCommit("u2", 0, (make("X", "u2"),))]) == [None]
        # u1's commit with its old proof of claim must not apply: the script asks for a new
        # claim, and a new claim finds the id taken.
        entry = adapter._commit_entry(UserCommit("u1", 0, (make("X", "u1"),)), {b"X"}, b"0")
        (reply,) = await adapter._send([entry])
        assert int(reply[0]) == 3
        assert not await adapter._claim(b"u1", b"X")
        assert await adapter.commit([UserCommit("u1", 0, (make("X", "u1"),))]) == [
            Rejection.DUPLICATE_ID
        ]
        assert (await adapter.load_user("u1")).sessions == ()
        stored = await adapter.get("X")
        assert stored is not None
        assert stored.user_id == "u2"
    finally:
        await adapter.aclose()


async def test_calls_fail_while_redis_is_down_and_work_again_after(
    private_redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    server = private_redis_server
    adapter = RedisSessionStoreAdapter(server.url, key_prefix=key_prefix, connect_timeout=1)
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
            assert isinstance(raised.value.__cause__, Exception)
        await anyio.to_thread.run_sync(server.start)
        # The same store serves again: nothing was lost, nothing half-applied.
        again = await store.resolve(user_id="u", surface_id="web")
        assert again.id == kept.id
        assert len(await store.find(user_id="u")) == 1
        assert len(await store.find(user_id="v")) <= 1


async def test_opening_fails_cleanly_when_redis_is_unreachable() -> None:
    from redis_fixtures import free_port

    port = free_port()
    adapter = RedisSessionStoreAdapter(f"redis://127.0.0.1:{port}/0", connect_timeout=1)
    with pytest.raises(AdapterError, match=str(port)):
        async with create_session_store(adapter):
            pass
    assert adapter.buckets == 0


async def test_an_undecodable_session_fails_alone(
    adapter: RedisSessionStoreAdapter, redis_server: RedisServer
) -> None:
    await adapter.commit(
        [UserCommit("u", 0, (make("bad", "u"),)), UserCommit("v", 0, (make("good", "v"),))]
    )
    tag = adapter._user_tag(b"u").decode()
    assert redis_command(redis_server.port, "HSET", f"{tag}s:u", "bad", '{"id": 1}') == b":0\r\n"
    with pytest.raises(AdapterError, match="'bad'"):
        await adapter.load_user("u")
    with pytest.raises(AdapterError, match="'bad'"):
        await adapter.get("bad")
    assert await adapter.get("good") == make("good", "v")
    assert (await adapter.load_user("v")).version == 1


async def test_scripts_are_sent_again_when_the_server_forgot_them(
    adapter: RedisSessionStoreAdapter, redis_server: RedisServer
) -> None:
    assert await adapter.commit([UserCommit("u", 0, (make("a", "u"),))]) == [None]
    assert redis_command(redis_server.port, "SCRIPT", "FLUSH") == b"+OK\r\n"
    assert (await adapter.load_user("u")).version == 1
    assert redis_command(redis_server.port, "SCRIPT", "FLUSH") == b"+OK\r\n"
    commits = [UserCommit("u", 1, (make("b", "u"),)), UserCommit("w", 0, (make("c", "w"),))]
    assert await adapter.commit(commits) == [None, None]
    assert await adapter.get("b") == make("b", "u")


async def test_a_different_bucket_count_is_refused(
    redis_server: RedisServer, key_prefix: str
) -> None:
    first = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=4)
    await first.open()
    await first.aclose()
    with pytest.raises(AdapterError, match="buckets=4"):
        await RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, buckets=8).open()
    # Without a count the adapter adopts the stored one, even against a cluster default.
    adopted = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
    await adopted.open()
    try:
        assert adopted.buckets == 4
        await adopted.open()  # opened twice (two stores): closed twice
        await adopted.aclose()
        assert await adopted.get("x") is None
    finally:
        await adopted.aclose()
    await adopted.aclose()  # closing twice is harmless
    with pytest.raises(AdapterError, match="not open"):
        await adopted.get("x")


async def test_an_adapter_never_opened_refuses_every_call() -> None:
    adapter = RedisSessionStoreAdapter("redis://127.0.0.1:1/0")
    assert adapter.buckets == 0
    calls = [
        adapter.load_user("u"),
        adapter.commit([UserCommit("u", 0, ())]),
        adapter.get("x"),
        adapter.due(SessionState.ACTIVE, datetime.now(UTC), 10),
        adapter.find(SessionQuery(user_id="u")),
        adapter.find(SessionQuery()),
    ]
    for call in calls:
        with pytest.raises(AdapterError, match="not open"):
            await call


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key_prefix": ""}, InvalidInputError),
        ({"key_prefix": "a{b"}, InvalidInputError),
        ({"key_prefix": "a}"}, InvalidInputError),
        ({"key_prefix": 5}, InvalidTypeError),
        ({"buckets": 0}, InvalidInputError),
        ({"buckets": 16385}, InvalidInputError),
        ({"buckets": "2"}, InvalidTypeError),
        ({"buckets": True}, InvalidTypeError),
        ({"command_timeout": 0}, InvalidInputError),
        ({"connect_timeout": "1"}, InvalidTypeError),
        ({"max_connections": -1}, InvalidInputError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RedisSessionStoreAdapter(**kwargs)


def entries_in(args: list[bytes]) -> int:
    """How many entries a call of the batch script carries (one argument each, after the
    call's tag, claims mode and lease token)."""
    return len(args) - 3


async def test_concurrent_commits_of_many_users_share_script_calls(
    adapter: RedisSessionStoreAdapter,
) -> None:
    # Per round trip: how many script calls, and how many entries they carried.
    sent: list[tuple[int, int]] = []
    run = adapter._redis.settled

    async def counting(calls: list[Any]) -> list[Any]:
        sent.append((len(calls), sum(entries_in(args) for _, _, args in calls)))
        return await run(calls)

    adapter._redis.settled = counting  # type: ignore[method-assign]
    results: dict[str, list[Rejection | None]] = {}

    async def commit(user: str) -> None:
        results[user] = await adapter.commit([UserCommit(user, 0, (make(f"s-{user}", user),))])

    async with anyio.create_task_group() as tg:
        for n in range(60):
            tg.start_soon(commit, f"user-{n}")
    assert results == {f"user-{n}": [None] for n in range(60)}
    # With several buckets a create takes two rounds (claims are taken in between).
    assert sum(entries for _, entries in sent) == 60 * (1 if adapter.buckets == 1 else 2)
    # The first commit went alone; the ones made while it was in flight went together.
    assert sent[0] == (1, 1)
    assert len(sent) < 10
    assert max(entries for _, entries in sent) > 10
    if adapter.buckets == 1:
        # One bucket: every user's commit of a round trip in one script call.
        assert {calls for calls, _ in sent} == {1}
    else:
        # A script call per bucket: fewer calls than entries where users share a bucket.
        assert all(calls <= min(entries, adapter.buckets) for calls, entries in sent)
    for n in range(60):
        assert (await adapter.load_user(f"user-{n}")).version == 1


async def test_a_commit_cancelled_before_its_pipeline_was_sent_changes_nothing(
    adapter: RedisSessionStoreAdapter,
) -> None:
    gate = anyio.Event()
    run = adapter._redis.settled

    async def gated(calls: list[Any]) -> list[Any]:
        await gate.wait()
        return await run(calls)

    adapter._redis.settled = gated  # type: ignore[method-assign]
    first: list[Rejection | None] = []

    async def lead() -> None:
        first.extend(await adapter.commit([UserCommit("a", 0, (make("sa", "a"),))]))

    async def cancel_when_blocked(scope: anyio.CancelScope) -> None:
        await anyio.wait_all_tasks_blocked()
        scope.cancel()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(lead)
                await anyio.wait_all_tasks_blocked()
                # The first commit's pipeline is in flight (held at the gate): the second
                # waits for the next one, and is cancelled while it waits.
                with anyio.CancelScope() as scope:
                    tg.start_soon(cancel_when_blocked, scope)
                    await adapter.commit([UserCommit("b", 0, (make("sb", "b"),))])
                assert scope.cancelled_caught
            finally:
                gate.set()
    assert first == [None]
    assert (await adapter.load_user("b")).version == 0
    assert await adapter.get("sb") is None
    # The group is free again: the next commit goes out at once.
    assert await adapter.commit([UserCommit("b", 0, (make("sb", "b"),))]) == [None]


async def test_a_commit_cancelled_once_its_pipeline_was_sent_leaves_when_it_ended(
    redis_server: RedisServer, key_prefix: str
) -> None:
    adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
    await adapter.open()
    gates = [anyio.Event(), anyio.Event()]
    pipelines: list[int] = []
    run = adapter._redis.settled

    second = anyio.Event()

    async def gated(calls: list[Any]) -> list[Any]:
        if len(pipelines) < len(gates):
            if pipelines:
                second.set()
            await gates[len(pipelines)].wait()
        replies = await run(calls)
        pipelines.append(sum(entries_in(args) for _, _, args in calls))
        return replies

    adapter._redis.settled = gated  # type: ignore[method-assign]
    scope = anyio.CancelScope()
    left: list[int] = []

    async def commit(user: str) -> None:
        await adapter.commit([UserCommit(user, 0, (make(f"s{user}", user),))])

    async def cancelled_commit() -> None:
        with scope:
            await commit("c")
        left.append(len(pipelines))

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(commit, "a")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(commit, "b")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(cancelled_commit)
                await anyio.wait_all_tasks_blocked()
                gates[0].set()  # b's task sends the next pipeline, with c's script in it
                await second.wait()
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                assert left == []  # c waits for its pipeline
                gates[1].set()
        assert pipelines == [1, 2]
        assert left == [2]  # c left with its cancellation once its pipeline had ended
        assert scope.cancelled_caught
        assert (await adapter.load_user("c")).version == 1  # sent, so applied
    finally:
        await adapter.aclose()


async def test_without_group_commit_each_call_is_sent_on_its_own(
    redis_server: RedisServer, key_prefix: str
) -> None:
    adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix, group_commit=False)
    assert "group_commit=False" in repr(adapter)
    await adapter.open()
    try:
        sent: list[int] = []
        # Every call goes straight to Redis, bypassing the batcher.
        run = adapter._send
        assert run == adapter._entries.send_now

        async def counting(entries: list[Any]) -> list[Any]:
            sent.append(len(entries))
            return await run(entries)

        adapter._send = counting
        results: dict[str, list[Rejection | None]] = {}

        async def commit(user: str) -> None:
            results[user] = await adapter.commit([UserCommit(user, 0, (make(f"s-{user}", user),))])

        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(commit, f"user-{n}")
        assert results == {f"user-{n}": [None] for n in range(30)}
        assert sent == [1] * 30
        # A call with several users still sends their commits together.
        sent.clear()
        commits = [UserCommit(f"other-{n}", 0, (make(f"o{n}", f"other-{n}"),)) for n in range(3)]
        assert await adapter.commit(commits) == [None] * 3
        assert sent == [3]
    finally:
        await adapter.aclose()


async def test_sessions_are_stored_as_the_converters_ascii_json(
    adapter: RedisSessionStoreAdapter,
) -> None:
    session = attrs.evolve(
        make("s\u00e9", "\u00fc", surfaces=("caf\u00e9",)),
        metadata=MappingProxyType({"note": "\U0001f600 \u6587", "n": 1.5}),
    )
    assert await adapter.commit([UserCommit("\u00fc", 0, (session,))]) == [None]
    key = adapter._keys.sessions_key("\u00fc".encode())
    raw = await adapter._redis.call(lambda client: client.hget(key, "s\u00e9".encode()))
    # Byte for byte what the adapter has always stored.
    assert raw == json.dumps(session_to_dict(session), separators=(",", ":")).encode()
    # UTF-8 JSON (as another writer may store it) reads the same.
    utf8 = json.dumps(session_to_dict(session), ensure_ascii=False).encode()
    await adapter._redis.call(lambda client: client.hset(key, {"s\u00e9".encode(): utf8}))
    assert await adapter.get("s\u00e9") == session
    assert (await adapter.load_user("\u00fc")).sessions == (session,)


async def test_cancelled_reads_leave_the_connection_pool_whole(
    redis_server: RedisServer, key_prefix: str, buckets: int
) -> None:
    """coredis loses a pool slot for good when a caller is cancelled while its reply is
    outstanding; requests run to their end, so cancelled reads cannot use the pool up, and a
    cancelled caller sees its cancellation, never an AdapterError."""
    adapter = RedisSessionStoreAdapter(
        redis_server.url, key_prefix=key_prefix, buckets=buckets, max_connections=2
    )
    await adapter.open()
    try:
        sessions = [make(f"s{n}", f"u{n}", state=SessionState.CREATED) for n in range(20)]
        commits = [UserCommit(s.user_id, 0, (s,)) for s in sessions]
        assert await adapter.commit(commits) == [None] * 20
        later = T0 + timedelta(days=1)

        async def cancel_after(scope: anyio.CancelScope, checkpoints: int) -> None:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        cancelled = 0
        for attempt in range(40):
            reads = (
                lambda: adapter.due(SessionState.CREATED, later, 20),
                lambda: adapter.find(SessionQuery(state=SessionState.CREATED)),
                partial(adapter.get, f"s{attempt % 20}"),
            )
            for read in reads:
                with anyio.fail_after(10), anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel_after, scope, attempt % 9 + 1)
                        await read()
                cancelled += scope.cancelled_caught
        assert cancelled > 0
        with anyio.fail_after(10):
            # Ties of one clock come ordered by id.
            assert await adapter.due(SessionState.CREATED, later, 20) == sorted(
                sessions, key=lambda s: s.id
            )
            assert await adapter.get("s7") == sessions[7]
    finally:
        await adapter.aclose()


async def test_adapters_opening_at_once_agree_on_the_layout(
    redis_server: RedisServer, key_prefix: str
) -> None:
    adapters = [RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix) for _ in range(8)]
    opened = 0
    everyone_open = anyio.Event()

    async def use(adapter: RedisSessionStoreAdapter) -> None:
        nonlocal opened
        # An adapter is opened and closed by one task, as a store does.
        await adapter.open()
        try:
            opened += 1
            if opened == len(adapters):
                everyone_open.set()
            await everyone_open.wait()
        finally:
            await adapter.aclose()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for adapter in adapters:
                tg.start_soon(use, adapter)
            await everyone_open.wait()
            assert {adapter.buckets for adapter in adapters} == {1}


async def test_a_writer_that_keeps_losing_races_gets_a_lease(
    redis_server: RedisServer, key_prefix: str
) -> None:
    first = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
    second = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
    await first.open()
    await second.open()
    try:
        assert await first.commit([UserCommit("u", 0, (make("a", "u"),))]) == [None]
        later = make("a", "u", T0 + timedelta(seconds=1))
        # `first` loses three races in a row (its version is stale each time)...
        for _ in range(3):
            assert await first.commit([UserCommit("u", 0, (later,))]) == [Rejection.VERSION]
        # ...so on the third it took the lease: `second`, though up to date, waits its turn.
        with anyio.fail_after(5):
            assert await second.commit([UserCommit("u", 1, (later,))]) == [Rejection.VERSION]
        assert await first.commit([UserCommit("u", 1, (later,))]) == [None]
        # The winner dropped the lease: `second` commits again at once.
        with anyio.fail_after(0.2):
            assert await second.commit([UserCommit("u", 2, (later,))]) == [None]
        assert (await second.load_user("u")).version == 3
    finally:
        await second.aclose()
        await first.aclose()


async def test_a_users_broken_key_fails_that_user_alone(
    adapter: RedisSessionStoreAdapter,
) -> None:
    """One user's entry failing in a shared script call (a key of the wrong type) fails that
    user's call alone: everyone else's load and commit, sent with it, has its true outcome."""
    sent: list[int] = []
    run = adapter._redis.settled

    async def counting(calls: list[Any]) -> list[Any]:
        sent.append(sum(entries_in(args) for _, _, args in calls))
        return await run(calls)

    adapter._redis.settled = counting  # type: ignore[method-assign]
    broken = adapter._keys.version_key(b"broken")
    await adapter._redis.call(lambda client: client.lpush(broken, [b"not a version"]))
    users = [f"user-{n}" for n in range(30)]
    outcomes: dict[str, object] = {}

    async def commit(user: str) -> None:
        try:
            outcomes[user] = await adapter.commit([UserCommit(user, 0, (make(f"s-{user}", user),))])
        except AdapterError as exc:
            outcomes[user] = exc

    async def load(user: str) -> None:
        try:
            outcomes[f"load {user}"] = (await adapter.load_user(user)).version
        except AdapterError as exc:
            outcomes[f"load {user}"] = exc

    async with anyio.create_task_group() as tg:
        for user in [*users[:15], "broken", *users[15:]]:
            tg.start_soon(commit, user)
            tg.start_soon(load, user)
    assert max(sent) > 2  # the broken user's entries shared script calls with others
    for key in ("broken", "load broken"):
        error = outcomes.pop(key)
        assert isinstance(error, AdapterError)
        assert "wrong kind of value" in str(error)
        assert "commit to" in str(error) or "load a user from" in str(error)
    assert {k: v for k, v in outcomes.items() if not k.startswith("load")} == {
        user: [None] for user in users
    }
    assert {outcomes[f"load {user}"] for user in users} <= {0, 1}
    for user in users:
        assert [s.id for s in (await adapter.load_user(user)).sessions] == [f"s-{user}"]


async def test_a_broken_user_does_not_fail_other_users_creates_in_the_store(
    redis_server: RedisServer, key_prefix: str
) -> None:
    adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
    async with create_session_store(adapter) as store:
        broken = adapter._keys.version_key(b"broken")
        await adapter._redis.call(lambda client: client.lpush(broken, [b"x"]))
        created: dict[str, Session] = {}
        failed: list[str] = []

        async def create(user: str) -> None:
            try:
                created[user] = await store.create(user_id=user)
            except AdapterError:
                failed.append(user)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(create, f"user-{n}")
                if n == 10:
                    tg.start_soon(create, "broken")
        assert failed == ["broken"]
        assert sorted(created) == sorted(f"user-{n}" for n in range(20))
        for user, session in created.items():
            assert await store.find(user_id=user) == [session]


async def test_a_broken_user_fails_alone_among_the_users_of_one_load(
    adapter: RedisSessionStoreAdapter,
) -> None:
    assert await adapter.commit([UserCommit("a", 0, (make("s-a", "a"),))]) == [None]
    broken = adapter._keys.version_key(b"broken")
    await adapter._redis.call(lambda client: client.lpush(broken, [b"x"]))
    first, failed, empty = await adapter.load_users(["a", "broken", "b"])
    assert isinstance(first, UserSnapshot)
    assert [s.id for s in first.sessions] == ["s-a"]
    assert isinstance(failed, AdapterError)
    assert "could not load a user from" in str(failed)
    assert failed.__cause__ is not None
    assert isinstance(empty, UserSnapshot)
    assert empty.version == 0
    with pytest.raises(AdapterError, match="could not load a user from"):
        await adapter.load_user("broken")


async def test_a_failed_read_says_what_failed(adapter: RedisSessionStoreAdapter) -> None:
    claims_key = adapter._keys.claims_keys(b"s1")[0]
    await adapter._redis.call(lambda client: client.lpush(claims_key, [b"x"]))
    with pytest.raises(AdapterError, match="could not read a session from Redis") as caught:
        await adapter.get("s1")
    assert "wrong kind of value" in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_a_broken_shared_key_fails_the_call_before_anything_is_written(
    adapter: RedisSessionStoreAdapter,
) -> None:
    """Entries write only once every key they touch was read; a key every entry of a bucket
    shares (the recency index) holding the wrong type fails them all, with nothing written."""
    recency = adapter._keys.recency_key(adapter._keys.bucket(b"u"))
    await adapter._redis.call(lambda client: client.set(recency, b"not a zset"))
    commits = [UserCommit("u", 0, (make("a", "u"),)), UserCommit("v", 0, (make("b", "v"),))]
    if adapter.buckets > 1:
        commits = commits[:1]  # v may live in another bucket
    with pytest.raises(AdapterError, match="wrong kind of value"):
        await adapter.commit(commits)
    await adapter._redis.call(lambda client: client.delete([recency]))
    for commit in commits:
        assert await adapter.load_user(commit.user_id) == UserSnapshot(commit.user_id, 0, ())
    assert await adapter.commit(commits) == [None] * len(commits)


async def test_every_session_is_in_the_sweep_index_of_its_state_alone(
    adapter: RedisSessionStoreAdapter, redis_server: RedisServer
) -> None:
    """A commit takes a session out of the sweep index of the state it was stored in: found
    in the stored JSON, or, for JSON another writer stored, by leaving every other index."""
    states = list(SessionState)
    sessions = [make(f"s{n}", "u", state=states[n % 4]) for n in range(8)]
    assert await adapter.commit([UserCommit("u", 0, tuple(sessions))]) == [None]
    key = adapter._keys.sessions_key(b"u")
    # Two sessions as another writer would store them (not this library's compact JSON).
    for foreign in sessions[:2]:
        text = json.dumps(session_to_dict(foreign), ensure_ascii=False).encode()
        await adapter._redis.call(lambda client, s=foreign, t=text: client.hset(key, {s.id: t}))
    bucket = adapter._keys.bucket(b"u")

    async def indexes_of(session_id: str) -> list[SessionState]:
        member = b"1:u" + session_id.encode()
        replies = await adapter._redis.pipeline(
            [
                methodcaller("zscore", adapter._keys.due_key(bucket, state), member)
                for state in states
            ]
        )
        return [state for state, score in zip(states, replies, strict=True) if score is not None]

    for version, shift in enumerate((1, 2, 3, 0), start=1):
        moved = [attrs.evolve(s, state=states[(n + shift) % 4]) for n, s in enumerate(sessions)]
        assert await adapter.commit([UserCommit("u", version, tuple(moved))]) == [None]
        for session in moved:
            assert await indexes_of(session.id) == [session.state], session.id


async def test_ids_with_nul_are_refused(adapter: RedisSessionStoreAdapter) -> None:
    with pytest.raises(InvalidInputError, match="NUL"):
        await adapter.commit([UserCommit("u", 0, (make("a\x00b", "u"),))])
    with pytest.raises(InvalidInputError, match="NUL"):
        await adapter.commit([UserCommit("u\x00", 0, (make("a", "u\x00"),))])
    with pytest.raises(InvalidInputError, match="NUL"):
        await adapter.load_user("u\x00")
    assert (await adapter.load_user("u")).version == 0


async def test_the_reload_after_a_version_conflict_reads_no_more_from_redis(
    redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    """The commit script reads the user when it refuses a version; the actor's reload that
    follows at once takes that read instead of another round trip (see ``_conflicts``)."""

    def open_store() -> tuple[RedisSessionStoreAdapter, Any]:
        adapter = RedisSessionStoreAdapter(redis_server.url, key_prefix=key_prefix)
        return adapter, create_session_store(adapter, clock=clock)

    adapter_a, store_a = open_store()
    _, store_b = open_store()
    async with store_a as a, store_b as b:
        session = await a.create(user_id="u", id="s")  # a's actor has the user cached
        await b.update_metadata("s", {"b": 1})  # behind a's back: a's version is stale
        loads: list[bytes] = []
        send = adapter_a._send

        async def counting_send(entries: Sequence[Entry]) -> list[Any]:
            loads.extend(entry for _, entry in entries if entry.startswith(b"L\0"))
            return await send(entries)

        adapter_a._send = counting_send  # type: ignore[method-assign]
        touched = await a.update_metadata(session.id, {"a": 1})
        # a's commit was refused, its turn reloaded the user and applied again, on b's change.
        assert dict(touched.metadata) == {"a": 1, "b": 1}
        assert await b.get("s") == touched
        assert loads == []
