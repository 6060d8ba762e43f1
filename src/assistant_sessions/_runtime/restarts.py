"""Restart intensity, OTP style: how often one actor may fail before its calls are refused."""

from __future__ import annotations

import anyio

from ..errors import ActorFailedError

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """Counts actor failures per user within a sliding window.

    Past ``max_restarts`` failures within ``window`` seconds a user is *broken*: its calls raise
    :class:`ActorFailedError` until the window has passed, and then it starts afresh. Times are
    anyio's clock (monotonic), not the store's clock.
    """

    __slots__ = ("_failures", "broken", "max_restarts", "restarts", "window")

    def __init__(self, max_restarts: int, window: float) -> None:
        self.max_restarts = max_restarts
        self.window = window
        #: Restarts granted, in all.
        self.restarts = 0
        #: Broken users, and until when.
        self.broken: dict[str, float] = {}
        self._failures: dict[str, list[float]] = {}

    def failed(self, user_id: str) -> bool:
        """Count a failure of ``user_id``'s actor; return whether it may restart."""
        now = anyio.current_time()
        window = self.window
        failures = [t for t in self._failures.get(user_id, ()) if now - t < window]
        failures.append(now)
        self._failures[user_id] = failures
        if len(failures) > self.max_restarts:
            self.broken[user_id] = now + window
            return False
        self.restarts += 1
        return True

    def check(self, user_id: str) -> None:
        """Raise :class:`ActorFailedError` while ``user_id`` is broken."""
        until = self.broken.get(user_id)
        if until is None:
            return
        if anyio.current_time() < until:
            raise ActorFailedError(
                user_id,
                f"the actor of user {user_id!r} failed too often; retrying after {self.window:g}s",
            )
        del self.broken[user_id]
        self._failures.pop(user_id, None)

    def is_broken(self, user_id: str) -> bool:
        """Whether ``user_id`` is broken now."""
        until = self.broken.get(user_id)
        return until is not None and anyio.current_time() < until

    def forget(self, user_id: str) -> None:
        """Drop what is known of ``user_id`` (its actor was retired)."""
        self._failures.pop(user_id, None)
        self.broken.pop(user_id, None)
