"""How the Redis adapter writes values: ids, index members, sessions and batch entries as bytes.

Every value must read back exactly, whatever the ids contain and whatever the server's locale,
and the scripts compare some of them byte for byte; one module holds each encoding so that
writer and reader always agree. A session is stored as its ASCII JSON text and scored by
integer microseconds, both from :mod:`assistant_sessions.adapters._encoding` (shared with the
SQLite adapter). The entries of :data:`~._scripts.BATCH` are built here too: each one argument,
its fields in the order the script reads them, joined by NUL. No field can hold a NUL: the JSON
text escapes control characters, and ids never contain one (the store refuses them; given to
the adapter directly, they are refused here).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any, Final

from ...errors import AdapterError, InvalidInputError
from .._encoding import decode_session, encode_session, to_micros
from ..base import UserCommit, UserSnapshot, state_clock
from ._keys import STATE_INDEX

__all__ = [
    "NOTHING_CLAIMED",
    "commit_entry",
    "from_bytes",
    "id_entry",
    "loaded",
    "member",
    "snapshot",
    "split_member",
    "to_bytes",
]

#: No session id claimed beforehand (every commit's first round).
NOTHING_CLAIMED: Final[frozenset[bytes]] = frozenset()


def to_bytes(text: str) -> bytes:
    # Ids are any Python strings; surrogatepass keeps even lone surrogates round-tripping.
    return text.encode("utf-8", "surrogatepass")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def member(user: bytes, session_id: bytes) -> bytes:
    """The zset member naming a session: ``<byte length of user>:<user><session id>``."""
    return b"%d:%s%s" % (len(user), user, session_id)


def split_member(data: bytes) -> tuple[bytes, bytes]:
    """The user and the session id a zset member names."""
    size, _, rest = data.partition(b":")
    n = int(size)
    return rest[:n], rest[n:]


def snapshot(user_id: str, version: Any, flat: list[bytes]) -> UserSnapshot:
    """The user read by a script: its version and ``{id, json, id, json...}``.

    Raises:
        AdapterError: A session cannot be decoded.
    """
    sessions = tuple(
        decode_session(flat[i + 1], from_bytes(flat[i])) for i in range(0, len(flat), 2)
    )
    return UserSnapshot(user_id, int(version), sessions)


def loaded(
    user_id: str, reply: Any, failure: Callable[[BaseException], AdapterError]
) -> UserSnapshot | AdapterError:
    """The user a load entry replied (``{version, {id, json...}}``), or the user's own error:
    ``failure(reply)`` for an entry that failed in Redis, or a session that cannot be decoded.
    """
    if isinstance(reply, BaseException):
        return failure(reply)
    try:
        return snapshot(user_id, reply[0], reply[1])
    except AdapterError as exc:
        return exc


def _no_nul(entry: bytes, fields: int) -> bytes:
    if entry.count(b"\0") != fields - 1:
        raise InvalidInputError("ids given to the Redis adapter must not contain NUL ('\\x00')")
    return entry


def id_entry(op: bytes, key: bytes) -> bytes:
    """The batch script's entry ``op`` (``L``: load a user, ``G``: get a session) for ``key``.

    Raises:
        InvalidInputError: The id contains NUL.
    """
    return _no_nul(op + b"\0" + key, 2)


def commit_entry(
    user: bytes,
    commit: UserCommit,
    claimed: Container[bytes],
    epoch: bytes,
    lease: bytes,
) -> bytes:
    """The batch script's entry for one user's commit (see :data:`~._scripts.BATCH`).

    Per upsert: id, JSON, state (1-4), due score, recency score, and whether its id was
    claimed beforehand; per delete: its id. The script names the index members itself.

    Raises:
        AdapterError: An upserted session belongs to another user.
        InvalidInputError: An id contains NUL.
    """
    upserts, deletes = commit.upserts, commit.deletes
    entry = [
        b"C",
        user,
        b"%d" % commit.expected_version,
        b"%d" % len(upserts),
        b"%d" % len(deletes),
        epoch,
        lease,
    ]
    user_id = commit.user_id
    for session in upserts:
        if session.user_id != user_id:
            raise AdapterError(
                f"commit of user {user_id!r} upserts session {session.id!r} "
                f"of user {session.user_id!r}"
            )
        session_id = to_bytes(session.id)
        active = session.last_activity_at
        recency = b"%d" % to_micros(active)
        clock = state_clock(session)  # the due index's score; often the last activity itself
        entry += (
            session_id,
            encode_session(session).encode(),
            STATE_INDEX[session.state],
            recency if clock is active else b"%d" % to_micros(clock),
            recency,
            b"1" if session_id in claimed else b"0",
        )
    entry += map(to_bytes, deletes)
    return _no_nul(b"\0".join(entry), len(entry))
