"""The Redis adapter: one session store shared by many processes and machines.

Install with ``pip install 'assistant-sessions[redis]'``. The driver is `coredis`_, whose async
API runs on anyio, so the adapter works on asyncio and trio alike, against a single server or
a Redis Cluster.

How the contract of :mod:`assistant_sessions.adapters.base` is kept:

Atomic, versioned per-user commit
    Each :class:`~assistant_sessions.adapters.UserCommit` is applied by one Lua script
    (``EVALSHA``, falling back to ``EVAL`` when the server lost its script cache) that checks
    the user's version and then writes the sessions, both indexes and the new version in one
    step. Every key of a user carries the same hash tag, so in a cluster the script runs on the
    one node that owns the user. Scripts submitted while a pipeline is in flight, by any
    actor, go together in the next one (group commit across users): one round trip per batch
    on a single server, one per node in a cluster. A version conflict replies with the user as
    the script found it, which the actor's immediate reload uses instead of another round trip.
    Redis never applies half a script, and with ``appendonly yes`` and ``appendfsync always``
    an acknowledged commit survives a crash of the server.

Session ids are unique across users
    Each session id has a *claim* naming its owner. On a single server (one bucket, the
    default there) claims share the users' slot and the commit script checks and writes them
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
    (:func:`~assistant_sessions.adapters.base.state_clock`), kept exact by the commit script.
    :meth:`RedisSessionStoreAdapter.due` reads ``limit`` members from each bucket's set with
    ``ZRANGE ... BYSCORE LIMIT`` (pipelined), keeps the oldest ``limit`` and fetches those
    sessions; the store re-checks each one inside its owner's actor. A sweep costs in proportion
    to the buckets and the stale sessions it finds, never to all sessions.

Queries and their cost
    :meth:`~RedisSessionStoreAdapter.load_user` and ``find(user_id=...)`` are one script call
    (``GET`` + ``HGETALL`` of one user). ``get`` is one call on a single server, two in a
    cluster (claim, then the session). ``find`` without a user walks a per-bucket sorted set by
    last activity, newest first (the active or created sweep index when the query names that
    state), in pipelined batches, fetching sessions and applying the remaining filters as it
    goes: it costs in proportion to the sessions it examines, which for selective filters on
    workspace or surface can be all of them. Such a ``find`` reads committed data but is not a
    point-in-time snapshot: a session touched while it runs may be missed.

Connection loss
    Driver errors become :class:`~assistant_sessions.AdapterError`. Nothing is retried
    automatically, because a commit whose reply was lost may have been applied (the actor
    reloads the user instead); only commands a cluster refused with ``CLUSTERDOWN``, which did
    not run, are sent again. Connections are re-established on the next call, so a store
    serves again once Redis is back, without being restarted.

Lifetime
    :meth:`~RedisSessionStoreAdapter.open` enters the driver's task group, and
    :meth:`~RedisSessionStoreAdapter.aclose` leaves it, so both must run in the same task and
    not inside a cancel scope opened in between, as a store does around its ``async with``.

.. _coredis: https://coredis.readthedocs.io
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import uuid
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from operator import methodcaller
from typing import Any, Final, TypeAlias, final
from urllib.parse import unquote, urlsplit

import anyio
import cattrs
import coredis
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.connection import TCPLocation
from coredis.exceptions import NoScriptError, RedisError
from coredis.retry import ConstantRetryPolicy, NoRetryPolicy
from coredis.tokens import PureToken

from .._codec import session_from_dict, session_to_dict
from ..errors import AdapterError, InvalidInputError, InvalidTypeError
from ..model import Session, SessionQuery, SessionState, recency_key
from . import _redis_scripts as lua
from ._redis_group import ScriptGroup
from .base import Rejection, UserCommit, UserSnapshot, state_clock

__all__ = ["RedisSessionStoreAdapter"]

logger = logging.getLogger("assistant_sessions.redis")

#: The version of the key layout written into ``<prefix>:meta``.
LAYOUT: Final = b"1"
#: Buckets when neither the caller nor stored data says: one on a single server (everything
#: atomic in one script), many in a cluster (so users spread over the nodes).
SINGLE_BUCKETS: Final = 1
CLUSTER_BUCKETS: Final = 1024
MAX_BUCKETS: Final = 16384

_STATES: Final = (
    SessionState.CREATED,
    SessionState.ACTIVE,
    SessionState.SUSPENDED,
    SessionState.EXPIRED,
)
_STATE_INDEX: Final = {state: str(i + 1).encode() for i, state in enumerate(_STATES)}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Attempts to claim one session id against concurrent claimers before giving up.
_CLAIM_ATTEMPTS: Final = 8
#: Seconds after a version conflict during which the same task's reload of that user may use
#: the state the conflict read (the actor reloads at once; later loads must read Redis).
_REUSE_WINDOW: Final = 0.01
_MAX_REJECTED: Final = 1024
#: After this many version conflicts in a row, a writer asks for a lease on the user's
#: commits (see ``_redis_scripts.COMMIT``), held for at most LEASE_MS milliseconds.
_LEASE_AFTER: Final = 2
_LEASE_MS: Final = 250
#: Members read per bucket and round by ``find`` without a user.
_FIND_BATCH: Final = 128

_Client: TypeAlias = "coredis.Redis[bytes] | coredis.RedisCluster[bytes]"
_DRIVER_ERRORS: Final = (
    RedisError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _b(text: str) -> bytes:
    # Ids are any Python strings; surrogatepass keeps even lone surrogates round-tripping.
    return text.encode("utf-8", "surrogatepass")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _micros(when: datetime) -> int:
    """Microseconds since the epoch: exact for every ``datetime`` and every double score."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _member(user: bytes, session_id: bytes) -> bytes:
    return b"%d:%s%s" % (len(user), user, session_id)


