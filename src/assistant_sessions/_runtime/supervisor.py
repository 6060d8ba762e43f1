"""The supervisor: the one task that runs periodic work.

Its work lives in :meth:`Sweeper.sweep_once <._runtime.sweeps.Sweeper.sweep_once>` and
:meth:`ActorRegistry.retire_idle <._runtime.registry.ActorRegistry.retire_idle>`, which tests
call directly; the loop here only sleeps and calls them. (Restarting a failed actor is the
registry's, at the moment of the failure.)
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import anyio
from anyio.abc import TaskStatus

from ..errors import ActorFailedError, AdapterError
from .registry import ActorRegistry
from .sweeps import Sweeper

__all__ = ["Supervisor"]

logger = logging.getLogger("assistant_sessions")


class Supervisor:
    """Sleeps, sweeps every ``sweep_interval`` (when set), retires idle actors every
    ``idle_after``; until cancelled by the store."""

    def __init__(
        self,
        registry: ActorRegistry,
        sweeper: Sweeper,
        *,
        sweep_interval: timedelta | None,
        idle_after: timedelta,
    ) -> None:
        self._registry = registry
        self._sweeper = sweeper
        self.sweep_interval = sweep_interval
        self.idle_after = idle_after

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """The supervisor task."""
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
                    await self._sweeper.sweep_once()
                except (AdapterError, ActorFailedError) as exc:
                    # Expected failures, each logged where it was met: no traceback here.
                    logger.warning("periodic sweep failed (%s); retrying at the next interval", exc)
                except Exception:
                    # Whatever broke (even an adapter raising something other than
                    # AdapterError), periodic upkeep must not take the store, and the
                    # application's `async with` body, down with it.
                    logger.exception("periodic sweep failed; retrying at the next interval")
            if now >= next_retire:
                next_retire = now + idle_period
                self._registry.retire_idle()
