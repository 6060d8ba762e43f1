"""The in-memory adapter: the shared adapter contract, plus what is special to memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from assistant_sessions import (
    InMemorySessionStoreAdapter,
    Session,
    SessionQuery,
    SessionState,
    SessionStoreAdapter,
    create_session_store,
)
from assistant_sessions.adapters import SynchronousAdapter, UserCommit
from assistant_sessions.testing import AdapterContract, FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class TestInMemoryAdapterContract(AdapterContract):
    @pytest.fixture
    def adapter(self) -> InMemorySessionStoreAdapter:
        return InMemorySessionStoreAdapter()


def _active(session_id: str, user_id: str, at: datetime) -> Session:
    return Session(session_id, user_id, None, SessionState.ACTIVE, T0, at, T0)


def test_it_is_an_adapter_with_the_synchronous_fast_path() -> None:
    adapter = InMemorySessionStoreAdapter()
    assert isinstance(adapter, SessionStoreAdapter)
    assert isinstance(adapter, SynchronousAdapter)
    assert len(adapter) == 0


async def test_due_index_stays_right_and_bounded_after_many_touches() -> None:
    adapter = InMemorySessionStoreAdapter()
    await adapter.open()
    ids = [f"s{i}" for i in range(5)]
    # Five sessions, each "touched" (re-committed with a later last activity) 2,000 times: the
    # lazily-deleted heap entries must be compacted, and answers must stay right throughout.
    for step in range(2000):
        at = T0 + timedelta(seconds=step)
        sessions = tuple(
            _active(sid, "u1", at + timedelta(milliseconds=i)) for i, sid in enumerate(ids)
        )
        # One commit per step: the user's version is the step number.
        assert await adapter.commit([UserCommit("u1", step, sessions)]) == [None]
        if step % 500 == 0:
            due = await adapter.due(SessionState.ACTIVE, at + timedelta(milliseconds=2), 10)
            assert [s.id for s in due] == ["s0", "s1"]
    # The heap holds a bounded number of stale entries, not one per touch (2,500 entries were
    # pushed since the last `due`, which also drops the stale entries it meets).
    assert len(adapter._due[SessionState.ACTIVE]) < 2 * len(ids) + 1100
    last = T0 + timedelta(seconds=1999)
    # Only the latest snapshot of each session is due, oldest first, at most `limit`.
    due = await adapter.due(SessionState.ACTIVE, last + timedelta(seconds=1), 10)
    assert [s.id for s in due] == ids
    assert all(s.last_activity_at >= last for s in due)
    assert [
        s.id for s in await adapter.due(SessionState.ACTIVE, last + timedelta(seconds=1), 3)
    ] == ids[:3]
    assert await adapter.due(SessionState.ACTIVE, last, 10) == []
    assert len(adapter) == 5
    await adapter.aclose()


async def test_due_index_follows_state_changes_after_compaction() -> None:
    adapter = InMemorySessionStoreAdapter()
    await adapter.open()
    for step in range(1500):
        at = T0 + timedelta(seconds=step)
        assert await adapter.commit([UserCommit("u1", step, (_active("a", "u1", at),))]) == [None]
    version = 1500
    suspended = Session(
        "a",
        "u1",
        None,
        SessionState.SUSPENDED,
        T0,
        T0 + timedelta(seconds=1499),
        T0 + timedelta(hours=1),
    )
    assert await adapter.commit([UserCommit("u1", version, (suspended,))]) == [None]
    far = T0 + timedelta(days=1)
    assert await adapter.due(SessionState.ACTIVE, far, 10) == []
    assert await adapter.due(SessionState.SUSPENDED, T0 + timedelta(minutes=59), 10) == []
    assert await adapter.due(SessionState.SUSPENDED, far, 10) == [suspended]
    await adapter.aclose()


async def test_store_sweeps_right_after_many_touches(clock: FakeClock) -> None:
    adapter = InMemorySessionStoreAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        for i in range(10):
            await store.create(user_id=f"u{i % 3}", id=f"s{i}")
        for _ in range(300):
            clock.advance(1)
            for i in range(10):
                await store.touch(f"s{i}")
        # s0..s4 go quiet; s5..s9 keep being touched.
        for _ in range(120):
            clock.advance(1)
            for i in range(5, 10):
                await store.touch(f"s{i}")
        assert len(adapter._due[SessionState.ACTIVE]) < 2 * 10 + 1100
        swept = await store.sweep_stale(60)
        assert sorted(s.id for s in swept) == ["s0", "s1", "s2", "s3", "s4"]
        active = await store.find(state="active")
        assert sorted(s.id for s in active) == ["s5", "s6", "s7", "s8", "s9"]


async def test_find_by_user_reads_that_users_sessions() -> None:
    adapter = InMemorySessionStoreAdapter()
    await adapter.open()
    await adapter.commit(
        [
            UserCommit("u1", 0, (_active("a", "u1", T0), _active("b", "u1", T0 + timedelta(1)))),
            UserCommit("u2", 0, (_active("c", "u2", T0 + timedelta(2)),)),
        ]
    )
    assert [s.id for s in await adapter.find(SessionQuery(user_id="u1"))] == ["b", "a"]
    # Deleting a user's last session forgets the user's sessions but keeps the version.
    await adapter.commit([UserCommit("u2", 1, (), ("c",))])
    assert await adapter.find(SessionQuery(user_id="u2")) == []
    snapshot = await adapter.load_user("u2")
    assert (snapshot.version, snapshot.sessions) == (2, ())
    assert len(adapter) == 2
    await adapter.aclose()


async def test_two_stores_sharing_one_adapter_stay_consistent(clock: FakeClock) -> None:
    adapter = InMemorySessionStoreAdapter()
    async with (
        create_session_store(adapter, clock=clock) as first,
        create_session_store(adapter, clock=clock) as second,
    ):
        created = await first.create(user_id="u1", id="s1")
        # The second store's actor loads u1 from the shared adapter.
        assert (await second.resolve(user_id="u1")).id == created.id
        # Each store's cached copy goes stale when the other commits: the versioned commit
        # notices, reloads and re-applies, so no update is lost.
        for i in range(5):
            await first.update_metadata("s1", {f"first{i}": i})
            await second.update_metadata("s1", {f"second{i}": i})
        stored = await first.get("s1")
        assert stored is not None
        assert dict(stored.metadata) == {
            **{f"first{i}": i for i in range(5)},
            **{f"second{i}": i for i in range(5)},
        }
        assert await second.get("s1") == stored
        # Exactly one session was ever made, whichever store resolves.
        assert (await first.resolve(user_id="u1")).id == "s1"
        assert len(adapter) == 1


async def test_due_index_keeps_order_when_the_clock_steps_back() -> None:
    # Keys that arrive older than the newest one go to the index's stray heap; reads merge
    # both sources in key order, and a stray that moves again is not reported twice.
    adapter = InMemorySessionStoreAdapter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(seconds=s) for s in (50, 10, 40, 20, 60, 30)]
    commits = []
    for i, at in enumerate(times):
        session = Session(f"s{i}", "u", None, SessionState.ACTIVE, at, at, at)
        commits.append(session)
        assert adapter.commit_nowait([UserCommit("u", i, (session,))]) == [None]
    due = adapter.due_nowait(SessionState.ACTIVE, t0 + timedelta(seconds=45), 10)
    assert [s.id for s in due] == ["s1", "s3", "s5", "s2"]
    assert [s.id for s in adapter.due_nowait(SessionState.ACTIVE, t0 + timedelta(hours=1), 2)] == [
        "s1",
        "s3",
    ]
    moved = Session("s1", "u", None, SessionState.ACTIVE, t0, times[4], t0)
    assert adapter.commit_nowait([UserCommit("u", 6, (moved,))]) == [None]
    later = adapter.due_nowait(SessionState.ACTIVE, t0 + timedelta(hours=1), 10)
    assert [s.id for s in later] == ["s3", "s5", "s2", "s0", "s1", "s4"] or [
        s.id for s in later
    ] == ["s3", "s5", "s2", "s0", "s4", "s1"]
    assert len({s.id for s in later}) == 6
