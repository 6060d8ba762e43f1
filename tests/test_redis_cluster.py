"""The Redis adapter against a private 3-node Redis Cluster: the adapter contract, the store
end to end, and ids kept unique across users whose claims live on other nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from assistant_sessions import SessionConflictError, SessionState, create_session_store
from assistant_sessions.adapters.redis import RedisSessionStoreAdapter
from assistant_sessions.testing import AdapterContract, FakeClock

if TYPE_CHECKING:
    from redis_fixtures import RedisCluster

pytest_plugins = ["redis_fixtures"]

pytestmark = pytest.mark.anyio


class TestRedisClusterContract(AdapterContract):
    @pytest.fixture
    def adapter(self, redis_cluster: RedisCluster, key_prefix: str) -> RedisSessionStoreAdapter:
        return RedisSessionStoreAdapter(redis_cluster.url, cluster=True, key_prefix=key_prefix)


def cluster_store(cluster: RedisCluster, prefix: str, clock: FakeClock) -> Any:
    adapter = RedisSessionStoreAdapter(cluster.url, cluster=True, key_prefix=prefix)
    return create_session_store(adapter, clock=clock, default_ttl=60)


async def test_the_store_runs_on_the_cluster(
    redis_cluster: RedisCluster, key_prefix: str, clock: FakeClock
) -> None:
    async with cluster_store(redis_cluster, key_prefix, clock) as store:
        users = [f"user-{n}" for n in range(30)]
        first = {u: await store.resolve(user_id=u, surface_id="web") for u in users}
        for u in users:
            assert (await store.resolve(user_id=u, surface_id="web")).id == first[u].id
        await store.update_metadata(first[users[0]].id, {"k": "v"})
        clock.advance(120)
        await store.touch(first[users[1]].id)
        swept = await store.sweep_stale()
        assert {s.id for s in swept} == {first[u].id for u in users[2:]} | {first[users[0]].id}
        assert len(await store.find(state=SessionState.SUSPENDED, limit=100)) == 29
        assert [s.id for s in await store.find(state=SessionState.ACTIVE)] == [first[users[1]].id]
        assert (await store.get(first[users[0]].id)).metadata["k"] == "v"  # type: ignore[union-attr]
    # The users really are spread over the nodes (else this would test one node only).
    adapter = RedisSessionStoreAdapter(redis_cluster.url, cluster=True, key_prefix=key_prefix)
    await adapter.open()
    try:
        assert adapter.buckets == 1024
    finally:
        await adapter.aclose()


async def test_two_stores_resolving_at_once_create_one_session_per_user(
    redis_cluster: RedisCluster, key_prefix: str, clock: FakeClock
) -> None:
    users = [f"user-{n}" for n in range(20)]
    got: list[dict[str, set[str]]] = [{u: set() for u in users} for _ in range(2)]
    async with (
        cluster_store(redis_cluster, key_prefix, clock) as a,
        cluster_store(redis_cluster, key_prefix, clock) as b,
    ):

        async def resolve(n: int, store: Any, user: str) -> None:
            got[n][user].add((await store.resolve(user_id=user)).id)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    for user in users:
                        tg.start_soon(resolve, 0, a, user)
                        tg.start_soon(resolve, 1, b, user)
        for user in users:
            assert len(got[0][user]) == 1
            assert got[0][user] == got[1][user]
            assert len(await a.find(user_id=user)) == 1


async def test_a_session_id_stays_unique_across_users_on_different_nodes(
    redis_cluster: RedisCluster, key_prefix: str, clock: FakeClock
) -> None:
    async with (
        cluster_store(redis_cluster, key_prefix, clock) as a,
        cluster_store(redis_cluster, key_prefix, clock) as b,
    ):
        ids = [f"shared-{n}" for n in range(10)]
        outcomes: dict[str, list[str]] = {i: [] for i in ids}

        async def create(store: Any, user: str, session_id: str) -> None:
            try:
                await store.create(user_id=user, id=session_id)
            except SessionConflictError:
                return
            outcomes[session_id].append(user)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for session_id in ids:
                    for n, store in enumerate((a, b, a, b)):
                        tg.start_soon(create, store, f"user-{n}", session_id)
        for session_id in ids:
            # Four users raced for the id: exactly one got it, and it is the stored owner.
            assert len(outcomes[session_id]) == 1
            stored = await b.get(session_id)
            assert stored is not None
            assert stored.user_id == outcomes[session_id][0]
        # A deleted session's id is free again for another user.
        await a.expire(ids[0])
