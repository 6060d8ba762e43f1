"""The memory phase: traced heap per stored session and per live actor, and idle retirement."""

from __future__ import annotations

import gc
import time
import tracemalloc

import anyio

from assistant_sessions import create_session_store

from ._adapters import BenchmarkError
from ._results import MemoryResult
from ._run import AdapterMaker

__all__ = ["measure_memory"]


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure_memory(
    backend: str,
    adapter_name: str,
    make_adapter: AdapterMaker,
    sessions: int,
    *,
    idle_after: float = 0.05,
) -> MemoryResult:
    """Traced heap per stored idle session and per live actor, then check idle retirement.

    One store resolves ``sessions`` new users (one session and one live actor each); leaving
    it drops the actors but not the sessions. A second store with a short ``idle_after``
    resolves them again and must retire every actor once they are idle.
    """
    adapter = make_adapter()
    tracemalloc.start()
    try:
        async with create_session_store(adapter, idle_after=3600) as store:
            before = _traced()
            # The ids are made here so their strings count: the store keeps them.
            for i in range(sessions):
                await store.resolve(user_id=f"mem-{i:07d}")
            with_actors = _traced()
            live = store.statistics().live_actors
        without_actors = _traced()
    finally:
        tracemalloc.stop()
    if live != sessions:
        raise BenchmarkError(f"expected {sessions} live actors, found {live}")
    async with create_session_store(adapter, idle_after=idle_after) as store:
        for i in range(sessions):
            await store.resolve(user_id=f"mem-{i:07d}")
        began = time.perf_counter()
        retired = False
        with anyio.move_on_after(max(10.0, 100 * idle_after)):
            # Polling is the point: retirement is the supervisor's periodic work, not an event.
            while store.statistics().live_actors:  # noqa: ASYNC110
                await anyio.sleep(idle_after / 2)
            retired = True
        waited = time.perf_counter() - began
    return MemoryResult(
        backend=backend,
        adapter=adapter_name,
        sessions=sessions,
        bytes_per_session=(without_actors - before) / sessions,
        bytes_per_actor=(with_actors - without_actors) / sessions,
        retired=retired,
        retire_seconds=waited,
        idle_after=idle_after,
    )
