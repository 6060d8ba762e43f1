"""The Redis adapter's key names, built in one place.

The layout is documented with the scripts that rely on it (:mod:`._scripts`); the
scripts address keys by position, so building every key here keeps the adapter, the claim
protocol and the queries from drifting apart from each other or from the scripts.
"""

from __future__ import annotations

import zlib
from typing import Final, final

from ...model import SessionState

__all__ = [
    "CLUSTER_BUCKETS",
    "LAYOUT",
    "MAX_BUCKETS",
    "SINGLE_BUCKETS",
    "STATES",
    "STATE_INDEX",
    "KeyLayout",
]

#: The version of the key layout written into ``<prefix>:meta``.
LAYOUT: Final = b"1"
#: Buckets when neither the caller nor stored data says: one on a single server (everything
#: atomic in one script), many in a cluster (so users spread over the nodes).
SINGLE_BUCKETS: Final = 1
CLUSTER_BUCKETS: Final = 1024
MAX_BUCKETS: Final = 16384

#: The states in the order of their sweep indexes among a batch script's keys.
STATES: Final = (
    SessionState.CREATED,
    SessionState.ACTIVE,
    SessionState.SUSPENDED,
    SessionState.EXPIRED,
)
#: The position (1-4) a commit entry gives to find a state's sweep index.
STATE_INDEX: Final = {state: str(i + 1).encode() for i, state in enumerate(STATES)}


@final
class KeyLayout:
    """The keys under one prefix, spread over ``buckets`` hash tags (none while 0)."""

    __slots__ = ("buckets", "meta", "shared", "tags")

    def __init__(self, prefix: bytes, buckets: int) -> None:
        self.buckets = buckets
        self.meta = prefix + b":meta"
        self.tags = [b"%s:{b%d}:" % (prefix, k) for k in range(buckets)]
        # Per bucket, the keys a batch script call for its users is given (``_scripts.BATCH``).
        self.shared = [
            [tag + b"i", *(tag + b"d:" + state.value.encode() for state in STATES), tag + b"r"]
            for tag in self.tags
        ]

    def bucket(self, data: bytes) -> int:
        return zlib.crc32(data) % self.buckets if self.buckets > 1 else 0

    def user_tag(self, user: bytes) -> bytes:
        return self.tags[self.bucket(user)]

    def version_key(self, user: bytes) -> bytes:
        return self.user_tag(user) + b"v:" + user

    def epoch_key(self, user: bytes) -> bytes:
        return self.user_tag(user) + b"e:" + user

    def sessions_key(self, user: bytes) -> bytes:
        return self.user_tag(user) + b"s:" + user

    def claims_keys(self, session_id: bytes) -> list[bytes]:
        tag = self.tags[self.bucket(session_id)]
        return [tag + b"i", tag + b"t"]

    def due_key(self, bucket: int, state: SessionState) -> bytes:
        return self.tags[bucket] + b"d:" + state.value.encode()

    def recency_key(self, bucket: int) -> bytes:
        return self.tags[bucket] + b"r"