def _split_member(member: bytes) -> tuple[bytes, bytes]:
    size, _, rest = member.partition(b":")
    n = int(size)
    return rest[:n], rest[n:]


def _is_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_driver_error(e) for e in exc.exceptions)
    return isinstance(exc, _DRIVER_ERRORS)


_CLOSING_CLASSES: dict[type[Any], type[Any]] = {}


def _closing(connection_class: type[Any]) -> type[Any]:
    """``connection_class``, closing its buffers when its run ends however it ends.

    coredis 6.9 creates a connection's memory streams in ``__init__`` but closes them only if
    the connection got as far as connecting; every failed attempt while Redis is down would
    leave them for the garbage collector, which anyio warns about.
    """
    closing = _CLOSING_CLASSES.get(connection_class)
    if closing is None:

        async def run(self: Any, **kwargs: Any) -> None:
            try:
                await connection_class.run(self, **kwargs)
            finally:
                for value in list(vars(self).values()):
                    if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                        value.close()

        closing = type(connection_class.__name__, (connection_class,), {"run": run})
        _CLOSING_CLASSES[connection_class] = closing
    return closing


def _close_layout_streams(client: object) -> None:
    # coredis 6.9's ClusterLayout never closes its error stream, and anyio warns about that
    # when it is collected. Close it once the client has exited.
    pool = getattr(client, "connection_pool", None)
    for stream in getattr(getattr(pool, "cluster_layout", None), "_error_stream", ()):
        stream.close()


