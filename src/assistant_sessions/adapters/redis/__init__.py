"""The Redis adapter: one session store shared by many processes and machines.

Install with ``pip install 'assistant-sessions[redis]'``. The driver is `coredis`_, whose async
API runs on anyio, so the adapter works on asyncio and trio alike, against a single server or
a Redis Cluster.

How the contract of :mod:`assistant_sessions.adapters.base` is kept:

Atomic, versioned per-user commit
    Each :class:`~assistant_sessions.adapters.UserCommit` is an *entry* of one Lua script
    (``EVALSHA``, falling back to ``EVAL`` when the server lost its script cache) that applies
    any number of users' entries in one call, each on its own: it checks the user's version
    and then writes the sessions, both indexes and the new version in one step (a commit that
    touches one session costs Redis six commands). Every key of a user carries its bucket's
    hash tag, so in a cluster a call runs on the one node that owns the bucket. Loads, commits
    and lookups submitted while a round trip is in flight, by any actor, go together in the
    next one, as one script call per bucket (group commit across users: on a single server
    with one bucket, one script call for the whole batch; at most 512 entries a round trip and
    256 a call; ``group_commit=False`` sends each call's entries on their own, for
    comparison): one round trip per batch on a single server, one per node in a cluster. Each
    call gets its own replies; an entry that fails in Redis (a key of its user holding the
    wrong type) fails its own call alone, and if the round trip fails, every call in it fails
    with :class:`~assistant_sessions.AdapterError`. A version conflict replies with the user
    as the script found it, which the actor's immediate reload uses instead of another round
    trip. Redis never applies half a script, and with ``appendonly yes`` and ``appendfsync
    always`` an acknowledged commit survives a crash of the server.

Session ids are unique across users
    Each session id has a *claim* naming its owner. On a single server (one bucket, the
    default there) claims share the users' slot and the commit entry checks and writes them
    itself, atomically. In a cluster a claim usually lives on another node, so a commit that
    creates sessions takes three steps: the script reports the ids it has not seen and the
    user's *claim epoch*, the adapter claims the ids (``HSET`` if absent), and the script runs
    again and applies if the epoch is unchanged. A claim can be left behind by a commit that
    lost its version race, or by a deleted session. A claim of another user younger than
    ``command_timeout`` may belong to a create still in flight, so it wins: the id conflicts.
    An older one is taken from its holder, but only after *fencing* the holder: a script on
    the holder's node either finds the session there (the id is taken: duplicate) or bumps
    the holder's claim epoch, so that no claim the holder took before can still be used. So at
    no time can two users both hold one id. A fence costs the holder at most one more claim
    round; it happens only when an id is reused across users, and when the claim of a deleted
    session is released. (Should both creates of a race fail, the id is free again.)

Sweeps
    Per bucket, one sorted set per state scores every session by its state clock
    (:func:`~assistant_sessions.adapters.base.state_clock`), kept exact by every commit.
    :meth:`RedisSessionStoreAdapter.due` reads ``limit`` members from each bucket's set with
    ``ZRANGE ... BYSCORE LIMIT`` (pipelined), keeps the oldest ``limit`` and fetches those
    sessions; the store re-checks each one inside its owner's actor. A sweep costs in proportion
    to the buckets and the stale sessions it finds, never to all sessions.

Queries and their cost
    :meth:`~RedisSessionStoreAdapter.load_user` and ``find(user_id=...)`` are one entry
    (``GET`` + ``HGETALL`` of one user). ``get`` is one entry on a single server, two commands
    in a cluster (claim, then the session). ``find`` without a user walks a per-bucket sorted
    set by last activity, newest first (the active or created sweep index when the query names
    that state), in pipelined batches, fetching sessions and applying the remaining filters as
    it goes: it costs in proportion to the sessions it examines, which for selective filters on
    workspace or surface can be all of them. Such a ``find`` reads committed data but is not a
    point-in-time snapshot: a session touched while it runs may be missed.

Connection loss
    Driver errors become :class:`~assistant_sessions.AdapterError`. Nothing is retried
    automatically, because a commit whose reply was lost may have been applied (the actor
    reloads the user instead); only commands a cluster refused with ``CLUSTERDOWN``, which did
    not run, are sent again. Connections are re-established on the next call, so a store
    serves again once Redis is back, without being restarted.

Cancellation
    A call cancelled while its entries wait for the next round trip is withdrawn: they are
    never sent. Once sent, a request runs to its end (bounded by the timeouts) and the
    cancellation follows; whether a commit cancelled so was applied is unknown, as after a
    storage failure.

Lifetime
    :meth:`~RedisSessionStoreAdapter.open` enters the driver's task group, and
    :meth:`~RedisSessionStoreAdapter.aclose` leaves it, so both must run in the same task and
    not inside a cancel scope opened in between, as a store does around its ``async with``.
    One adapter may serve several stores at once, like the other adapters: each ``open`` makes
    a client of its own and the matching ``aclose`` closes it, in any order, once the requests
    in flight on it have ended (requests use the oldest client still open).

``encode_commits``, ``send_entries`` and ``server_cpu_seconds`` are the adapter's own write
path, exported for the load benchmark's write ceiling (``assistant-sessions bench -a redis
--write-ceiling``); they are not part of the adapter's API for applications.

.. _coredis: https://coredis.readthedocs.io
"""

try:
    import coredis as _coredis  # noqa: F401  # the optional driver, checked before the rest
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    if exc.name != "coredis":
        raise
    raise ModuleNotFoundError(
        "the Redis adapter needs coredis: pip install 'assistant-sessions[redis]'",
        name=exc.name,
    ) from exc

from ._writepath import encode_commits, send_entries, server_cpu_seconds
from .adapter import RedisSessionStoreAdapter

__all__ = ["RedisSessionStoreAdapter", "encode_commits", "send_entries", "server_cpu_seconds"]
