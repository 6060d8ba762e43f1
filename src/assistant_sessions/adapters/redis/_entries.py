"""How the Redis adapter's per-user operations travel: entries of one script call per slot.

A load, a commit or a ``get`` of one user is an *entry* of :data:`~._scripts.BATCH` (one
argument, built by :mod:`._codec`), for the bucket of its user. Entries submitted while a
round trip is in flight, by any actor, wait together for the next one (the adapter's
:class:`~assistant_sessions.adapters._batching.Batcher` runs :meth:`Entries.run`); that round
trip then carries *one script call per bucket* with every entry of the bucket, in the order
submitted. On a single server with one bucket that is one ``EVALSHA`` for the whole batch,
whatever the number of users; in a cluster, the calls go in one pipeline (one round trip per
node). A call applies at most :data:`MAX_PER_CALL` entries, so that no call keeps the server
busy for long; more make more calls in the same round trip.

Each entry has its own outcome. An entry that fails in Redis (a key of its user holding the
wrong type, say) fails its own job alone (or, in a job of :class:`Settled` entries, only its own
place in the job's result); a call that fails as a whole (the script cache was
lost and ``EVAL`` failed too, a shared key of the bucket is broken) fails the jobs of its
entries; a round trip that fails fails every job in it. Which of a failed job's commits were
applied is then unknown, as after any storage failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias, final

from coredis.exceptions import ResponseError

from .._batching import Job
from . import _scripts as lua
from ._driver import Connection, ScriptCall, ScriptFailed
from ._keys import KeyLayout

__all__ = ["MAX_PER_CALL", "Entries", "Entry", "Settled"]

#: One operation of one user: the bucket of its user and its argument to the batch script.
Entry: TypeAlias = "tuple[int, bytes]"

#: Most entries one script call applies; a batch with more makes several calls.
MAX_PER_CALL: Final = 256


@final
class Settled(tuple[Entry, ...]):
    """Entries of one job whose failures are each their own: the job's result holds each
    entry's reply or the exception it failed with (many users' loads), instead of the job
    failing whole."""

    __slots__ = ()


def _failure(reply: Any) -> BaseException | None:
    """The error of an entry that failed in Redis (a reply ``{-1, error}``), else ``None``."""
    if reply.__class__ is list and len(reply) == 2 and reply[0] == lua.FAILED:
        message = reply[1]
        if message.__class__ is bytes:
            return ResponseError(message.decode("utf-8", "replace"))
    return None


@final
class Entries:
    """Sends entries to Redis: one script call per bucket and round trip.

    Args:
        redis: The connection.
        token: This writer's lease token (see :data:`~._scripts.BATCH`).
    """

    __slots__ = ("_headers", "_redis", "_token", "keys")

    def __init__(self, redis: Connection, token: bytes) -> None:
        self._redis = redis
        self._token = token
        #: The key layout; no buckets until the adapter opens.
        self.keys = KeyLayout(b"", 0)
        self._headers: list[list[bytes]] = []

    def use(self, keys: KeyLayout) -> None:
        """Send with ``keys`` from now on (read from Redis when the adapter opens)."""
        self.keys = keys
        inline = b"1" if keys.buckets == 1 else b"0"
        self._headers = [[tag, inline, self._token] for tag in keys.tags]

    def _calls(
        self, entries: Sequence[Entry], per_call: int
    ) -> tuple[list[ScriptCall], list[list[int]]]:
        """The script calls for ``entries`` and, per call, the positions of its entries."""
        keys, headers = self.keys, self._headers
        by_bucket: dict[int, list[int]] = {}
        for position, (bucket, _) in enumerate(entries):
            positions = by_bucket.get(bucket)
            if positions is None:
                by_bucket[bucket] = [position]
            else:
                positions.append(position)
        calls: list[ScriptCall] = []
        placed: list[list[int]] = []
        for bucket, positions in by_bucket.items():
            for start in range(0, len(positions), per_call):
                chunk = positions[start : start + per_call]
                args = headers[bucket].copy()
                args += [entries[position][1] for position in chunk]
                calls.append((lua.BATCH, keys.shared[bucket], args))
                placed.append(chunk)
        return calls, placed

    async def send(self, entries: Sequence[Entry], per_call: int = MAX_PER_CALL) -> list[Any]:
        """The reply of each entry, or the exception it failed with; at most ``per_call``
        entries a script call.

        Raises:
            ScriptFailed: The round trip failed as a whole.
        """
        if len(entries) <= per_call and self.keys.buckets == 1:
            # A single server's common case: one call, whose replies are in entry order.
            args = self._headers[0].copy()
            args += [argument for _, argument in entries]
            (reply,) = await self._redis.settled([(lua.BATCH, self.keys.shared[0], args)])
            return self._replies(reply, len(entries)) or [reply] * len(entries)
        calls, placed = self._calls(entries, per_call)
        results: list[Any] = [None] * len(entries)
        for reply, positions in zip(await self._redis.settled(calls), placed, strict=True):
            replies = self._replies(reply, len(positions))
            for position, outcome in zip(
                positions, replies or [reply] * len(positions), strict=True
            ):
                results[position] = outcome
        return results

    def _replies(self, reply: Any, count: int) -> list[Any] | None:
        """The entries' replies in the reply of a call of ``count`` entries, each failed
        entry's as its exception; ``None`` when the call failed (``reply`` is its error)."""
        if isinstance(reply, BaseException):
            return None
        if reply.__class__ is not list or len(reply) != count:
            raise ScriptFailed(self._redis.url, ResponseError("the batch script replied badly"))
        for index, entry in enumerate(reply):
            if entry.__class__ is list and entry and entry[0] == lua.FAILED:
                error = _failure(entry)
                if error is not None:
                    reply[index] = error
        return reply

    async def run(self, jobs: list[Job[Sequence[Entry], list[Any]]]) -> None:
        """Send the entries of ``jobs`` in one round trip; each job gets its own outcome
        (the batcher's run).

        Raises:
            ScriptFailed: The round trip failed (the batcher fails every job with a copy).
        """
        if len(jobs) == 1:
            entries = jobs[0].payload
        else:
            entries = [entry for job in jobs for entry in job.payload]
        replies = await self.send(entries)
        start = 0
        url = self._redis.url
        for job in jobs:
            count = len(job.payload)
            if count == 1:
                reply = replies[start]
                if isinstance(reply, BaseException) and job.payload.__class__ is not Settled:
                    job.fail(ScriptFailed(url, reply))
                else:
                    job.succeed([reply])
            else:
                part = replies[start : start + count]
                failed = next((r for r in part if isinstance(r, BaseException)), None)
                if failed is None or job.payload.__class__ is Settled:
                    job.succeed(part)
                else:
                    job.fail(ScriptFailed(url, failed))
            start += count

    async def send_now(self, entries: Sequence[Entry]) -> list[Any]:
        """Send ``entries`` at once, in a round trip of their own (no group commit).

        Raises:
            ScriptFailed: Redis failed, or an entry did (not :class:`Settled` ones); which
                entries applied is unknown.
        """
        replies = await self.send(entries)
        failed = next((r for r in replies if isinstance(r, BaseException)), None)
        if failed is not None and entries.__class__ is not Settled:
            raise ScriptFailed(self._redis.url, failed)
        return replies
