"""Private PostgreSQL servers for the tests: never the machine's own PostgreSQL, never a mock.

``postgres_server`` is one server for the whole session, made with ``initdb`` in a temporary
directory and started on a free loopback port with ``fsync=on``; tests keep apart by
``pg_schema``. ``private_postgres_server`` is a server of the test's own, which it may kill and
restart on the same port and directory. Both are stopped, and their directories deleted,
afterwards; a server also dies with the test run if that is killed from outside (Linux).

``initdb`` and ``postgres`` are looked up on PATH, then in ``/usr/lib/postgresql/*/bin`` (where
Debian installs them), newest version first. When they are missing, the tests that use these
fixtures skip with that reason, except under ``ASSISTANT_SESSIONS_REQUIRE_POSTGRES=1`` (CI),
where they fail. PostgreSQL refuses to run as root: under root the servers run as the
``postgres`` account (``nobody`` where there is none), in a directory made for them with
:func:`tempfile.mkdtemp` (pytest's own temporary directories are private to root).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from psycopg import sql

__all__ = [
    "PostgresServer",
    "pg_schema",
    "postgres_server",
    "private_postgres_server",
    "require_postgres",
]

#: How long a server may take to accept a connection (crash recovery included).
START_TIMEOUT = 30.0
#: How long a fast shutdown may take before the server is killed.
STOP_TIMEOUT = 10.0
#: Where Debian installs each major version's binaries.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")


def _version_key(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return None


def find_postgres() -> tuple[str, str] | None:
    """The paths of ``initdb`` and ``postgres`` from one installation, or ``None``.

    PATH comes first; then Debian's ``/usr/lib/postgresql/<version>/bin``, newest first. Both
    binaries are taken from the same directory, so that they are of the same version.
    """
    directories: list[Path] = []
    for name in ("postgres", "initdb"):
        found = shutil.which(name)
        if found is not None:
            directories.append(Path(found).parent)
    versions = [
        (key, path / "bin")
        for path in (DEBIAN_BINARIES.iterdir() if DEBIAN_BINARIES.is_dir() else ())
        if (key := _version_key(path.name)) is not None
    ]
    directories += [directory for _, directory in sorted(versions, reverse=True)]
    for directory in directories:
        initdb, postgres = directory / "initdb", directory / "postgres"
        if all(os.access(binary, os.X_OK) and binary.is_file() for binary in (initdb, postgres)):
            return str(initdb), str(postgres)
    return None


def require_postgres() -> tuple[str, str]:
    """The paths of ``initdb`` and ``postgres``; skip (or fail under CI) without them."""
    binaries = find_postgres()
    if binaries is None:
        reason = f"initdb and postgres not found on PATH or in {DEBIAN_BINARIES}/*/bin"
    elif importlib.util.find_spec("psycopg") is None:
        reason = "psycopg is not installed (pip install -e '.[test]')"
    else:
        return binaries
    if os.environ.get("ASSISTANT_SESSIONS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}, and ASSISTANT_SESSIONS_REQUIRE_POSTGRES=1 requires PostgreSQL")
    pytest.skip(reason)


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _port_free(port: int) -> bool:
    # As a server binds it (SO_REUSEADDR): the TIME_WAIT of old connections does not count.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent(signum: int) -> None:
    # On Linux, a server outlives a test run killed from outside unless the kernel stops it.
    # This runs after the child has switched user: a change of credentials clears the setting.
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG


def _process_start(pid: int) -> int | None:
    """The start time of a live process (to tell it from a later one with the same pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold anything.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited; a zombie holds no shared memory and no socket
        return None
    return int(fields[19])


def _children(pid: int) -> dict[int, int]:
    """The live children of ``pid`` with their start times (empty where there is no /proc)."""
    children: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                children[int(entry.name)] = int(fields[19])
    return children


def _wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class PostgresServer:
    """One private PostgreSQL server on a loopback port, with its own directory.

    The directory (made with :func:`tempfile.mkdtemp`) holds the data directory ``data``, the
    Unix socket directory ``socket`` and the server's log ``postgres.log``. :meth:`start` runs
    ``initdb`` the first time and starts the server again on the same port and directory after
    :meth:`kill` or :meth:`stop`; :meth:`remove` stops it and deletes the directory.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.initdb, self.binary = require_postgres()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # PostgreSQL refuses to run as root: then the server runs as an unprivileged account,
        # without root's supplementary groups.
        self._credentials: dict[str, Any] = {}
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    owner = pwd.getpwnam(name)
                    break
            if owner is None:
                raise RuntimeError("running as root, with no postgres or nobody account")
            self._credentials = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.directory = Path(tempfile.mkdtemp(prefix="assistant-sessions-postgres-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "socket"
        self.log = self.directory / "postgres.log"
        self.sockets.mkdir()
        if owner is not None:
            for path in (self.directory, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def _initdb(self) -> None:
        arguments = [self.initdb, "-D", str(self.data), "--auth=trust", "-U", "postgres"]
        # --no-sync skips only the sync of the initial files, not the server's own fsyncs.
        arguments += ["--encoding=UTF8", "--no-locale", "--no-sync"]
        result = subprocess.run(
            arguments,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.directory,
            timeout=120,
            check=False,
            **self._credentials,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"initdb exited with {result.returncode}\n{output}")

    def query(
        self, statement: str | sql.Composable, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a new connection, in autocommit (for setup and checks only).

        Returns:
            Its rows (empty for a statement that returns none).
        """
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description is not None else []

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=1) as connection:
                row = connection.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.OperationalError:
            return False
        # Whoever answers on the port must be this server, never another one.
        if row is None or Path(row[0]).resolve() != self.data.resolve():
            raise RuntimeError(f"port {self.port} is served by another PostgreSQL: {row}")
        return True

    def start(self) -> None:
        """Start the server (after ``initdb`` the first time) and wait until it accepts a
        connection: after a kill, once crash recovery has replayed its log.

        Raises:
            RuntimeError: ``initdb`` failed, or the server exited or did not accept a
                connection within :data:`START_TIMEOUT` seconds (with the server's log).
        """
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        arguments = [self.binary, "-D", str(self.data), "-p", str(self.port)]
        arguments += ["-c", "listen_addresses=127.0.0.1", "-k", str(self.sockets)]
        # fsync on: the durability tests kill the server and count on what it acknowledged.
        arguments += ["-c", "fsync=on", "-c", "max_connections=100", "-c", "shared_buffers=64MB"]
        # The kernel signals the child when the *thread* that started it ends: only the main
        # thread lives as long as the test run. SIGQUIT is PostgreSQL's immediate shutdown.
        main = threading.current_thread() is threading.main_thread()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.directory,
                preexec_fn=functools.partial(_die_with_parent, signal.SIGQUIT) if main else None,
                **self._credentials,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"postgres exited with {code}\n{self._log_tail()}")
            try:
                if self._ready():
                    return
            except BaseException:
                self.stop()
                raise
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"postgres on port {self.port} did not accept a connection within "
                    f"{START_TIMEOUT:.0f} s\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the postmaster: the server dies without a chance to write anything more.

        Its children (backends, checkpointer, ...) notice and exit on their own; this waits
        until they have (and kills those still there after 10 s), so that :meth:`start` finds
        the directory's shared memory and the port free again.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        # Stopped, the postmaster cannot fork a child between the listing and the kill.
        os.kill(process.pid, signal.SIGSTOP)
        children = _children(process.pid)
        process.kill()
        process.wait(10)
        self._wait_for(children)

    def _wait_for(self, children: dict[int, int]) -> None:
        def remaining() -> list[int]:
            return [pid for pid, start in children.items() if _process_start(pid) == start]

        if not _wait_until(lambda: not remaining(), 10):
            for pid in remaining():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not _wait_until(lambda: not remaining(), 10):
                raise RuntimeError(f"postgres processes {remaining()} outlived their postmaster")
        if not _wait_until(lambda: _port_free(self.port), 10):
            raise RuntimeError(f"port {self.port} still in use after postgres exited")

    def stop(self) -> None:
        """Stop the server: fast shutdown (SIGINT), SIGKILL after :data:`STOP_TIMEOUT` s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def _running() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session (fsync on)."""
    with _running() as server:
        yield server


@pytest.fixture
def private_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, which it may kill and restart."""
    with _running() as server:
        yield server


@pytest.fixture
def pg_schema() -> str:
    """A schema name no other test uses, so tests sharing a server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"
