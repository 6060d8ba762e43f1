"""The timed runs: each subject, on the same workload, round after round.

A *subject* is one of the things measured: the floor, the lock store, or the store itself.
Every subject gets a new adapter, filled with the same prefill, and then the same operations:
concurrent subjects from ``concurrency`` client tasks that take the next operation in turn (a
closed loop), the floor from one task calling it directly. Latency is measured per operation,
throughput over the whole timed phase. Each timed phase starts from a collected heap; with
``gc="freeze"`` the prefill (the same for every subject) is moved out of the cyclic collector's
way for the phase, while everything the run creates (tasks, actors) is still collected. The
memory phase is in :mod:`._memory`, the sweep phase in :mod:`._sweep`.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Final, final

import anyio
import attrs

from assistant_sessions import InMemorySessionStoreAdapter, create_session_store
from assistant_sessions.adapters.base import SessionStoreAdapter, UserCommit

from ._adapters import BenchmarkError
from ._baselines import CheckpointFloor, FloorStore, LockStore
from ._check import check_exactly_once
from ._redis_ceiling import server_cpu
from ._results import CEILING, FLOOR, LOCK, STORE, PointResult, PointSpec, SubjectRun
from ._workload import ATTACH, DETACH, FIND, RESOLVE, UPDATE, Operation, Workload, build_workload

__all__ = [
    "CEILING_SUBJECT",
    "IDLE_SUBSCRIBER",
    "SUBJECTS",
    "Subject",
    "peak_rss",
    "populate",
    "run_point",
    "run_subject",
]

#: Commits per adapter call when filling an adapter before a run.
_FILL_BATCH: Final = 1000


AdapterMaker = Callable[[], SessionStoreAdapter]


@final
@attrs.frozen
class Subject:
    """One thing to measure.

    Attributes:
        name: Its name in tables and JSON.
        concurrent: Driven by ``concurrency`` tasks awaiting it; else called by one task,
            synchronously.
        open: Given an adapter (filled, closed), an async context manager yielding an object
            with the store's ``resolve``, ``update_metadata``, ``attach_surface``,
            ``detach_surface`` and ``find``. It owns the adapter's ``open``/``aclose``. An
            object that keeps its sessions elsewhere (a baseline's own service) also has
            ``load_prefill(prefill)`` and ``check_exactly_once(users)``, used instead of the
            adapter's.
        own_memory: Runs on a new in-memory adapter whatever ``--adapter`` says (the floor).
    """

    name: str
    concurrent: bool
    open: Callable[[SessionStoreAdapter], AbstractAsyncContextManager[Any]]
    own_memory: bool = False


@asynccontextmanager
async def _open_floor(adapter: SessionStoreAdapter) -> AsyncIterator[FloorStore]:
    if not isinstance(adapter, InMemorySessionStoreAdapter):
        raise BenchmarkError("the floor runs on an InMemorySessionStoreAdapter")
    yield FloorStore(adapter)


@asynccontextmanager
async def _open_store_with_idle_subscriber(adapter: SessionStoreAdapter) -> AsyncIterator[Any]:
    async with create_session_store(adapter) as store:
        # A subscriber that never reads: its buffer fills, then drops, and must cost the
        # actors next to nothing (events are published without awaiting).
        with store.subscribe(buffer_size=1000):
            yield store


@asynccontextmanager
async def _open_checkpoint_floor(adapter: SessionStoreAdapter) -> AsyncIterator[CheckpointFloor]:
    if not isinstance(adapter, InMemorySessionStoreAdapter):
        raise BenchmarkError("the checkpointed floor runs on an InMemorySessionStoreAdapter")
    yield CheckpointFloor(adapter)


#: The floor behind one schedule point a call, run beside ADK (:data:`CEILING`).
CEILING_SUBJECT: Final = Subject(
    CEILING, concurrent=True, open=_open_checkpoint_floor, own_memory=True
)

#: The store with an event subscriber that never reads (``--idle-subscriber``).
IDLE_SUBSCRIBER: Final = Subject(
    "store+sub", concurrent=True, open=_open_store_with_idle_subscriber
)

#: What each point measures, in this order within every round.
SUBJECTS: tuple[Subject, ...] = (
    Subject(FLOOR, concurrent=False, open=_open_floor, own_memory=True),
    Subject(LOCK, concurrent=True, open=LockStore),
    Subject(STORE, concurrent=True, open=create_session_store),
)


def peak_rss() -> int | None:
    """This process's peak resident set size in bytes, where the platform tells."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


async def populate(adapter: SessionStoreAdapter, prefill: Sequence[UserCommit]) -> None:
    """Commit ``prefill`` into a new adapter (opened and closed again here).

    Raises:
        BenchmarkError: The adapter rejected part of the prefill (it was not empty).
    """
    await adapter.open()
    try:
        for start in range(0, len(prefill), _FILL_BATCH):
            rejections = await adapter.commit(prefill[start : start + _FILL_BATCH])
            if any(r is not None for r in rejections):
                raise BenchmarkError("the adapter rejected the prefill: was it empty?")
    finally:
        await adapter.aclose()


@contextmanager
def _quiet_gc(mode: str) -> Iterator[None]:
    gc.collect()
    if mode == "freeze":
        gc.freeze()
    try:
        yield
    finally:
        if mode == "freeze":
            gc.unfreeze()


async def _drive(
    client: Any, operations: Sequence[Operation], concurrency: int
) -> tuple[float, list[float], list[Exception]]:
    """Run ``operations`` from ``concurrency`` tasks; return seconds, latencies and errors."""
    pending = iter(operations)
    latencies: list[float] = []
    errors: list[Exception] = []
    record, clock = latencies.append, time.perf_counter
    resolve, find = client.resolve, client.find
    update, attach, detach = client.update_metadata, client.attach_surface, client.detach_surface

    async def run_client() -> None:
        for kind, key, argument in pending:
            start = clock()
            try:
                if kind == RESOLVE:
                    await resolve(user_id=key, surface_id=argument)
                elif kind == UPDATE:
                    await update(key, argument)
                elif kind == ATTACH:
                    await attach(key, argument)
                elif kind == DETACH:
                    await detach(key, argument)
                elif kind == FIND:
                    await find(user_id=key)
            except Exception as exc:
                errors.append(exc)
            record(clock() - start)

    began = clock()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(run_client)
    return clock() - began, latencies, errors


def _drive_sync(
    client: Any, operations: Sequence[Operation]
) -> tuple[float, list[float], list[Exception]]:
    """Run ``operations`` one after the other, synchronously (the floor)."""
    latencies: list[float] = []
    errors: list[Exception] = []
    record, clock = latencies.append, time.perf_counter
    resolve, find = client.resolve, client.find
    update, attach, detach = client.update_metadata, client.attach_surface, client.detach_surface
    began = clock()
    for kind, key, argument in operations:
        start = clock()
        try:
            if kind == RESOLVE:
                resolve(user_id=key, surface_id=argument)
            elif kind == UPDATE:
                update(key, argument)
            elif kind == ATTACH:
                attach(key, argument)
            elif kind == DETACH:
                detach(key, argument)
            elif kind == FIND:
                find(user_id=key)
        except Exception as exc:
            errors.append(exc)
        record(clock() - start)
    return clock() - began, latencies, errors


async def run_subject(
    subject: Subject,
    make_adapter: AdapterMaker,
    workload: Workload,
    concurrency: int,
    *,
    gc_mode: str = "freeze",
) -> SubjectRun:
    """Fill a new adapter, run the workload through ``subject``, check exactly-once."""
    adapter = InMemorySessionStoreAdapter() if subject.own_memory else make_adapter()
    await populate(adapter, workload.prefill)
    async with subject.open(adapter) as client:
        # A subject that keeps sessions elsewhere (a baseline's own service) loads the prefill
        # itself, and reads its sessions back itself for the check.
        load_prefill = getattr(client, "load_prefill", None)
        if callable(load_prefill):
            await load_prefill(workload.prefill)
        # CPU per operation: this process's around the timed phase, and a server's (Redis).
        server_before = await server_cpu(adapter)
        with _quiet_gc(gc_mode):
            cpu_before = time.process_time()
            if subject.concurrent:
                elapsed, latencies, errors = await _drive(client, workload.operations, concurrency)
            else:
                elapsed, latencies, errors = _drive_sync(client, workload.operations)
            cpu = time.process_time() - cpu_before
        server_after = await server_cpu(adapter)
        statistics_of = getattr(client, "statistics", None)
        live = statistics_of().live_actors if callable(statistics_of) else None
        own_check = getattr(client, "check_exactly_once", None)
        check = (
            await own_check(workload.resolved_users)
            if callable(own_check)
            else await check_exactly_once(adapter, workload.resolved_users)
        )
    latencies.sort()
    return SubjectRun(
        subject=subject.name,
        operations=len(workload.operations),
        elapsed=elapsed,
        # 8 bytes a latency instead of a float object's 32: many rounds and points add up.
        latencies=array("d", latencies),
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        live_actors=live,
        check=check,
        cpu_seconds=cpu,
        server_cpu_seconds=(
            None if server_before is None or server_after is None else server_after - server_before
        ),
    )


async def run_point(
    spec: PointSpec,
    make_adapter: AdapterMaker,
    *,
    rounds: int,
    subjects: Sequence[Subject] | None = None,
    gc_mode: str = "freeze",
    on_run: Callable[[SubjectRun], None] = lambda run: None,
) -> PointResult:
    """Measure one point: ``rounds`` rounds, each running every subject in turn.

    ``subjects`` defaults to :data:`SUBJECTS` as it is when called (tests replace it).
    """
    if subjects is None:
        subjects = SUBJECTS
    workload = build_workload(
        spec.workload,
        users=spec.users,
        operations=spec.operations,
        distribution=spec.distribution,
        zipf_s=spec.zipf_s,
        fresh=spec.fresh,
        seed=spec.seed,
    )
    runs: dict[str, list[SubjectRun]] = {subject.name: [] for subject in subjects}
    for _ in range(rounds):
        for subject in subjects:
            run = await run_subject(
                subject, make_adapter, workload, spec.concurrency, gc_mode=gc_mode
            )
            runs[subject.name].append(run)
            on_run(run)
    return PointResult(spec, workload.counts(), runs, peak_rss())


def median_or_nan(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")
