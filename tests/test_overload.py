"""Overload: 10^5 callers queued on one user's actor, behind a bounded mailbox.

Every caller resolves the same user and surface at once, over a slow adapter (each commit lags
a few checkpoints), so nearly all of them wait for room in a mailbox of four. All of them must
complete with the same, single session; the mailbox never holds more than its size; and memory
stays proportional to the callers waiting (their tasks), within a fixed bound per caller, and
is given back when they are done -- the store buffers nothing of its own per queued call.

The adapter does not matter here (the actor hands it one batch at a time whatever it is), so
this runs on the in-memory adapter behind a slow wrapper, keeping it near 30 s per backend.

Memory is measured with ``tracemalloc``. The cyclic garbage collector is paused while the
callers are live: with 10^5 live tasks each collection walks all of them, which multiplies the
run time without changing what is measured (a paused collector can only raise the peak, so the
bound is, if anything, stricter).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from _fault_adapter import LaggingAdapter, make_adapter
from assistant_sessions import SessionStore, create_session_store
from assistant_sessions.adapters import SessionStoreAdapter
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

CALLERS = 100_000
MAILBOX_SIZE = 4
#: Peak traced memory allowed per queued caller, its own task included (measured: about
#: 8.5 KiB on asyncio and 7 KiB on trio, of which a bare task waiting on an event is ~4 KiB).
MAX_BYTES_PER_CALLER = 16 * 1024
#: What may stay allocated outside the event loop's own bookkeeping once every caller is done
#: and the user's actor is retired.
MAX_BYTES_LEFT = 256 * 1024
#: The event loop's task bookkeeping: sets and weak sets that grew to hold every caller's task
#: keep their capacity (Python never shrinks them), so it is left out of what remains.
EVENT_LOOP_FILES = (
    "*/trio/*",
    "*/asyncio/*",
    "*/anyio/_backends/*",
    "*/weakref.py",
    "*/_weakrefset.py",
)


@pytest.fixture
def adapter_factory(tmp_path: Path) -> SessionStoreAdapter:
    """The in-memory adapter (see the module documentation)."""
    return make_adapter("memory", tmp_path)


def _allocated_outside_event_loop() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, pattern) for pattern in EVENT_LOOP_FILES]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.fixture
def paused_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


class Monitor:
    """Samples the user's mailbox and the traced memory while the callers run."""

    def __init__(self, store: SessionStore, user_id: str) -> None:
        self.store = store
        self.user_id = user_id
        self.samples = 0
        self.max_buffered = 0
        self.max_waiting = 0
        self.max_depth = 0

    async def run(self) -> None:
        registry = self.store._registry
        while True:
            await anyio.lowlevel.checkpoint()
            actor = registry.actors.get(self.user_id)
            send = None if actor is None else actor._send
            if send is None:
                continue
            stats = send.statistics()
            self.samples += 1
            self.max_buffered = max(self.max_buffered, stats.current_buffer_used)
            self.max_waiting = max(self.max_waiting, stats.tasks_waiting_send)
            self.max_depth = max(self.max_depth, self.store.statistics().mailbox_depth_max)


async def test_1e5_callers_on_one_user_all_complete_in_bounded_memory(
    adapter_factory: SessionStoreAdapter,
    clock: FakeClock,
    paused_gc: None,
    traced: None,
    anyio_backend: str,
) -> None:
    slow = LaggingAdapter(adapter_factory, seed=3, delay=3)
    completed = [0]
    ids: set[str] = set()
    async with create_session_store(slow, clock=clock, mailbox_size=MAILBOX_SIZE) as store:

        async def caller() -> None:
            session = await store.resolve(user_id="u", surface_id="web")
            completed[0] += 1
            ids.add(session.id)

        await store.resolve(user_id="warm-up")  # the store's own one-time allocations
        monitor = Monitor(store, "u")
        gc.collect()
        start_outside = _allocated_outside_event_loop()
        start_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.perf_counter()
        with anyio.fail_after(100):
            async with anyio.create_task_group() as watching:
                watching.start_soon(monitor.run)
                async with anyio.create_task_group() as tg:
                    for _ in range(CALLERS):
                        tg.start_soon(caller)
                watching.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
        peak_bytes = tracemalloc.get_traced_memory()[1]
        # Passivate the actor (as the supervisor does after idle_after): its mailbox goes too.
        registry = store._registry
        registry.retire_idle()
        registry.retire_idle()
        assert "u" not in registry.actors
        gc.collect()  # the paused collector's garbage is not the store's
        left_outside = _allocated_outside_event_loop() - start_outside
        print(
            f"{anyio_backend}: {CALLERS} callers in {elapsed:.1f}s; peak "
            f"{(peak_bytes - start_bytes) / CALLERS:.0f} B/caller; after: "
            f"{tracemalloc.get_traced_memory()[0] - start_bytes} B left in all, "
            f"{left_outside} B outside the event loop; {slow.commits} commits; "
            f"mailbox max {monitor.max_buffered}, waiting max {monitor.max_waiting}"
        )

        # Every caller completed, with the one session.
        assert completed[0] == CALLERS
        assert len(ids) == 1
        assert [s.id for s in await store.find(user_id="u")] == list(ids)
        stats = store.statistics()
        assert (stats.in_flight, stats.busy_actors, stats.mailbox_depth_total) == (0, 0, 0)
        assert stats.operations["resolve"].count == CALLERS + 1
        assert stats.operations["resolve"].errors == 0

        # The callers really queued, and the mailbox stayed bounded.
        assert monitor.samples > 100
        assert monitor.max_waiting > CALLERS // 2
        assert monitor.max_buffered <= MAILBOX_SIZE
        assert monitor.max_depth > CALLERS // 2
        # Queued calls went to storage in batches, not one by one.
        assert slow.commits < CALLERS // 10

        # Memory: a bounded cost per waiting caller, and nothing kept once they are done.
        assert (peak_bytes - start_bytes) / CALLERS < MAX_BYTES_PER_CALLER
        assert left_outside < MAX_BYTES_LEFT