@final
class RedisSessionStoreAdapter:
    """Keeps sessions in Redis (a single server or a cluster), shared by many processes.

    Every process that shares the sessions must use the same ``key_prefix`` (and the same
    ``buckets``, which the adapter records under ``<key_prefix>:meta`` and checks on
    :meth:`open`). Durability is Redis's own: run it with ``appendonly yes`` and
    ``appendfsync always`` to keep every acknowledged write across a crash of the server.
    See the module documentation for the data layout and what each call costs.

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
        self._connect_timeout = float(connect_timeout)
        self._command_timeout = float(command_timeout)
        #: Seconds a claim of another user is left alone: its create may still be in flight.
        self._claim_grace = float(command_timeout)
        self._max_connections = int(max_connections)
        self._prefix = _b(key_prefix)
        self._client: _Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._buckets = 0
        self._tags: list[bytes] = []
        self._shared_keys: list[list[bytes]] = []
        self._group = ScriptGroup(self._send_pipeline)
        # The user as a version conflict found it, for the reload that follows at once.
        self._rejected: dict[str, tuple[UserSnapshot, object, float]] = {}
        # Version conflicts in a row, per user: writers that keep losing ask for a lease.
        self._losses: dict[str, int] = {}
        self._token = uuid.uuid4().hex.encode()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        return f"<RedisSessionStoreAdapter {kind} {self.url!r} prefix={self.key_prefix!r}>"

    @property
    def buckets(self) -> int:
        """How many buckets the open adapter uses (0 while it is closed)."""
        return self._buckets

    # -- lifetime ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, and check (or record) the key layout under ``<key_prefix>:meta``.

        Raises:
            AdapterError: Redis is unreachable, or the stored layout differs from this
                adapter's (another ``buckets``, or a newer layout).
        """
        if self._client is not None:
            raise AdapterError("the Redis adapter is already open")
        client = self._make_client()
        client.connection_pool.connection_class = _closing(client.connection_pool.connection_class)
        stack = contextlib.AsyncExitStack()
        try:
            with self._errors("connect to"):
                stack.callback(_close_layout_streams, client)
                await stack.enter_async_context(client)
                self._client = client
                await self._check_layout(client)
        except BaseException:
            self._client = None
            # Not under a cancel scope of ours: the driver's task group must be left in the
            # scope it was entered in.
            with contextlib.suppress(Exception):
                await stack.aclose()
            raise
        self._stack = stack

    async def aclose(self) -> None:
        """Close every connection. The data stays in Redis. Closing twice is harmless."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is None:
            await anyio.lowlevel.checkpoint()
            return
        with self._errors("disconnect from"):
            await stack.aclose()

    def _make_client(self) -> _Client:
        options: dict[str, Any] = {
            "decode_responses": False,
            "connect_timeout": self._connect_timeout,
            "stream_timeout": self._command_timeout,
            "pool_timeout": self._command_timeout,
            "max_connections": self._max_connections,
        }
        if self.cluster:
            # from_url of coredis 6 passes startup nodes in a deprecated form; build them here.
            parts = urlsplit(self.url)
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise AdapterError(f"a cluster url is redis://host:port, not {self.url!r}")
            # A cluster that is moving slots answers "try again": that command was not run.
            retry = ConstantRetryPolicy((coredis.exceptions.ClusterDownError,), 2, delay=0.1)
            return coredis.RedisCluster(
                startup_nodes=[TCPLocation(parts.hostname, parts.port or 6379)],
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                ssl=parts.scheme == "rediss",
                retry_policy=retry,
                **options,
            )
        return coredis.Redis.from_url(self.url, retry_policy=NoRetryPolicy(), **options)

    async def _check_layout(self, client: _Client) -> None:
        meta = self._prefix + b":meta"
        default = CLUSTER_BUCKETS if self.cluster else SINGLE_BUCKETS
        wanted = str(self._wanted_buckets or default).encode()
        # Atomic, because processes opening at once race to record the layout: the first
        # one's wins for all.
        layout, stored = await self._eval(lua.INIT_META, [meta], [LAYOUT, wanted])
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
        self._buckets = buckets
        self._tags = [b"%s:{b%d}:" % (self._prefix, k) for k in range(buckets)]
        # Per bucket, the keys every commit script of its users names after the user's own.
        self._shared_keys = [
            [
                tag + b"i",
                *(tag + b"d:" + state.value.encode() for state in _STATES),
                tag + b"r",
            ]
            for tag in self._tags
        ]

    def _require(self) -> _Client:
        client = self._client
        if client is None:
            raise AdapterError("the Redis adapter is not open")
        return client

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate driver errors into :class:`AdapterError` (keeping them as the cause)."""
        try:
            yield
        except AdapterError:
            raise
        except BaseException as exc:
            if not _is_driver_error(exc):
                raise
            detail = str(exc) or type(exc).__name__
            raise AdapterError(f"could not {doing} Redis at {self.url}: {detail}") from exc

    # -- keys ----------------------------------------------------------------------------------

    def _bucket(self, data: bytes) -> int:
        return zlib.crc32(data) % self._buckets if self._buckets > 1 else 0

    def _user_tag(self, user: bytes) -> bytes:
        return self._tags[self._bucket(user)]

    def _version_key(self, user: bytes) -> bytes:
        return self._user_tag(user) + b"v:" + user

    def _epoch_key(self, user: bytes) -> bytes:
        return self._user_tag(user) + b"e:" + user

    def _sessions_key(self, user: bytes) -> bytes:
        return self._user_tag(user) + b"s:" + user

    def _claims_keys(self, session_id: bytes) -> list[bytes]:
        tag = self._tags[self._bucket(session_id)]
        return [tag + b"i", tag + b"t"]

    def _due_key(self, bucket: int, state: SessionState) -> bytes:
        return self._tags[bucket] + b"d:" + state.value.encode()

    def _recency_key(self, bucket: int) -> bytes:
        return self._tags[bucket] + b"r"

    # -- scripts and pipelines -----------------------------------------------------------------

    async def _eval(self, script: lua.Script, keys: list[bytes], args: list[bytes]) -> Any:
        client = self._require()
        try:
            return await client.evalsha(script.sha, keys, args)
        except NoScriptError:
            # The server lost its script cache (a restart): EVAL runs and caches the script.
            return await client.eval(script.source, keys, args)

    async def _pipeline(self, calls: Sequence[Callable[[Any], Awaitable[Any]]]) -> list[Any]:
        """Run commands in one round trip (one per node in a cluster); raise the first error."""
        client = self._require()
        if len(calls) <= 1:
            return [await call(client) for call in calls]
        async with client.pipeline(transaction=False) as pipe:
            requests = [call(pipe) for call in calls]
        return [await request for request in requests]

    async def _send_pipeline(
        self, calls: Sequence[tuple[lua.Script, list[bytes], list[bytes]]]
    ) -> list[Any]:
        with self._errors("send scripts to"):
            return await self._eval_many(calls)

    async def _eval_many(
        self, calls: Sequence[tuple[lua.Script, list[bytes], list[bytes]]]
    ) -> list[Any]:
        """Run several scripts in one pipeline, re-running those the server did not know."""
        client = self._require()
        if len(calls) == 1:
            return [await self._eval(*calls[0])]
        async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
            requests = [pipe.evalsha(script.sha, keys, args) for script, keys, args in calls]
        replies: list[Any] = []
        for (script, keys, args), request in zip(calls, requests, strict=True):
            try:
                replies.append(await request)
            except NoScriptError:
                replies.append(await client.eval(script.source, keys, args))
        return replies

    # -- decoding ------------------------------------------------------------------------------

    @staticmethod
    def _encode(session: Session) -> bytes:
        # ASCII JSON: every id and metadata string survives, whatever the server's locale.
        return json.dumps(session_to_dict(session), separators=(",", ":")).encode()

    @staticmethod
    def _decode(raw: bytes, session_id: str) -> Session:
        try:
            return session_from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
            raise AdapterError(
                f"session {session_id!r} is stored in a form that cannot be read"
            ) from exc

    # -- per-user load and commit --------------------------------------------------------------

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Return every session of ``user_id`` and the user's version, read atomically.

        Raises:
            AdapterError: Redis failed, or a stored session cannot be decoded.

        Cancelling it abandons the read; nothing changes.
        """
        rejected = self._rejected.pop(user_id, None)
        if rejected is not None:
            snapshot, task, at = rejected
            # Only the reload that follows the conflict in the same task may use what the
            # conflict read: anything later must read Redis again.
            if task == anyio.get_current_task().id and anyio.current_time() - at < _REUSE_WINDOW:
                await anyio.lowlevel.checkpoint()
                return snapshot
        user = _b(user_id)
        keys = [self._version_key(user), self._sessions_key(user)]
        with self._errors("load a user from"):
            ((version, flat),) = await self._group.submit([(lua.LOAD, keys, [])])
        return self._snapshot(user_id, version, flat)

    def _snapshot(self, user_id: str, version: Any, flat: list[bytes]) -> UserSnapshot:
        sessions = tuple(self._decode(flat[i + 1], _s(flat[i])) for i in range(0, len(flat), 2))
        return UserSnapshot(user_id, int(version), sessions)

    def _commit_call(
        self, commit: UserCommit, claimed: set[bytes], epoch: bytes
    ) -> tuple[lua.Script, list[bytes], list[bytes]]:
        user = _b(commit.user_id)
        bucket = self._bucket(user)
        tag = self._tags[bucket]
        keys = [tag + b"v:" + user, tag + b"s:" + user, *self._shared_keys[bucket]]
        keys += (tag + b"e:" + user, tag + b"l:" + user)
        losing = self._losses.get(commit.user_id, 0) >= _LEASE_AFTER
        args = [
            str(commit.expected_version).encode(),
            b"1" if self._buckets == 1 else b"0",
            b"o:" + user,
            tag + b"s:",
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
            session_id = _b(session.id)
            args += (
                session_id,
                self._encode(session),
                _member(user, session_id),
                _STATE_INDEX[session.state],
                str(_micros(state_clock(session))).encode(),
                str(_micros(session.last_activity_at)).encode(),
                b"1" if session_id in claimed else b"0",
            )
        for deleted in commit.deletes:
            session_id = _b(deleted)
            args += (session_id, _member(user, session_id))
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
        results: list[Rejection | None] = [None] * len(commits)
        claimed: list[set[bytes]] = [set() for _ in commits]
        epochs = [b"0"] * len(commits)
        todo = list(range(len(commits)))
        released: list[tuple[bytes, bytes]] = []
        wait = 0
        with self._errors("commit to"):
            # A round applies, or names the new ids to claim first (and the claim epoch). A
            # fence between claiming and applying costs one more round.
            for _ in range(_CLAIM_ATTEMPTS):
                replies = await self._group.submit(
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
                        if self._buckets > 1:
                            user = _b(commits[i].user_id)
                            released += ((user, _b(d)) for d in commits[i].deletes)
                    elif code == lua.VERSION:
                        results[i] = Rejection.VERSION
                        self._remember_rejection(commits[i].user_id, reply)
                    elif code == lua.DUPLICATE:
                        results[i] = Rejection.DUPLICATE_ID
                    elif await self._claim_all(_b(commits[i].user_id), reply[2:]):
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
            await self._release(user, session_id)
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

    # -- the cluster claim protocol ------------------------------------------------------------

    async def _claim_all(self, user: bytes, session_ids: Sequence[bytes]) -> bool:
        for session_id in session_ids:
            if not await self._claim(user, session_id):
                return False
        return True

    async def _claim(self, user: bytes, session_id: bytes) -> bool:
        """Make ``user`` the holder of ``session_id``'s claim; ``False`` if another user has it.

        A claim held by another user is taken only when it is older than a create can take,
        from a holder that does not have the session, and only after fencing it (see the
        module documentation).
        """
        claims = self._claims_keys(session_id)
        owner = b"o:" + user
        for _ in range(_CLAIM_ATTEMPTS):
            reply = await self._eval(lua.CLAIM, claims, [session_id, owner])
            if int(reply[0]) == 1:
                return True
            held: bytes = reply[1]
            holder = held[2:]
            if held.startswith(b"o:"):
                if int(reply[2]) < self._claim_grace * 1000:
                    return False  # the holder's create may be in flight: it goes first
                client = self._require()
                if await client.hexists(self._sessions_key(holder), session_id):
                    return False
                fenced = b"f:" + holder
                if not await self._eval(lua.CAS_CLAIM, claims, [session_id, held, fenced]):
                    continue
                held = fenced
            if await self._fence(holder, session_id):
                # The holder has the session after all: the claim goes back to it.
                await self._eval(lua.CAS_CLAIM, claims, [session_id, held, b"o:" + holder])
                if holder != user:
                    return False
                continue
            if await self._eval(lua.CAS_CLAIM, claims, [session_id, held, owner]):
                return True
        raise AdapterError(
            f"could not claim session id {_s(session_id)!r}: too many concurrent claimers"
        )

    async def _fence(self, holder: bytes, session_id: bytes) -> bool:
        """Whether ``holder`` has the session; if not, bump its claim epoch (see the module
        documentation)."""
        keys = [self._epoch_key(holder), self._sessions_key(holder)]
        return int(await self._eval(lua.FENCE, keys, [session_id])) == 1

    async def _release(self, user: bytes, session_id: bytes) -> None:
        """Drop the claim of a session ``user`` deleted, unless it came back meanwhile.

        Best effort: a claim left behind only keeps a few bytes until someone reuses the id.
        """
        claims = self._claims_keys(session_id)
        owned, fenced = b"o:" + user, b"f:" + user
        try:
            with self._errors("release a claim in"):
                if not await self._eval(lua.CAS_CLAIM, claims, [session_id, owned, fenced]):
                    return
                if await self._fence(user, session_id):
                    await self._eval(lua.CAS_CLAIM, claims, [session_id, fenced, owned])
                else:
                    await self._eval(lua.CAS_CLAIM, claims, [session_id, fenced, b""])
        except AdapterError as exc:
            logger.info("left the claim of session %r in place: %s", _s(session_id), exc)

    # -- queries -------------------------------------------------------------------------------

    async def get(self, session_id: str) -> Session | None:
        """Return the committed session with this id, or ``None``.

        Raises:
            AdapterError: Redis failed, or the session cannot be decoded.

        Cancelling it abandons the read; nothing changes.
        """
        sid = _b(session_id)
        claims = self._claims_keys(sid)[0]
        with self._errors("read a session from"):
            if self._buckets == 1:
                call = (lua.GET_INLINE, [claims], [sid, self._tags[0] + b"s:"])
                (raw,) = await self._group.submit([call])
            else:
                client = self._require()
                held = await client.hget(claims, sid)
                if held is None:
                    return None
                raw = await client.hget(self._sessions_key(held[2:]), sid)
        return None if raw is None else self._decode(raw, session_id)

    async def _fetch(self, members: Sequence[bytes]) -> dict[bytes, Session]:
        """The sessions named by zset members (those still there), in one pipeline."""
        by_user: defaultdict[bytes, list[bytes]] = defaultdict(list)
        for member in members:
            user, sid = _split_member(member)
            by_user[user].append(sid)
        users = list(by_user)
        replies = await self._pipeline(
            [methodcaller("hmget", self._sessions_key(user), by_user[user]) for user in users]
        )
        found: dict[bytes, Session] = {}
        for user, raws in zip(users, replies, strict=True):
            for sid, raw in zip(by_user[user], raws, strict=True):
                if raw is not None:
                    found[_member(user, sid)] = self._decode(raw, _s(sid))
        return found

    async def due(self, state: SessionState, before: datetime, limit: int) -> list[Session]:
        """Return up to ``limit`` sessions in ``state`` with a state clock before ``before``.

        Oldest first. Reads ``limit`` index entries per bucket (pipelined), then the oldest
        ``limit`` sessions among them.

        Raises:
            AdapterError: Redis failed, or a session cannot be decoded.

        Cancelling it abandons the read; nothing changes.
        """
        highest = _micros(before) - 1
        with self._errors("read sweep candidates from"):
            replies = await self._pipeline(
                [
                    methodcaller(
                        "zrange",
                        self._due_key(k, state),
                        float("-inf"),
                        highest,
                        sortby=PureToken.BYSCORE,
                        withscores=True,
                        offset=0,
                        count=limit,
                    )
                    for k in range(self._buckets)
                ]
            )
            oldest = heapq.nsmallest(
                limit, ((int(score), member) for reply in replies for member, score in reply)
            )
            sessions = await self._fetch([member for _, member in oldest])
        result = []
        for _, member in oldest:
            session = sessions.get(member)
            # A session may have changed since the index was read: only current ones count.
            if session is not None and session.state is state and state_clock(session) < before:
                result.append(session)
        return result

    async def find(self, query: SessionQuery) -> list[Session]:
        """Return committed sessions matching ``query``, most recently active first.

        With ``user_id``: one script call. Without: walks an index by last activity (see the
        module documentation for the cost).

        Raises:
            AdapterError: Redis failed, or a session cannot be decoded.

        Cancelling it abandons the read; nothing changes.
        """
        if query.user_id is not None:
            snapshot = await self.load_user(query.user_id)
            return heapq.nlargest(
                query.limit, filter(query.matches, snapshot.sessions), key=recency_key
            )
        with self._errors("search sessions in"):
            return await self._scan(query)

    async def _scan(self, query: SessionQuery) -> list[Session]:
        state = query.state
        # For created and active sessions the state clock is the last activity: use that index.
        if state is SessionState.CREATED or state is SessionState.ACTIVE:
            keys = [self._due_key(k, state) for k in range(self._buckets)]
        else:
            keys = [self._recency_key(k) for k in range(self._buckets)]
        lowest = float("-inf") if query.active_after is None else _micros(query.active_after) + 1
        top = float("inf") if query.after is None else _micros(query.after[0])
        batch = min(max(query.limit, _FIND_BATCH), 1000)
        # Per bucket: (highest score still to read, how many members at that score were read).
        cursors: dict[bytes, tuple[float, int]] = dict.fromkeys(keys, (top, 0))
        found: list[Session] = []
        seen: set[str] = set()
        while cursors:
            active = list(cursors.items())
            replies = await self._pipeline(
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
            sessions = await self._fetch([m for reply in replies for m, _ in reply])
            for session in sessions.values():
                if session.id not in seen and query.matches(session):
                    seen.add(session.id)
                    found.append(session)
            if len(found) > query.limit:
                found = heapq.nlargest(query.limit, found, key=recency_key)
            # Once `limit` matches are in, a bucket whose next entries are all older than the
            # last of them cannot contribute.
            floor = (
                _micros(min(found, key=recency_key).last_activity_at)
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
