"""One store's runtime, assembled: storage port, actors, sweeps, supervisor, events, metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio.abc

from .._clock import Clock
from .._core import Op, Policy
from ..adapters.base import SessionStoreAdapter
from ..model import StoreStatistics
from .events import EventBus
from .metrics import Recorder
from .registry import ActorRegistry
from .restarts import RestartIntensity
from .storage import Storage
from .supervisor import Supervisor
from .sweeps import Sweeper

__all__ = ["Runtime"]


class Runtime:
    """The parts of one store's runtime, wired together; the facade holds one."""

    def __init__(
        self,
        adapter: SessionStoreAdapter,
        *,
        clock: Clock,
        policy: Policy,
        default_ttl: timedelta,
        sweep_interval: timedelta | None,
        expire_after: timedelta | None,
        purge_after: timedelta | None,
        idle_after: timedelta,
        mailbox_size: int,
        max_batch: int,
        max_restarts: int,
        restart_window: float,
    ) -> None:
        self.clock = clock
        self.storage = Storage(adapter)
        self.events = EventBus()
        self.recorder = Recorder()
        self.registry = ActorRegistry(
            self.storage,
            clock=clock,
            policy=policy,
            events=self.events,
            recorder=self.recorder,
            restarts=RestartIntensity(max_restarts, restart_window),
            mailbox_size=mailbox_size,
            max_batch=max_batch,
        )
        self.sweeper = Sweeper(
            self.storage,
            self.call,
            clock=clock,
            recorder=self.recorder,
            default_ttl=default_ttl,
            expire_after=expire_after,
            purge_after=purge_after,
        )
        self.supervisor = Supervisor(
            self.registry, self.sweeper, sweep_interval=sweep_interval, idle_after=idle_after
        )

    async def call(self, user_id: str, op: Op) -> Any:
        """Apply ``op`` in the actor of ``user_id`` (the caller has passed a checkpoint)."""
        return await self.registry.get(user_id).call(op)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run the pump, detached reads and the supervisor in ``task_group``."""
        self.storage.bind(task_group)
        await self.registry.start(task_group)
        await task_group.start(self.supervisor.run)

    def statistics(self, *, in_flight: int) -> StoreStatistics:
        """A snapshot of the runtime's counters, with ``in_flight`` calls (the router's)."""
        recorder = self.recorder
        registry = self.registry
        depths = registry.depths()
        return StoreStatistics(
            live_actors=len(depths),
            busy_actors=registry.busy(),
            mailbox_depth_max=max(depths, default=0),
            mailbox_depth_total=sum(depths),
            in_flight=in_flight,
            operations=recorder.operations(),
            sweeps=self.sweeper.sweeps,
            sessions_suspended=recorder.sessions_suspended,
            sessions_expired=recorder.sessions_expired,
            sessions_purged=recorder.sessions_purged,
            restarts=registry.restarts.restarts,
            adapter_errors=recorder.adapter_errors,
            subscribers=len(self.events),
        )

    def close(self) -> None:
        """Fail what is still queued, drop every actor, end every subscription."""
        self.registry.close_all()
        self.events.close()
