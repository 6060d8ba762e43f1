"""The sweep phase: ``sweep_stale`` over many sessions, against one over few, all stale."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from assistant_sessions import Session, SessionState, create_session_store
from assistant_sessions.adapters.base import UserCommit

from ._adapters import BenchmarkError
from ._results import SweepResult
from ._run import AdapterMaker, _quiet_gc, populate

__all__ = ["measure_sweep"]

#: Where the sweep phase's clock starts.
_EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)


class _Clock:
    """The sweep phase's injected clock: it moves only when told to."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _sweep_data(total: int, batches: int, stale: int, prefix: str) -> list[UserCommit]:
    """``total`` active sessions, one per user: ``batches`` batches of ``stale`` sessions last
    active at hour 0, 1, 2... and the rest at hour ``batches + 10``.
    """
    commits = []
    for i in range(total):
        batch = i // stale if i < batches * stale else batches + 10
        at = _EPOCH + timedelta(hours=batch)
        user_id = f"{prefix}-{i:07d}"
        session = Session(f"{user_id}-s", user_id, None, SessionState.ACTIVE, at, at, at)
        commits.append(UserCommit(user_id, 0, (session,)))
    return commits


async def _timed_sweep(
    store: Any, clock: _Clock, batch: int, expected: int, gc_mode: str
) -> tuple[float, str | None]:
    # A ttl of one hour from half an hour past batch + 1 makes exactly batch ``batch`` stale.
    clock.now = _EPOCH + timedelta(hours=batch + 1, minutes=30)
    with _quiet_gc(gc_mode):
        began = time.perf_counter()
        moved = await store.sweep_stale(3600)
        seconds = time.perf_counter() - began
    problem = None
    if len(moved) != expected:
        problem = f"a sweep suspended {len(moved)} sessions, expected {expected}"
    return seconds, problem


async def measure_sweep(
    backend: str,
    adapter_name: str,
    make_adapter: AdapterMaker,
    *,
    total: int,
    stale: int,
    reference: int,
    repeats: int = 3,
    gc_mode: str = "freeze",
) -> SweepResult:
    """Time one ``sweep_stale`` over ``total`` sessions of which ``stale`` are stale, against
    one over ``reference`` sessions all stale; ``repeats`` of each, interleaved.

    The big store holds ``repeats`` batches of ``stale`` old sessions (each sweep finds the next
    one) among ``total`` sessions; each reference sweep gets a new store.
    """
    if stale * repeats > total:
        raise BenchmarkError(f"--sweep-stale x repeats ({stale} x {repeats}) exceeds {total}")
    big_clock = _Clock(_EPOCH)
    big = make_adapter()
    await populate(big, _sweep_data(total, repeats, stale, "sweep"))
    seconds: list[float] = []
    reference_seconds: list[float] = []
    problems: list[str] = []
    # No periodic sweeps: only the timed sweep_stale calls may move these sessions.
    async with create_session_store(big, clock=big_clock, sweep_interval=None) as big_store:
        for batch in range(repeats):
            small = make_adapter()
            await populate(small, _sweep_data(reference, 1, reference, f"ref{batch}"))
            small_clock = _Clock(_EPOCH)
            async with create_session_store(
                small, clock=small_clock, sweep_interval=None
            ) as small_store:
                took, problem = await _timed_sweep(small_store, small_clock, 0, reference, gc_mode)
            reference_seconds.append(took)
            problems += [problem] if problem else []
            took, problem = await _timed_sweep(big_store, big_clock, batch, stale, gc_mode)
            seconds.append(took)
            problems += [problem] if problem else []
    return SweepResult(
        backend=backend,
        adapter=adapter_name,
        total=total,
        stale=stale,
        reference=reference,
        seconds=seconds,
        reference_seconds=reference_seconds,
        ok=not problems,
        problem=problems[0] if problems else None,
    )
