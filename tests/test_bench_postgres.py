"""`assistant-sessions bench -a postgres`, and the Google ADK baselines.

The PostgreSQL runs use the session's private server (``postgres_server``), which holds an
unrelated schema named like the benchmark's own before every run; afterwards that schema is
there, unchanged, and no other is. Nothing here asserts a speed: figures on a shared machine are
not a test. The ADK tests skip where google-adk is not installed (it is optional); the command's
note when it is missing is tested without it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from assistant_sessions import InMemorySessionStoreAdapter
from assistant_sessions.adapters.base import SessionStoreAdapter
from assistant_sessions_bench import _adk, _cli, main
from assistant_sessions_bench._check import count_sessions
from assistant_sessions_bench._postgres import (
    PostgresSchemaLog,
    drop_schemas,
    schema_name,
    search_path_connect_args,
)
from assistant_sessions_bench._results import PointResult, PointSpec, evaluate_targets
from assistant_sessions_bench._run import SUBJECTS, Subject, run_point
from assistant_sessions_bench._workload import build_workload
from postgres_fixtures import PostgresServer

_TINY = ["-u", "40", "-n", "300", "-c", "8", "-r", "1", "-q"]
_PHASES = ["--memory-sessions", "30", "--sweep-users", "200", "--sweep-stale", "20",
           "--sweep-reference", "20", "--sweep-repeats", "1"]  # fmt: skip
_NO_PHASES = ["--memory-sessions", "0", "--sweep-users", "0"]

#: A schema of someone else's, named like the benchmark's: never touched.
_OTHER = "bench_someone_else"

_HAS_ADK = importlib.util.find_spec("google.adk") is not None
_needs_adk = pytest.mark.skipif(not _HAS_ADK, reason="google-adk is not installed (optional)")


def _schemas(server: PostgresServer) -> set[str]:
    rows = server.query("SELECT nspname FROM pg_namespace WHERE left(nspname, 5) = 'bench'")
    return {name for (name,) in rows}


@pytest.fixture
def server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, with an unrelated ``bench_someone_else.keep`` row; checked and
    removed afterwards."""
    postgres_server.query(f"CREATE SCHEMA {_OTHER}")
    postgres_server.query(f"CREATE TABLE {_OTHER}.keep (v text)")
    postgres_server.query(f"INSERT INTO {_OTHER}.keep VALUES ('keep')")
    try:
        yield postgres_server
        assert _schemas(postgres_server) == {_OTHER}
        assert postgres_server.query(f"SELECT v FROM {_OTHER}.keep") == [("keep",)]
    finally:
        postgres_server.query(f"DROP SCHEMA IF EXISTS {_OTHER} CASCADE")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The schemas the run recorded (so created, or may have), in order."""
    names: list[str] = []
    original = PostgresSchemaLog.record

    def record(self: PostgresSchemaLog, dsn: str, schema: str) -> None:
        names.append(schema)
        original(self, dsn, schema)

    monkeypatch.setattr(PostgresSchemaLog, "record", record)
    return names


# -- the PostgreSQL adapter ----------------------------------------------------------------------


def test_postgres_needs_a_dsn(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--processes", "1"]):
        assert main(["-a", "postgres", *_TINY, *extra]) == 2
        err = capsys.readouterr().err
        assert "-a postgres needs a PostgreSQL server: --adapter-url DSN" in err
    assert main(["--list-adapters"]) == 0
    listed = capsys.readouterr().out
    assert "postgres " in listed
    assert "postgres-single" in listed


def test_a_postgres_run_checks_exactly_once_and_leaves_no_schema(
    anyio_backend: str, server: PostgresServer, recorded: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "out.json"
    args = ["-a", "postgres", "--adapter-url", server.dsn, "-b", anyio_backend, *_TINY, *_PHASES]
    assert main([*args, "-w", "resolve,hot", "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    assert document["ok"] is True
    for point in document["points"]:
        assert (point["spec"]["adapter"], point["spec"]["backend"]) == ("postgres", anyio_backend)
        store = point["subjects"]["store"]
        assert store["summary"]["check"].startswith("ok: ")
        assert all(r["exactly_once"]["duplicated"] == 0 for r in store["rounds"])
    assert document["sweeps"][0]["ok"] is True
    assert document["adk"] == []  # the ADK subject runs on the in-memory adapter only
    # One schema per adapter built, each of its own; all dropped (the fixture checks).
    assert len(recorded) == len(set(recorded)) >= 4
    assert all(name.startswith("bench_") for name in recorded)


def test_an_interrupted_postgres_run_drops_its_schemas(
    server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[str]] = []
    measure_memory = _cli.measure_memory

    async def interrupted(*args: Any, **kwargs: Any) -> Any:
        # The memory phase writes to PostgreSQL; then Ctrl-C, while the run is under way.
        await measure_memory(*args, **kwargs)
        seen.append(_schemas(server))
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "measure_memory", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["-a", "postgres-single", "--adapter-url", server.dsn, *_TINY, *_PHASES])
    assert len(seen) == 1
    assert seen[0] - {_OTHER}  # schemas of its own were there while it ran


def test_processes_compare_grouped_single_and_adk_on_one_server(
    server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-a", "postgres", "--adapter-url", server.dsn, "--processes", "1,2"]
    assert main([*args, "-u", "30", "-n", "200", "-c", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows[:2]] == ["1", "2"]
    assert all(row[4] == "ok" for row in rows[:2])
    if not _HAS_ADK:
        assert any("the Google ADK baseline is skipped" in line for line in lines)
        return
    head = next(i for i, line in enumerate(lines) if "ADK DatabaseSessionService" in line)
    assert "asyncio" in lines[head]
    figures = lines[head + 2].split()
    assert float(figures[0].replace(",", "")) > 0  # ADK ops/s
    assert figures[1].endswith("x")  # the store's one-process run over ADK's
    assert "users" in lines[head + 2]  # its sessions per user, duplicates or not


def test_drop_schemas_drops_exactly_the_named_ones(server: PostgresServer) -> None:
    for name in ("bench_x_1", "bench_x_10", 'bench_we"ird'):
        server.query(f'CREATE SCHEMA "{name.replace(chr(34), chr(34) * 2)}"')
    server.query("CREATE TABLE bench_x_1.t (v int)")
    assert drop_schemas(server.dsn, ["bench_x_1", 'bench_we"ird', "bench_never_made"]) == 2
    assert _schemas(server) == {_OTHER, "bench_x_10"}
    server.query("DROP SCHEMA bench_x_10")


def test_a_failed_cleanup_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    log = PostgresSchemaLog()
    log.record("host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=1", "bench_a")
    assert log
    assert log.drop_all() == 0
    assert not log
    assert "left behind: bench_a" in capsys.readouterr().err


def test_schema_names_are_plain_distinct_identifiers() -> None:
    names = {schema_name() for _ in range(100)} | {schema_name("adk") for _ in range(100)}
    assert len(names) == 200
    assert all(n.replace("_", "a").isalnum() and len(n) <= 63 for n in names)
    params = search_path_connect_args("host=h port=1 options='-c x=y'", "bench_s")
    assert params["options"] == "-c x=y -c search_path=bench_s"
    assert params["host"] == "h"


# -- Google ADK's InMemorySessionService beside the in-memory store -------------------------------


@_needs_adk
def test_adk_in_memory_runs_beside_the_store_on_asyncio_only(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    args = [*_TINY, *_NO_PHASES, "-b", "asyncio,trio", "-w", "resolve,hot,mixed"]
    assert main([*args, "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    # ADK's runs are reported apart: the points keep their subjects.
    for point in document["points"]:
        assert set(point["subjects"]) == {"floor", "lock", "store"}
    compared = [(p["spec"]["backend"], p["spec"]["workload"]) for p in document["adk"]]
    assert compared == [("asyncio", "resolve"), ("asyncio", "hot")]
    for point in document["adk"]:
        # Beside it, the ceiling of any store whose calls each yield once.
        assert set(point["subjects"]) == {"store", "adk", "ceiling"}
        assert point["store_x_adk"] > 0
        assert point["ceiling_x_adk"] > 0
        adk = point["subjects"]["adk"]
        assert adk["summary"]["errors"] == 0
        # Its calls never yield in between: in one process, no duplicates.
        assert adk["rounds"][0]["exactly_once"]["duplicated"] == 0


@_needs_adk
def test_adk_duplicates_are_reported_not_failures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Racy(_adk.AdkMemoryClient):
        """ADK with a round trip between list and create, as over a database."""

        async def resolve(self, *, user_id: str, surface_id: str | None = None) -> Any:
            service = self._service
            found = (await service.list_sessions(app_name=_adk.APP_NAME, user_id=user_id)).sessions
            await anyio.lowlevel.checkpoint()
            if found:
                return found[0]
            return await service.create_session(app_name=_adk.APP_NAME, user_id=user_id)

    @asynccontextmanager
    async def open_racy(adapter: SessionStoreAdapter) -> AsyncIterator[Racy]:
        yield Racy()

    monkeypatch.setattr(_cli, "ADK_SUBJECT", Subject("adk", True, open_racy, own_memory=True))
    path = tmp_path / "out.json"
    assert main([*_TINY, *_NO_PHASES, "-w", "hot", "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    assert document["ok"] is True
    adk = document["adk"][0]["subjects"]["adk"]["rounds"][0]["exactly_once"]
    assert adk["duplicated"] == 1  # the one hot user, with several sessions
    assert "have 2+" in capsys.readouterr().out


def test_a_missing_adk_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_cli, "adk_missing", lambda: "google-adk is not importable here (x)")
    path = tmp_path / "out.json"
    assert main([*_TINY, *_NO_PHASES, "--json", str(path)]) == 0
    assert "the Google ADK baseline is skipped: google-adk is not importable" in (
        capsys.readouterr().out
    )
    assert json.loads(path.read_text())["adk"] == []
    # Asked not to run it, it says nothing.
    assert main([*_TINY, *_NO_PHASES, "--no-adk", "--json", str(path)]) == 0
    assert "ADK" not in capsys.readouterr().out
    assert json.loads(path.read_text())["adk"] == []
    # On trio only, it says why.
    monkeypatch.setattr(_cli, "adk_missing", lambda: None)
    assert main([*_TINY, *_NO_PHASES, "-b", "trio", "--json", str(path)]) == 0
    assert "ADK runs on asyncio only" in capsys.readouterr().out


@_needs_adk
async def test_adk_lookup_or_create_reuses_and_counts(anyio_backend: str) -> None:
    # The wrapper's own logic (InMemorySessionService never awaits, so it runs on trio too).
    workload = build_workload("resolve", users=20, operations=50, fresh=0.5, seed=3)
    client = _adk.AdkMemoryClient()
    await client.load_prefill(workload.prefill)
    prefilled = {c.user_id: c.upserts[0].id for c in workload.prefill}
    for _, user, surface in workload.operations:
        session = await client.resolve(user_id=user, surface_id=surface)
        if user in prefilled:
            assert session.id == prefilled[user]
        assert (await client.resolve(user_id=user)).id == session.id
    check = await client.check_exactly_once(workload.resolved_users)
    assert check.ok
    assert check.users_checked == len(workload.resolved_users)
    with pytest.raises(NotImplementedError):
        await client.find(user_id="u")


@_needs_adk
async def test_adk_subject_runs_in_run_point(anyio_backend: str) -> None:
    spec = PointSpec(anyio_backend, "memory", "resolve", 30, 200, 8, "uniform", 1.1, 0.3, 7)
    store = next(s for s in SUBJECTS if s.name == "store")

    def memory() -> SessionStoreAdapter:
        return InMemorySessionStoreAdapter()

    with anyio.fail_after(60):
        point = await run_point(spec, memory, rounds=2, subjects=(store, _adk.ADK_SUBJECT))
    assert point.ok
    ratio = point.ratio("store", "adk")
    assert ratio is not None
    assert ratio > 0
    # The goal is set at U=10^4, C=256, on resolve: store >= 2x ADK.
    at_goal = PointResult(
        attrs.evolve(spec, users=10_000, concurrency=256), point.counts, point.runs, None
    )
    targets = {t.name: t for t in evaluate_targets([], [], [], [at_goal])}
    goal = targets["resolve vs ADK in-memory"]
    assert goal.wanted == ">= 2x"
    assert goal.value == ratio
    assert evaluate_targets([], [], [], [point]) == []


def test_count_sessions_counts_duplicates_and_missing() -> None:
    check = count_sessions({"a": 1, "b": 2, "c": 0, "d": 3})
    assert (check.users_checked, check.duplicated, check.missing) == (4, 2, 1)
    assert check.sessions_per_user == {0: 1, 1: 1, 2: 1, 3: 1}
    assert check.examples == ("b", "c", "d")
    assert not check.ok
    assert count_sessions({"a": 1}).ok
