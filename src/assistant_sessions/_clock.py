"""Where the store's timestamps come from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ._validate import check_aware
from .errors import InvalidTypeError

__all__ = ["Clock", "check_clock", "utc_now"]

#: A zero-argument callable returning the current time as a timezone-aware UTC ``datetime``.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: the system's current time in UTC."""
    return datetime.now(UTC)


def check_clock(clock: object) -> Clock:
    """Return ``clock`` if it is callable and returns an aware ``datetime`` (called once)."""
    if clock is None:
        return utc_now
    if not callable(clock):
        raise InvalidTypeError(f"clock must be callable, not {type(clock).__name__}")
    check_aware(clock(), "clock()")
    return clock
