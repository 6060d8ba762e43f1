"""Version conflicts in the Redis adapter: the state a conflict read, and leases for losers.

A commit rejected for its version is followed at once by its actor's reload of the user. The
commit script already read the user in the same atomic step as the check, so the reload that
follows *in the same task, at once* takes that state instead of another round trip; anything
later reads Redis again.

A writer that keeps losing version races to writers in other processes asks for a *lease* on
the user's commits (see :data:`~._scripts.BATCH`): after :data:`LEASE_AFTER` conflicts in a
row, its next commit carries :data:`LEASE_MS`, and on a conflict the script gives it the lease
(unless another writer holds one). While the lease lives, other writers' commits are refused
as conflicts, each told how long it has left, and wait that long before they retry.
"""

from __future__ import annotations

from typing import Any, Final, final

import anyio

from ...errors import AdapterError
from ..base import UserSnapshot
from ._codec import snapshot

__all__ = ["LEASE_AFTER", "LEASE_MS", "Conflicts"]

#: After this many version conflicts in a row, a writer asks for a lease on the user's
#: commits, held for at most LEASE_MS milliseconds.
LEASE_AFTER: Final = 2
LEASE_MS: Final = 250
_LEASE: Final = b"%d" % LEASE_MS
_NO_LEASE: Final = b"0"

#: Seconds after a version conflict during which the same task's reload of that user may use
#: the state the conflict read.
_REUSE_WINDOW: Final = 0.01
#: Most users remembered (rejected states, losses); past it, the memory starts afresh.
_MAX_USERS: Final = 1024


@final
class Conflicts:
    """One adapter's memory of recent version conflicts, per user."""

    __slots__ = ("_losses", "_rejected")

    def __init__(self) -> None:
        # The user as a version conflict found it, for the reload that follows at once.
        self._rejected: dict[str, tuple[UserSnapshot, object, float]] = {}
        # Version conflicts in a row, per user.
        self._losses: dict[str, int] = {}

    def lease(self, user_id: str) -> bytes:
        """The lease milliseconds a commit of ``user_id`` asks for (``b"0"``: none)."""
        losses = self._losses
        return _LEASE if losses and losses.get(user_id, 0) >= LEASE_AFTER else _NO_LEASE

    def won(self, user_id: str) -> None:
        """A commit of ``user_id`` got through (or failed otherwise than by its version)."""
        if self._losses:
            self._losses.pop(user_id, None)

    def lost(self, user_id: str, reply: list[Any]) -> int:
        """A commit of ``user_id`` met a version conflict, whose script replied ``reply``
        (``{1, version, {id, json...}, wait}``): remember the user's state for the reload, and
        return how many milliseconds another writer's lease has left."""
        losses, rejected = self._losses, self._rejected
        if len(losses) >= _MAX_USERS:
            losses.clear()
        losses[user_id] = losses.get(user_id, 0) + 1
        if len(rejected) >= _MAX_USERS:
            rejected.clear()
        try:
            state = snapshot(user_id, reply[1], reply[2])
        except AdapterError:
            rejected.pop(user_id, None)  # the reload reads it again, and reports the failure
        else:
            rejected[user_id] = (state, anyio.get_current_task().id, anyio.current_time())
        return int(reply[3])

    def reuse(self, user_id: str) -> UserSnapshot | None:
        """The state of ``user_id`` that a conflict read, if this is the reload that follows it
        (in the same task, at once); ``None`` otherwise."""
        if not self._rejected:
            return None
        rejected = self._rejected.pop(user_id, None)
        if rejected is None:
            return None
        state, task, at = rejected
        if task != anyio.get_current_task().id or anyio.current_time() - at >= _REUSE_WINDOW:
            return None
        return state
