"""The supervisor: the actor registry, actor tasks and restarts, idle retirement, and sweeps.

Everything periodic lives in :meth:`Supervisor.sweep_once` and :meth:`Supervisor.retire_idle`,
which tests call directly; the loop in :meth:`Supervisor.run` only sleeps and calls them.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._clock import Clock
from .._core import (
    DEFAULT_POLICY,
    ExpireSuspended,
    Op,
    Policy,
    Purge,
    SuspendStale,
    Transaction,
    UserState,
)
from ..adapters.base import SessionStoreAdapter, SynchronousAdapter, UserSnapshot
from ..errors import ActorFailedError, AdapterError, StoreClosedError
from ..model import Session, SessionState
from .actor import ActorCrash, UserActor
from .events import EventBus, diff_events
from .metrics import Recorder

__all__ = ["Supervisor"]

logger = logging.getLogger("assistant_sessions")

#: How many sweep candidates are read from the adapter at a time.
SWEEP_BATCH: Final = 1000


class Supervisor:
    """Owns every actor of one store: creates, runs, restarts and retires them; runs sweeps."""

    def __init__(
        self,
        adapter: SessionStoreAdapter,
        *,
        clock: Clock,
        default_ttl: timedelta,
        sweep_interval: timedelta | None,
        expire_after: timedelta | None,
        idle_after: timedelta,
        purge_after: timedelta | None = None,
        policy: Policy = DEFAULT_POLICY,
        mailbox_size: int,
        max_batch: int,
        max_restarts: int,
        restart_window: float,
    ) -> None:
        self.adapter = adapter
        self.sync_adapter: SynchronousAdapter | None = (
            adapter if isinstance(adapter, SynchronousAdapter) else None
        )
        self.clock = clock
        self.default_ttl = default_ttl
        self.sweep_interval = sweep_interval
        self.expire_after = expire_after
        self.purge_after = purge_after
        self.policy = policy
        self.idle_after = idle_after
        self.events = EventBus()
        self.recorder = Recorder()
        self.mailbox_size = mailbox_size
        self.max_batch = max_batch
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.actors: dict[str, UserActor] = {}
        #: Advanced by each :meth:`retire_idle`; actors remember the tick of their last call.
        self.tick = 0
        self.restarts = 0
        self.sweeps = 0
        self._task_group: TaskGroup | None = None

    # -- actors ---------------------------------------------------------------------------

    def actor(self, user_id: str) -> UserActor:
        """The actor of ``user_id``, created (not yet loaded) if it is not live."""
        actor = self.actors.get(user_id)
        if actor is None:
            actor = self.actors[user_id] = UserActor(user_id, self)
            sync = self.sync_adapter
            if sync is not None:
                try:
                    actor.state = UserState(sync.load_user_nowait(user_id))
                except Exception:
                    actor.state = None
        return actor

    async def call(self, user_id: str, op: Op) -> Any:
        """Apply ``op`` in the actor of ``user_id`` (the caller has passed a checkpoint)."""
        return await self.actor(user_id).call(op)

    async def load_user(self, user_id: str) -> UserSnapshot:
        """Load one user's sessions from the adapter."""
        sync = self.sync_adapter
        if sync is not None:
            return sync.load_user_nowait(user_id)
        return await self.adapter.load_user(user_id)

    def spawn(self, actor: UserActor) -> None:
        """Start the actor's drain task (the actor is already marked busy)."""
        assert self._task_group is not None
        self._task_group.start_soon(self._run_actor, actor, name=f"actor:{actor.user_id}")

    async def _run_actor(self, actor: UserActor) -> None:
        try:
            await actor.drain()
        except ActorCrash as crash:
            self.actor_crashed(actor, crash)
        except Exception as exc:  # a defect in the executor itself: restart all the same
            defect = ActorCrash(actor.user_id)
            defect.__cause__ = exc
            self.actor_crashed(actor, defect)

    def actor_crashed(self, actor: UserActor, crash: ActorCrash) -> None:
        """Count a failure of ``actor``; restart it, or break it past the restart intensity."""
        actor.state = None
        now = anyio.current_time()
        actor.failures = [t for t in actor.failures if now - t < self.restart_window]
        actor.failures.append(now)
        cause = crash.__cause__
        if len(actor.failures) > self.max_restarts:
            actor.broken_until = now + self.restart_window
            logger.error(
                "actor of user %r failed %d times in %.1fs; refusing its calls for %.1fs",
                actor.user_id,
                len(actor.failures),
                self.restart_window,
                self.restart_window,
                exc_info=cause,
            )
            for request in actor.take_queued():
                error = ActorFailedError(actor.user_id)
                error.__cause__ = cause
                request.error = error
                if request.done is not None:
                    request.done.set()
            return
        self.restarts += 1
        logger.warning("restarting the actor of user %r", actor.user_id, exc_info=cause)
        if not actor.busy and not actor.idle:
            actor.busy = True
            self.spawn(actor)

    def publish(self, tx: Transaction) -> None:
        """Publish the lifecycle events of a committed transaction."""
        now = tx.now
        events = []
        for before, after in tx.changes():
            if (
                before is not None
                and after is not None
                and before.state is after.state
                and before.attached_surfaces is after.attached_surfaces
                and before.metadata is after.metadata
            ):
                continue  # a touch of an active session: activity only, no lifecycle event
            events.extend(diff_events(before, after, now))
        if events:
            self.events.publish(events)

    def adapter_failed(self, actor: UserActor, exc: Exception) -> None:
        """Count and log a storage failure met by ``actor`` (its caller gets the error)."""
        self.recorder.adapter_errors += 1
        logger.warning("adapter error for user %r: %s", actor.user_id, exc, exc_info=exc)

    def check_broken(self, actor: UserActor) -> None:
        """Raise :class:`ActorFailedError` while ``actor`` is past its restart intensity."""
        if anyio.current_time() < actor.broken_until:
            raise ActorFailedError(
                actor.user_id,
                f"the actor of user {actor.user_id!r} failed too often; retrying after "
                f"{self.restart_window:g}s",
            )
        actor.broken_until = -math.inf
        actor.failures.clear()

    def retire_idle(self) -> int:
        """Retire actors unused since the previous call; return how many were retired."""
        tick = self.tick
        now = anyio.current_time()
        retired = [
            a
            for a in self.actors.values()
            if a.last_tick < tick and a.idle and a.broken_until <= now
        ]
        for actor in retired:
            actor.close()
            del self.actors[actor.user_id]
        self.tick = tick + 1
        return len(retired)

    # -- sweeps ---------------------------------------------------------------------------

    async def sweep_stale(self, ttl: timedelta) -> list[Session]:
        """Suspend created and active sessions last active more than ``ttl`` ago; return them.

        Raises:
            AdapterError, ActorFailedError: The turn of some user failed; every other user was
                swept all the same.
        """
        cutoff = self.clock() - ttl
        moved = []
        failures: list[Exception] = []
        for state in (SessionState.CREATED, SessionState.ACTIVE):
            moved += await self._move(
                state, cutoff, lambda user, ids: SuspendStale(user, ids, cutoff), failures
            )
        self.sweeps += 1
        self.recorder.sessions_suspended += len(moved)
        _raise_first(failures)
        return moved

    async def expire_suspended(self, after: timedelta) -> list[Session]:
        """Expire sessions suspended for more than ``after``; return them."""
        cutoff = self.clock() - after
        failures: list[Exception] = []
        moved = await self._move(
            SessionState.SUSPENDED,
            cutoff,
            lambda user, ids: ExpireSuspended(user, ids, cutoff),
            failures,
        )
        self.recorder.sessions_expired += len(moved)
        _raise_first(failures)
        return moved

    async def purge_expired(self, after: timedelta) -> list[Session]:
        """Delete sessions expired for more than ``after``; return them as they were."""
        cutoff = self.clock() - after
        failures: list[Exception] = []
        purged = await self._move(
            SessionState.EXPIRED, cutoff, lambda user, ids: Purge(user, ids, cutoff), failures
        )
        self.recorder.sessions_purged += len(purged)
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
        seen: set[str] = set()
        while True:
            candidates = [
                s for s in await self.adapter.due(state, cutoff, SWEEP_BATCH) if s.id not in seen
            ]
            if not candidates:
                return moved
            by_user: defaultdict[str, list[str]] = defaultdict(list)
            for session in candidates:
                seen.add(session.id)
                by_user[session.user_id].append(session.id)
            for user_id, ids in by_user.items():
                # Each user's part is one turn of its actor, which re-checks every candidate.
                # A user whose turn fails (broken actor, storage error for that user) must not
                # hold up everyone after it: note the failure and go on.
                try:
                    moved.extend(await self.call(user_id, make(user_id, ids)))
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

    # -- the task ---------------------------------------------------------------------------

    async def run(self, task_group: TaskGroup, *, task_status: TaskStatus[None]) -> None:
        """The supervisor task: sleep, sweep, retire; until cancelled by the store."""
        self._task_group = task_group
        task_status.started()
        idle_period = self.idle_after.total_seconds()
        sweep_period = None if self.sweep_interval is None else self.sweep_interval.total_seconds()
        now = anyio.current_time()
        next_retire = now + idle_period
        next_sweep = math.inf if sweep_period is None else now + sweep_period
        while True:
            await anyio.sleep_until(min(next_retire, next_sweep))
            now = anyio.current_time()
            if now >= next_sweep:
                assert sweep_period is not None
                next_sweep = now + sweep_period
                try:
                    await self.sweep_once()
                except Exception:
                    # Whatever broke (even an adapter raising something other than
                    # AdapterError), periodic upkeep must not take the store, and the
                    # application's `async with` body, down with it.
                    logger.exception("periodic sweep failed; retrying at the next interval")
            if now >= next_retire:
                next_retire = now + idle_period
                self.retire_idle()

    def close_all(self) -> None:
        """Close every actor's mailbox; requests still queued (only after the drain timeout of
        the store's exit) fail with :class:`StoreClosedError`."""
        for actor in self.actors.values():
            for request in actor.take_queued():
                request.error = StoreClosedError("the store closed before this call was applied")
                if request.done is not None:
                    request.done.set()
            actor.close()
        self.actors.clear()
        self.events.close()


def _raise_first(failures: list[Exception]) -> None:
    """Raise the first failure of a sweep that went on past it (each was logged)."""
    if failures:
        raise failures[0]
