"""``assistant-sessions bench``: the command line of the load benchmark.

It runs the plan of :mod:`._options` and prints the results; ``--processes`` and
``--write-ceiling`` run instead of the in-process comparison.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs

from assistant_sessions.adapters.base import SessionStoreAdapter

from . import _run
from ._adapters import (
    AdapterContext,
    BenchmarkError,
    adapter_entries,
    load_adapter_factory,
)
from ._adk import ADK_SUBJECT, adk_missing
from ._cleanup import RedisKeyLog
from ._memory import measure_memory
from ._modes import check_url, main_ceiling, main_processes
from ._modes import usage_error as _usage_error
from ._modes import workdir as _workdir
from ._options import _estimate_line, _Plan, _plan, build_parser
from ._postgres import PostgresSchemaLog
from ._redis_ceiling import REDIS_CEILING_ADAPTERS, main_redis_ceiling
from ._report import environment, render, require_matplotlib, write_json, write_plots
from ._results import (
    ADK,
    CEILING,
    STORE,
    MemoryResult,
    PointResult,
    PointSpec,
    SubjectRun,
    SweepResult,
    adk_applies,
    evaluate_targets,
)
from ._run import peak_rss, run_point
from ._sweep import measure_sweep

__all__ = ["main"]


def _check_plot(args: argparse.Namespace) -> None:
    """``--plot`` writes next to ``--json PATH``, and needs matplotlib."""
    if args.json is None or args.no_json:
        raise BenchmarkError("--plot writes its charts next to the results: add --json PATH")
    require_matplotlib()


def _check_backend(backend: str) -> None:
    needs = {"trio": "trio", "asyncio+uvloop": "uvloop"}.get(backend)
    if needs is None:
        return
    try:
        importlib.import_module(needs)
    except ImportError as exc:
        extra = "trio" if needs == "trio" else "uvloop"
        raise BenchmarkError(
            f"the {backend} backend needs {needs}: pip install 'assistant-sessions[{extra}]'"
        ) from exc


def _run_backend(backend: str, fn: Callable[[], Any]) -> Any:
    if backend == "asyncio+uvloop":
        return anyio.run(fn, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(fn, backend=backend)


class _Progress:
    """A rich progress bar when rich is there and a terminal is attached; quiet otherwise."""

    def __init__(self, total: int, console: Any, enabled: bool) -> None:
        self._bar: Any = None
        if console is not None and enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                # No refresh thread: it would take the GIL in the middle of timed phases.
                auto_refresh=False,
            )
            self._task = self._bar.add_task("starting", total=total)
            self._bar.start()

    def step(self, description: str, advance: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description, advance=advance)
            self._bar.refresh()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _console() -> Any:
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console()
    # Piped into a file or a README, keep every column readable.
    return console if console.is_terminal else Console(width=max(console.width, 150))


def main(argv: Sequence[str]) -> int:
    """Run the benchmark; return the exit status (0 ok, 1 a check failed, 2 a usage error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.list_adapters:
        for entry in adapter_entries():
            print(f"{entry.name:<8} {entry.summary}")
        return 0
    if args.processes:
        return main_processes(args)
    if args.write_ceiling:
        if args.adapter in REDIS_CEILING_ADAPTERS:
            return main_redis_ceiling(args)
        return main_ceiling(args)
    if args.idle_subscriber:
        _run.SUBJECTS = (*_run.SUBJECTS, _run.IDLE_SUBSCRIBER)
    try:
        plan = _plan(args)
        factory = load_adapter_factory(args.adapter)
        check_url(args)
        for backend in plan.backends:
            _check_backend(backend)
        if args.plot:
            _check_plot(args)
    except BenchmarkError as exc:
        return _usage_error(exc)

    console = _console()
    if console is None:
        print(
            "(install rich for a progress bar and tables: pip install 'assistant-sessions[bench]')"
        )
    adk_note = _plan_adk(args, plan)
    if adk_note is None:
        plan = attrs.evolve(plan, adk=True)
    if not args.quiet:
        print(_estimate_line(plan, args.adapter))
    if adk_note:
        print(f"(the Google ADK baseline is skipped: {adk_note})")
    started = datetime.now().astimezone()
    per_backend = (
        len(plan.points) // len(plan.backends) * plan.rounds * len(_run.SUBJECTS)
        + (plan.memory_sessions > 0)
        + (plan.sweep_total > 0)
    )
    total = per_backend * len(plan.backends) + len(plan.adk_points()) * plan.rounds * 2
    progress = _Progress(total, console, not args.quiet)
    points: list[PointResult] = []
    adk: list[PointResult] = []
    memory: list[MemoryResult] = []
    sweeps: list[SweepResult] = []
    # What the run writes to a Redis or PostgreSQL server is deleted at the end, however the
    # run ends: its Redis keys, its PostgreSQL schemas.
    redis_keys = RedisKeyLog()
    schemas = PostgresSchemaLog()
    try:
        with _workdir() as workdir:
            instances = itertools.count()

            def make_adapter() -> SessionStoreAdapter:
                return factory(
                    AdapterContext(workdir, args.adapter_url, next(instances), redis_keys, schemas)
                )

            for backend in plan.backends:
                specs = [p for p in plan.points if p.backend == backend]
                result = _run_backend(
                    backend,
                    partial(_measure, backend, args.adapter, specs, plan, make_adapter, progress),
                )
                points += result[0]
                memory += result[1]
                sweeps += result[2]
                adk += result[3]
    except BenchmarkError as exc:
        progress.stop()
        return _usage_error(exc)
    finally:
        progress.stop()
        redis_keys.delete_all()
        schemas.drop_all()

    targets = evaluate_targets(points, memory, sweeps, adk)
    render(points, memory, sweeps, targets, console, adk)
    ok = all(p.ok for p in points) and all(s.ok for s in sweeps)
    document = {
        "command": " ".join(["assistant-sessions", "bench", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "environment": environment(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ok": ok,
        "peak_rss_bytes": peak_rss(),
        "points": [p.to_json() for p in points],
        "memory": [attrs.asdict(m) for m in memory],
        "sweeps": [s.to_json() for s in sweeps],
        "targets": [attrs.asdict(t) for t in targets],
        "adk": [
            {
                **p.to_json(),
                "store_x_adk": p.ratio(STORE, ADK),
                "ceiling_x_adk": p.ratio(CEILING, ADK) if CEILING in p.runs else None,
            }
            for p in adk
        ],
    }
    # Files only where asked: nothing is written under the current directory by default.
    if args.json is not None and not args.no_json:
        path = args.json
        write_json(path, document)
        print(f"results: {path}")
        if args.plot:
            for chart in write_plots(path.with_suffix(""), points):
                print(f"chart: {chart}")
    if not ok:
        print("FAILED: a correctness check failed (see the table)", file=sys.stderr)
        return 1
    return 0


def _plan_adk(args: argparse.Namespace, plan: _Plan) -> str | None:
    """Why the ADK subject does not run (``""``: not asked for, nothing to say), or ``None``
    when it does."""
    if args.no_adk or not any(adk_applies(attrs.evolve(p, backend="asyncio")) for p in plan.points):
        return ""
    if not any(adk_applies(p) for p in plan.points):
        return "ADK runs on asyncio only (add -b asyncio)"
    return adk_missing()


async def _measure(
    backend: str,
    adapter: str,
    specs: list[PointSpec],
    plan: _Plan,
    make_adapter: Callable[[], SessionStoreAdapter],
    progress: _Progress,
) -> tuple[list[PointResult], list[MemoryResult], list[SweepResult], list[PointResult]]:
    points, adk = [], []
    for spec in specs:
        label = spec.label()

        def advance(run: SubjectRun, label: str = label) -> None:
            progress.step(f"{label}: {run.subject} {run.throughput:,.0f} ops/s")

        progress.step(label, advance=0)
        subjects = _run.SUBJECTS
        with_adk = spec in plan.adk_points() and any(s.name == STORE for s in subjects)
        if with_adk:
            subjects = (*subjects, ADK_SUBJECT, _run.CEILING_SUBJECT)
        point = await run_point(
            spec,
            make_adapter,
            rounds=plan.rounds,
            subjects=subjects,
            gc_mode=plan.gc,
            on_run=advance,
        )
        if with_adk:
            # The ADK runs are reported apart, against the store's runs of the same rounds (and
            # the checkpointed floor's, the ceiling of any store whose calls yield).
            runs = dict(point.runs)
            beside = {ADK: runs.pop(ADK), CEILING: runs.pop(CEILING)}
            adk.append(PointResult(spec, point.counts, {STORE: runs[STORE], **beside}, None))
            point = PointResult(spec, point.counts, runs, point.peak_rss)
        points.append(point)
    memory = []
    if plan.memory_sessions:
        progress.step(f"memory: {plan.memory_sessions:,} sessions [{backend}]", advance=0)
        memory.append(await measure_memory(backend, adapter, make_adapter, plan.memory_sessions))
        progress.step("memory done")
    sweeps = []
    if plan.sweep_total:
        progress.step(f"sweep over {plan.sweep_total:,} sessions [{backend}]", advance=0)
        sweeps.append(
            await measure_sweep(
                backend,
                adapter,
                make_adapter,
                total=plan.sweep_total,
                stale=plan.sweep_stale,
                reference=plan.sweep_reference,
                repeats=plan.sweep_repeats,
                gc_mode=plan.gc,
            )
        )
        progress.step("sweep done")
    return points, memory, sweeps, adk
