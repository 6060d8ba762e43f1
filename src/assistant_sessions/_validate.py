"""Checks of caller input, done at the facade before anything is queued or changed.

Each check raises :class:`InvalidTypeError` for a wrong type and :class:`InvalidInputError`
for a wrong value, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from .errors import InvalidInputError, InvalidTypeError
from .model import EMPTY_METADATA, SessionQuery, SessionState

#: Longest id (user, workspace, session, surface) the store accepts.
MAX_ID_LENGTH: Final = 512

#: Deepest nesting of metadata values the store accepts.
MAX_METADATA_DEPTH: Final = 32

#: Largest metadata integers the store accepts, in bits (about 4,200 decimal digits).
MAX_INT_BITS: Final = 14_000

#: Largest ``limit`` the store accepts: what SQLite's 64-bit integers take.
MAX_LIMIT: Final = 2**63 - 1

#: Longest duration (ttl, interval, age) the store accepts: a thousand years, so that "now
#: minus a duration" stays a valid ``datetime`` for centuries to come.
MAX_DURATION: Final = timedelta(days=1000 * 365)
_MAX_SECONDS: Final = MAX_DURATION.total_seconds()


def check_id(value: object, name: str) -> str:
    """Return ``value`` if it is a non-blank string of at most :data:`MAX_ID_LENGTH` characters,
    valid Unicode, without NUL (``"\\x00"``: SQLite's indexes cut text there, so no adapter
    could match such an id exactly).

    A ``str`` subclass gives its string value (never what its ``__str__`` returns).
    """
    if type(value) is not str:
        if isinstance(value, str):
            return check_id(str.__str__(value), name)
        raise InvalidTypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH or value.isspace():
        raise InvalidInputError(
            f"{name} must be a non-blank string of at most {MAX_ID_LENGTH} characters"
        )
    if "\x00" in value:
        raise InvalidInputError(f"{name} must not contain NUL ('\\x00')")
    if not value.isascii():
        _check_unicode(value, name)
    return value


def _check_unicode(value: str, name: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8, so no storage (or JSON size check) can keep
    # it: reject it here as bad input instead of failing later with a UnicodeEncodeError.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInputError(f"{name} is not valid Unicode (it has a lone surrogate)") from None


def check_optional_id(value: object, name: str) -> str | None:
    """Like :func:`check_id`, but ``None`` is allowed."""
    return None if value is None else check_id(value, name)


def check_state(value: object) -> SessionState:
    """Return the :class:`SessionState` named by ``value`` (a member or its string value)."""
    if isinstance(value, SessionState):
        return value
    if not isinstance(value, str):
        raise InvalidTypeError(f"state must be a SessionState or str, not {type(value).__name__}")
    try:
        return SessionState(value)
    except ValueError:
        allowed = ", ".join(s.value for s in SessionState)
        raise InvalidInputError(f"unknown state {value!r}; expected one of {allowed}") from None


def check_states(value: object) -> frozenset[SessionState]:
    """Return the states named by ``value``: one state (a member or its string value) or any
    iterable of them, at least one."""
    if isinstance(value, SessionState | str):
        return frozenset((check_state(value),))
    if not isinstance(value, Iterable):
        raise InvalidTypeError(
            "state must be a SessionState, a str or an iterable of them, "
            f"not {type(value).__name__}"
        )
    states = frozenset(check_state(item) for item in value)
    if not states:
        raise InvalidInputError("state must name at least one state")
    return states


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a ``bool``."""
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_limit(value: object) -> int:
    """Return ``value`` if it is an ``int`` from 1 to :data:`MAX_LIMIT`."""
    if type(value) is not int:
        raise InvalidTypeError(f"limit must be an int, not {type(value).__name__}")
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be from 1 to {MAX_LIMIT}, got {value}")
    return value


def check_duration(value: object, name: str) -> timedelta:
    """Return a positive duration given in seconds (``int``/``float``) or as a ``timedelta``."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidInputError(f"{name} must be finite, got {value}")
        if not 0 < value <= _MAX_SECONDS:
            raise InvalidInputError(
                f"{name} must be positive and at most {_MAX_SECONDS} seconds, got {value}"
            )
        duration = timedelta(seconds=value)
    else:
        raise InvalidTypeError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    if duration <= timedelta(0):
        raise InvalidInputError(f"{name} must be positive, got {value!r}")
    if duration > MAX_DURATION:
        raise InvalidInputError(f"{name} must be at most {MAX_DURATION}, got {duration}")
    return duration


def check_optional_duration(value: object, name: str) -> timedelta | None:
    """Like :func:`check_duration`, but ``None`` (turned off) is allowed."""
    return None if value is None else check_duration(value, name)


def check_aware(value: object, name: str) -> datetime:
    """Return ``value`` if it is a timezone-aware ``datetime``."""
    if not isinstance(value, datetime):
        raise InvalidTypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} must be timezone-aware")
    return value


def freeze_metadata(value: object) -> Mapping[str, Any]:
    """Validate metadata and return a deep read-only copy of it.

    Metadata is a mapping with ``str`` keys and JSON-serializable values: ``None``, ``bool``,
    ``int``, finite ``float``, ``str``, lists or tuples of values, and mappings with ``str``
    keys. The copy shares nothing mutable with ``value``: nested mappings become read-only
    mappings and sequences become tuples.
    """
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"metadata must be a mapping, not {type(value).__name__}")
    if not value:
        return EMPTY_METADATA
    return _freeze_mapping(value, "metadata", 0)


def _freeze_mapping(value: Mapping[Any, Any], path: str, depth: int) -> Mapping[str, Any]:
    frozen: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidTypeError(f"{path} keys must be str, not {type(key).__name__}")
        if type(key) is not str:
            key = str.__str__(key)  # the string value, whatever the subclass does
        if not key.isascii():
            _check_unicode(key, f"{path} key {key!r}")
        frozen[key] = _freeze_value(item, f"{path}[{key!r}]", depth + 1)
    return MappingProxyType(frozen)


def _freeze_value(value: object, path: str, depth: int) -> Any:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInputError(f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        if type(value) is not str:
            value = str.__str__(value)  # the string value, whatever the subclass does
        if not value.isascii():
            _check_unicode(value, path)
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Python writes no int of more than 4,300 digits as text (nor reads one back).
        if value.bit_length() > MAX_INT_BITS:
            raise InvalidInputError(f"{path} is an integer of more than {MAX_INT_BITS} bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{path} must be a finite number, got {value}")
        return value
    if isinstance(value, Mapping):
        return _freeze_mapping(value, path, depth)
    if isinstance(value, list | tuple):
        return tuple(_freeze_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
    raise InvalidTypeError(f"{path} is not JSON-serializable: {type(value).__name__}")


def thaw(value: Any) -> Any:
    """Return a plain JSON-ready copy of frozen metadata (dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def check_query(
    user_id: object,
    workspace_id: object,
    state: object,
    surface_id: object,
    active_after: object,
    limit: object,
) -> SessionQuery:
    """A :class:`SessionQuery` of checked filters (``find``'s arguments)."""
    return SessionQuery(
        user_id=check_optional_id(user_id, "user_id"),
        workspace_id=check_optional_id(workspace_id, "workspace_id"),
        state=None if state is None else check_states(state),
        surface_id=check_optional_id(surface_id, "surface_id"),
        active_after=None if active_after is None else check_aware(active_after, "active_after"),
        limit=check_limit(limit),
    )
