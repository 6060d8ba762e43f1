"""The SQLite adapter with its writer in a child process (``writer="process"``): the adapter
contract, the child's lifetime (started by open, ended by close, started again after it died),
and its errors. Real database files in ``tmp_path`` and real child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from assistant_sessions import (
    AdapterError,
    InvalidInputError,
    InvalidTypeError,
    Session,
    SessionState,
    create_session_store,
)
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter
from assistant_sessions.adapters.sqlite._writer_process import WriterProcess
from assistant_sessions.testing import AdapterContract, FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class TestSqliteWriterProcessContract(AdapterContract):
    @pytest.fixture
    def adapter(self, tmp_path: Path) -> SqliteSessionStoreAdapter:
        return SqliteSessionStoreAdapter(tmp_path / "contract.db", writer="process")


@pytest.fixture
async def adapter(path: Path) -> AsyncIterator[SqliteSessionStoreAdapter]:
    opened = SqliteSessionStoreAdapter(path, writer="process")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


@contextlib.asynccontextmanager
async def opened(path: Path, busy_timeout: float) -> AsyncIterator[SqliteSessionStoreAdapter]:
    """An open adapter with its writer in a child, waiting ``busy_timeout`` for a lock."""
    adapter = SqliteSessionStoreAdapter(path, writer="process", busy_timeout=busy_timeout)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.aclose()


def session(session_id: str, user_id: str = "u") -> Session:
    return Session(session_id, user_id, None, SessionState.ACTIVE, T0, T0, T0, (), {})


def child_of(adapter: SqliteSessionStoreAdapter) -> WriterProcess:
    database = adapter._shared.value
    assert database is not None
    process = database._writer
    assert isinstance(process, WriterProcess)
    return process


def children() -> set[int]:
    """This process's live child processes (Linux: from ``/proc``)."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listing:
            found.update(int(pid) for pid in listing.read().split())
    return found


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited and been reaped (no longer a child, not even a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/task"), reason="lists child processes through /proc (Linux)"
)


def test_writer_is_checked_and_shown() -> None:
    with pytest.raises(InvalidInputError, match="writer must be 'thread' or 'process'"):
        SqliteSessionStoreAdapter("x.db", writer="fork")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="writer must be a str"):
        SqliteSessionStoreAdapter("x.db", writer=1)  # type: ignore[arg-type]
    adapter = SqliteSessionStoreAdapter("x.db", writer="process")
    assert adapter.writer == "process"
    assert "writer='process'" in repr(adapter)
    assert SqliteSessionStoreAdapter("x.db").writer == "thread"


async def test_the_store_works_on_the_child_and_its_writes_last(
    path: Path, clock: FakeClock
) -> None:
    adapter = SqliteSessionStoreAdapter(path, writer="process")
    async with create_session_store(adapter, clock=clock) as store:
        first = await store.resolve(user_id="u1", surface_id="web")
        again = await store.resolve(user_id="u1", surface_id="web")
        assert again.id == first.id
        await store.update_metadata(first.id, {"topic": "taxes"})
        stats = adapter.statistics()
        assert stats.user_commits == stats.transactions == 3
        assert stats.touches >= 1  # the second resolve touched a row the child wrote
    # Read back by a plain connection: the child's transactions were committed to the file.
    connection = sqlite3.connect(path)
    try:
        (data,) = connection.execute(
            "SELECT data FROM sessions WHERE id = ?", (first.id,)
        ).fetchone()
    finally:
        connection.close()
    assert '"topic":"taxes"' in data


@needs_proc
async def test_open_starts_the_child_and_close_ends_it(path: Path) -> None:
    before = children()
    adapter = SqliteSessionStoreAdapter(path, writer="process")
    await adapter.open()
    pid = child_of(adapter).pid
    assert pid is not None
    assert children() - before == {pid}
    await adapter.aclose()
    assert exited(pid)
    assert children() <= before


@needs_proc
async def test_a_cancelled_open_ends_the_child_it_started(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    start = WriterProcess.start

    async def recorded(self: WriterProcess) -> None:
        await start(self)
        assert self.pid is not None
        started.append(self.pid)

    monkeypatch.setattr(WriterProcess, "start", recorded)
    before = children()
    adapter = SqliteSessionStoreAdapter(path, writer="process")
    # Starting an interpreter takes far longer than this: the open is cancelled while it waits
    # for the child (shielded), which is then ended again.
    with anyio.move_on_after(0.05) as scope:
        await adapter.open()
    assert scope.cancelled_caught
    assert len(started) == 1
    assert exited(started[0])
    assert children() <= before
    with pytest.raises(AdapterError, match="not open"):
        await adapter.get("x")


@pytest.mark.parametrize("exits_at_once", [False, True])
async def test_a_child_that_cannot_start_fails_open_and_leaves_nothing_open(
    path: Path, monkeypatch: pytest.MonkeyPatch, exits_at_once: bool
) -> None:
    executable = path.parent / "python"
    if exits_at_once:  # a program that runs, and exits without a word
        executable.write_text("#!/bin/sh\nexit 3\n")
        executable.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(executable))
    adapter = SqliteSessionStoreAdapter(path, writer="process")
    with pytest.raises(AdapterError, match=r"writer process for .* could not start") as caught:
        await adapter.open()
    if exits_at_once:  # its status, seen once its pipe ended (as the backend reports it)
        assert "could not start (status " in str(caught.value)
    else:  # the OSError of running it
        assert isinstance(caught.value.__cause__, FileNotFoundError)
    with pytest.raises(AdapterError, match="not open"):
        await adapter.commit([UserCommit("u", 0, (session("a"),))])
    monkeypatch.undo()
    await adapter.open()  # nothing half-open was left behind: it opens cleanly now
    try:
        assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
    finally:
        await adapter.aclose()


