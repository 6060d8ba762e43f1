"""The actor registry: which users have a live actor, their tasks, restarts and retirement.

An actor with work and no task to do it (see :mod:`~assistant_sessions._runtime.actor`) is
handed to a *drain worker*: a task of the store that drains one actor after another. A worker
that finished an actor waits for the next one, so under load an actor gets a task by a hand-over
(an event set) instead of a new task: starting a task costs several times more. At most
:data:`MAX_IDLE_WORKERS` wait at a time (more end at once), and every waiting worker ends at the
next :meth:`ActorRegistry.retire_idle`, so workers follow the work, as actors do.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio
import anyio.abc
import attrs

from .._clock import Clock
from .._core import Policy
from ..errors import ActorFailedError, AdapterError, StoreClosedError
from .actor import ActorContext, UserActor
from .events import EventBus
from .metrics import Recorder
from .request import ActorCrash, Request
from .restarts import RestartIntensity
from .storage import Storage

__all__ = ["MAX_IDLE_WORKERS", "ActorRegistry"]

logger = logging.getLogger("assistant_sessions")

#: Most drain workers waiting for an actor at a time.
MAX_IDLE_WORKERS: Final = 256


@attrs.define(eq=False)
class _Idle:
    """A waiting drain worker: ``wake`` is set with the ``actor`` to drain, or ``None`` to end."""

    wake: anyio.Event = attrs.Factory(anyio.Event)
    actor: UserActor | None = None


class ActorRegistry:
    """Owns every actor of one store: creates them on demand, runs their drain tasks, restarts
    them after a failure (within the restart intensity) and retires idle ones."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock,
        policy: Policy,
        events: EventBus,
        recorder: Recorder,
        restarts: RestartIntensity,
        mailbox_size: int,
        max_batch: int,
    ) -> None:
        self.actors: dict[str, UserActor] = {}
        self.restarts = restarts
        #: Advanced by each :meth:`retire_idle`; actors remember the tick of their last call.
        self.tick = 0
        self._recorder = recorder
        self._task_group: anyio.abc.TaskGroup | None = None
        self._idle: list[_Idle] = []
        self._context = ActorContext(
            storage=storage,
            clock=clock,
            policy=policy,
            events=events,
            mailbox_size=mailbox_size,
            max_batch=max_batch,
            spawn=self.spawn,
            crashed=self.crashed,
            storage_failed=self.storage_failed,
        )

    def bind(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run actor tasks in ``task_group`` (the store's)."""
        self._task_group = task_group

    def get(self, user_id: str) -> UserActor:
        """The actor of ``user_id``, activated if it is not live.

        Raises:
            ActorFailedError: The user's actor is past its restart intensity.
        """
        actor = self.actors.get(user_id)
        if actor is None:
            actor = self.actors[user_id] = UserActor(user_id, self._context)
        actor.last_tick = self.tick
        if self.restarts.broken:
            self.restarts.check(user_id)
        return actor

    # -- tasks and failures --------------------------------------------------------------------

    def spawn(self, actor: UserActor) -> None:
        """Give the actor a drain worker (the actor is already marked busy): a waiting one if
        there is one, else a new task."""
        if self._idle:
            idle = self._idle.pop()
            idle.actor = actor
            idle.wake.set()
            return
        assert self._task_group is not None
        self._task_group.start_soon(self._work, actor, name="actor drain worker")

    async def _work(self, actor: UserActor | None) -> None:
        """Drain actors, one after another, until no actor comes (see the module docs)."""
        while actor is not None:
            await self._drain(actor)
            if len(self._idle) >= MAX_IDLE_WORKERS:
                return
            idle = _Idle()
            self._idle.append(idle)
            try:
                await idle.wake.wait()
            except BaseException:
                # Only the store's exit cancels a worker. An actor handed over in that instant
                # is the exit's: its queued calls fail with StoreClosedError there.
                if idle.actor is None:
                    self._idle.remove(idle)
                raise
            actor = idle.actor

    async def _drain(self, actor: UserActor) -> None:
        try:
            await actor.drain()
        except ActorCrash as crash:
            self.crashed(actor, crash)
        except Exception as exc:  # a defect in the executor itself: restart all the same
            defect = ActorCrash(actor.user_id)
            defect.__cause__ = exc
            self.crashed(actor, defect)

    def crashed(self, actor: UserActor, crash: ActorCrash) -> None:
        """Restart ``actor`` after a failure, or break it past the restart intensity."""
        actor.state = None
        cause = crash.__cause__
        restarts = self.restarts
        if not restarts.failed(actor.user_id):
            logger.error(
                "actor of user %r failed %d times in %.1fs; refusing its calls for %.1fs",
                actor.user_id,
                restarts.max_restarts + 1,
                restarts.window,
                restarts.window,
                exc_info=cause,
            )
            for request in actor.take_queued():
                error = ActorFailedError(actor.user_id)
                error.__cause__ = cause
                _settle(request, error)
            return
        logger.warning("restarting the actor of user %r", actor.user_id, exc_info=cause)
        if not actor.busy and not actor.idle:
            actor.busy = True
            self.spawn(actor)

    def storage_failed(self, user_id: str, exc: AdapterError) -> None:
        """Count and log a storage failure met for ``user_id`` (its callers get the error)."""
        self._recorder.adapter_errors += 1
        # An expected failure, raised to the callers too: one line, no traceback (that goes to
        # the debug level, for whoever looks into the storage).
        logger.warning("adapter error for user %r: %s", user_id, exc)
        logger.debug("the adapter error for user %r in full", user_id, exc_info=exc)

    # -- retirement ----------------------------------------------------------------------------

    def retire_idle(self) -> int:
        """Retire actors unused since the previous call; return how many were retired."""
        tick = self.tick
        restarts = self.restarts
        retired = [
            a
            for a in self.actors.values()
            if a.last_tick < tick and a.idle and not restarts.is_broken(a.user_id)
        ]
        for actor in retired:
            actor.close()
            del self.actors[actor.user_id]
            restarts.forget(actor.user_id)
        self.tick = tick + 1
        self.release_workers()
        return len(retired)

    def release_workers(self) -> None:
        """End every waiting drain worker."""
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.set()

    def fail_queued(self) -> None:
        """Fail every queued request with :class:`StoreClosedError` (the store's exit, past its
        drain timeout); turns already running go on to their end."""
        for actor in self.actors.values():
            for request in actor.take_queued():
                _settle(request, StoreClosedError("the store closed before this call was applied"))

    def close_all(self) -> None:
        """Fail what is still queued and close every actor's mailbox (no task runs any more)."""
        self.fail_queued()
        for actor in self.actors.values():
            actor.close()
        self.actors.clear()

    # -- statistics ----------------------------------------------------------------------------

    def depths(self) -> list[int]:
        """The mailbox depth of every live actor."""
        return [a.queued for a in self.actors.values()]

    def busy(self) -> int:
        """How many actors have an executor now."""
        return sum(1 for a in self.actors.values() if a.busy)


def _settle(request: Request, error: BaseException) -> None:
    request.error = error
    if request.done is not None:
        request.done.set()
