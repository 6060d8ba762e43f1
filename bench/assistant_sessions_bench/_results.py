"""What a benchmark measured: result types, their statistics, the targets, and the JSON form.

Throughputs are compared as *ratios within a round*: each round runs the floor, the lock store
and the store back to back on the same workload, and a ratio is the median over rounds of the
per-round ratios. A slow moment of a shared machine then hits both sides of a ratio alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Final, final

import attrs

from ._check import ExactlyOnce

__all__ = [
    "MemoryResult",
    "PointResult",
    "PointSpec",
    "SubjectRun",
    "SubjectSummary",
    "SweepResult",
    "Target",
    "evaluate_targets",
    "percentile",
]

FLOOR: Final = "floor"
LOCK: Final = "lock"
STORE: Final = "store"
#: Google ADK's InMemorySessionService (``_adk``): reported apart, against the store only.
ADK: Final = "adk"
#: The floor behind one schedule point a call, beside ADK (``_baselines.CheckpointFloor``).
CEILING: Final = "ceiling"

#: The workloads the ADK subject runs (those made only of resolves).
ADK_WORKLOADS: Final = ("resolve", "hot")

#: Quantiles kept for latency CDF charts (in the JSON as well).
CDF_POINTS: Final = tuple(sorted({*range(0, 100, 2), 95, 97.5, 99, 99.5, 99.9, 100}))


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted values, nearest rank; NaN if empty."""
    if not ordered:
        return math.nan
    rank = math.ceil(q / 100 * len(ordered)) - 1
    return ordered[min(max(rank, 0), len(ordered) - 1)]


@final
@attrs.frozen
class PointSpec:
    """One measured configuration."""

    backend: str
    adapter: str
    workload: str
    users: int
    operations: int
    concurrency: int
    distribution: str
    zipf_s: float
    fresh: float
    seed: int

    def label(self) -> str:
        """A short name for tables and charts."""
        dist = "" if self.distribution == "uniform" else f" {self.distribution}"
        return (
            f"{self.workload} U={self.users:,} C={self.concurrency}{dist}"
            f" [{self.backend}, {self.adapter}]"
        )


@final
@attrs.frozen(eq=False)
class SubjectRun:
    """One timed run of one subject.

    Attributes:
        subject: ``floor``, ``lock`` or ``store``.
        operations: Operations made.
        elapsed: Wall-clock seconds of the timed phase.
        latencies: Sorted per-operation latencies in seconds.
        errors: Operations that raised.
        first_error: The first of those, as text.
        live_actors: The store's live actors after the run (the store only).
        check: The exactly-once check.
        cpu_seconds: CPU seconds this process used in the timed phase.
        server_cpu_seconds: CPU seconds the storage server used meanwhile (Redis: ``INFO
            CPU``), where it tells.
    """

    subject: str
    operations: int
    elapsed: float
    latencies: Sequence[float] = attrs.field(repr=False)
    errors: int
    first_error: str | None
    live_actors: int | None
    check: ExactlyOnce
    cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None

    @property
    def throughput(self) -> float:
        """Operations per second."""
        return self.operations / self.elapsed if self.elapsed > 0 else math.inf

    @property
    def ok(self) -> bool:
        """No operation failed and the exactly-once check passed."""
        return not self.errors and self.check.ok


def adk_applies(spec: PointSpec) -> bool:
    """Whether the ADK subject runs at this point: on the in-memory adapter, on asyncio (ADK
    asks for it), on a workload of resolves only."""
    return (
        spec.adapter == "memory"
        and spec.backend.startswith("asyncio")
        and spec.workload in ADK_WORKLOADS
    )


@final
@attrs.frozen
class SubjectSummary:
    """One subject at one point, over every round (medians)."""

    subject: str
    throughput: float
    p50: float
    p95: float
    p99: float
    max: float
    vs_lock: float | None
    vs_floor: float | None
    p99_vs_lock: float | None
    live_actors: int | None
    ok: bool
    check: str
    errors: int
    first_error: str | None


def _median_ratio(tops: Sequence[float], bottoms: Sequence[float]) -> float | None:
    ratios = [t / b for t, b in zip(tops, bottoms, strict=True) if b > 0]
    return statistics.median(ratios) if ratios else None


