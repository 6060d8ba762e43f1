"""The actor registry: which users have a live actor, restarts and retirement.

An actor with work and no executor (see :mod:`~assistant_sessions._runtime.actor`) is handed
to the store's pump (:mod:`~assistant_sessions._runtime.pump`), which drives the turns of every
busy actor; the registry restarts an actor whose turn crashed and retires idle ones.
"""

from __future__ import annotations

import logging

import anyio.abc
import attrs

from .._clock import Clock
from .._core import Policy
from ..errors import ActorFailedError, AdapterError, StoreClosedError
from .actor import ActorContext, UserActor
from .events import EventBus
from .metrics import Recorder
from .pump import Pump
from .request import ActorCrash, Request
from .restarts import RestartIntensity
from .storage import Storage

__all__ = ["ActorRegistry"]

logger = logging.getLogger("assistant_sessions")


class ActorRegistry:
    """Owns every actor of one store: creates them on demand, hands busy ones to the pump,
    restarts them after a failure (within the restart intensity) and retires idle ones."""

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
        #: The executor of every busy actor.
        self.pump = Pump(storage, self.crashed)
        self._context = ActorContext(
            storage=storage,
            clock=clock,
            policy=policy,
            events=events,
            mailbox_size=mailbox_size,
            max_batch=max_batch,
            spawn=self.pump.schedule,
            crashed=self.crashed,
            storage_failed=self.storage_failed,
        )

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run the pump, its rounds and loads in ``task_group`` (the store's)."""
        # Actors are made after the start, so each gets the running backend's events.
        self._context = attrs.evolve(self._context, new_event=type(anyio.Event()))
        self.pump.bind(task_group)
        await task_group.start(self.pump.run, name="actor pump")

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

    # -- failures --------------------------------------------------------------------

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
            self.pump.schedule(actor)

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
        self.pump.release_workers()
        return len(retired)

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
