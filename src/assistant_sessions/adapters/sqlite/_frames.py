"""The frames of the SQLite writer process's pipes: a 4-byte big-endian length, then a pickle.

Both sides are this library, started by the same interpreter, so a pickle is safe and exact.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO, Final

__all__ = ["HEADER", "ErrorTuple", "describe", "pack", "read"]

#: A frame's length prefix.
HEADER: Final = struct.Struct(">I")

#: How an exception crosses the pipe: class name, message, SQLite error code and name.
ErrorTuple = tuple[str, str, int | None, str | None]


def pack(value: object) -> bytes:
    """One frame holding ``value``."""
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def describe(exc: BaseException) -> ErrorTuple:
    """What the parent needs to raise a like error (see :func:`pack`)."""
    return (
        type(exc).__name__,
        str(exc),
        getattr(exc, "sqlite_errorcode", None),
        getattr(exc, "sqlite_errorname", None),
    )


def read(stream: BinaryIO) -> Any:
    """The next frame's value, or ``None`` at the end of input."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    body = stream.read(length)
    if len(body) < length:
        return None
    return pickle.loads(body)
