"""The Redis adapter's class: the contract of :mod:`assistant_sessions.adapters.base` on Redis.

How it is kept -- the scripts, the claim protocol, sweeps and what each call costs -- is
described in the documentation of :mod:`assistant_sessions.adapters.redis`.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any, Final, final

import anyio

from ...errors import AdapterError, InvalidInputError, InvalidTypeError
from ...model import Session, SessionQuery, SessionState, recency_key
from .._batching import Batcher
from .._encoding import decode_session
from ..base import Rejection, UserCommit, UserSnapshot
from . import _claims as claims
from . import _queries as queries
from . import _scripts as lua
from ._codec import (
    NOTHING_CLAIMED,
    commit_entry,
    id_entry,
    loaded,
    to_bytes,
)
from ._conflicts import LEASE_MS, Conflicts
from ._driver import Connection
from ._entries import Entries, Entry, Settled
from ._keys import (
    CLUSTER_BUCKETS,
    LAYOUT,
    MAX_BUCKETS,
    SINGLE_BUCKETS,
    KeyLayout,
)

__all__ = ["MAX_ENTRIES", "RedisSessionStoreAdapter"]

#: Most entries (one user's load, commit or get each) sent in one round trip; what is left
#: waits for the next one.
MAX_ENTRIES: Final = 512


@final
class RedisSessionStoreAdapter:
    """Keeps sessions in Redis (a single server or a cluster), shared by many processes.

    Every process that shares the sessions must use the same ``key_prefix`` (and the same
    ``buckets``, which the adapter records under ``<key_prefix>:meta`` and checks on
    :meth:`open`). Durability is Redis's own: run it with ``appendonly yes`` and
    ``appendfsync always`` to keep every acknowledged write across a crash of the server.
    See the documentation of :mod:`assistant_sessions.adapters.redis` for the data layout and
    what each call costs.

    Example::

        adapter = RedisSessionStoreAdapter("redis://127.0.0.1:6379/0")
        async with create_session_store(adapter) as store:
            session = await store.resolve(user_id="u1", surface_id="web")

    Args:
        url: Where Redis is: ``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS,
            or ``unix:///path/to/socket``. For a cluster, any one node.
        cluster: Talk to a Redis Cluster (discovering its nodes from ``url``).
        key_prefix: Prefix of every key the adapter writes; must not contain ``{`` or ``}``.
        buckets: How many slot groups users are spread over (1 to 16384). ``None``: what the
            stored data says, else 1 on a single server and 1024 in a cluster. With one bucket
            every commit is one atomic step, and one script call applies the commits of all
            users at once; with more, a call per bucket, and creating a session takes two more
            round trips (the cluster claim protocol).
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds to wait for a reply before the call fails with
            :class:`~assistant_sessions.AdapterError`; also how long another user's claim on
            a session id is presumed to belong to a create still in flight.
        max_connections: Most connections per server.
        group_commit: Send the loads and commits of concurrent operations together, one
            round trip at a time, as one script call per bucket (the default). ``False`` sends
            each operation's at once, in a round trip of their own (concurrent ones share the
            connections): slower, for comparison.

    Raises:
        InvalidInputError: A bad ``key_prefix``, ``buckets`` or timeout.
        InvalidTypeError: An argument has the wrong type.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        key_prefix: str = "as",
        buckets: int | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        max_connections: int = 64,
        group_commit: bool = True,
    ) -> None:
        if not isinstance(url, str) or not isinstance(key_prefix, str):
            raise InvalidTypeError("url and key_prefix must be str")
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise InvalidInputError("key_prefix must be non-empty, without '{' or '}'")
        if buckets is not None:
            if type(buckets) is not int:
                raise InvalidTypeError(f"buckets must be an int, not {type(buckets).__name__}")
            if not 1 <= buckets <= MAX_BUCKETS:
                raise InvalidInputError(f"buckets must be in 1..{MAX_BUCKETS}, got {buckets}")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("command_timeout", command_timeout),
            ("max_connections", max_connections),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidTypeError(f"{name} must be a number, not {type(value).__name__}")
            if not value > 0:
                raise InvalidInputError(f"{name} must be positive, got {value!r}")
        self.url = url
        self.cluster = cluster
        self.key_prefix = key_prefix
        self._wanted_buckets = buckets
        #: Seconds a claim of another user is left alone: its create may still be in flight.
        self._claim_grace = float(command_timeout)
        self._prefix = to_bytes(key_prefix)
        self._redis = Connection(
            url,
            cluster=cluster,
            connect_timeout=float(connect_timeout),
            command_timeout=float(command_timeout),
            max_connections=int(max_connections),
        )
        self._token = uuid.uuid4().hex.encode()
        # Holds the key layout: no buckets until open reads them from Redis.
        self._entries = Entries(self._redis, self._token)
        self._entries.use(KeyLayout(self._prefix, 0))
        self.group_commit = bool(group_commit)
        self._batcher: Batcher[Sequence[Entry], list[Any]] = Batcher(
            self._entries.run, MAX_ENTRIES, size=len
        )
        # Every entry goes through here: batched, or on its own.
        self._send = self._batcher.submit if self.group_commit else self._entries.send_now
        self._conflicts = Conflicts()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        grouped = "" if self.group_commit else " group_commit=False"
        return f"<RedisSessionStoreAdapter {kind} {self.url!r} prefix={self.key_prefix!r}{grouped}>"

    @property
    def buckets(self) -> int:
        """How many buckets the adapter uses: read from Redis on :meth:`open` (0 before)."""
        return self._entries.keys.buckets

    @property
    def _keys(self) -> KeyLayout:
        return self._entries.keys

    # -- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and check (or record) the key layout under ``<key_prefix>:meta``.

        Raises:
            AdapterError: Redis is unreachable, or the stored layout differs from this
                adapter's (another ``buckets``, or a newer layout).
        """
        await self._redis.open(self._check_layout)

    async def aclose(self) -> None:
        """Close every connection. The data stays in Redis. Closing twice is harmless."""
        await self._redis.aclose()

    async def _check_layout(self) -> None:
        default = CLUSTER_BUCKETS if self.cluster else SINGLE_BUCKETS
        wanted = str(self._wanted_buckets or default).encode()
        # Atomic, because processes opening at once race to record the layout: the first
        # one's wins for all.
        layout, stored = await self._eval(lua.INIT_META, [self._keys.meta], [LAYOUT, wanted])
        if layout != LAYOUT or stored is None:
            raise AdapterError(
                f"keys under {self.key_prefix!r} use layout {layout!r}; this adapter knows "
                f"layout {LAYOUT!r}"
            )
        buckets = int(stored)
        if self._wanted_buckets is not None and self._wanted_buckets != buckets:
            raise AdapterError(
                f"keys under {self.key_prefix!r} were written with buckets={buckets}, "
                f"not {self._wanted_buckets}"
            )
        self._entries.use(KeyLayout(self._prefix, buckets))

    async def _eval(self, script: lua.Script, keys: list[bytes], args: list[bytes]) -> Any:
        return await self._redis.eval(script, keys, args)

    def _user_tag(self, user: bytes) -> bytes:
        # For tests that write a user's keys by hand.
        return self._keys.user_tag(user)

    # -- per-user load and commit --------------------------------------------------------------

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version, read atomically.

        Raises:
            AdapterError: Redis failed, or a stored session cannot be decoded.
            InvalidInputError: The id contains NUL (a store never passes one).

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        (state,) = await self.load_users((user_id,))
        if isinstance(state, AdapterError):
            raise state
        return state

    async def load_users(self, user_ids: Sequence[str]) -> list[UserSnapshot | AdapterError]:
        """:meth:`load_user` of each of ``user_ids``, as entries of one round trip (the store's
        grouped loads: :class:`~assistant_sessions.adapters.GroupLoadAdapter`); a user whose
        entry failed in Redis, or with a stored session that cannot be decoded, gets its own
        ``AdapterError``. Raises and is cancelled as :meth:`load_user`.
        """
        self._redis.require()  # before the key layout, which is read on open
        read: list[UserSnapshot | AdapterError | None] = list(map(self._conflicts.reuse, user_ids))
        todo = [index for index, state in enumerate(read) if state is None]
        if not todo:  # all of them answered from what their conflicts read
            await anyio.lowlevel.checkpoint()
        else:
            errors = self._redis.errors("load a user from")
            with errors:
                users = [to_bytes(user_ids[index]) for index in todo]
                entries = [(self._keys.bucket(user), id_entry(b"L", user)) for user in users]
                replies = await self._send(Settled(entries))
            for index, reply in zip(todo, replies, strict=True):
                read[index] = loaded(user_ids[index], reply, errors.failure)
        return [state for state in read if state is not None]

    def _commit_entry(self, commit: UserCommit, claimed: Container[bytes], epoch: bytes) -> Entry:
        user = to_bytes(commit.user_id)
        lease = self._conflicts.lease(commit.user_id)
        return self._keys.bucket(user), commit_entry(user, commit, claimed, epoch, lease)

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit atomically if its version matches.

        The commits go to Redis in one round trip, together with the loads and commits of
        other calls made meanwhile (group commit across users and actors), as entries of one
        script call per bucket. Cancelling the call while they are in flight leaves it
        unknown which were applied, like a storage failure.

        Returns:
            One entry per commit, in order: ``None`` if applied, else why it was rejected.

        Raises:
            AdapterError: Redis failed; which commits were applied is unknown.
            InvalidInputError: An id contains NUL (a store never passes one); nothing was sent.
        """
        self._redis.require()  # before the key layout, which is read on open
        results: list[Rejection | None] = [None] * len(commits)
        if not commits:
            await anyio.lowlevel.checkpoint()
            return results
        entry = self._commit_entry
        with self._redis.errors("commit to"):
            replies = await self._send([entry(c, NOTHING_CLAIMED, b"0") for c in commits])
            for reply in replies:
                if reply != lua.APPLIED:
                    break
            else:
                # Everything applied: the common case.
                for commit in commits:
                    self._conflicts.won(commit.user_id)
                if self._keys.buckets > 1 and any(c.deletes for c in commits):
                    await self._release(commits)
                return results
            await self._settle(commits, replies, results)
        return results

    async def _settle(
        self,
        commits: Sequence[UserCommit],
        replies: list[Any],
        results: list[Rejection | None],
    ) -> None:
        """Give every commit its outcome from the first round's ``replies``: claim the new
        session ids that need it and send those commits again, release the claims of deleted
        sessions, and wait for the lease of a writer in another process."""
        claimed: list[Container[bytes]] = [NOTHING_CLAIMED] * len(commits)
        epochs = [b"0"] * len(commits)
        todo = list(range(len(commits)))
        applied: list[UserCommit] = []
        wait = 0
        # A round applies, or names the new ids to claim first (and the claim epoch). A fence
        # between claiming and applying costs one more round.
        for attempt in range(claims.ATTEMPTS):
            if attempt:
                replies = await self._send(
                    [self._commit_entry(commits[i], claimed[i], epochs[i]) for i in todo]
                )
            again = []
            for i, reply in zip(todo, replies, strict=True):
                code = lua.APPLIED if reply == lua.APPLIED else int(reply[0])
                user_id = commits[i].user_id
                if code == lua.VERSION:
                    results[i] = Rejection.VERSION
                    wait = max(wait, self._conflicts.lost(user_id, reply))
                    continue
                self._conflicts.won(user_id)
                if code == lua.APPLIED:
                    applied.append(commits[i])
                elif code == lua.DUPLICATE:
                    results[i] = Rejection.DUPLICATE_ID
                elif await self._claim_all(to_bytes(user_id), reply[2:]):
                    epochs[i] = reply[1]
                    claimed[i] = set(reply[2:])
                    again.append(i)
                else:
                    results[i] = Rejection.DUPLICATE_ID
            todo = again
            if not todo:
                break
        else:
            raise AdapterError("could not claim new session ids: too many concurrent claimers")
        if self._keys.buckets > 1:
            await self._release(applied)
        if wait > 0:
            # A writer in another process holds a lease on the user: give it the time to
            # commit rather than lose the retry to it.
            await anyio.sleep(min(wait, LEASE_MS) / 1000)

    async def _release(self, applied: Sequence[UserCommit]) -> None:
        """Release the claims of the sessions that ``applied`` commits deleted (buckets > 1)."""
        for commit in applied:
            user = to_bytes(commit.user_id)
            for deleted in commit.deletes:
                await claims.release(self._redis, self._keys, user, to_bytes(deleted))

    # -- the cluster claim protocol (see _claims) ----------------------------------------

    async def _claim_all(self, user: bytes, session_ids: Sequence[bytes]) -> bool:
        for session_id in session_ids:
            if not await self._claim(user, session_id):
                return False
        return True

    async def _claim(self, user: bytes, session_id: bytes) -> bool:
        """Make ``user`` the holder of ``session_id``'s claim; ``False`` if another user has it."""
        return await claims.claim(
            self._redis, self._keys, user, session_id, grace=self._claim_grace
        )

    # -- queries -------------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        """Return the committed session with this id, or ``None``.

        Raises:
            AdapterError: Redis failed, or the session cannot be decoded.
            InvalidInputError: The id contains NUL (a store never passes one; one server).

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        self._redis.require()  # before the key layout, which is read on open
        sid = to_bytes(session_id)
        claims_key = self._keys.claims_keys(sid)[0]
        with self._redis.errors("read a session from"):
            if self._keys.buckets == 1:
                (raw,) = await self._send([(0, id_entry(b"G", sid))])
            else:
                held = await self._redis.call(lambda client: client.hget(claims_key, sid))
                if held is None:
                    return None
                sessions_key = self._keys.sessions_key(claims.holder(held))
                raw = await self._redis.call(lambda client: client.hget(sessions_key, sid))
        return None if raw is None else decode_session(raw, session_id)

    async def due(
        self,
        state: SessionState,
        before: datetime,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``.

        Ordered by (state clock, id), after ``after`` if given. Reads ``limit`` index entries
        per bucket (pipelined; all the ties of a clock where a read stops), then the first
        ``limit`` sessions among them.

        Raises:
            AdapterError: Redis failed, or a session cannot be decoded.

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        self._redis.require()  # with no buckets yet, the walk would find nothing
        with self._redis.errors("read sweep candidates from"):
            return await queries.due(self._redis, self._keys, state, before, limit, after)

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return committed sessions matching ``query``, most recently active first.

        With ``user_id``: one script call. Without: walks an index by last activity (see the
        module documentation for the cost).

        Raises:
            AdapterError: Redis failed, or a session cannot be decoded.

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        self._redis.require()  # with no buckets yet, the walk would find nothing
        if query.user_id is not None:
            snapshot = await self.load_user(query.user_id)
            return heapq.nlargest(
                query.limit, filter(query.matches, snapshot.sessions), key=recency_key
            )
        with self._redis.errors("search sessions in"):
            return await queries.scan(self._redis, self._keys, query)
