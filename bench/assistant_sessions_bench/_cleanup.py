"""What a benchmark run wrote to a Redis server, deleted afterwards: exactly its own keys.

Every Redis adapter the benchmark builds writes under a key prefix of its own; each prefix is
recorded (:class:`RedisKeyLog`) *before* the adapter is opened, and the command deletes every
recorded prefix when it ends, however it ends (normally, on an error, or on Ctrl-C). The keys
of a prefix ``P`` are ``P:meta`` and ``P:{b<k>}:...``, so the pattern ``P:*`` (with ``P``'s glob
characters escaped) matches exactly them and no other key: ``bench-1-1:*`` does not match the
keys of ``bench-1-10``. Keys are found with ``SCAN MATCH`` (never ``KEYS``) and removed with
``UNLINK`` in batches.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Final, final

import anyio

__all__ = ["DELETE_BATCH", "RedisKeyLog", "delete_prefixes", "key_pattern"]

#: Keys per SCAN step and per UNLINK.
DELETE_BATCH: Final = 500


def key_pattern(prefix: str) -> str:
    """The SCAN MATCH pattern of exactly the keys under ``prefix``."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"{escaped}:*"


async def delete_prefixes(url: str, prefixes: Iterable[str]) -> int:
    """Delete every key under each of ``prefixes`` on the server at ``url``; return how many."""
    import coredis  # the `redis` extra; only reached when a Redis adapter was built

    deleted = 0
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        for prefix in prefixes:
            pattern = key_pattern(prefix)
            # Collect first, then delete: deleting while a SCAN is under way is allowed, but
            # the prefixes are small (thousands of keys), and this keeps the scan simple.
            keys = [key async for key in client.scan_iter(match=pattern, count=DELETE_BATCH)]
            for start in range(0, len(keys), DELETE_BATCH):
                deleted += await client.unlink(keys[start : start + DELETE_BATCH])
    return deleted


@final
class RedisKeyLog:
    """The Redis key prefixes a run has written under, by server, for :meth:`delete_all`."""

    def __init__(self) -> None:
        self._prefixes: dict[str, list[str]] = {}

    def record(self, url: str, prefix: str) -> None:
        """Note that an adapter at ``url`` will write under ``prefix`` (call before it does)."""
        self._prefixes.setdefault(url, []).append(prefix)

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def delete_all(self) -> int:
        """Delete the keys of every recorded prefix (in a new event loop); forget them.

        A failure (the server went away) is reported on stderr, naming what is left behind;
        it does not raise, so it cannot hide the benchmark's own outcome.
        """
        deleted = 0
        while self._prefixes:
            url, prefixes = self._prefixes.popitem()
            try:
                deleted += anyio.run(delete_prefixes, url, prefixes)
            except Exception as exc:
                patterns = " ".join(key_pattern(p) for p in prefixes)
                print(
                    f"assistant-sessions bench: could not delete the benchmark's keys at {url} "
                    f"({exc}); left behind: {patterns}",
                    file=sys.stderr,
                )
        return deleted
