"""Grouped loads (``_runtime/pump.py``, ``Storage.load_many``): on an adapter that groups commits
and reads many users in one call (``GroupLoadAdapter``), the loads of every waiting user go in
one ``load_users`` call, and its failures reach only whom they must (a storage failure of a
grouped load: ``test_pump.py``, beside that of a grouped commit)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from _faults import GroupLoadSlowAdapter, SlowAdapter, resolve_all_while_held
from assistant_sessions import AdapterError, Session, create_session_store
from assistant_sessions.adapters import GroupLoadAdapter, UserSnapshot
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

USERS = 20


class DamagedUserAdapter(GroupLoadSlowAdapter):
    """Reads the user ``damaged`` as a failed entry of its ``load_users`` call (and fails its
    ``load_user``), as an adapter does for a session it cannot decode."""

    def __init__(self) -> None:
        super().__init__(group_commit=True)

    async def load_user(self, user_id: str) -> UserSnapshot:
        if user_id == "damaged":
            raise AdapterError("damaged cannot be decoded")
        return await super().load_user(user_id)

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        loaded = await super().load_users(user_ids)
        return [
            AdapterError("damaged cannot be decoded") if user_id == "damaged" else snapshot
            for user_id, snapshot in zip(user_ids, loaded, strict=True)
        ]


class DefectiveLoadsAdapter(GroupLoadSlowAdapter):
    """Raises a defect (not a storage failure) from every ``load_users`` call."""

    def __init__(self) -> None:
        super().__init__(group_commit=True)

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        self.calls["load_users"] += 1
        raise RuntimeError("a bug in load_users")


class MiscountingLoadsAdapter(GroupLoadSlowAdapter):
    """Returns one snapshot too few from ``load_users``."""

    def __init__(self) -> None:
        super().__init__(group_commit=True)

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        return (await super().load_users(user_ids))[:-1]


@pytest.mark.parametrize("group_loads", [False, True], ids=["one-each", "grouped"])
async def test_waiting_loads_of_many_users_share_one_call_only_where_the_adapter_groups_loads(
    clock: FakeClock, group_loads: bool
) -> None:
    adapter = (
        GroupLoadSlowAdapter(group_commit=True) if group_loads else SlowAdapter(group_commit=True)
    )
    assert isinstance(adapter, GroupLoadAdapter) is group_loads
    async with create_session_store(adapter, clock=clock) as store:
        users = [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "load")
        assert [s.user_id for s in outcomes if isinstance(s, Session)] == users
        if isinstance(adapter, GroupLoadSlowAdapter):
            assert adapter.max_load_batch >= USERS // 2
            assert adapter.calls["load"] <= 4
        else:
            assert adapter.calls["load"] == USERS
        for user in users:
            assert len(await store.find(user_id=user)) == 1


async def test_a_user_whose_load_fails_alone_fails_alone(clock: FakeClock) -> None:
    adapter = DamagedUserAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        users = ["damaged"] + [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "load")
        assert adapter.max_load_batch > 1  # the damaged user shared a call with others
        assert isinstance(outcomes[0], AdapterError)
        assert [s.user_id for s in outcomes[1:] if isinstance(s, Session)] == users[1:]
        with pytest.raises(AdapterError, match="damaged cannot be decoded"):
            await store.resolve(user_id="damaged")
        assert await store.find(user_id="damaged") == []


async def test_a_defect_in_a_grouped_load_sends_each_load_again_alone(clock: FakeClock) -> None:
    adapter = DefectiveLoadsAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        users = [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "load")
        assert [s.user_id for s in outcomes if isinstance(s, Session)] == users
        assert adapter.calls["load_users"] >= 1
        assert adapter.calls["load"] == USERS  # each user's load_user, after the defect


async def test_a_load_with_a_wrong_number_of_snapshots_is_a_storage_failure(
    clock: FakeClock,
) -> None:
    adapter: GroupLoadSlowAdapter = MiscountingLoadsAdapter()
    async with create_session_store(adapter, clock=clock) as store:
        users = [f"u{i}" for i in range(USERS)]
        outcomes = await resolve_all_while_held(store, adapter, users, "load")
        miscounted = [o for o in outcomes if isinstance(o, AdapterError)]
        assert miscounted, "no call shared a miscounted load"
        assert all("outcomes for" in str(error) for error in miscounted)
        adapter.__class__ = GroupLoadSlowAdapter
        for user in users:
            assert (await store.resolve(user_id=user)).user_id == user
            assert len(await store.find(user_id=user)) == 1
