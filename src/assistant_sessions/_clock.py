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
    """Return a clock of UTC times from ``clock``, which must be callable and return aware
    ``datetime`` objects (it is called once here).

    Its times are converted to UTC, as the store promises them (a clock in another zone gives
    the same instants); one that is naive later raises ``InvalidInputError``.
    """
    if clock is None:
        return utc_now
    if not callable(clock):
        raise InvalidTypeError(f"clock must be callable, not {type(clock).__name__}")
    check_aware(clock(), "clock()")
    supplied: Clock = clock

    def in_utc() -> datetime:
        now = supplied()
        if now.tzinfo is UTC:
            return now
        return check_aware(now, "clock()").astimezone(UTC)

    in_utc.__wrapped__ = supplied  # type: ignore[attr-defined]
    return in_utc
