"""How the Redis adapter writes values: ids, times, index members and sessions as bytes.

Every value must read back exactly, whatever the ids contain and whatever the server's locale,
and the scripts compare some of them byte for byte; one module holds each encoding so that
writer and reader always agree.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Final

import cattrs

from ...errors import AdapterError
from ...model import Session
from .._encoding import session_from_dict, session_to_dict

__all__ = [
    "decode_session",
    "encode_session",
    "from_bytes",
    "member",
    "micros",
    "split_member",
    "to_bytes",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_bytes(text: str) -> bytes:
    # Ids are any Python strings; surrogatepass keeps even lone surrogates round-tripping.
    return text.encode("utf-8", "surrogatepass")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def micros(when: datetime) -> int:
    """Microseconds since the epoch: exact for every ``datetime`` and every double score."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def member(user: bytes, session_id: bytes) -> bytes:
    """The zset member naming a session: ``<byte length of user>:<user><session id>``."""
    return b"%d:%s%s" % (len(user), user, session_id)


def split_member(data: bytes) -> tuple[bytes, bytes]:
    """The user and the session id a zset member names."""
    size, _, rest = data.partition(b":")
    n = int(size)
    return rest[:n], rest[n:]


def encode_session(session: Session) -> bytes:
    # ASCII JSON: every id and metadata string survives, whatever the server's locale.
    return json.dumps(session_to_dict(session), separators=(",", ":")).encode()


def decode_session(raw: bytes, session_id: str) -> Session:
    """The session stored as ``raw``.

    Raises:
        AdapterError: ``raw`` is not a session (naming ``session_id``).
    """
    try:
        return session_from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
        raise AdapterError(
            f"session {session_id!r} is stored in a form that cannot be read"
        ) from exc
