"""Checks of caller input, done at the facade before anything is queued or changed.

Each check raises :class:`InvalidTypeError` for a wrong type and :class:`InvalidInputError`
for a wrong value, naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from .errors import InvalidInputError, InvalidTypeError
from .model import EMPTY_METADATA, SessionQuery, SessionState

#: Longest id (user, workspace, session, surface) the store accepts.
MAX_ID_LENGTH: Final = 512

#: Deepest nesting of metadata values the store accepts.
MAX_METADATA_DEPTH: Final = 32


def check_id(value: object, name: str) -> str:
    """Return ``value`` if it is a non-empty string of at most :data:`MAX_ID_LENGTH` characters."""
    if type(value) is not str:
        if isinstance(value, str):
            return check_id(str(value), name)
        raise InvalidTypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH or value.isspace():
        raise InvalidInputError(
            f"{name} must be a non-blank string of at most {MAX_ID_LENGTH} characters"
        )
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


def check_limit(value: object) -> int:
    """Return ``value`` if it is an ``int`` of at least 1."""
    if type(value) is not int:
        raise InvalidTypeError(f"limit must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidInputError(f"limit must be at least 1, got {value}")
    return value


def check_duration(value: object, name: str) -> timedelta:
    """Return a positive duration given in seconds (``int``/``float``) or as a ``timedelta``."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidInputError(f"{name} must be finite, got {value}")
        duration = timedelta(seconds=value)
    else:
        raise InvalidTypeError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    if duration <= timedelta(0):
        raise InvalidInputError(f"{name} must be positive, got {value!r}")
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
        if not key.isascii():
            _check_unicode(key, f"{path} key {key!r}")
        frozen[key] = _freeze_value(item, f"{path}[{key!r}]", depth + 1)
    return MappingProxyType(frozen)


def _freeze_value(value: object, path: str, depth: int) -> Any:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInputError(f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        if not value.isascii():
            _check_unicode(value, path)
        return value
    if value is None or isinstance(value, bool | int):
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
        state=None if state is None else check_state(state),
        surface_id=check_optional_id(surface_id, "surface_id"),
        active_after=None if active_after is None else check_aware(active_after, "active_after"),
        limit=check_limit(limit),
    )
