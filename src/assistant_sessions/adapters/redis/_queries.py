"""Reads across users in the Redis adapter: sweeps and ``find`` without a user.

These walk the per-bucket sorted sets and fetch the sessions they name, batched so that the
cost follows the buckets and the sessions examined rather than all sessions (see the module
documentation of :mod:`~assistant_sessions.adapters.redis`). The walking is the intricate
part of those reads, so it lives here; the adapter only adds the error translation.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from operator import methodcaller
from typing import Final

from coredis.tokens import PureToken

from ...model import Session, SessionQuery, SessionState, recency_key
from .._encoding import decode_session, to_micros
from ..base import state_clock
from ._codec import from_bytes, member, split_member
from ._driver import Connection
from ._keys import KeyLayout

__all__ = ["due", "scan"]

#: Members read per bucket and round by ``find`` without a user.
_FIND_BATCH: Final = 128


async def _fetch(
    redis: Connection, keys: KeyLayout, members: Sequence[bytes]
) -> dict[bytes, Session]:
    """The sessions named by zset members (those still there), in one pipeline."""
    by_user: defaultdict[bytes, list[bytes]] = defaultdict(list)
    for entry in members:
        user, sid = split_member(entry)
        by_user[user].append(sid)
    users = list(by_user)
    replies = await redis.pipeline(
        [methodcaller("hmget", keys.sessions_key(user), by_user[user]) for user in users]
    )
    found: dict[bytes, Session] = {}
    for user, raws in zip(users, replies, strict=True):
        for sid, raw in zip(by_user[user], raws, strict=True):
            if raw is not None:
                found[member(user, sid)] = decode_session(raw, from_bytes(sid))
    return found


def _by_score(key: bytes, low: float, high: float, count: int | None = None) -> methodcaller:
    """A ZRANGE BYSCORE (with scores) of ``key`` from ``low`` to ``high``, first ``count``."""
    if count is None:
        return methodcaller("zrange", key, low, high, sortby=PureToken.BYSCORE, withscores=True)
    return methodcaller(
        "zrange",
        key,
        low,
        high,
        sortby=PureToken.BYSCORE,
        withscores=True,
        offset=0,
        count=count,
    )


async def _due_entries(
    redis: Connection,
    keys: KeyLayout,
    state: SessionState,
    highest: int,
    count: int,
    cursor: tuple[int, str] | None,
) -> list[tuple[int, str, bytes]]:
    """The first ``count`` due-index entries with a score up to ``highest`` that sort after
    ``cursor``, as (score, session id, member), ordered by (score, id)."""
    indexes = [keys.due_key(k, state) for k in range(keys.buckets)]
    low = float("-inf") if cursor is None else cursor[0] + 1  # scores are integers
    calls = [_by_score(key, low, highest, count) for key in indexes]
    if cursor is not None and cursor[0] <= highest:
        # A zset orders the ties of one score by member, not by id: read all of the cursor's.
        calls += [_by_score(key, cursor[0], cursor[0]) for key in indexes]
    replies = await redis.pipeline(calls)
    found: dict[bytes, int] = {}
    for reply in replies[: len(indexes)]:
        found.update((entry, int(score)) for entry, score in reply)
    for reply in replies[len(indexes) :]:
        for entry, score in reply:
            if cursor is not None and from_bytes(split_member(entry)[1]) > cursor[1]:
                found[entry] = int(score)
    # A full reply may have cut the ties of its last score short: read all of them.
    full = [
        (key, reply[-1][1])
        for key, reply in zip(indexes, replies, strict=False)
        if len(reply) >= count
    ]
    if full:
        for reply in await redis.pipeline([_by_score(key, last, last) for key, last in full]):
            found.update((entry, int(score)) for entry, score in reply)
    ordered = sorted(
        (score, from_bytes(split_member(entry)[1]), entry) for entry, score in found.items()
    )
    return ordered[:count]


async def due(
    redis: Connection,
    keys: KeyLayout,
    state: SessionState,
    before: datetime,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Session]:
    """Up to ``limit`` sessions in ``state`` with a state clock before ``before``, ordered by
    (state clock, id), after ``after`` if given (keyset paging).

    Index entries whose session changed since are dropped and reading goes on past them, so a
    short page means there is no more.

    Raises:
        AdapterError: A session cannot be decoded (driver errors are the caller's to translate).
    """
    highest = to_micros(before) - 1
    cursor = None if after is None else (to_micros(after[0]), after[1])
    result: list[Session] = []
    while len(result) < limit:
        count = limit - len(result)
        entries = await _due_entries(redis, keys, state, highest, count, cursor)
        sessions = await _fetch(redis, keys, [entry for _, _, entry in entries])
        for _, _, entry in entries:
            session = sessions.get(entry)
            # A session may have changed since the index was read: only current ones count.
            if session is not None and session.state is state and state_clock(session) < before:
                result.append(session)
        if len(entries) < count:
            break
        cursor = (entries[-1][0], entries[-1][1])
    return result


#: The states whose due index is ordered by last activity.
_BY_ACTIVITY: Final = frozenset((SessionState.CREATED, SessionState.ACTIVE))


async def scan(redis: Connection, keys: KeyLayout, query: SessionQuery) -> list[Session]:
    """Sessions of any user matching ``query``, most recently active first.

    Raises:
        AdapterError: A session cannot be decoded (driver errors are the caller's to translate).
    """
    states = query.state
    # For created and active sessions the state clock is the last activity: use those indexes
    # (one walk per state and bucket, merged below, as the buckets are).
    if states is not None and states <= _BY_ACTIVITY:
        indexes = [
            keys.due_key(k, state)
            for state in sorted(states, key=lambda s: s.value)
            for k in range(keys.buckets)
        ]
    else:
        indexes = [keys.recency_key(k) for k in range(keys.buckets)]
    lowest = float("-inf") if query.active_after is None else to_micros(query.active_after) + 1
    top = float("inf") if query.after is None else to_micros(query.after[0])
    batch = min(max(query.limit, _FIND_BATCH), 1000)
    # Per bucket: (highest score still to read, how many members at that score were read).
    cursors: dict[bytes, tuple[float, int]] = dict.fromkeys(indexes, (top, 0))
    found: list[Session] = []
    seen: set[str] = set()
    while cursors:
        active = list(cursors.items())
        replies = await redis.pipeline(
            [
                methodcaller(
                    "zrange",
                    key,
                    high,
                    lowest,
                    sortby=PureToken.BYSCORE,
                    rev=True,
                    withscores=True,
                    offset=skip,
                    count=batch,
                )
                for key, (high, skip) in active
            ]
        )
        sessions = await _fetch(redis, keys, [m for reply in replies for m, _ in reply])
        for session in sessions.values():
            if session.id not in seen and query.matches(session):
                seen.add(session.id)
                found.append(session)
        if len(found) > query.limit:
            found = heapq.nlargest(query.limit, found, key=recency_key)
        # Once `limit` matches are in, a bucket whose next entries are all older than the
        # last of them cannot contribute.
        floor = (
            to_micros(min(found, key=recency_key).last_activity_at)
            if len(found) >= query.limit
            else float("-inf")
        )
        for (key, (high, skip)), reply in zip(active, replies, strict=True):
            if len(reply) < batch:
                del cursors[key]
                continue
            last = reply[-1][1]
            ties = sum(1 for _, score in reply if score == last)
            cursor = (last, skip + len(reply)) if last == high else (last, ties)
            if cursor[0] < floor:
                del cursors[key]
            else:
                cursors[key] = cursor
    return sorted(found, key=recency_key, reverse=True)[: query.limit]
