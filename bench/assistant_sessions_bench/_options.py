"""The options of ``assistant-sessions bench``: the argument parser, the plan and its estimate."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from ._adapters import BenchmarkError
from ._results import PointSpec, adk_applies
from ._workload import DISTRIBUTIONS, WORKLOADS

__all__ = [
    "BACKENDS",
    "DEFAULT_OPERATIONS",
    "DURABLE_OPERATIONS",
    "SCALE_USERS",
    "build_parser",
]

BACKENDS: Final = ("asyncio", "asyncio+uvloop", "trio")

#: Operations per run by default: on the in-memory adapter, and on the others (durable ones,
#: about 15x slower per operation, so that a default run also takes about a minute).
DEFAULT_OPERATIONS: Final = 100_000
DURABLE_OPERATIONS: Final = 20_000

#: The user counts of ``--scale`` (flat-scaling target).
SCALE_USERS: Final = (1_000, 10_000, 100_000, 1_000_000)


def _count(text: str) -> int:
    """An int written as ``10000``, ``10_000``, ``1e4`` or ``10k``."""
    value = text.strip().lower().replace("_", "")
    scale = 1
    if value.endswith("k"):
        value, scale = value[:-1], 1_000
    elif value.endswith("m"):
        value, scale = value[:-1], 1_000_000
    try:
        number = float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if number != int(number) or number < 0:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return int(number)


def _counts(text: str) -> list[int]:
    return [_count(part) for part in text.split(",") if part.strip()]


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        for value in values:
            if value not in allowed:
                raise argparse.ArgumentTypeError(
                    f"invalid choice {value!r} (choose from {', '.join(allowed)})"
                )
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The options; list-valued ones take commas or repeat (every combination is measured)."""
    parser = argparse.ArgumentParser(
        prog="assistant-sessions bench",
        description=(
            "Load benchmark: the session store against the same bookkeeping without concurrency "
            "(floor) and a store with one anyio.Lock per user (lock), interleaved in one process. "
            "List options take comma-separated values; every combination is one point."
        ),
    )
    add = parser.add_argument
    add("-u", "--users", type=_counts, action="append", help="users U (default 10000)")
    add(
        "-n",
        "--operations",
        type=_count,
        help=f"operations per run (default {DEFAULT_OPERATIONS:,}; {DURABLE_OPERATIONS:,} on an "
        "adapter other than memory, so that a default run takes about a minute; with "
        f"--processes {DEFAULT_OPERATIONS:,}, {DURABLE_OPERATIONS:,} on postgres)",
    )
    add("-c", "--concurrency", type=_counts, action="append", help="client tasks C (default 256)")
    add(
        "-w",
        "--workload",
        type=_choices(WORKLOADS),
        action="append",
        help="resolve (default), hot (all clients on one user), mixed (80%% resolve, 10%% "
        "update_metadata, 5%% attach/detach, 5%% find)",
    )
    add(
        "-d",
        "--distribution",
        type=_choices(DISTRIBUTIONS),
        action="append",
        help="how users are picked: uniform (default) or zipf",
    )
    add("--zipf-s", type=float, default=1.1, help="the Zipf exponent (default 1.1)")
    add(
        "-b",
        "--backend",
        type=_choices(BACKENDS),
        action="append",
        help="asyncio (default), asyncio+uvloop, trio",
    )
    add("-a", "--adapter", default="memory", help="storage adapter (see --list-adapters)")
    add(
        "--adapter-url",
        help="server URL for adapters that need one: redis (default redis://127.0.0.1:6379/0); "
        "postgres (required): a libpq conninfo or postgresql:// URL",
    )
    add("--list-adapters", action="store_true", help="list the adapters and exit")
    add("-r", "--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    add("--seed", type=int, default=1, help="random seed of the workload")
    add(
        "--fresh",
        type=float,
        default=0.1,
        help="fraction of users with no session before the run (default 0.1)",
    )
    add(
        "--scale",
        action="store_true",
        help=f"measure U in {', '.join(f'{u:,}' for u in SCALE_USERS)} (flat-scaling target) "
        "and sweep over 10^6 sessions",
    )
    add(
        "--memory-sessions",
        type=_count,
        default=10_000,
        help="sessions in the tracemalloc phase (0 skips it)",
    )
    add(
        "--sweep-users",
        type=_count,
        help="sessions in the sweep phase (default 100000, 20000 on an adapter other than "
        "memory; 1000000 with --scale; 0 skips it)",
    )
    add("--sweep-stale", type=_count, default=1_000, help="stale sessions among them")
    add(
        "--sweep-reference", type=_count, default=1_000, help="sessions, all stale, to compare with"
    )
    add(
        "--sweep-repeats",
        type=int,
        default=7,
        help="sweeps of each kind; the median counts (default 7)",
    )
    add(
        "--gc",
        choices=("freeze", "on"),
        default="freeze",
        help="freeze: move the prefill out of the collector's way during timed phases "
        "(default); on: leave the collector as it is",
    )
    add("--json", type=Path, help="write the results to this file (none is written without it)")
    add("--no-json", action="store_true", help="write no JSON file (the default; kept for scripts)")
    add(
        "--plot",
        action="store_true",
        help="write PNG charts next to the --json file (needs matplotlib and --json)",
    )
    add(
        "--processes",
        type=_counts,
        action="append",
        help="instead of the in-process comparison: aggregate resolve throughput of P worker "
        "processes sharing one storage (-a redis, postgres or sqlite), batched and "
        "per-operation, with the exactly-once check across all of them (e.g. --processes 1,2); "
        "with -a postgres, also Google ADK's DatabaseSessionService on the same server",
    )
    add(
        "--no-adk",
        action="store_true",
        help="skip the Google ADK baselines (InMemorySessionService with -a memory, "
        "DatabaseSessionService with -a postgres --processes); they need google-adk[db] and "
        "are skipped with a note without it",
    )
    add(
        "--idle-subscriber",
        action="store_true",
        help="also measure the store with an event subscriber that never reads (subject store+sub)",
    )
    add(
        "--write-ceiling",
        action="store_true",
        help="instead of the in-process comparison (-a sqlite): time the SQLite adapter's own "
        "write transaction on the workload's commits, C per transaction against one each, with "
        "no store or event loop: the most group commit can gain on this disk; with -a redis: "
        "the same commits through the Redis adapter's own script calls, C commits a round trip "
        "in one script call against one script call each: the client's ceiling",
    )
    add("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _operations(args: argparse.Namespace, default: int | None = None) -> int:
    """``-n``, or its default: smaller on the durable adapters, whose operations are slower."""
    if args.operations is not None:
        return int(args.operations)
    if default is not None:
        return default
    return DEFAULT_OPERATIONS if args.adapter == "memory" else DURABLE_OPERATIONS


def _flat(values: list[list[Any]] | None, default: Sequence[Any]) -> list[Any]:
    if not values:
        return list(default)
    return list(dict.fromkeys(itertools.chain.from_iterable(values)))


@attrs.frozen
class _Plan:
    backends: list[str]
    points: list[PointSpec]
    rounds: int
    memory_sessions: int
    sweep_total: int
    sweep_stale: int
    sweep_reference: int
    sweep_repeats: int
    gc: str
    #: Whether the ADK subject runs at the points it applies to (``_results.adk_applies``).
    adk: bool = False

    def adk_points(self) -> list[PointSpec]:
        """The points at which the ADK subject runs."""
        return [point for point in self.points if self.adk and adk_applies(point)]


def _plan(args: argparse.Namespace) -> _Plan:
    users = _flat(args.users, SCALE_USERS if args.scale else (10_000,))
    concurrency = _flat(args.concurrency, (256,))
    workloads = _flat(args.workload, ("resolve",))
    distributions = _flat(args.distribution, ("uniform",))
    backends = _flat(args.backend, ("asyncio",))
    operations = _operations(args)
    if args.rounds < 1 or operations < 1 or min(users) < 1 or min(concurrency) < 1:
        raise BenchmarkError("rounds, operations, users and concurrency must be at least 1")
    if not 0.0 <= args.fresh <= 1.0:
        raise BenchmarkError("--fresh must be between 0 and 1")
    if args.sweep_repeats < 1:
        raise BenchmarkError("--sweep-repeats must be at least 1")
    points = [
        PointSpec(
            backend=backend,
            adapter=args.adapter,
            workload=workload,
            users=u,
            operations=operations,
            concurrency=c,
            # Every operation of ``hot`` is on one user: no distribution to vary.
            distribution="uniform" if workload == "hot" else distribution,
            zipf_s=args.zipf_s,
            fresh=args.fresh,
            seed=args.seed,
        )
        for backend in backends
        for workload in workloads
        for distribution in distributions
        for c in concurrency
        for u in users
    ]
    points = list(dict.fromkeys(points))
    sweep_total = args.sweep_users
    if sweep_total is None:
        sweep_total = 1_000_000 if args.scale else 100_000 if args.adapter == "memory" else 20_000
    return _Plan(
        backends=backends,
        points=points,
        rounds=args.rounds,
        memory_sessions=args.memory_sessions,
        sweep_total=sweep_total,
        sweep_stale=min(args.sweep_stale, sweep_total),
        sweep_reference=args.sweep_reference,
        sweep_repeats=args.sweep_repeats,
        gc=args.gc,
    )


#: Rough seconds per operation of one round (the three subjects, and the prefill) and per
#: session of the memory and sweep phases, by adapter, measured on a 2-vCPU EPYC; for the
#: estimate printed before a run. Unknown adapters count as durable ones.
_COST: Final = {"memory": (36e-6, 15e-6), "durable": (420e-6, 650e-6)}

#: Rough seconds per operation of one round of the ADK subject (InMemorySessionService, with
#: its prefill): measured on a loaded 2-vCPU machine, scaled as the floor's figure there was.
_ADK_COST: Final = 15e-6


def _estimate(plan: _Plan, adapter: str) -> float:
    """Roughly how many seconds ``plan`` takes on a machine like the one of the README."""
    per_op, per_session = _COST["memory" if adapter == "memory" else "durable"]
    operations = sum(point.operations for point in plan.points) * plan.rounds
    adk = sum(point.operations for point in plan.adk_points()) * plan.rounds * _ADK_COST
    phases = len(plan.backends) * (
        plan.memory_sessions
        + (plan.sweep_total + plan.sweep_repeats * plan.sweep_reference if plan.sweep_total else 0)
    )
    return operations * per_op + adk + phases * per_session


def _estimate_line(plan: _Plan, adapter: str) -> str:
    seconds = _estimate(plan, adapter)
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return (
        f"{len(plan.points)} point(s) x {plan.rounds} round(s), -a {adapter}: about {took} on a "
        "2-core machine (-n, -r and --sweep-users scale it)"
    )