async def test_a_child_that_died_idle_is_replaced_before_the_next_write(
    adapter: SqliteSessionStoreAdapter,
) -> None:
    assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
    process = child_of(adapter)
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert process._process is not None
    with anyio.fail_after(10):
        await process._process.wait()
    # Nothing of this write reached the dead child: it is written by a new one.
    assert await adapter.commit([UserCommit("u", 1, (session("b"),))]) == [None]
    assert process.starts == 2
    assert process.pid not in (None, first)
    assert {s.id for s in (await adapter.load_user("u")).sessions} == {"a", "b"}


async def test_a_child_killed_in_a_transaction_fails_that_write_and_the_next_starts_another(
    path: Path, raw: sqlite3.Connection
) -> None:
    async with opened(path, 30) as adapter:
        process = child_of(adapter)
        pid = process.pid
        assert pid is not None
        raw.execute("BEGIN IMMEDIATE")  # the child's transaction waits for this lock
        failures: list[AdapterError] = []

        async def commit() -> None:
            with pytest.raises(AdapterError, match="writer process exited") as caught:
                await adapter.commit([UserCommit("u", 0, (session("a"),))])
            failures.append(caught.value)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(commit)
                await anyio.sleep(0.3)  # the request is in the pipe, or the child waits
                os.kill(pid, signal.SIGKILL)
        assert len(failures) == 1
        raw.execute("ROLLBACK")
        # It died before it could commit: nothing was applied, and a new child writes on.
        assert (await adapter.load_user("u")).version == 0
        assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
        assert process.starts == 2


@needs_proc
async def test_close_waits_for_the_write_in_flight_then_ends_the_child(
    path: Path, raw: sqlite3.Connection
) -> None:
    adapter = SqliteSessionStoreAdapter(path, writer="process", busy_timeout=30)
    await adapter.open()
    pid = child_of(adapter).pid
    assert pid is not None
    raw.execute("BEGIN IMMEDIATE")
    results: list[list[Rejection | None]] = []
    closed = anyio.Event()

    async def commit() -> None:
        results.append(await adapter.commit([UserCommit("u", 0, (session("a"),))]))

    async def close() -> None:
        await adapter.aclose()
        closed.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commit)
            await anyio.sleep(0.3)
            tg.start_soon(close)
            await anyio.sleep(0.3)
            assert not results
            assert not closed.is_set()  # closing waits for the transaction
            raw.execute("ROLLBACK")
    assert results == [[None]]
    assert exited(pid)
    versions = dict(raw.execute("SELECT user_id, version FROM users").fetchall())
    assert versions == {"u": 1}


async def test_both_writers_count_the_same(tmp_path: Path) -> None:
    counted = []
    for writer in ("thread", "process"):
        adapter = SqliteSessionStoreAdapter(tmp_path / f"{writer}.db", writer=writer)
        await adapter.open()
        try:
            assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
            assert await adapter.commit([UserCommit("u", 1, (session("a"),))]) == [None]
            assert await adapter.commit([UserCommit("u", 1, (session("b"),))]) == [
                Rejection.VERSION
            ]
            assert await adapter.commit(
                [UserCommit("v", 0, (session("c", "v"),)), UserCommit("u", 2, (), ("a",))]
            ) == [None, None]
        finally:
            await adapter.aclose()
        counted.append(adapter.statistics())
    assert counted[0] == counted[1]
    assert counted[0].user_commits == 5


async def test_the_child_ignores_an_interrupt_sent_to_the_process_group(
    adapter: SqliteSessionStoreAdapter,
) -> None:
    process = child_of(adapter)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGINT)
    os.kill(process.pid, signal.SIGTERM)
    assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
    assert process.starts == 1


async def test_a_database_error_in_the_child_is_an_adapter_error_caused_by_it(
    path: Path, raw: sqlite3.Connection
) -> None:
    async with opened(path, 0.2) as adapter:
        raw.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(AdapterError, match=r"writing to .* failed: OperationalError") as caught:
            await adapter.commit([UserCommit("u", 0, (session("a"),))])
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorname == "SQLITE_BUSY"
        raw.execute("ROLLBACK")
        # Nothing was applied: the user is still new, and its commit goes through now.
        assert (await adapter.load_user("u")).version == 0
        assert await adapter.commit([UserCommit("u", 0, (session("a"),))]) == [None]
        assert await adapter.commit([UserCommit("u", 0, (session("b"),))]) == [Rejection.VERSION]
