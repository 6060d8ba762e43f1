"""The command's other modes: ``--processes`` (with the ADK database baseline on PostgreSQL)
and ``--write-ceiling``; and what every mode shares (the usage error, the work directory).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._adapters import BenchmarkError, adapter_entry
from ._adk import AdkDatabaseResult, adk_missing, run_adk_database
from ._ceiling import CEILING_ADAPTERS, measure_write_ceiling
from ._options import DEFAULT_OPERATIONS, _flat, _operations
from ._postgres import PostgresSchemaLog
from ._processes import ProcessesResult, run_processes

__all__ = ["main_ceiling", "main_processes", "usage_error", "workdir"]


def usage_error(message: object) -> int:
    """Say why the benchmark cannot run as asked; the exit status for it."""
    print(f"assistant-sessions bench: error: {message}", file=sys.stderr)
    return 2


@contextmanager
def workdir() -> Iterator[Path]:
    """A private temporary directory for database files, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="assistant-sessions-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_url(args: argparse.Namespace) -> None:
    """Raises BenchmarkError when the adapter needs ``--adapter-url`` and has none (or is
    unknown)."""
    entry = adapter_entry(args.adapter)
    if entry.needs_url and args.adapter_url is None:
        raise BenchmarkError(entry.needs_url)


def main_processes(args: argparse.Namespace) -> int:
    """``--processes``: the store in P processes, batched against per-operation; on PostgreSQL
    also ADK's DatabaseSessionService on the same server (unless ``--no-adk``)."""
    backend = _flat(args.backend, ["asyncio"])[0]
    users = _flat(args.users, [10_000])[0]
    concurrency = _flat(args.concurrency, [256])[0]
    # PostgreSQL's per-operation run, and ADK's, are slow: the durable default there.
    operations = _operations(args, None if args.adapter == "postgres" else DEFAULT_OPERATIONS)
    counts = _flat(args.processes, [1])
    results = []
    adk: AdkDatabaseResult | None = None
    adk_note = None
    schemas = PostgresSchemaLog()
    try:
        check_url(args)
        with workdir() as path:
            for processes in counts:
                for batched in (True, False):
                    results.append(
                        run_processes(
                            adapter=args.adapter,
                            url=args.adapter_url,
                            workdir=path,
                            processes=processes,
                            users=users,
                            operations=operations,
                            concurrency=concurrency,
                            backend=backend,
                            seed=args.seed,
                            batched=batched,
                        )
                    )
        if args.adapter == "postgres" and not args.no_adk:
            adk_note = adk_missing(database=True)
            if adk_note is None:
                try:
                    adk = run_adk_database(
                        dsn=args.adapter_url,
                        schemas=schemas,
                        users=users,
                        operations=operations,
                        concurrency=concurrency,
                        seed=args.seed,
                    )
                except Exception as exc:  # the baseline's failure is reported, not the run's
                    adk_note = f"it failed: {exc!r}"
    except BenchmarkError as exc:
        return usage_error(exc)
    finally:
        schemas.drop_all()
    print(
        f"resolve across processes [{backend}, {args.adapter}], U={users:,}, "
        f"C={concurrency} per process, {operations:,} operations per run"
    )
    print(f"{'P':>3} {'store ops/s':>12} {'per-op ops/s':>13} {'ratio':>6}  exactly-once")
    by_key = {(r.processes, r.batched): r for r in results}
    ok = True
    for processes in counts:
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
    if adk_note is not None:
        print(f"(the Google ADK baseline is skipped: {adk_note})")
    if adk is not None:
        _print_adk(adk, by_key.get((1, True)), users, concurrency, operations)
    return 0 if ok else 1


def _print_adk(
    adk: AdkDatabaseResult,
    store: ProcessesResult | None,
    users: int,
    concurrency: int,
    operations: int,
) -> None:
    check = adk.check
    print(
        f"Google ADK DatabaseSessionService on the same server [asyncio: ADK runs on asyncio "
        f"only], U={users:,}, C={concurrency}, {operations:,} operations, one process: "
        "list_sessions, else create_session"
    )
    print(f"{'ADK ops/s':>12} {'store P=1 x ADK':>16}  sessions/user")
    ratio = "-" if store is None else f"{store.throughput / adk.throughput:.2f}x"
    found = (
        f"1 each ({check.users_checked:,} users)"
        if check.ok
        else f"{check.duplicated:,} of {check.users_checked:,} users have 2+ "
        f"({adk.extra_sessions:,} duplicate sessions)"
        + (f", {check.missing:,} have none" if check.missing else "")
    )
    if adk.errors:
        found += f"; {adk.errors:,} calls failed, the first: {adk.first_error}"
    print(f"{adk.throughput:>12,.0f} {ratio:>16}  {found}")
    print(
        "(a baseline's duplicates are its finding, not a failure of this run; store P=1: the "
        "batched one-process run above, in its own process, right before)"
    )


def main_ceiling(args: argparse.Namespace) -> int:
    """``--write-ceiling``: the SQLite adapter's own write transactions, grouped and single."""
    if args.adapter not in CEILING_ADAPTERS:
        adapters = " or -a ".join(CEILING_ADAPTERS)
        return usage_error(f"--write-ceiling measures the SQLite adapter: -a {adapters}")
    users = _flat(args.users, [10_000])[0]
    concurrency = _flat(args.concurrency, [256])[0]
    try:
        with workdir() as path:
            result = measure_write_ceiling(
                path,
                users=users,
                operations=_operations(args, DEFAULT_OPERATIONS),
                concurrency=concurrency,
                rounds=args.rounds,
                seed=args.seed,
                fresh=args.fresh,
            )
    except BenchmarkError as exc:
        return usage_error(exc)
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
