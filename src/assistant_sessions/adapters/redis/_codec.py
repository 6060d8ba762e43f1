"""How the Redis adapter writes values: ids, index members and sessions as bytes.

Every value must read back exactly, whatever the ids contain and whatever the server's locale,
and the scripts compare some of them byte for byte; one module holds each encoding so that
writer and reader always agree. A session is stored as its ASCII JSON text and scored by
integer microseconds, both from :mod:`assistant_sessions.adapters._encoding` (shared with the
SQLite adapter).
"""

from __future__ import annotations

from collections.abc import Container

from ...model import Session
from .._encoding import encode_session, to_micros
from ..base import state_clock
from ._keys import STATE_INDEX

__all__ = ["from_bytes", "member", "split_member", "to_bytes", "upsert_args"]


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


def upsert_args(user: bytes, session: Session, claimed: Container[bytes]) -> tuple[bytes, ...]:
    """The commit script's arguments for one upserted session of ``user``: id, JSON, member,
    state (1-4), due score, recency score, and whether its id was claimed beforehand."""
    session_id = to_bytes(session.id)
    return (
        session_id,
        encode_session(session).encode(),
        member(user, session_id),
        STATE_INDEX[session.state],
        str(to_micros(state_clock(session))).encode(),
        str(to_micros(session.last_activity_at)).encode(),
        b"1" if session_id in claimed else b"0",
    )
