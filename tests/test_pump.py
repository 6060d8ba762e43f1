"""The executor on storage that groups commits (``_runtime/pump.py``): the commits of many users
go to the adapter in one call, and a round's failure reaches only whom it must."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from _faults import GroupLoadSlowAdapter, SlowAdapter, gather, resolve_all_while_held
from assistant_sessions import (
    ActorFailedError,
    AdapterError,
    Session,
    create_session_store,
)
from assistant_sessions.adapters import GroupCommitAdapter, Rejection, UserCommit
from assistant_sessions.adapters.postgres import PostgresSessionStoreAdapter
from assistant_sessions.adapters.redis import RedisSessionStoreAdapter
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

USERS = 20


class PoisonAdapter(SlowAdapter):
    """Groups commits, and raises a defect (not a storage failure) for any call holding a
    commit of the user ``poison``, before applying anything."""

    def __init__(self) -> None:
        super().__init__(group_commit=True)

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        if any(c.user_id == "poison" for c in commits):
            self.calls["poisoned"] += 1
            raise RuntimeError("cannot write the poison user")
        return await super().commit(commits)


class DiskFull(AdapterError):
    """A storage failure whose ``__init__`` takes other arguments than its message."""

    def __init__(self, device: str) -> None:
        super().__init__(f"{device} is full")
        self.device = device


class MiscountingAdapter(SlowAdapter):
    """Groups commits, applies them, and returns one outcome too few."""

    def __init__(self) -> None:
        super().__init__(group_commit=True)

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        return (await super().commit(commits))[:-1]


def test_the_built_in_adapters_group_commits_and_say_so(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for adapter, grouped in (
        (SqliteSessionStoreAdapter(path), True),
        (SqliteSessionStoreAdapter(path, group_commit=False), False),
        (RedisSessionStoreAdapter(), True),
        (RedisSessionStoreAdapter(group_commit=False), False),
        (PostgresSessionStoreAdapter("dbname=x"), True),
        (PostgresSessionStoreAdapter("dbname=x", group_commit=False), False),
    ):
        assert isinstance(adapter, GroupCommitAdapter)
        assert adapter.group_commit is grouped
    assert not isinstance(SlowAdapter().inner, GroupCommitAdapter)


@pytest.mark.parametrize("group_commit", [False, True], ids=["single", "grouped"])
async def test_waiting_commits_of_many_users_share_an_adapter_call_only_when_grouped(
    clock: FakeClock, group_commit: bool
) -> None:
    adapter = SlowAdapter(group_commit=group_commit)
    async with create_session_store(adapter, clock=clock) as store:
        users = [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "commit")
        assert [s.user_id for s in outcomes if isinstance(s, Session)] == users
        assert adapter.user_commits == USERS
        if group_commit:
            # The first commit went alone; the rest waited behind it, and went together.
            assert adapter.max_commit_batch >= USERS // 2
            assert adapter.calls["commit"] <= 4
        else:
            assert adapter.max_commit_batch == 1
            assert adapter.calls["commit"] == USERS
        for user in users:
            assert len(await store.find(user_id=user)) == 1
        assert store.statistics().busy_actors == 0


async def test_a_defect_in_a_grouped_commit_reaches_only_the_user_whose_commit_raised(
    clock: FakeClock,
) -> None:
    adapter = PoisonAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        users = ["poison"] + [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "commit")
        poisoned = outcomes[0]
        assert isinstance(poisoned, ActorFailedError)
        assert isinstance(poisoned.__cause__, RuntimeError)
        # Everyone else was served: their commits were sent again, each alone.
        assert [s.user_id for s in outcomes[1:] if isinstance(s, Session)] == users[1:]
        assert adapter.calls["poisoned"] >= 2
        assert await store.find(user_id="poison") == []
        for user in users[1:]:
            assert len(await store.find(user_id=user)) == 1
        # The poison user's actor restarts; its next call fails the same way, nobody else's.
        with pytest.raises(ActorFailedError):
            await store.resolve(user_id="poison")
        assert (await store.resolve(user_id="u0")).user_id == "u0"


@pytest.mark.parametrize("operation", ["commit", "load"])
async def test_a_storage_failure_of_a_grouped_call_is_each_callers_own_error(
    clock: FakeClock, operation: str
) -> None:
    # The commits of many users in one call, or (grouped loads) their loads.
    adapter = GroupLoadSlowAdapter(group_commit=True)
    async with create_session_store(adapter, clock=clock) as store:
        users = [f"u{i}" for i in range(USERS)]
        adapter.fail(operation, DiskFull("/dev/sda"), times=USERS)
        outcomes = await resolve_all_while_held(store, adapter, users, operation)
        adapter.heal(operation)
        failed = [o for o in outcomes if isinstance(o, DiskFull)]
        assert len(failed) == USERS
        # Each caller has an exception of its own (its traceback is its own), of the same class
        # and with the same attributes.
        assert len({id(error) for error in failed}) == USERS
        assert adapter.calls[operation] < USERS
        assert {(str(error), error.device) for error in failed} == {
            ("/dev/sda is full", "/dev/sda")
        }
        assert adapter.applied == 0
        assert store.statistics().adapter_errors == USERS
        # Nothing half-applied: the next calls create each user's session once.
        again = await gather(USERS, lambda i: store.resolve(user_id=users[i]))
        assert [s.user_id for s in again] == users
        for user in users:
            assert len(await store.find(user_id=user)) == 1


async def test_a_commit_with_a_wrong_number_of_outcomes_is_a_storage_failure(
    clock: FakeClock,
) -> None:
    adapter: SlowAdapter = MiscountingAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        with pytest.raises(AdapterError, match="returned 0 outcomes for 1 calls"):
            await store.resolve(user_id="u")
        # Its outcome was unknown: the actor reloads, and finds what was applied.
        adapter.__class__ = SlowAdapter
        session = await store.resolve(user_id="u")
        assert [s.id for s in await store.find(user_id="u")] == [session.id]
