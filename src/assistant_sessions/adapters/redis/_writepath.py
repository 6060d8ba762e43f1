"""The Redis adapter's own write path, exported for the load benchmark's write ceiling.

``assistant-sessions bench -a redis --write-ceiling`` times the commits the store would make,
encoded beforehand and sent through the adapter's own script calls, with no store, actor or
batcher around them: what the client can do at best. These functions give it that path; they
are not part of the adapter's API for applications.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..base import UserCommit
from ._codec import NOTHING_CLAIMED
from ._entries import Entry
from .adapter import RedisSessionStoreAdapter

__all__ = ["encode_commits", "send_entries", "server_cpu_seconds"]


def encode_commits(adapter: RedisSessionStoreAdapter, commits: Sequence[UserCommit]) -> list[Entry]:
    """The entries of ``commits`` as :meth:`RedisSessionStoreAdapter.commit` sends them first
    (the adapter must be open: the entries name the users' buckets)."""
    adapter._redis.require()
    return [adapter._commit_entry(commit, NOTHING_CLAIMED, b"0") for commit in commits]


async def send_entries(
    adapter: RedisSessionStoreAdapter, entries: Sequence[Entry], *, per_call: int
) -> list[Any]:
    """Send ``entries`` in one round trip, ``per_call`` entries to a script call (1: a script
    call per commit, all of them in one pipeline); the reply of each.

    Raises:
        AdapterError: Redis failed, or an entry did.
    """
    with adapter._redis.errors("send entries to"):
        replies = await adapter._entries.send(entries, per_call)
        failed = next((r for r in replies if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
    return replies


async def server_cpu_seconds(adapter: RedisSessionStoreAdapter) -> float:
    """CPU seconds the Redis server has used so far (``INFO CPU``: system plus user; in a
    cluster, of every node that answered).

    Raises:
        AdapterError: Redis failed.
    """
    with adapter._redis.errors("read INFO CPU from"):
        info: dict[str, Any] = await adapter._redis.call(lambda client: client.info("cpu"))
    nodes = [info] if "used_cpu_sys" in info else [i for i in info.values() if isinstance(i, dict)]
    return sum(float(n["used_cpu_sys"]) + float(n["used_cpu_user"]) for n in nodes)
