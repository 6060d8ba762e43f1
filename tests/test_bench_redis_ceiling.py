"""`assistant-sessions bench -a redis --write-ceiling`, and CPU per operation in `bench -a redis`.

The ceiling sends exactly the commits of the store's bookkeeping through the Redis adapter's
own script calls, grouped and one script call each, checks what Redis stored, and deletes its
keys; `bench -a redis` reports the client's and the server's CPU per operation. Each test runs
against a private redis-server holding one unrelated key, which stays.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import anyio
import coredis
import pytest

import assistant_sessions.adapters.redis as redis_adapter
from assistant_sessions import InMemorySessionStoreAdapter, create_session_store
from assistant_sessions_bench import _redis_ceiling, main
from assistant_sessions_bench._adapters import BenchmarkError
from assistant_sessions_bench._ceiling import _bookkeeping
from assistant_sessions_bench._cleanup import RedisKeyLog
from assistant_sessions_bench._report import _cpu_rows
from assistant_sessions_bench._results import STORE, PointResult, PointSpec
from assistant_sessions_bench._run import Subject, run_subject
from assistant_sessions_bench._workload import build_workload
from redis_fixtures import RedisServer

_SIZES = {"users": 60, "operations": 300, "concurrency": 16, "rounds": 2}


def _keys(server: RedisServer) -> set[bytes]:
    async def scan() -> set[bytes]:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(server.url, decode_responses=False)
        async with client:
            return {key async for key in client.scan_iter(match="*")}

    return anyio.run(scan)


@pytest.fixture
def server(private_redis_server: RedisServer) -> RedisServer:
    """The private server, with an unrelated key that every run must leave alone."""

    async def write() -> None:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            private_redis_server.url, decode_responses=False
        )
        async with client:
            await client.set("app:session", "keep")

    anyio.run(write)
    return private_redis_server


def test_the_ceiling_sends_the_bookkeepings_commits_grouped_and_single(
    server: RedisServer,
) -> None:
    keys = RedisKeyLog()
    try:
        result = _redis_ceiling.measure_redis_ceiling(server.url, keys, **_SIZES)
    finally:
        keys.delete_all()
    _, commits, _ = _bookkeeping(60, 300, 1, 0.1)
    assert result.commits == len(commits) > 0
    assert [[run.variant for run in runs] for runs in result.rounds] == [["grouped", "single"]] * 2
    for variant in ("grouped", "single"):
        assert result.rate(variant) > 0
        client, server_cpu = result.cpu_per_commit(variant)
        assert client > 0
        assert server_cpu >= 0
    assert result.ratio > 0
    assert result.to_json()["commits_per_second"].keys() == {"grouped", "single"}
    assert _keys(server) == {b"app:session"}


def test_single_sends_a_script_call_per_commit_and_grouped_one_per_round_trip(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[int, list[int]] = {}
    send = redis_adapter.send_entries

    async def counting(adapter: Any, entries: Sequence[Any], *, per_call: int) -> list[Any]:
        calls.setdefault(per_call, []).append(len(entries))
        return await send(adapter, entries, per_call=per_call)

    monkeypatch.setattr(redis_adapter, "send_entries", counting)
    keys = RedisKeyLog()
    try:
        result = _redis_ceiling.measure_redis_ceiling(server.url, keys, **{**_SIZES, "rounds": 1})
    finally:
        keys.delete_all()
    # Round trips of `concurrency` commits each; grouped sends them as one script call.
    assert set(calls) == {16, 1}
    for sizes in calls.values():
        assert sum(sizes) == result.commits
        assert max(sizes) == 16


def test_a_commit_that_was_not_stored_fails_the_ceiling(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, commits, _ = _bookkeeping(60, 300, 1, 0.1)
    sent: list[int] = []
    send = redis_adapter.send_entries

    async def dropping(adapter: Any, entries: Sequence[Any], *, per_call: int) -> list[Any]:
        sent.append(len(entries))
        if sum(sent) < len(commits):
            return await send(adapter, entries, per_call=per_call)
        # The last commit of the run is not sent, but reported as applied.
        return [*await send(adapter, entries[:-1], per_call=per_call), 0]

    monkeypatch.setattr(redis_adapter, "send_entries", dropping)
    keys = RedisKeyLog()
    try:
        with pytest.raises(BenchmarkError, match="not stored as written"):
            _redis_ceiling.measure_redis_ceiling(server.url, keys, **{**_SIZES, "rounds": 1})
    finally:
        keys.delete_all()
    assert _keys(server) == {b"app:session"}


def test_the_command_prints_the_ceiling_and_deletes_its_keys(
    server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-a", "redis", "--adapter-url", server.url, "--write-ceiling"]
    assert main([*args, "-u", "60", "-n", "300", "-c", "16", "-r", "1"]) == 0
    out = capsys.readouterr().out
    assert "Redis write ceiling" in out
    assert "median" in out
    assert "CPU per commit: client" in out
    assert _keys(server) == {b"app:session"}


# Deleting the keys of a server that is not there leaves coredis's buffers to the collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_unreachable_server_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from redis_fixtures import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    args = ["-a", "redis", "--adapter-url", url, "--write-ceiling", "-u", "5", "-n", "10"]
    assert main(args) == 2
    assert "Redis write ceiling failed" in capsys.readouterr().err
    gc.collect()


@pytest.mark.anyio
async def test_runs_on_redis_measure_client_and_server_cpu(server: RedisServer) -> None:
    workload = build_workload("resolve", users=40, operations=200, seed=3)
    store = Subject(STORE, concurrent=True, open=create_session_store)
    prefixes: list[str] = []

    def make_adapter() -> redis_adapter.RedisSessionStoreAdapter:
        prefixes.append(f"cpu-test-{len(prefixes)}")
        return redis_adapter.RedisSessionStoreAdapter(server.url, key_prefix=prefixes[-1])

    try:
        run = await run_subject(store, make_adapter, workload, 8)
        memory = await run_subject(store, InMemorySessionStoreAdapter, workload, 8)
    finally:
        from assistant_sessions_bench._cleanup import delete_prefixes

        await delete_prefixes(server.url, prefixes)
    assert run.ok
    assert run.cpu_seconds is not None
    assert run.cpu_seconds > 0
    assert run.server_cpu_seconds is not None
    assert run.server_cpu_seconds >= 0
    # No server to ask on the in-memory adapter.
    assert memory.cpu_seconds is not None
    assert memory.server_cpu_seconds is None
    spec = PointSpec("asyncio", "redis", "resolve", 40, 200, 8, "uniform", 1.1, 0.1, 3)
    point = PointResult(spec, {}, {STORE: [run]}, None)
    client, server_cpu = point.cpu_per_operation(STORE)
    assert client == run.cpu_seconds / run.operations
    assert server_cpu == run.server_cpu_seconds / run.operations
    assert point.to_json()["subjects"][STORE]["cpu_per_operation_s"]["client"] == client
    rows = _cpu_rows([point])
    assert [row[1] for row in rows] == [STORE]
    assert _cpu_rows([PointResult(spec, {}, {STORE: [memory]}, None)]) == []
    assert await _redis_ceiling.server_cpu(InMemorySessionStoreAdapter()) is None
