"""Sweeps make progress past any number of candidates whose owners' turns fail; adapters
shared by several stores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from _fault_adapter import Passthrough, Storage, adapter_kinds, make_adapter, server_url
from assistant_sessions import AdapterError, SessionState, create_session_store
from assistant_sessions._runtime import sweeps
from assistant_sessions.adapters import Rejection, SessionStoreAdapter, UserCommit
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio


class FailCommitsOf(Passthrough):
    """Passes everything through, except that commits of the users in ``failing`` raise."""

    def __init__(self, inner: SessionStoreAdapter) -> None:
        super().__init__(inner)
        self.failing: set[str] = set()

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        if any(c.user_id in self.failing for c in commits):
            raise AdapterError("injected: this user's storage is broken")
        return await self.inner.commit(commits)


@pytest.mark.parametrize("kind", adapter_kinds())
async def test_a_sweep_gets_past_more_than_a_batch_of_failing_candidates(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps, "SWEEP_BATCH", 4)
    clock = FakeClock()
    adapter = FailCommitsOf(make_adapter(kind, Storage(tmp_path, server_url(kind, request))))
    async with create_session_store(
        adapter, clock=clock, default_ttl=60, expire_after=100, purge_after=100
    ) as store:
        sweeper = store._runtime.sweeper
        # Eleven failing users' sessions (almost three batches), all older than the healthy ones.
        failing = [await store.create(user_id=f"f{i}") for i in range(11)]
        clock.advance(1)
        healthy = [await store.create(user_id=f"h{i}") for i in range(3)]
        adapter.failing = {s.user_id for s in failing}
        clock.advance(100)
        with pytest.raises(AdapterError, match="injected"):
            await sweeper.sweep_once()
        states = {s.id: s.state for s in await store.find(limit=100)}
        assert {states[s.id] for s in healthy} == {SessionState.SUSPENDED}
        assert {states[s.id] for s in failing} == {SessionState.CREATED}
        # Expiry and purging run in the periodic sweeps all the same.
        clock.advance(101)
        with pytest.raises(AdapterError, match="injected"):
            await sweeper.sweep_once()
        states = {s.id: s.state for s in await store.find(limit=100)}
        assert {states[s.id] for s in healthy} == {SessionState.EXPIRED}
        clock.advance(101)
        with pytest.raises(AdapterError, match="injected"):
            await sweeper.sweep_once()
        remaining = await store.find(limit=100)
        assert sorted(s.id for s in remaining) == sorted(s.id for s in failing)
        # Once the failing users' storage recovers, they are swept too.
        adapter.failing = set()
        suspended, _, _ = await sweeper.sweep_once()
        assert sorted(s.id for s in suspended) == sorted(s.id for s in failing)


@pytest.mark.parametrize("kind", adapter_kinds())
@pytest.mark.parametrize("order", ["nested", "first-closes-first"])
async def test_one_adapter_shared_by_two_stores(
    kind: str, order: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every adapter can serve two stores at once, from two tasks, closing in either order;
    each open is matched by one aclose, and the adapter works until the last one."""
    adapter = make_adapter(kind, Storage(tmp_path, server_url(kind, request)))
    first = create_session_store(adapter, sweep_interval=None)
    second = create_session_store(adapter, sweep_interval=None)
    second_may_close = anyio.Event()

    async def use_second(opened: anyio.Event) -> None:
        async with second:
            opened.set()
            await second.create(user_id="b", id="from-second")
            await second_may_close.wait()
            # The other store may have closed already: this one still works.
            assert (await second.get("from-first")) is not None
            await second.create(user_id="b2", id="late")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            opened = anyio.Event()
            async with first:
                tg.start_soon(use_second, opened)
                await opened.wait()
                await first.create(user_id="a", id="from-first")
                assert await first.get("from-second") is not None
                if order == "nested":
                    second_may_close.set()
                    await anyio.sleep(0.05)
            second_may_close.set()
    # Opened again afterwards, the data is there.
    async with create_session_store(adapter, sweep_interval=None) as again:
        assert {s.id for s in await again.find(limit=10)} == {"from-first", "from-second", "late"}
