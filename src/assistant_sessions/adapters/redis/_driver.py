"""The Redis adapter's one door to coredis: connecting, sending, and failing as AdapterError.

Keeping every use of the driver here confines its quirks -- the client to build for a single
server or a cluster, the buffers coredis 6.9 forgets to close, the script cache a restarted
server has lost, its exception types, its handling of cancellation -- to one module, so the rest
of the adapter speaks only in scripts, pipelines and :class:`~assistant_sessions.AdapterError`.

Cancellation: coredis 6.9 loses a pool slot for good when a caller is cancelled while its reply
is outstanding (after ``max_connections`` such cancellations every call waits for a slot that
never comes), and it reports a cancellation that lands during a new connection's handshake as a
``ConnectionError``. So every request, once started, runs to its end under a shield, bounded by
the timeouts, and the caller's cancellation takes effect as soon as it has ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeAlias, TypeVar, final
from urllib.parse import unquote, urlsplit

import anyio
import coredis
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis.connection import TCPLocation
from coredis.exceptions import NoScriptError, RedisError
from coredis.retry import ConstantRetryPolicy, NoRetryPolicy

from ...errors import AdapterError
from ._scripts import Script

__all__ = ["Client", "Connection", "ScriptCall", "ScriptFailed"]

_T = TypeVar("_T")

Client: TypeAlias = "coredis.Redis[bytes] | coredis.RedisCluster[bytes]"
#: One script call: the script, its keys and its arguments.
ScriptCall: TypeAlias = "tuple[Script, list[bytes], list[bytes]]"

_DRIVER_ERRORS: Final = (
    RedisError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


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
class _Opened:
    """One ``open`` of a :class:`Connection`: its client, entered by the task that opened it
    (which must leave it), and the requests it has in flight."""

    __slots__ = ("client", "closing", "idle", "in_flight", "stack", "task")

    def __init__(self, client: Client, stack: contextlib.AsyncExitStack, task: int) -> None:
        self.client = client
        self.stack = stack
        self.task = task
        self.in_flight = 0
        self.closing = False
        self.idle: anyio.Event | None = None


@final
class Connection:
    """One adapter's clients of a Redis server or cluster, from ``open`` to ``aclose``.

    Each ``open`` (each store using the adapter) makes a client of its own, entered in the
    opening task, and its ``aclose`` leaves that client in the same task, after the requests in
    flight on it have ended (new ones go to another open client). Requests use the oldest
    client still open, so several stores can share one adapter, closing in any order.

    Args:
        url: Where Redis is (for a cluster, any one node).
        cluster: Talk to a Redis Cluster.
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds to wait for a reply.
        max_connections: Most connections per server.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: bool,
        connect_timeout: float,
        command_timeout: float,
        max_connections: int,
    ) -> None:
        self.url = url
        self._cluster = cluster
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._max_connections = max_connections
        # The longest a request may take: waiting for a pool slot, connecting, and the reply.
        # The driver's own timeouts end it sooner; this only backs them up.
        self._request_bound = connect_timeout + 2 * command_timeout
        self._opened: list[_Opened] = []
        self._errors: dict[str, _Errors] = {}

    async def open(self, check: Callable[[], Awaitable[object]]) -> None:
        """Connect, then await ``check()``; if either fails, disconnect again.

        Raises:
            AdapterError: Redis is unreachable (or whatever ``check`` raises).
        """
        client = self._make_client()
        client.connection_pool.connection_class = _closing(client.connection_pool.connection_class)
        stack = contextlib.AsyncExitStack()
        opened = _Opened(client, stack, anyio.get_current_task().id)
        try:
            with self.errors("connect to"):
                stack.callback(_close_layout_streams, client)
                await stack.enter_async_context(client)
                self._opened.append(opened)
                await check()
        except BaseException:
            if opened in self._opened:
                self._opened.remove(opened)
            # Not under a cancel scope of ours: the driver's task group must be left in the
            # scope it was entered in.
            with contextlib.suppress(Exception):
                await stack.aclose()
            raise

    async def aclose(self) -> None:
        """Close the client this task opened (else the newest one), once its requests in flight
        have ended. Closing more often than opening is harmless.

        Raises:
            AdapterError: The driver failed while disconnecting.
        """
        task = anyio.get_current_task().id
        candidates = [o for o in reversed(self._opened) if not o.closing]
        opened = next((o for o in candidates if o.task == task), None) or next(
            iter(candidates), None
        )
        if opened is None:
            await anyio.lowlevel.checkpoint()
            return
        opened.closing = True
        try:
            if opened.in_flight:
                opened.idle = anyio.Event()
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._request_bound):
                    await opened.idle.wait()
        finally:
            self._opened.remove(opened)
        with self.errors("disconnect from"):
            await opened.stack.aclose()

    def _make_client(self) -> Client:
        options: dict[str, Any] = {
            "decode_responses": False,
            "connect_timeout": self._connect_timeout,
            "stream_timeout": self._command_timeout,
            "pool_timeout": self._command_timeout,
            "max_connections": self._max_connections,
        }
        if self._cluster:
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

    def require(self) -> Client:
        """The client requests use: the oldest one open.

        Raises:
            AdapterError: The connection is not open.
        """
        return self._current().client

    def _current(self) -> _Opened:
        for opened in self._opened:
            if not opened.closing:
                return opened
        raise AdapterError("the Redis adapter is not open")

    def errors(self, doing: str) -> _Errors:
        """A context that turns driver errors into :class:`AdapterError` (keeping them as the
        cause), saying what failed: "could not ``doing`` Redis at ``url``"."""
        translate = self._errors.get(doing)
        if translate is None:
            translate = self._errors[doing] = _Errors(self.url, doing)
        return translate

    async def _to_the_end(self, request: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run ``request(client)`` on the current client to its end, then let a cancellation
        of the caller take effect.

        Raises:
            AdapterError: The connection is not open.
            TimeoutError: It took longer than connecting and two command timeouts.
        """
        opened = self._current()
        opened.in_flight += 1
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self._request_bound):
                result = await request(opened.client)
        finally:
            opened.in_flight -= 1
            if opened.idle is not None and not opened.in_flight:
                opened.idle.set()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    async def call(self, request: Callable[[Client], Awaitable[_T]]) -> _T:
        """Run one command, ``request(client)``, to its end (driver errors are left to
        :meth:`errors`)."""
        return await self._to_the_end(request)

    async def eval(self, script: Script, keys: list[bytes], args: list[bytes]) -> Any:
        """Run ``script`` to its end (driver errors are left to :meth:`errors`)."""
        return await self._to_the_end(lambda client: _eval(client, script, keys, args))

    async def pipeline(self, calls: Sequence[Callable[[Any], Awaitable[Any]]]) -> list[Any]:
        """Run commands in one round trip (one per node in a cluster), to its end; raise the
        first error."""

        async def run(client: Client) -> list[Any]:
            if len(calls) <= 1:
                return [await call(client) for call in calls]
            async with client.pipeline(transaction=False) as pipe:
                requests = [call(pipe) for call in calls]
            return [await request for request in requests]

        return await self._to_the_end(run)

    async def settled(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run several scripts in one round trip (one per node in a cluster), to its end: the
        reply of each, or the driver error it alone failed with (see :func:`_eval_many`).

        Raises:
            ScriptFailed: Redis failed as a whole.
        """
        try:
            return await self._to_the_end(lambda client: _eval_many(client, calls))
        except BaseException as exc:
            if not _is_driver_error(exc):
                raise
            raise ScriptFailed(self.url, exc) from exc


@final
class _Errors:
    """What :meth:`Connection.errors` returns: translates on the way out, costs nothing on
    the way in."""

    __slots__ = ("doing", "url")

    def __init__(self, url: str, doing: str) -> None:
        self.url = url
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def failure(self, cause: BaseException) -> AdapterError:
        """The error of one entry that failed in Redis with ``cause``, as this context says."""
        detail = str(cause) or type(cause).__name__
        error = AdapterError(f"could not {self.doing} Redis at {self.url}: {detail}")
        error.__cause__ = cause
        return error

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or (isinstance(exc, AdapterError) and not isinstance(exc, ScriptFailed)):
            return
        if isinstance(exc, ScriptFailed):
            raise AdapterError(
                f"could not {self.doing} Redis at {self.url}: {exc.detail}"
            ) from exc.__cause__
        if _is_driver_error(exc):
            raise self.failure(exc)


class ScriptFailed(AdapterError):
    """Scripts failed in Redis. :meth:`Connection.errors` turns it into an ``AdapterError``
    that says what the caller was doing; until then (in a batch) it is passed on as it is."""

    def __init__(self, url: str, cause: BaseException) -> None:
        self.url = url
        self.detail = str(cause) or type(cause).__name__
        super().__init__(f"a script failed in Redis at {url}: {self.detail}")
        self.__cause__ = cause

    def __reduce__(self) -> tuple[Any, ...]:  # copied for each job of a failed batch
        return (ScriptFailed, (self.url, self.__cause__))


async def _eval(client: Client, script: Script, keys: list[bytes], args: list[bytes]) -> Any:
    try:
        return await client.evalsha(script.sha, keys, args)
    except NoScriptError:
        # The server lost its script cache (a restart): EVAL runs and caches the script.
        return await client.eval(script.source, keys, args)


#: The errors of one script in a pipeline: its reply, not a failure of the others.
_SCRIPT_ERRORS: Final = (RedisError, TimeoutError)


async def _eval_many(client: Client, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run several scripts in one pipeline, re-running those the server did not know.

    Each entry is the script's reply, or the driver error it alone failed with: one script's
    error must not hide the others' outcomes (they ran).
    """
    if len(calls) == 1:
        try:
            return [await _eval(client, *calls[0])]
        except _SCRIPT_ERRORS as exc:
            return [exc]
    async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
        requests = [pipe.evalsha(script.sha, keys, args) for script, keys, args in calls]
    replies: list[Any] = []
    for (script, keys, args), request in zip(calls, requests, strict=True):
        try:
            try:
                replies.append(await request)
            except NoScriptError:
                replies.append(await client.eval(script.source, keys, args))
        except _SCRIPT_ERRORS as exc:
            replies.append(exc)
    return replies
