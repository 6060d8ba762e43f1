"""How results are shown: a terminal table (rich, or plain text without it), JSON, PNG charts."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ._adapters import BenchmarkError
from ._results import ADK, CEILING, STORE, MemoryResult, PointResult, SweepResult, Target

__all__ = ["environment", "render", "write_json", "write_plots"]


def environment() -> dict[str, Any]:
    """The machine and versions a run was measured on."""
    versions: dict[str, str | None] = {}
    for name in ("assistant-sessions", "anyio", "trio", "uvloop", "attrs", "cattrs"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": _cpu_count(),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()


# -- text ----------------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _point_rows(point: PointResult) -> list[list[str]]:
    rows = []
    for name in point.runs:
        s = point.summary(name)
        rows.append(
            [
                name,
                _rate(s.throughput),
                _ratio(s.vs_lock),
                _ratio(s.vs_floor),
                _duration(s.p50),
                _duration(s.p95),
                _duration(s.p99),
                _duration(s.max),
                _ratio(s.p99_vs_lock),
                "-" if s.live_actors is None else f"{s.live_actors:,}",
                s.check if not s.errors else f"{s.errors} errors: {s.first_error}",
            ]
        )
    return rows


_POINT_COLUMNS = (
    "subject", "ops/s", "x lock", "x floor", "p50", "p95", "p99", "max", "p99 x lock",
    "live actors", "sessions/user",
)  # fmt: skip


_ADK_TITLE = (
    "The store against Google ADK's InMemorySessionService doing the same lookup-or-create "
    "with its own API (list_sessions, else create_session), in the same rounds; ADK runs on "
    "asyncio only. ceiling: the floor behind one schedule point a call, the most any store "
    "whose every call yields can reach (ADK's calls never yield)"
)

_ADK_COLUMNS = (
    "point", "store ops/s", "ADK ops/s", "store x ADK", "ceiling x ADK", "store p99", "ADK p99",
    "ADK sessions/user",
)  # fmt: skip


def _adk_rows(adk: Sequence[PointResult]) -> list[list[str]]:
    rows = []
    for point in adk:
        store, baseline = point.summary(STORE), point.summary(ADK)
        checks = [run.check for run in point.runs[ADK]]
        worst = max(checks, key=lambda check: (check.duplicated, check.missing))
        found = (
            worst.describe()
            if worst.ok
            else f"{worst.duplicated:,} of {worst.users_checked:,} users have 2+"
            + (f", {worst.missing:,} none" if worst.missing else "")
        )
        if baseline.errors:
            found = f"{baseline.errors} errors: {baseline.first_error}"
        rows.append(
            [
                point.spec.label(),
                _rate(store.throughput),
                _rate(baseline.throughput),
                _ratio(point.ratio(STORE, ADK)),
                _ratio(point.ratio(CEILING, ADK) if CEILING in point.runs else None),
                _duration(store.p99),
                _duration(baseline.p99),
                found,
            ]
        )
    return rows


_CPU_TITLE = (
    "CPU per operation (medians over rounds): this process's in the timed phase, and the "
    "storage server's meanwhile (Redis: INFO CPU)"
)


def _cpu_rows(points: Sequence[PointResult]) -> list[list[str]]:
    """Per subject of each point where a server's CPU was measured: CPU per operation."""
    rows = []
    for point in points:
        cpu = {name: point.cpu_per_operation(name) for name in point.runs}
        if all(server is None for _, server in cpu.values()):
            continue
        for name, values in cpu.items():
            client, server = ("-" if v is None else _duration(v) for v in values)
            rows.append([point.spec.label(), name, client, server])
    return rows


def _tables(
    points: Sequence[PointResult],
    memory: Sequence[MemoryResult],
    sweeps: Sequence[SweepResult],
    targets: Sequence[Target],
    adk: Sequence[PointResult] = (),
) -> list[tuple[str, Sequence[str], list[list[str]]]]:
    tables: list[tuple[str, Sequence[str], list[list[str]]]] = []
    for point in points:
        spec = point.spec
        title = f"{spec.label()}: {spec.operations:,} ops, peak RSS {_bytes(point.peak_rss)}"
        tables.append((title, _POINT_COLUMNS, _point_rows(point)))
    cpu = _cpu_rows(points)
    if cpu:
        tables.append((_CPU_TITLE, ("point", "subject", "client CPU/op", "server CPU/op"), cpu))
    if adk:
        tables.append((_ADK_TITLE, _ADK_COLUMNS, _adk_rows(adk)))
    if memory:
        rows = [
            [
                m.backend,
                m.adapter,
                f"{m.sessions:,}",
                _bytes(m.bytes_per_session),
                _bytes(m.bytes_per_actor),
                f"yes, in {m.retire_seconds:.2f} s" if m.retired else "NO",
            ]
            for m in memory
        ]
        head = ("backend", "adapter", "sessions", "per session", "per live actor", "retired")
        tables.append(("Memory (tracemalloc)", head, rows))
    if sweeps:
        rows = [
            [
                s.backend,
                f"{s.total:,} / {s.stale:,} stale",
                _duration(_median(s.seconds)),
                f"{s.reference:,} / all stale",
                _duration(_median(s.reference_seconds)),
                _ratio(s.ratio),
                "ok" if s.ok else f"FAILED: {s.problem}",
            ]
            for s in sweeps
        ]
        columns = ("backend", "sweep", "time", "reference", "time", "ratio", "check")
        tables.append(("One sweep_stale", columns, rows))
    if targets:
        rows = [
            [
                t.name,
                t.wanted,
                "-" if t.value is None else f"{t.value:,.2f}",
                {True: "met", False: "missed", None: "-"}[t.met],
                t.where,
            ]
            for t in targets
        ]
        tables.append((_GOALS_TITLE, ("goal", "wanted", "measured", "", "where"), rows))
    return tables


