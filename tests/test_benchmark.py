"""The load benchmark's machinery: tiny runs on both backends, and its exactly-once check.

Nothing here asserts a speed: figures on a shared machine are not a test. What is tested is
that every subject does the same work, that the report has its structure, and that a store
which duplicates sessions fails the run. And that the benchmark is a plugin of the library
(``assistant_sessions_bench``), which the library never imports.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import assistant_sessions
import assistant_sessions.__main__ as cli
from assistant_sessions import (
    InMemorySessionStoreAdapter,
    Session,
    SessionState,
    create_session_store,
)
from assistant_sessions.adapters import sqlite as sqlite_adapter
from assistant_sessions.adapters.base import SessionStoreAdapter, UserCommit
from assistant_sessions_bench import _options, _run, main
from assistant_sessions_bench._adapters import (
    AdapterContext,
    AdapterEntry,
    AdapterUnavailableError,
    BenchmarkError,
    UnknownAdapterError,
    load_adapter_factory,
    register_adapter,
)
from assistant_sessions_bench._baselines import CheckpointFloor
from assistant_sessions_bench._ceiling import measure_write_ceiling
from assistant_sessions_bench._check import check_exactly_once
from assistant_sessions_bench._memory import measure_memory
from assistant_sessions_bench._report import render
from assistant_sessions_bench._results import (
    PointResult,
    PointSpec,
    Target,
    evaluate_targets,
    percentile,
)
from assistant_sessions_bench._run import SUBJECTS, Subject, run_point
from assistant_sessions_bench._sweep import measure_sweep
from assistant_sessions_bench._workload import (
    ATTACH,
    DETACH,
    FIND,
    HOT_USER,
    RESOLVE,
    UPDATE,
    build_workload,
)

pytestmark = pytest.mark.anyio

_TINY = ["-u", "40", "-n", "300", "-c", "8", "-r", "1", "-q"]
_TINY_PHASES = [
    "--memory-sessions", "30", "--sweep-users", "200", "--sweep-stale", "20",
    "--sweep-reference", "20", "--sweep-repeats", "2",
]  # fmt: skip


def _spec(workload: str, backend: str, *, users: int = 40, operations: int = 300) -> PointSpec:
    return PointSpec(
        backend=backend,
        adapter="memory",
        workload=workload,
        users=users,
        operations=operations,
        concurrency=8,
        distribution="zipf" if workload == "mixed" else "uniform",
        zipf_s=1.1,
        fresh=0.3,
        seed=7,
    )


def _memory() -> SessionStoreAdapter:
    return InMemorySessionStoreAdapter()


class _DuplicatingStore:
    """A broken store: every resolve creates a new session (the original's race, made sure)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def resolve(self, *, user_id: str, surface_id: str | None = None) -> Session:
        created: Session = await self._store.create(user_id=user_id, initial_surface_id=surface_id)
        return created

    async def find(self, *, user_id: str) -> list[Session]:
        found: list[Session] = await self._store.find(user_id=user_id)
        return found

    async def update_metadata(self, session_id: str, metadata: Mapping[str, Any]) -> Session:
        updated: Session = await self._store.update_metadata(session_id, metadata)
        return updated

    async def attach_surface(self, session_id: str, surface_id: str) -> Session:
        attached: Session = await self._store.attach_surface(session_id, surface_id)
        return attached

    async def detach_surface(self, session_id: str, surface_id: str) -> Session:
        detached: Session = await self._store.detach_surface(session_id, surface_id)
        return detached


@asynccontextmanager
async def _open_duplicating(adapter: SessionStoreAdapter) -> AsyncIterator[_DuplicatingStore]:
    async with create_session_store(adapter) as store:
        yield _DuplicatingStore(store)


_DUPLICATING = Subject("duplicating", concurrent=True, open=_open_duplicating)


# -- workloads -------------------------------------------------------------------------------


def test_workload_is_reproducible_and_has_the_asked_mix() -> None:
    first = build_workload("mixed", users=500, operations=20_000, seed=3, fresh=0.1)
    again = build_workload("mixed", users=500, operations=20_000, seed=3, fresh=0.1)
    assert first.operations == again.operations
    assert [c.upserts[0].id for c in first.prefill] == [c.upserts[0].id for c in again.prefill]
    other = build_workload("mixed", users=500, operations=20_000, seed=4, fresh=0.1)
    assert other.operations != first.operations

    counts = first.counts()
    # Calls by id on a user without a session become resolves, so resolve is a little above 80 %.
    assert 0.79 <= counts["resolve"] / 20_000 <= 0.86
    assert 0.08 <= counts["update_metadata"] / 20_000 <= 0.11
    assert 0.035 <= (counts["attach_surface"] + counts["detach_surface"]) / 20_000 <= 0.06
    assert 0.04 <= counts["find"] / 20_000 <= 0.06
    stored = {s.id for c in first.prefill for s in c.upserts}
    for kind, key, _ in first.operations:
        if kind in (UPDATE, ATTACH, DETACH):
            assert key in stored
        else:
            assert kind in (RESOLVE, FIND)
    assert first.resolved_users == {k for kind, k, _ in first.operations if kind == RESOLVE}


def test_hot_workload_is_one_fresh_user_and_zipf_is_skewed() -> None:
    hot = build_workload("hot", users=100, operations=1000)
    assert {key for _, key, _ in hot.operations} == {HOT_USER}
    assert HOT_USER not in {c.user_id for c in hot.prefill}

    def top_share(distribution: str) -> float:
        ops = build_workload(
            "resolve", users=1000, operations=10_000, distribution=distribution
        ).operations
        per_user: dict[str, int] = {}
        for _, user, _ in ops:
            per_user[user] = per_user.get(user, 0) + 1
        return max(per_user.values()) / len(ops)

    assert top_share("zipf") > 5 * top_share("uniform")


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([], 50) != percentile([], 50)  # NaN


# -- runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["resolve", "hot", "mixed"])
async def test_tiny_point_runs_every_subject_on_the_same_work(
    workload: str, anyio_backend: str
) -> None:
    spec = _spec(workload, anyio_backend)
    seen: list[str] = []
    with anyio.fail_after(60):
        point = await run_point(
            spec, _memory, rounds=2, on_run=lambda run: seen.append(run.subject)
        )
    assert seen == ["floor", "lock", "store"] * 2
    assert list(point.runs) == ["floor", "lock", "store"]
    assert point.ok
    expected = build_workload(
        workload, users=40, operations=300, distribution=spec.distribution, fresh=0.3, seed=7
    )
    for name, runs in point.runs.items():
        assert len(runs) == 2
        for run in runs:
            assert run.operations == 300
            assert len(run.latencies) == 300
            assert list(run.latencies) == sorted(run.latencies)
            assert run.errors == 0, run.first_error
            assert run.check.ok
            assert run.check.users_checked == len(expected.resolved_users)
            assert run.check.sessions_per_user == {1: len(expected.resolved_users)}
            assert (run.live_actors is not None) == (name == "store")
    summary = point.summary("store")
    assert summary.vs_lock is not None
    assert summary.vs_floor is not None
    assert summary.p99_vs_lock is not None
    assert summary.p50 <= summary.p95 <= summary.p99 <= summary.max
    assert point.summary("floor").vs_floor is None
    document = json.loads(json.dumps(point.to_json()))
    assert document["ok"] is True
    assert set(document["subjects"]) == {"floor", "lock", "store"}
    store = document["subjects"]["store"]
    assert len(store["rounds"]) == 2
    assert store["rounds"][0]["exactly_once"]["duplicated"] == 0
    cdf = store["latency_cdf"]
    assert cdf[-1][0] == 100
    assert [lat for _, lat in cdf] == sorted(lat for _, lat in cdf)
    # The targets are set for C=256 (and U=10^4 for resolve): none for this tiny point...
    assert evaluate_targets([point], [], []) == []
    # ...and these for the same figures at the targets' configuration.
    at_target = PointResult(
        attrs.evolve(spec, concurrency=256, users=10_000), point.counts, point.runs, None
    )
    targets = {t.name: t for t in evaluate_targets([at_target], [], [])}
    expected_names = {
        "resolve": {"resolve vs lock", "resolve p99 vs lock", "resolve vs floor"},
        "hot": {"hot user vs lock"},
        "mixed": set(),
    }[workload]
    assert set(targets) == expected_names
    limits = {
        "resolve vs lock": (1.0, None),
        "resolve p99 vs lock": (None, 1.5),
        "resolve vs floor": (0.5, None),
        "hot user vs lock": (1.0, None),
    }
    for target in targets.values():
        assert target.value is not None
        low, high = limits[target.name]
        assert target.met == (target.value >= low if low is not None else target.value <= high)


async def test_the_checkpointed_floor_is_the_floor_behind_one_schedule_point_a_call(
    anyio_backend: str,
) -> None:
    spec = _spec("resolve", anyio_backend)
    with anyio.fail_after(60):
        point = await run_point(spec, _memory, rounds=2, subjects=(_run.CEILING_SUBJECT,))
    assert point.ok
    for run in point.runs["ceiling"]:
        assert run.errors == 0, run.first_error
        assert run.check.ok
    # Each call is a schedule point: cancelled before it, a call applies nothing.
    adapter = InMemorySessionStoreAdapter()
    ceiling = CheckpointFloor(adapter)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ceiling.resolve(user_id="u")
    assert scope.cancelled_caught
    assert adapter.load_user_nowait("u").version == 0
    session = await ceiling.resolve(user_id="u", surface_id="web")
    assert (await ceiling.resolve(user_id="u", surface_id="web")).id == session.id
    with pytest.raises(NotImplementedError):
        await ceiling.find(user_id="u")


async def test_a_duplicating_store_fails_the_exactly_once_check(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        point = await run_point(
            _spec("hot", anyio_backend), _memory, rounds=1, subjects=(SUBJECTS[0], _DUPLICATING)
        )
    assert point.runs["floor"][0].check.ok
    broken = point.runs["duplicating"][0]
    assert not broken.check.ok
    assert broken.check.duplicated == 1
    assert broken.check.examples == (HOT_USER,)
    assert broken.check.sessions_per_user == {300: 1}
    assert not broken.ok
    assert not point.ok
    assert "FAILED" in point.summary("duplicating").check


async def test_check_counts_duplicates_and_missing_users(anyio_backend: str) -> None:
    adapter = InMemorySessionStoreAdapter()
    async with create_session_store(adapter) as store:
        await store.create(user_id="twice")
        await store.create(user_id="twice")
        await store.create(user_id="twice", workspace_id="other")  # another workspace: fine
        await store.create(user_id="once")
        await store.create(user_id="split", workspace_id="a")
        await store.create(user_id="split", workspace_id="b")
        expired = await store.create(user_id="revived")
        await store.expire(expired.id)
        await store.create(user_id="revived")
        result = await check_exactly_once(adapter, ["twice", "once", "split", "revived", "nobody"])
    assert result.users_checked == 5
    assert result.duplicated == 1
    assert result.missing == 1
    assert set(result.examples) == {"twice", "nobody"}
    assert result.sessions_per_user == {0: 1, 1: 2, 2: 1, 3: 1}
    assert not result.ok


async def test_memory_phase_measures_and_retires(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        result = await measure_memory(anyio_backend, "memory", _memory, 200, idle_after=0.02)
    assert result.sessions == 200
    assert result.bytes_per_session > 0
    assert result.bytes_per_actor > 0
    assert result.retired


async def test_sweep_phase_suspends_exactly_the_stale_batch(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        result = await measure_sweep(
            anyio_backend, "memory", _memory, total=500, stale=30, reference=40, repeats=3
        )
    assert result.ok, result.problem
    assert len(result.seconds) == len(result.reference_seconds) == 3
    assert result.ratio > 0


async def test_sweep_phase_reports_a_sweep_that_misses_sessions(anyio_backend: str) -> None:
    class Forgetful:
        """An adapter whose sweep index finds nothing: the sweep must be reported wrong."""

        def __init__(self) -> None:
            self._inner = InMemorySessionStoreAdapter()

        async def open(self) -> None:
            await self._inner.open()

        async def aclose(self) -> None:
            await self._inner.aclose()

        async def load_user(self, user_id: str) -> Any:
            return await self._inner.load_user(user_id)

        async def commit(self, commits: Any) -> Any:
            return await self._inner.commit(commits)

        async def get(self, session_id: str) -> Any:
            return await self._inner.get(session_id)

        async def find(self, query: Any) -> Any:
            return await self._inner.find(query)

        async def due(
            self, state: SessionState, before: Any, limit: int, *, after: Any = None
        ) -> list[Session]:
            await anyio.lowlevel.checkpoint()
            return []

    def forgetful() -> SessionStoreAdapter:
        adapter: SessionStoreAdapter = Forgetful()
        return adapter

    with anyio.fail_after(60):
        result = await measure_sweep(
            anyio_backend, "forgetful", forgetful, total=100, stale=10, reference=10, repeats=1
        )
    assert not result.ok
    assert result.problem is not None
    assert "suspended 0 sessions" in result.problem


# -- the command line ------------------------------------------------------------------------


def test_command_runs_and_writes_the_report(anyio_backend: str, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    args = [*_TINY, *_TINY_PHASES, "-b", anyio_backend, "-w", "resolve,hot,mixed"]
    assert main([*args, "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    assert document["ok"] is True
    assert document["command"].startswith("assistant-sessions bench ")
    assert document["environment"]["versions"]["anyio"]
    assert [p["spec"]["workload"] for p in document["points"]] == ["resolve", "hot", "mixed"]
    assert all(p["spec"]["backend"] == anyio_backend for p in document["points"])
    assert len(document["memory"]) == len(document["sweeps"]) == 1
    assert document["sweeps"][0]["ok"] is True
    # C=8 is not the targets' configuration: only the memory and sweep targets are evaluated.
    names = {t["name"] for t in document["targets"]}
    assert names == {
        "sweep cost ratio",
        "bytes/session",
        "bytes/live actor",
        "idle actors retired",
    }


def test_command_writes_no_file_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*_TINY, "--memory-sessions", "0", "--sweep-users", "0"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "results:" not in capsys.readouterr().out


def test_durable_adapters_default_to_about_a_minute_and_the_run_says_how_long(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = _options.build_parser()
    sqlite = _options._plan(parser.parse_args(["-a", "sqlite"]))
    memory = _options._plan(parser.parse_args([]))
    assert [p.operations for p in sqlite.points] == [20_000]
    assert sqlite.sweep_total == 20_000
    assert [p.operations for p in memory.points] == [100_000]
    assert memory.sweep_total == 100_000
    assert 30 <= _options._estimate(sqlite, "sqlite") <= 90
    assert _options._estimate(memory, "memory") <= 60
    explicit = _options._plan(
        parser.parse_args(["-a", "sqlite", "-n", "500", "--sweep-users", "7"])
    )
    assert [p.operations for p in explicit.points] == [500]
    assert explicit.sweep_total == 7
    # Not quiet: the estimate comes first.
    assert main([*_TINY[:-1], "--memory-sessions", "0", "--sweep-users", "0"]) == 0
    head = capsys.readouterr().out.lstrip().splitlines()[:2]
    # First, or right after the hint to install rich where it is missing.
    assert any("-a memory: about " in line for line in head), head


def test_missed_goals_are_labelled_as_goals_not_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missed = Target("bytes/session", "<= 1024", 2048.0, False, "somewhere")
    render([], [], [], [missed], None)
    out = capsys.readouterr().out
    assert "Design goals" in out
    assert "a missed goal is not a failure" in out
    assert "missed" in out
    assert "MISSED" not in out


def test_command_fails_when_a_subject_duplicates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_run, "SUBJECTS", (*SUBJECTS, _DUPLICATING))
    path = tmp_path / "out.json"
    status = main([*_TINY, "--memory-sessions", "0", "--sweep-users", "0", "--json", str(path)])
    assert status == 1
    assert "FAILED" in capsys.readouterr().err
    document = json.loads(path.read_text())
    assert document["ok"] is False
    subjects = document["points"][0]["subjects"]
    assert subjects["store"]["summary"]["ok"] is True
    assert subjects["duplicating"]["summary"]["ok"] is False


def test_unknown_and_unavailable_adapters_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UnknownAdapterError, match=r"known adapters: .*memory"):
        load_adapter_factory("floppy")
    assert main(["--adapter", "floppy"]) == 2
    assert "unknown adapter 'floppy'" in capsys.readouterr().err

    from assistant_sessions_bench import _adapters

    monkeypatch.setattr(_adapters, "_REGISTRY", dict(_adapters._REGISTRY))
    register_adapter(
        AdapterEntry(
            "tape",
            "assistant_sessions_bench._adapters:memory_adapter",
            "a tape drive",
            requires=("no_such_tape_driver",),
            hint="install the tape extra",
        )
    )
    with pytest.raises(AdapterUnavailableError, match=r"no_such_tape_driver.*tape extra"):
        load_adapter_factory("tape")
    assert main(["--adapter", "tape"]) == 2
    assert "'tape' adapter is not available" in capsys.readouterr().err
    assert main(["--list-adapters"]) == 0
    assert "tape" in capsys.readouterr().out

    factory = load_adapter_factory("memory")
    made = factory(AdapterContext(Path("."), None, 0))
    assert isinstance(made, InMemorySessionStoreAdapter)


def test_plot_writes_charts_or_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.json"
    args = [*_TINY, "-u", "20,40", "-c", "4,8", "--memory-sessions", "0", "--sweep-users", "0"]
    assert main([*args, "--plot"]) == 2  # charts go next to --json PATH, and only there
    assert "add --json PATH" in capsys.readouterr().err
    status = main([*args, "--plot", "--json", str(path)])
    if importlib.util.find_spec("matplotlib") is None:
        assert status == 2
        assert "pip install 'assistant-sessions[plot]'" in capsys.readouterr().err
        assert not path.exists()
    else:
        assert status == 0
        assert (tmp_path / "out-latency.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "out-scaling.png").read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / "out-concurrency.png").read_bytes().startswith(b"\x89PNG")


async def test_prefill_is_shared_not_copied(anyio_backend: str) -> None:
    workload = build_workload("resolve", users=30, operations=10, fresh=0.0)
    first, second = InMemorySessionStoreAdapter(), InMemorySessionStoreAdapter()
    await _run.populate(first, workload.prefill)
    await _run.populate(second, workload.prefill)
    commit: UserCommit = workload.prefill[0]
    assert first.get_nowait(commit.upserts[0].id) is commit.upserts[0]
    assert second.get_nowait(commit.upserts[0].id) is commit.upserts[0]
    assert len(first) == len(second) == 30


def test_idle_subscriber_subject_is_measured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_run, "SUBJECTS", SUBJECTS)  # main() extends it; undo that afterwards
    path = tmp_path / "out.json"
    args = [*_TINY, "--memory-sessions", "0", "--sweep-users", "0", "--idle-subscriber"]
    assert main([*args, "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    subjects = document["points"][0]["subjects"]
    assert set(subjects) == {"floor", "lock", "store", "store+sub"}
    assert subjects["store+sub"]["summary"]["throughput"] > 0


def test_processes_share_storage_and_keep_exactly_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Two real worker processes race on the same 50 users of one SQLite file.
    args = ["-a", "sqlite", "--processes", "1,2", "-u", "50", "-n", "400", "-c", "16"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    assert all(row[4] == "ok" for row in rows)


def test_processes_need_shared_storage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--processes", "2"]) == 2
    assert "shared storage" in capsys.readouterr().err


def test_write_ceiling_times_every_commit_grouped_and_single(tmp_path: Path) -> None:
    result = measure_write_ceiling(tmp_path, users=40, operations=300, concurrency=8, rounds=2)
    # Every resolve commits (a touch at least): all of them are written by both variants.
    assert result.commits == 300
    assert len(result.rounds) == 2
    assert result.grouped_rate > 0
    assert result.single_rate > 0
    assert result.ratio == statistics.median(r.ratio for r in result.rounds)
    assert list(tmp_path.iterdir()) == []  # the files of each run are removed


def test_write_ceiling_fails_when_writes_go_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write = sqlite_adapter.write_transaction

    def skip_sessions(connection: Any, commits: list[Any], indexed: Any = None) -> list[Any]:
        # A "fast" write path: versions move on, but the sessions themselves are not written.
        return write(
            connection, [(user, version, (), ()) for user, version, _, _ in commits], indexed
        )

    monkeypatch.setattr(sqlite_adapter, "write_transaction", skip_sessions)
    with pytest.raises(BenchmarkError, match="not stored as written"):
        measure_write_ceiling(tmp_path, users=40, operations=300, concurrency=8, rounds=1)


def test_write_ceiling_command(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-a", "sqlite", "--write-ceiling", "-u", "40", "-n", "300", "-c", "8", "-r", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    median = next(line for line in out.splitlines() if line.split()[:1] == ["median"])
    assert median.endswith("x")
    assert main(["--write-ceiling"]) == 2
    assert "-a sqlite" in capsys.readouterr().err


# -- the benchmark is a plugin the library never imports ----------------------------------------

_SRC = Path(assistant_sessions.__file__).parent


def test_the_library_never_imports_the_benchmark() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import assistant_sessions, assistant_sessions.adapters, assistant_sessions.testing\n"
        "import assistant_sessions.__main__ as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert cli.main(['--help']) == 0\n"
        "assert 'bench' in out.getvalue()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('assistant_sessions_bench'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_library_source_names_the_benchmark_package() -> None:
    # Only the packaging metadata (pyproject.toml, outside src/) names it: the entry point.
    naming = [
        str(path.relative_to(_SRC))
        for path in sorted(_SRC.rglob("*"))
        if path.is_file()
        and path.suffix in {".py", ".pyi", ".txt", ".md", ".toml", ".cfg", ".json"}
        and "assistant_sessions_bench" in path.read_text(encoding="utf-8")
    ]
    assert naming == []


def test_the_command_lists_and_runs_bench_through_its_entry_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--help"]) == 0
    assert "{demo,bench,inspect}" in capsys.readouterr().out
    assert cli.main(["bench", "--list-adapters"]) == 0
    assert "sqlite-single" in capsys.readouterr().out


def test_a_missing_plugin_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: ())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'bench' command is not installed" in err
    assert "assistant_sessions.commands" in err
    assert cli.main(["--help"]) == 0
    assert "{demo,inspect}" in capsys.readouterr().out
