"""``assistant-sessions bench``: the command line of the load benchmark.

It runs the plan of :mod:`._options` and prints the results; ``--processes`` and
``--write-ceiling`` run instead of the in-process comparison.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from ._ceiling import CEILING_ADAPTERS, measure_write_ceiling
from ._cleanup import RedisKeyLog
from ._memory import measure_memory
from ._options import (
    DEFAULT_OPERATIONS,
    _estimate_line,
    _flat,
    _operations,
    _Plan,
    _plan,
    build_parser,
)
from ._processes import run_processes
from ._report import environment, render, require_matplotlib, write_json, write_plots
from ._results import (
    MemoryResult,
    PointResult,
    PointSpec,
    SubjectRun,
    SweepResult,
    evaluate_targets,
)
from ._run import peak_rss, run_point
from ._sweep import measure_sweep

__all__ = ["main"]


def _usage_error(message: object) -> int:
    """Say why the benchmark cannot run as asked; the exit status for it."""
    print(f"assistant-sessions bench: error: {message}", file=sys.stderr)
    return 2


@contextmanager
def _workdir() -> Iterator[Path]:
    """A private temporary directory for database files, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="assistant-sessions-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
        return _main_processes(args)
    if args.write_ceiling:
        return _main_ceiling(args)
    if args.idle_subscriber:
        _run.SUBJECTS = (*_run.SUBJECTS, _run.IDLE_SUBSCRIBER)
    try:
        plan = _plan(args)
        factory = load_adapter_factory(args.adapter)
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
    if not args.quiet:
        print(_estimate_line(plan, args.adapter))
    started = datetime.now().astimezone()
    per_backend = (
        len(plan.points) // len(plan.backends) * plan.rounds * len(_run.SUBJECTS)
        + (plan.memory_sessions > 0)
        + (plan.sweep_total > 0)
    )
    progress = _Progress(per_backend * len(plan.backends), console, not args.quiet)
    points: list[PointResult] = []
    memory: list[MemoryResult] = []
    sweeps: list[SweepResult] = []
    # What the run writes to a Redis server is deleted at the end, however the run ends.
    redis_keys = RedisKeyLog()
    try:
        with _workdir() as workdir:
            instances = itertools.count()

            def make_adapter() -> SessionStoreAdapter:
                return factory(
                    AdapterContext(workdir, args.adapter_url, next(instances), redis_keys)
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
    except BenchmarkError as exc:
        progress.stop()
        return _usage_error(exc)
    finally:
        progress.stop()
        redis_keys.delete_all()

    targets = evaluate_targets(points, memory, sweeps)
    render(points, memory, sweeps, targets, console)
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


async def _measure(
    backend: str,
    adapter: str,
    specs: list[PointSpec],
    plan: _Plan,
    make_adapter: Callable[[], SessionStoreAdapter],
    progress: _Progress,
) -> tuple[list[PointResult], list[MemoryResult], list[SweepResult]]:
    points = []
    for spec in specs:
        label = spec.label()

        def advance(run: SubjectRun, label: str = label) -> None:
            progress.step(f"{label}: {run.subject} {run.throughput:,.0f} ops/s")

        progress.step(label, advance=0)
        points.append(
            await run_point(spec, make_adapter, rounds=plan.rounds, gc_mode=plan.gc, on_run=advance)
        )
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
    return points, memory, sweeps


def _main_processes(args: argparse.Namespace) -> int:
    backend = _flat(args.backend, ["asyncio"])[0]
    users = _flat(args.users, [10_000])[0]
    concurrency = _flat(args.concurrency, [256])[0]
    results = []
    try:
        with _workdir() as workdir:
            for processes in _flat(args.processes, [1]):
                for batched in (True, False):
                    results.append(
                        run_processes(
                            adapter=args.adapter,
                            url=args.adapter_url,
                            workdir=workdir,
                            processes=processes,
                            users=users,
                            operations=_operations(args, DEFAULT_OPERATIONS),
                            concurrency=concurrency,
                            backend=backend,
                            seed=args.seed,
                            batched=batched,
                        )
                    )
    except BenchmarkError as exc:
        return _usage_error(exc)
    print(
        f"resolve across processes [{backend}, {args.adapter}], U={users:,}, "
        f"C={concurrency} per process, {_operations(args, DEFAULT_OPERATIONS):,} operations per run"
    )
    print(f"{'P':>3} {'store ops/s':>12} {'per-op ops/s':>13} {'ratio':>6}  exactly-once")
    by_key = {(r.processes, r.batched): r for r in results}
    ok = True
    for processes in _flat(args.processes, [1]):
        store, single = by_key[processes, True], by_key[processes, False]
        checks = (
            "ok"
            if store.ok and single.ok
            else (
                f"FAILED: {store.duplicates + single.duplicates} duplicates, "
                f"{store.disagreements + single.disagreements} users given another session"
            )
        )
        ok = ok and store.ok and single.ok
        print(
            f"{processes:>3} {store.throughput:>12,.0f} {single.throughput:>13,.0f} "
            f"{store.throughput / single.throughput:>5.2f}x  {checks} ({store.users:,} users)"
        )
    return 0 if ok else 1


def _main_ceiling(args: argparse.Namespace) -> int:
    if args.adapter not in CEILING_ADAPTERS:
        adapters = " or -a ".join(CEILING_ADAPTERS)
        return _usage_error(f"--write-ceiling measures the SQLite adapter: -a {adapters}")
    users = _flat(args.users, [10_000])[0]
    concurrency = _flat(args.concurrency, [256])[0]
    try:
        with _workdir() as workdir:
            result = measure_write_ceiling(
                workdir,
                users=users,
                operations=_operations(args, DEFAULT_OPERATIONS),
                concurrency=concurrency,
                rounds=args.rounds,
                seed=args.seed,
                fresh=args.fresh,
            )
    except BenchmarkError as exc:
        return _usage_error(exc)
    print(
        f"SQLite write ceiling: the adapter's own transactions, no store, U={users:,}, "
        f"{result.commits:,} commits of {_operations(args, DEFAULT_OPERATIONS):,} resolves, "
        f"synchronous={result.synchronous}"
    )
    print(f"{'round':>6} {f'{concurrency} per tx':>14} {'1 per tx':>10} {'ratio':>7}")
    for number, run in enumerate(result.rounds, 1):
        print(
            f"{number:>6} {result.commits / run.grouped_seconds:>14,.0f} "
            f"{result.commits / run.single_seconds:>10,.0f} {run.ratio:>6.2f}x"
        )
    print(
        f"{'median':>6} {result.grouped_rate:>14,.0f} {result.single_rate:>10,.0f} "
        f"{result.ratio:>6.2f}x"
    )
    print(
        "(commits/s; the ratio bounds the store's sqlite/sqlite-single ratio at this "
        "concurrency on this disk)"
    )
    return 0
