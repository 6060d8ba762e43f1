"""Private Redis servers for the tests: never the machine's own Redis, never a mock.

``redis_server`` is one server for the whole session, started with ``appendonly yes`` and
``appendfsync always`` in a temporary directory on a free loopback port; tests keep apart by
``key_prefix``. ``private_redis_server`` is a server of the test's own, which it may kill and
restart on the same port and directory. ``redis_cluster`` is a 3-node cluster made with
``redis-cli --cluster create``. All are stopped afterwards.

When ``redis-server`` or ``redis-cli`` is missing, the tests that use these fixtures skip with
that reason, except under ``ASSISTANT_SESSIONS_REQUIRE_REDIS=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisCluster",
    "RedisServer",
    "key_prefix",
    "private_redis_server",
    "redis_cluster",
    "redis_server",
    "require_redis",
]

#: How long a server may take to answer PING (or a cluster to report ok).
START_TIMEOUT = 20.0


def require_redis() -> tuple[str, str]:
    """The paths of ``redis-server`` and ``redis-cli``; skip (or fail under CI) without them."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        missing = " and ".join(
            name for name, path in (("redis-server", server), ("redis-cli", cli)) if path is None
        )
        reason = f"{missing} not found on PATH"
        if os.environ.get("ASSISTANT_SESSIONS_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason}, and ASSISTANT_SESSIONS_REQUIRE_REDIS=1 requires Redis")
        pytest.skip(reason)
    return server, cli


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, one whose bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if not cluster:
            return port
        if port < 55535 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command with a plain socket and return the raw reply (for setup only)."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        reply = connection.recv(65536)
        if reply.startswith(b"$"):
            size = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < size:
                reply += connection.recv(65536)
        return reply


def _die_with_parent() -> None:
    # On Linux, a server outlives a test run killed from outside unless the kernel stops it.
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RedisServer:
    """One ``redis-server`` process on a loopback port, with its own directory."""

    def __init__(self, directory: Path, *, port: int | None = None, cluster: bool = False):
        self.binary, self.cli = require_redis()
        self.directory = directory
        self.cluster = cluster
        self.port = port or free_port(cluster=cluster)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING (its append-only file loaded)."""
        arguments = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--logfile",
            "redis.log",
        ]
        if self.cluster:
            arguments += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            arguments += ["--cluster-node-timeout", "5000", "--appendonly", "no"]
        # The kernel signals the child when the *thread* that started it ends: only the main
        # thread lives as long as the test run.
        main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            arguments, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent if main else None
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                log = self.directory / "redis.log"
                detail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}\n{detail}")
            with contextlib.suppress(OSError):
                if command(self.port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the server dies without a chance to write anything more."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class RedisCluster:
    """Three ``redis-server`` nodes joined with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            cli = self.nodes[0].cli
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            options = ["--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, *options],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while not all(
                b"cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in self.nodes
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private Redis server for the session (appendonly, appendfsync always)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, which it may kill and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private 3-node Redis Cluster (no replicas) for the session."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, so tests sharing a server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"