@final
@attrs.frozen(eq=False)
class PointResult:
    """Every round of every subject at one point."""

    spec: PointSpec
    counts: dict[str, int]
    runs: dict[str, list[SubjectRun]]
    peak_rss: int | None

    @property
    def ok(self) -> bool:
        """Whether every run of every subject passed its checks."""
        return all(run.ok for runs in self.runs.values() for run in runs)

    def summary(self, subject: str) -> SubjectSummary:
        """Medians over rounds of one subject, with its ratios to the baselines."""
        runs = self.runs[subject]
        tput = [r.throughput for r in runs]

        def pct(q: float) -> float:
            return statistics.median(percentile(r.latencies, q) for r in runs)

        def ratio_to(base: str) -> float | None:
            if base == subject or base not in self.runs:
                return None
            return _median_ratio(tput, [r.throughput for r in self.runs[base]])

        p99_vs_lock = None
        if subject not in (LOCK, FLOOR) and LOCK in self.runs:
            p99_vs_lock = _median_ratio(
                [percentile(r.latencies, 99) for r in runs],
                [percentile(r.latencies, 99) for r in self.runs[LOCK]],
            )
        failed = [r for r in runs if not r.check.ok]
        return SubjectSummary(
            subject=subject,
            throughput=statistics.median(tput),
            p50=pct(50),
            p95=pct(95),
            p99=pct(99),
            max=max(r.latencies[-1] if r.latencies else math.nan for r in runs),
            vs_lock=ratio_to(LOCK),
            vs_floor=ratio_to(FLOOR),
            p99_vs_lock=p99_vs_lock,
            live_actors=runs[-1].live_actors,
            ok=all(r.ok for r in runs),
            check=(failed[0] if failed else runs[-1]).check.describe(),
            errors=sum(r.errors for r in runs),
            first_error=next((r.first_error for r in runs if r.first_error), None),
        )

    def cpu_per_operation(self, subject: str) -> tuple[float | None, float | None]:
        """Medians over rounds of client and server CPU seconds per operation (or ``None``)."""
        runs = self.runs[subject]
        client = [r.cpu_seconds / r.operations for r in runs if r.cpu_seconds is not None]
        server = [s / r.operations for r in runs if (s := r.server_cpu_seconds) is not None]
        return (
            statistics.median(client) if client else None,
            statistics.median(server) if server else None,
        )

    def ratio(self, top: str, bottom: str) -> float | None:
        """The median over rounds of ``top``'s throughput over ``bottom``'s in that round."""
        return _median_ratio(
            [r.throughput for r in self.runs[top]], [r.throughput for r in self.runs[bottom]]
        )

    def cdf(self, subject: str) -> list[tuple[float, float]]:
        """(percentile, latency in seconds) pairs over every round pooled."""
        pooled = sorted(x for r in self.runs[subject] for x in r.latencies)
        return [(q, percentile(pooled, q)) for q in CDF_POINTS]

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the spec, the summaries, per-round figures and the CDF points."""
        return {
            "spec": attrs.asdict(self.spec),
            "label": self.spec.label(),
            "operation_counts": self.counts,
            "ok": self.ok,
            "peak_rss_bytes": self.peak_rss,
            "subjects": {
                name: {
                    "summary": attrs.asdict(self.summary(name)),
                    "rounds": [
                        {
                            "throughput": r.throughput,
                            "elapsed_s": r.elapsed,
                            "p50_s": percentile(r.latencies, 50),
                            "p95_s": percentile(r.latencies, 95),
                            "p99_s": percentile(r.latencies, 99),
                            "max_s": percentile(r.latencies, 100),
                            "errors": r.errors,
                            "live_actors": r.live_actors,
                            "exactly_once": attrs.asdict(r.check),
                            "cpu_s": r.cpu_seconds,
                            "server_cpu_s": r.server_cpu_seconds,
                        }
                        for r in runs
                    ],
                    "latency_cdf": self.cdf(name),
                    "cpu_per_operation_s": dict(
                        zip(("client", "server"), self.cpu_per_operation(name), strict=True)
                    ),
                }
                for name, runs in self.runs.items()
            },
        }


@final
@attrs.frozen
class MemoryResult:
    """Traced Python heap per stored idle session and per live actor (tracemalloc).

    Attributes:
        backend: The backend it ran on.
        adapter: The adapter (only Python allocations are traced: a C library's are not).
        sessions: How many users were resolved, each making one session and one actor.
        bytes_per_session: Heap kept per stored session once its actor is gone.
        bytes_per_actor: Heap kept per live actor (its cached user state).
        retired: Whether every actor was retired once idle.
        retire_seconds: How long that took with ``idle_after`` set to ``idle_after``.
        idle_after: The ``idle_after`` of the store that checked retirement.
    """

    backend: str
    adapter: str
    sessions: int
    bytes_per_session: float
    bytes_per_actor: float
    retired: bool
    retire_seconds: float
    idle_after: float


@final
@attrs.frozen
class SweepResult:
    """One ``sweep_stale`` over ``total`` sessions with ``stale`` stale, against a reference
    sweep over ``reference`` sessions all stale (medians of ``repeats`` sweeps each).
    """

    backend: str
    adapter: str
    total: int
    stale: int
    reference: int
    seconds: list[float]
    reference_seconds: list[float]
    ok: bool
    problem: str | None = None

    @property
    def ratio(self) -> float:
        """Median sweep time over the reference's."""
        return statistics.median(self.seconds) / statistics.median(self.reference_seconds)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {**attrs.asdict(self), "ratio": self.ratio}


@final
@attrs.frozen
class Target:
    """One of the design goals (speed, memory) of the in-memory store, and whether this run met
    it. A missed goal is reported, not a failure: only correctness checks fail a run."""

    name: str
    wanted: str
    value: float | None
    met: bool | None
    where: str


def _target(
    name: str, value: float | None, where: str, *, low: float = 0, high: float = 0
) -> Target:
    """A target ``value >= low`` (when ``low``) or ``value <= high`` (when ``high``)."""
    if low:
        wanted, met = f">= {low:g}x", None if value is None else value >= low
    else:
        wanted, met = f"<= {high:g}", None if value is None else value <= high
    return Target(name, wanted, value, met, where)


def evaluate_targets(
    points: Sequence[PointResult],
    memory: Sequence[MemoryResult],
    sweeps: Sequence[SweepResult],
    adk: Sequence[PointResult] = (),
) -> list[Target]:
    """Every design goal the measured points allow evaluating.

    The goals are set for the in-memory adapter at C=256 (the resolve goals at U=10^4); points
    and phases of other configurations are reported without goals. ``adk``: the store against
    Google ADK's InMemorySessionService (its runs ``store`` and ``adk``).
    """
    targets: list[Target] = []
    for point in points:
        spec = point.spec
        if STORE not in point.runs or spec.adapter != "memory" or spec.concurrency != 256:
            continue
        store = point.summary(STORE)
        where = spec.label()
        if spec.workload == "resolve" and spec.users == 10_000:
            targets += [
                _target("resolve vs lock", store.vs_lock, where, low=1.0),
                _target("resolve p99 vs lock", store.p99_vs_lock, where, high=1.5),
                _target("resolve vs floor", store.vs_floor, where, low=0.5),
            ]
        elif spec.workload == "hot":
            targets.append(_target("hot user vs lock", store.vs_lock, where, low=1.0))
    for point in adk:
        spec = point.spec
        if (spec.adapter, spec.concurrency, spec.workload, spec.users) == (
            "memory", 256, "resolve", 10_000
        ):  # fmt: skip
            ceiling = f"; ceiling {point.ratio(CEILING, ADK):.2f}x" if CEILING in point.runs else ""
            ratio, where = point.ratio(STORE, ADK), spec.label() + ceiling
            targets.append(_target("resolve vs ADK in-memory", ratio, where, low=2.0))
    targets += _scaling_targets(points)
    for sweep in (s for s in sweeps if s.adapter == "memory"):
        where = (
            f"{sweep.total:,} with {sweep.stale:,} stale vs {sweep.reference:,} all stale"
            f" [{sweep.backend}]"
        )
        targets.append(_target("sweep cost ratio", sweep.ratio, where, high=2.0))
    for mem in (m for m in memory if m.adapter == "memory"):
        where = f"{mem.sessions:,} sessions [{mem.backend}, {mem.adapter}]"
        targets += [
            _target("bytes/session", mem.bytes_per_session, where, high=1024),
            _target("bytes/live actor", mem.bytes_per_actor, where, high=4096),
            Target("idle actors retired", "all", None, mem.retired, where),
        ]
    return targets


def _scaling_targets(points: Sequence[PointResult]) -> list[Target]:
    """Target 3: store/floor at the most users >= 0.8 x store/floor at the fewest."""
    groups: dict[tuple[Any, ...], list[PointResult]] = {}
    for point in points:
        spec = point.spec
        if spec.workload != "resolve" or spec.adapter != "memory" or spec.concurrency != 256:
            continue
        if STORE not in point.runs or FLOOR not in point.runs:
            continue
        key = (spec.backend, spec.adapter, spec.concurrency, spec.distribution)
        groups.setdefault(key, []).append(point)
    targets = []
    for (backend, adapter, concurrency, distribution), group in groups.items():
        group.sort(key=lambda p: p.spec.users)
        low, high = group[0], group[-1]
        if high.spec.users <= low.spec.users:
            continue
        low_ratio, high_ratio = low.summary(STORE).vs_floor, high.summary(STORE).vs_floor
        if low_ratio is None or high_ratio is None:
            continue
        where = (
            f"store/floor at U={high.spec.users:,} vs U={low.spec.users:,}"
            f" C={concurrency} {distribution} [{backend}, {adapter}]"
        )
        targets.append(_target("flat scaling", high_ratio / low_ratio, where, low=0.8))
    return targets
