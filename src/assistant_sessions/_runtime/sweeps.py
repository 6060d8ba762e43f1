"""Sweeps: suspend stale sessions, expire long-suspended ones, purge long-expired ones.

A sweep reads candidates from the storage's ``due`` index, then hands each user's candidates to
that user's actor as one operation, which re-checks every candidate in its turn (so a session
touched after the sweep's cutoff is never suspended). A user whose turn fails is skipped, logged
and reported after every other user has been swept.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

from .._clock import Clock
from .._core import ExpireSuspended, Op, Purge, SuspendStale
from ..adapters.base import state_clock
from ..errors import ActorFailedError, AdapterError
from ..model import Session, SessionState
from .metrics import Recorder
from .storage import Storage

__all__ = ["SWEEP_BATCH", "Sweeper"]

logger = logging.getLogger("assistant_sessions")

#: How many sweep candidates are read from the storage at a time.
SWEEP_BATCH: Final = 1000


class Sweeper:
    """Runs the store's sweeps through the owners' actors.

    Args:
        storage: Where candidates are read.
        call: Applies an operation in the actor of a user.
        clock: The store's clock.
        recorder: Counts what sweeps changed.
        default_ttl: The ttl of :meth:`sweep_stale` in periodic sweeps.
        expire_after: With periodic sweeps, expire sessions suspended longer than this.
        purge_after: With periodic sweeps, delete sessions expired longer than this.
    """

    def __init__(
        self,
        storage: Storage,
        call: Callable[[str, Op], Awaitable[Any]],
        *,
        clock: Clock,
        recorder: Recorder,
        default_ttl: timedelta,
        expire_after: timedelta | None,
        purge_after: timedelta | None,
    ) -> None:
        self._storage = storage
        self._call = call
        self._clock = clock
        self._recorder = recorder
        self.default_ttl = default_ttl
        self.expire_after = expire_after
        self.purge_after = purge_after
        #: Completed :meth:`sweep_stale` calls.
        self.sweeps = 0

    async def sweep_stale(self, ttl: timedelta) -> list[Session]:
        """Suspend created and active sessions last active more than ``ttl`` ago; return them.

        Raises:
            AdapterError, ActorFailedError: The turn of some user failed; every other user was
                swept all the same.
        """
        cutoff = self._clock() - ttl
        moved: list[Session] = []
        failures: list[Exception] = []
        for state in (SessionState.CREATED, SessionState.ACTIVE):
            moved += await self._move(
                state, cutoff, lambda user, ids: SuspendStale(user, ids, cutoff), failures
            )
        self.sweeps += 1
        self._recorder.sessions_suspended += len(moved)
        _raise_first(failures)
        return moved

    async def expire_suspended(self, after: timedelta) -> list[Session]:
        """Expire sessions suspended for more than ``after``; return them."""
        cutoff = self._clock() - after
        failures: list[Exception] = []
        moved = await self._move(
            SessionState.SUSPENDED,
            cutoff,
            lambda user, ids: ExpireSuspended(user, ids, cutoff),
            failures,
        )
        self._recorder.sessions_expired += len(moved)
        _raise_first(failures)
        return moved

    async def purge_expired(self, after: timedelta) -> list[Session]:
        """Delete sessions expired for more than ``after``; return them as they were."""
        cutoff = self._clock() - after
        failures: list[Exception] = []
        purged = await self._move(
            SessionState.EXPIRED, cutoff, lambda user, ids: Purge(user, ids, cutoff), failures
        )
        self._recorder.sessions_purged += len(purged)
        _raise_first(failures)
        return purged

    async def _move(
        self,
        state: SessionState,
        cutoff: datetime,
        make: Callable[[str, list[str]], Op],
        failures: list[Exception],
    ) -> list[Session]:
        moved: list[Session] = []
        # Keyset paging: each batch starts past the last candidate of the one before, so
        # candidates left in place (their owner's turn failed) cannot hide the ones after them.
        after: tuple[datetime, str] | None = None
        while True:
            candidates = await self._storage.due(state, cutoff, SWEEP_BATCH, after)
            if not candidates:
                return moved
            last = candidates[-1]
            after = (state_clock(last), last.id)
            by_user: defaultdict[str, list[str]] = defaultdict(list)
            for session in candidates:
                by_user[session.user_id].append(session.id)
            for user_id, ids in by_user.items():
                # A user whose turn fails (broken actor, storage error for that user) must not
                # hold up everyone after it: note the failure and go on.
                try:
                    moved.extend(await self._call(user_id, make(user_id, ids)))
                except (AdapterError, ActorFailedError) as exc:
                    logger.warning("sweep skipped the sessions of user %r: %s", user_id, exc)
                    failures.append(exc)

    async def sweep_once(self) -> tuple[list[Session], list[Session], list[Session]]:
        """One round of periodic work: suspend stale sessions, expire long-suspended ones (when
        ``expire_after`` is set) and purge long-expired ones (when ``purge_after`` is set).

        Returns:
            The sessions suspended, expired and purged.

        Raises:
            AdapterError, ActorFailedError: The first failure met; every phase still ran for
                every other user.
        """
        failures: list[Exception] = []
        suspended: list[Session] = []
        expired: list[Session] = []
        purged: list[Session] = []
        # Each phase runs even if an earlier one failed for some user.
        try:
            suspended = await self.sweep_stale(self.default_ttl)
        except (AdapterError, ActorFailedError) as exc:
            failures.append(exc)
        if self.expire_after is not None:
            try:
                expired = await self.expire_suspended(self.expire_after)
            except (AdapterError, ActorFailedError) as exc:
                failures.append(exc)
        if self.purge_after is not None:
            try:
                purged = await self.purge_expired(self.purge_after)
            except (AdapterError, ActorFailedError) as exc:
                failures.append(exc)
        if suspended or expired or purged:
            logger.info(
                "sweep suspended %d, expired %d and purged %d sessions",
                len(suspended),
                len(expired),
                len(purged),
            )
        _raise_first(failures)
        return suspended, expired, purged


def _raise_first(failures: list[Exception]) -> None:
    """Raise the first failure of a sweep that went on past it (each was logged)."""
    if failures:
        raise failures[0]
