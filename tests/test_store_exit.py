"""Leaving the store after its drain timeout: calls still queued fail clearly, none hangs."""

from __future__ import annotations

import anyio
import pytest

from _faults import SlowAdapter, until
from assistant_sessions import StoreClosedError, _router, _store, create_session_store

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("group_commit", [False, True], ids=["single", "grouped"])
async def test_queued_calls_fail_with_store_closed_after_drain_timeout(
    monkeypatch: pytest.MonkeyPatch, group_commit: bool
) -> None:
    monkeypatch.setattr(_router, "DRAIN_TIMEOUT", 0.05)
    adapter = SlowAdapter(group_commit=group_commit)
    outcomes: list[object] = []

    async def call(store: _store.SessionStore) -> None:
        try:
            outcomes.append(await store.resolve(user_id="u"))
        except StoreClosedError as exc:
            outcomes.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as callers:
            store = create_session_store(adapter, mailbox_size=2)
            await store.__aenter__()
            gate = adapter.block("commit")
            callers.start_soon(call, store)  # its commit holds the actor at the gate
            await gate.wait_for(1)
            for _ in range(4):  # two queue, two wait for room
                callers.start_soon(call, store)
            await anyio.wait_all_tasks_blocked()
            told: list[int] = []

            async def release_when_queued_callers_are_told() -> None:
                try:
                    await until(lambda: len(outcomes) == 4)
                    await anyio.wait_all_tasks_blocked()
                    told.append(len(outcomes))
                finally:
                    adapter.unblock("commit")

            callers.start_soon(release_when_queued_callers_are_told)
            await store.__aexit__(None, None, None)
            # The four queued callers were told at once, while the one whose commit was
            # already sent still waited for it, and so did the store's exit (commits are never
            # abandoned half way).
            assert told == [4]
            assert all(isinstance(o, StoreClosedError) for o in outcomes[:4])
    assert len(outcomes) == 5
    assert not isinstance(outcomes[4], StoreClosedError)
