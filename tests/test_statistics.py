"""statistics(): actors, mailboxes, operations with latency percentiles, sweeps, errors."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import anyio
import pytest

from _fault_adapter import Passthrough
from assistant_sessions import (
    InMemorySessionStoreAdapter,
    SessionNotFoundError,
    SessionStore,
    create_session_store,
)
from assistant_sessions._runtime.metrics import Histogram
from assistant_sessions.adapters import Rejection, UserCommit
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_counts_operations_and_errors(store: SessionStore, clock: FakeClock) -> None:
    for i in range(10):
        await store.resolve(user_id=f"u{i % 4}")
    with pytest.raises(SessionNotFoundError):
        await store.touch("missing")
    session = await store.resolve(user_id="u0")
    await store.update_metadata(session.id, {"a": 1})
    clock.advance(4000)
    await store.sweep_stale()
    stats = store.statistics()
    assert stats.operations["resolve"].count == 11
    assert stats.operations["resolve"].errors == 0
    assert stats.operations["update_metadata"].count == 1
    assert stats.live_actors == 4
    assert (stats.busy_actors, stats.in_flight, stats.mailbox_depth_total) == (0, 0, 0)
    assert stats.sweeps == 1
    assert stats.sessions_suspended == 4
    resolve = stats.operations["resolve"]
    assert 0 < resolve.p50 <= resolve.p95 <= resolve.p99 <= resolve.max


class GatedAdapter(Passthrough):
    """The in-memory adapter without its synchronous fast path, with commits held at a gate."""

    def __init__(self) -> None:
        super().__init__(InMemorySessionStoreAdapter())
        self.gate = anyio.Event()

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        await self.gate.wait()
        return await self.inner.commit(commits)


async def test_mailbox_depths_while_queued() -> None:
    adapter = GatedAdapter()
    async with create_session_store(adapter, mailbox_size=8) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(store.resolve, user_id="hot"))
            tg.start_soon(partial(store.resolve, user_id="cold"))
            await anyio.wait_all_tasks_blocked()
            for _ in range(19):
                tg.start_soon(partial(store.resolve, user_id="hot"))
            await anyio.wait_all_tasks_blocked()
            stats = store.statistics()
            # One call per user is being committed (at the gate); the other 19 of "hot"
            # wait: 8 in the mailbox, 11 for room in it.
            assert stats.in_flight == 21
            assert stats.busy_actors == 2
            assert stats.mailbox_depth_max == 19
            assert stats.mailbox_depth_total == 19
            adapter.gate.set()
        stats = store.statistics()
        assert (stats.in_flight, stats.busy_actors, stats.mailbox_depth_total) == (0, 0, 0)
        assert len(await store.find(user_id="hot")) == 1


def test_histogram_percentiles_are_within_bucket_precision() -> None:
    histogram = Histogram()
    values = [i * 1e-6 for i in range(1, 1001)]
    for value in values:
        histogram.add(value)
    for fraction in (0.5, 0.95, 0.99):
        exact = values[int(fraction * len(values)) - 1]
        assert exact <= histogram.percentile(fraction) <= exact * 1.13
    assert histogram.percentile(1.0) == histogram.max == values[-1]
    assert Histogram().percentile(0.5) == 0.0