_GOALS_TITLE = (
    "Design goals of the in-memory store at C=256 (a missed goal is not a failure: it depends "
    "on the machine and its load; the exit status reflects only the correctness checks)"
)

_RATIO_NOTE = (
    "ops/s and latencies: medians over rounds. x lock, x floor, p99 x lock: medians of the "
    "per-round ratios (each round runs floor, lock and store back to back)."
)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else math.nan


def render(
    points: Sequence[PointResult],
    memory: Sequence[MemoryResult],
    sweeps: Sequence[SweepResult],
    targets: Sequence[Target],
    console: Any | None,
    adk: Sequence[PointResult] = (),
) -> None:
    """Print every table: with rich on ``console`` if given, else as plain text."""
    tables = _tables(points, memory, sweeps, targets, adk)
    if console is None:
        for title, columns, rows in tables:
            print(f"\n{title}")
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
            for line in (list(columns), *rows):
                print(
                    "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                )
        return
    from rich.markup import escape
    from rich.table import Table

    for title, columns, rows in tables:
        table = Table(title=escape(title), title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i in (0, len(columns) - 1) else "right")
        for row in rows:
            style = "bold red" if any("FAILED" in c for c in row) else None
            if style is None and title == _GOALS_TITLE and row[3] == "missed":
                style = "yellow"
            table.add_row(*map(escape, row), style=style)
        console.print(table)
    if points:
        console.print(_RATIO_NOTE, style="dim")


# -- files ---------------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_json_default, allow_nan=True) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def require_matplotlib() -> None:
    """Fail early, with what to install, when ``--plot`` cannot work.

    Raises:
        BenchmarkError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise BenchmarkError(
            "--plot needs matplotlib: pip install 'assistant-sessions[plot]'"
        ) from exc


def write_plots(stem: Path, points: Sequence[PointResult]) -> list[Path]:
    """Write ``<stem>-latency.png`` (latency CDF per subject and point) and, when the points
    cover several user counts, ``<stem>-scaling.png`` (throughput against U, log axis), and when
    they cover several concurrencies, ``<stem>-concurrency.png`` (throughput against C).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    columns = min(len(points), 2)
    rows = math.ceil(len(points) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4 * rows), squeeze=False)
    for ax, point in zip(axes.flat, points, strict=False):
        for name in point.runs:
            cdf = point.cdf(name)
            ax.plot([lat * 1e3 for _, lat in cdf], [q / 100 for q, _ in cdf], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of operations")
        ax.set_title(point.spec.label(), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(points) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path = stem.with_name(f"{stem.name}-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    for axis in ("users", "concurrency"):
        chart = _throughput_plot(stem, points, axis)
        if chart is not None:
            written.append(chart)
    return written


def _throughput_plot(stem: Path, points: Sequence[PointResult], axis: str) -> Path | None:
    """Throughput of each subject against ``axis`` (``users`` or ``concurrency``), one line per
    subject and the point's other settings; ``None`` when the points have one value of it."""
    if len({getattr(p.spec, axis) for p in points}) < 2:
        return None
    import matplotlib.pyplot as plt

    other = "concurrency" if axis == "users" else "users"
    series: dict[str, list[tuple[int, float]]] = {}
    for point in points:
        spec = point.spec
        for name in point.runs:
            key = f"{name} ({spec.workload}, {spec.backend}, {other}={getattr(spec, other):,})"
            series.setdefault(key, []).append((getattr(spec, axis), point.summary(name).throughput))
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, values in series.items():
        values.sort()
        ax.plot([x for x, _ in values], [t for _, t in values], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_xlabel("users (U)" if axis == "users" else "concurrent clients (C)")
    ax.set_ylabel("operations per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = stem.with_name(f"{stem.name}-{'scaling' if axis == 'users' else 'concurrency'}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
