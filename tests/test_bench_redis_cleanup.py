"""`assistant-sessions bench -a redis` deletes exactly what it wrote, also when interrupted.

Each test has a private redis-server (``private_redis_server``) holding one unrelated key before
the run; afterwards that key is there, unchanged, and no other key is.
"""

from __future__ import annotations

from typing import Any

import anyio
import coredis
import pytest

from assistant_sessions_bench import _cli, main
from assistant_sessions_bench._cleanup import delete_prefixes, key_pattern
from redis_fixtures import RedisServer

_TINY = ["-u", "40", "-n", "300", "-c", "8", "-r", "1", "-q", "--no-json"]
_PHASES = ["--memory-sessions", "30", "--sweep-users", "200", "--sweep-stale", "20",
           "--sweep-reference", "20", "--sweep-repeats", "1"]  # fmt: skip


def _client(server: RedisServer) -> coredis.Redis[bytes]:
    return coredis.Redis.from_url(server.url, decode_responses=False)


def _keys(server: RedisServer) -> set[bytes]:
    async def scan() -> set[bytes]:
        async with _client(server) as client:
            return {key async for key in client.scan_iter(match="*")}

    return anyio.run(scan)


def _set(server: RedisServer, *pairs: tuple[str, str]) -> None:
    async def write() -> None:
        async with _client(server) as client:
            for key, value in pairs:
                await client.set(key, value)

    anyio.run(write)


def _get(server: RedisServer, key: str) -> bytes | None:
    async def read() -> bytes | None:
        async with _client(server) as client:
            return await client.get(key)

    return anyio.run(read)


@pytest.fixture
def server(private_redis_server: RedisServer) -> RedisServer:
    """The private server, with an unrelated key (named like the bench's, but not its own)."""
    _set(private_redis_server, ("bench-someone-else", "keep"), ("app:session", "keep"))
    return private_redis_server


def test_a_bench_run_leaves_no_key_of_its_own(
    server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    written: list[str] = []
    original = _cli.RedisKeyLog.record

    def record(self: Any, url: str, prefix: str) -> None:
        written.append(prefix)
        original(self, url, prefix)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_cli.RedisKeyLog, "record", record)
        assert main(["-a", "redis", "--adapter-url", server.url, *_TINY, *_PHASES]) == 0
    assert written  # the run did use Redis (and so wrote under these prefixes)
    assert _keys(server) == {b"bench-someone-else", b"app:session"}
    assert _get(server, "bench-someone-else") == b"keep"


def test_an_interrupted_bench_run_deletes_its_keys(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[bytes]] = []
    measure_memory = _cli.measure_memory

    async def interrupted(*args: Any, **kwargs: Any) -> Any:
        # The memory phase writes to Redis; then Ctrl-C, while the run is under way.
        await measure_memory(*args, **kwargs)
        async with _client(server) as client:
            seen.append({key async for key in client.scan_iter(match="*")})
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "measure_memory", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["-a", "redis", "--adapter-url", server.url, *_TINY, *_PHASES])
    # While it ran, the benchmark had written keys of its own ...
    assert len(seen) == 1
    assert seen[0] - {b"bench-someone-else", b"app:session"}
    # ... and none is left, while the unrelated keys are untouched.
    assert _keys(server) == {b"bench-someone-else", b"app:session"}
    assert _get(server, "app:session") == b"keep"


def test_processes_runs_delete_their_shared_prefix(
    server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-a", "redis", "--adapter-url", server.url, "--processes", "1"]
    assert main([*args, "-u", "30", "-n", "200", "-c", "8"]) == 0
    assert "ok" in capsys.readouterr().out
    assert _keys(server) == {b"bench-someone-else", b"app:session"}


def test_delete_prefixes_matches_exactly_the_prefix(server: RedisServer) -> None:
    _set(
        server,
        ("bench-1-1:meta", "x"),
        ("bench-1-1:{b0}:s:u", "x"),
        ("bench-1-10:meta", "x"),  # another prefix that starts with the same characters
        ("bench-1-1", "x"),  # no separator: not the adapter's
        ("we*ird:meta", "x"),
        ("weXird:meta", "x"),  # would match an unescaped `we*ird:*`
    )
    assert anyio.run(delete_prefixes, server.url, ["bench-1-1", "we*ird"]) == 3
    assert _keys(server) == {
        b"bench-someone-else",
        b"app:session",
        b"bench-1-10:meta",
        b"bench-1-1",
        b"weXird:meta",
    }
    assert key_pattern("a[b]?*\\") == "a\\[b\\]\\?\\*\\\\:*"
