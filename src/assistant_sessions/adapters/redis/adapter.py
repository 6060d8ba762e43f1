"""The Redis adapter's class: the contract of :mod:`assistant_sessions.adapters.base` on Redis.

How it is kept -- the scripts, the claim protocol, sweeps and what each call costs -- is
described in the documentation of :mod:`assistant_sessions.adapters.redis`.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Sequence
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
from ._codec import from_bytes, member, to_bytes, upsert_args
from ._driver import Connection, ScriptCall
from ._keys import (
    CLUSTER_BUCKETS,
    LAYOUT,
    MAX_BUCKETS,
    SINGLE_BUCKETS,
    KeyLayout,
)

__all__ = ["MAX_CALLS", "RedisSessionStoreAdapter"]

#: Most script calls sent in one pipeline; what is left waits for the next one.
MAX_CALLS: Final = 512

#: Seconds after a version conflict during which the same task's reload of that user may use
#: the state the conflict read (the actor reloads at once; later loads must read Redis).
_REUSE_WINDOW: Final = 0.01
_MAX_REJECTED: Final = 1024
#: After this many version conflicts in a row, a writer asks for a lease on the user's
#: commits (see ``_scripts.COMMIT``), held for at most LEASE_MS milliseconds.
_LEASE_AFTER: Final = 2
_LEASE_MS: Final = 250


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
            every commit is a single atomic script; with more, creating a session takes two
            more round trips (the cluster claim protocol).
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds to wait for a reply before the call fails with
            :class:`~assistant_sessions.AdapterError`; also how long another user's claim on
            a session id is presumed to belong to a create still in flight.
        max_connections: Most connections per server.
        group_commit: Send the script calls of concurrent operations together, one pipeline
            at a time (the default). ``False`` sends each operation's calls at once, in a
            round trip of their own (concurrent ones share the connections): slower, for
            comparison.

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
        # No buckets until open reads them from Redis.
        self._keys = KeyLayout(self._prefix, 0)
        self.group_commit = bool(group_commit)
        self._batcher: Batcher[Sequence[ScriptCall], list[Any]] = Batcher(
            self._redis.send_batch, MAX_CALLS, size=len
        )
        # Every script call goes through here: batched, or on its own.
        self._send = self._batcher.submit if self.group_commit else self._redis.send_scripts
        # The user as a version conflict found it, for the reload that follows at once.
        self._rejected: dict[str, tuple[UserSnapshot, object, float]] = {}
        # Version conflicts in a row, per user: writers that keep losing ask for a lease.
        self._losses: dict[str, int] = {}
        self._token = uuid.uuid4().hex.encode()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        grouped = "" if self.group_commit else " group_commit=False"
        return f"<RedisSessionStoreAdapter {kind} {self.url!r} prefix={self.key_prefix!r}{grouped}>"

    @property
    def buckets(self) -> int:
        """How many buckets the adapter uses: read from Redis on :meth:`open` (0 before)."""
        return self._keys.buckets

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
        self._keys = KeyLayout(self._prefix, buckets)

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

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        rejected = self._rejected.pop(user_id, None)
        if rejected is not None:
            snapshot, task, at = rejected
            # Only the reload that follows the conflict in the same task may use what the
            # conflict read: anything later must read Redis again.
            if task == anyio.get_current_task().id and anyio.current_time() - at < _REUSE_WINDOW:
                await anyio.lowlevel.checkpoint()
                return snapshot
        self._redis.require()  # before the key layout, which is read on open
        user = to_bytes(user_id)
        keys = [self._keys.version_key(user), self._keys.sessions_key(user)]
        with self._redis.errors("load a user from"):
            ((version, flat),) = await self._send([(lua.LOAD, keys, [])])
        return self._snapshot(user_id, version, flat)

    @staticmethod
    def _snapshot(user_id: str, version: Any, flat: list[bytes]) -> UserSnapshot:
        sessions = tuple(
            decode_session(flat[i + 1], from_bytes(flat[i])) for i in range(0, len(flat), 2)
        )
        return UserSnapshot(user_id, int(version), sessions)

    def _commit_call(self, commit: UserCommit, claimed: set[bytes], epoch: bytes) -> ScriptCall:
        user = to_bytes(commit.user_id)
        keys = self._keys.commit_keys(user)
        losing = self._losses.get(commit.user_id, 0) >= _LEASE_AFTER
        args = [
            str(commit.expected_version).encode(),
            b"1" if self._keys.buckets == 1 else b"0",
            claims.owner(user),
            self._keys.sessions_prefix(self._keys.bucket(user)),
            str(len(commit.upserts)).encode(),
            str(len(commit.deletes)).encode(),
            epoch,
            self._token,
            str(_LEASE_MS).encode() if losing else b"0",
        ]
        for session in commit.upserts:
            if session.user_id != commit.user_id:
                raise AdapterError(
                    f"commit of user {commit.user_id!r} upserts session {session.id!r} "
                    f"of user {session.user_id!r}"
                )
            args += upsert_args(user, session, claimed)
        for deleted in commit.deletes:
            session_id = to_bytes(deleted)
            args += (session_id, member(user, session_id))
        return lua.COMMIT, keys, args

    async def commit(self, commits: Sequence[UserCommit]) -> list[Rejection | None]:
        """Apply each user's commit atomically if its version matches (one script per user).

        The scripts of all commits go to Redis in one pipeline, together with those of other
        calls made meanwhile (group commit across users and actors). Cancelling the call while
        the scripts are in flight leaves it unknown which were applied, like a storage failure.

        Returns:
            One entry per commit, in order: ``None`` if applied, else why it was rejected.

        Raises:
            AdapterError: Redis failed; which commits were applied is unknown.
        """
        self._redis.require()  # before the key layout, which is read on open
        results: list[Rejection | None] = [None] * len(commits)
        claimed: list[set[bytes]] = [set() for _ in commits]
        epochs = [b"0"] * len(commits)
        todo = list(range(len(commits)))
        released: list[tuple[bytes, bytes]] = []
        wait = 0
        with self._redis.errors("commit to"):
            # A round applies, or names the new ids to claim first (and the claim epoch). A
            # fence between claiming and applying costs one more round.
            for _ in range(claims.ATTEMPTS):
                replies = await self._send(
                    [self._commit_call(commits[i], claimed[i], epochs[i]) for i in todo]
                )
                again = []
                for i, reply in zip(todo, replies, strict=True):
                    code = int(reply[0])
                    user_id = commits[i].user_id
                    if code == lua.VERSION:
                        if len(self._losses) >= _MAX_REJECTED:
                            self._losses.clear()
                        self._losses[user_id] = self._losses.get(user_id, 0) + 1
                        wait = max(wait, int(reply[3]))
                    else:
                        self._losses.pop(user_id, None)
                    if code == lua.APPLIED:
                        if self._keys.buckets > 1:
                            user = to_bytes(commits[i].user_id)
                            released += ((user, to_bytes(d)) for d in commits[i].deletes)
                    elif code == lua.VERSION:
                        results[i] = Rejection.VERSION
                        self._remember_rejection(commits[i].user_id, reply)
                    elif code == lua.DUPLICATE:
                        results[i] = Rejection.DUPLICATE_ID
                    elif await self._claim_all(to_bytes(commits[i].user_id), reply[2:]):
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
        for user, session_id in released:
            await claims.release(self._redis, self._keys, user, session_id)
        if wait > 0:
            # A writer in another process holds a lease on the user: give it the time to
            # commit rather than lose the retry to it.
            await anyio.sleep(min(wait, _LEASE_MS) / 1000)
        return results

    def _remember_rejection(self, user_id: str, reply: list[Any]) -> None:
        # The actor reloads a rejected user at once; the script already read it (in the same
        # atomic step as the check), which saves that reload a round trip.
        if len(self._rejected) >= _MAX_REJECTED:
            self._rejected.clear()
        try:
            snapshot = self._snapshot(user_id, reply[1], reply[2])
        except AdapterError:
            return  # the reload reads it again, and reports the failure
        self._rejected[user_id] = (snapshot, anyio.get_current_task().id, anyio.current_time())

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

        Cancelling it changes nothing; a request already sent is let finish first.
        """
        self._redis.require()  # before the key layout, which is read on open
        sid = to_bytes(session_id)
        claims_key = self._keys.claims_keys(sid)[0]
        with self._redis.errors("read a session from"):
            if self._keys.buckets == 1:
                call = (lua.GET_INLINE, [claims_key], [sid, self._keys.sessions_prefix(0)])
                (raw,) = await self._send([call])
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
