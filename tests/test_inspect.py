"""``assistant-sessions inspect``: a read-only table of the sessions in a SQLite database."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import anyio
import pytest

from assistant_sessions import SessionStore, create_session_store
from assistant_sessions.__main__ import main
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter
from assistant_sessions.adapters.sqlite._schema import SCHEMA_VERSION
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


def fingerprint(path: Path) -> dict[str, tuple[int, int, str]]:
    """Size, modification time and digest of the database and its write-ahead log."""
    result = {}
    for name in (path.name, f"{path.name}-wal"):
        file = path.with_name(name)
        if file.exists():
            stat = file.stat()
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            result[name] = (stat.st_size, stat.st_mtime_ns, digest)
    return result


def assert_unchanged(before: dict[str, tuple[int, int, str]], path: Path) -> None:
    after = fingerprint(path)
    assert after[path.name] == before[path.name]  # the database file is never written
    wal = f"{path.name}-wal"
    if wal in before:
        assert after[wal] == before[wal]
    else:
        # A reader of a WAL database creates the (empty) log if there is none, as SQLite does.
        assert wal not in after or after[wal][0] == 0


async def inspect(*args: str) -> int:
    return await anyio.to_thread.run_sync(main, ["inspect", *args])


async def populate(store: SessionStore, clock: FakeClock) -> dict[str, str]:
    ids = {}
    ids["alice-web"] = (await store.resolve(user_id="alice", surface_id="web")).id
    clock.advance(10)
    ids["alice-ws"] = (await store.resolve(user_id="alice", workspace_id="acme")).id
    await store.update_metadata(ids["alice-ws"], {"topic": "taxes"})
    clock.advance(10)
    ids["bob"] = (await store.resolve(user_id="bob", surface_id="slack")).id
    await store.attach_surface(ids["bob"], "phone")
    await store.expire(ids["alice-web"])
    return ids


async def test_inspect_prints_sessions_filtered_without_changing_the_file(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sessions.db"
    async with create_session_store(SqliteSessionStoreAdapter(path), clock=clock) as store:
        ids = await populate(store, clock)
        # While the store is open (its commits partly in the write-ahead log) ...
        before = await anyio.to_thread.run_sync(fingerprint, path)
        assert await inspect(str(path)) == 0
        await anyio.to_thread.run_sync(assert_unchanged, before, path)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "ID", "USER", "WORKSPACE", "STATE", "LAST", "ACTIVITY", "STATE", "CHANGED",
        "SURFACES", "METADATA",
    ]  # fmt: skip
    # Most recently active first, every committed session, with its details.
    assert [line.split()[0] for line in table[1:4]] == [
        ids["bob"],
        ids["alice-ws"],
        ids["alice-web"],
    ]
    bob = table[1].split()
    assert bob[1:4] == ["bob", "-", "created"]
    assert bob[4] == "2026-01-01T00:00:20Z"
    assert bob[6] == "slack,phone"
    assert '{"topic": "taxes"}' in table[2]
    assert table[3].split()[3] == "expired"
    assert table[4] == "(3 sessions)"

    before = await anyio.to_thread.run_sync(fingerprint, path)
    assert await inspect(str(path), "--user", "alice") == 0
    assert await inspect(str(path), "--state", "expired") == 0
    assert await inspect(str(path), "--user", "alice", "--limit", "1") == 0
    assert await inspect(str(path), "--user", "nobody") == 0
    await anyio.to_thread.run_sync(assert_unchanged, before, path)
    out = capsys.readouterr().out
    alice, expired, limited, nobody = out.split("ID ")[1:]
    assert ids["bob"] not in alice
    assert ids["alice-ws"] in alice
    assert ids["alice-web"] in alice
    assert "(2 sessions)" in alice
    assert [ids["alice-web"]] == [i for i in ids.values() if i in expired]
    assert ids["alice-ws"] in limited
    assert "(1 of 2 sessions shown; use --limit to see more)" in limited
    assert "(0 sessions)" in nobody


async def test_inspect_marks_damaged_rows(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sessions.db"
    async with create_session_store(SqliteSessionStoreAdapter(path), clock=clock) as store:
        good = await store.resolve(user_id="u1")
        bad = await store.resolve(user_id="u2")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE sessions SET data = 'nonsense' WHERE id = ?", (bad.id,))
    connection.close()
    assert await inspect(str(path)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(good.id in line and "DAMAGED" not in line for line in lines)
    assert any(bad.id in line and "DAMAGED" in line for line in lines)


async def test_inspect_reports_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert await inspect(str(missing)) == 1
    assert not await anyio.Path(missing).exists()  # a read-only open creates nothing
    assert "no such database file" in capsys.readouterr().err

    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE other (x)")
    connection.close()
    assert await inspect(str(foreign)) == 1
    assert "not a database of assistant-sessions" in capsys.readouterr().err

    newer = tmp_path / "newer.db"
    adapter = SqliteSessionStoreAdapter(newer)
    await adapter.open()
    await adapter.aclose()
    connection = sqlite3.connect(newer, isolation_level=None)
    connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    assert await inspect(str(newer)) == 1
    assert "upgrade assistant-sessions" in capsys.readouterr().err

    with pytest.raises(SystemExit) as usage:
        await inspect(str(newer), "--state", "sleepy")
    assert usage.value.code == 2
