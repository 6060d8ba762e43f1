"""Leader/follower batching: what concurrent tasks submit is run together, one batch at a time.

The durable adapters batch this way: the SQLite adapter runs every pending write in one
transaction in its writer thread or process (and every pending read in one read transaction),
and the Redis adapter sends every pending script call in one pipeline. A flood of concurrent
submissions thus costs a few runs -- a few transactions and disk syncs, a few round trips -- and
a lone submission runs at once: group commit without a timer.

A :class:`Batcher` runs at most one batch at a time, and that batch takes every job pending when
it starts (up to ``max_batch``); jobs submitted while it runs wait, and go together into the
next one. There is no batcher task: the task whose submission finds no batch running is the
*leader*. It runs the batch, and each job in it gets its own outcome (a result or an exception);
then the leader hands the lead to the first job still pending, whose task runs the next batch.
A leader therefore never works for others after its own job is done, and no task outlives its
batch.

Cancellation, the same for every batcher:

* A job whose task is cancelled while it is still pending is withdrawn: it never runs. A lead
  handed to it passes on to the next pending job.
* A batch, once started, runs to its end: the run is shielded, so a job is either never run or
  run whole. Each job's outcome is set by the leader either way.
* A follower cancelled once its job was taken waits (shielded) until its batch has ended, then
  leaves with its cancellation (the outcome is dropped). So when a cancelled call returns,
  nothing it submitted is still running -- for SQLite, its transaction has ended; for Redis,
  the pipeline's replies are in, and the driver's connection is whole.
* The leader, whose own call runs the batch, returns its outcome; a cancellation reaches it at
  its next checkpoint.

Everything here runs on the event loop; only ``run`` may hand the jobs to a worker thread (as
the SQLite adapter's threads do), which then alone touches them until ``run`` returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import anyio
import anyio.lowlevel
import attrs

from ..errors import AdapterError
from .base import batch_failure

__all__ = ["Batcher", "Job"]

P = TypeVar("P")
R = TypeVar("R")


@final
@attrs.define(eq=False)
class Job(Generic[P, R]):
    """One submission: its payload and, once its batch ran, its own outcome."""

    payload: P
    result: R | None = None
    error: BaseException | None = None
    finished: bool = False
    #: The job is in a batch that runs or ran; its task no longer decides its fate.
    taken: bool = False
    #: The job's task was woken to lead the next batch.
    lead: bool = False
    #: Set when the job's task may go on; made only for a job that waits (a leader's own job
    #: never does).
    wake: anyio.Event | None = None

    def succeed(self, result: R) -> None:
        """Set the job's result."""
        self.result = result
        self.finished = True

    def fail(self, error: BaseException) -> None:
        """Set the job's exception: raised in the job's task alone, so one per job."""
        self.error = error
        self.finished = True

    def outcome(self) -> R:
        """The result, or raise the exception."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set by succeed


@final
class Batcher(Generic[P, R]):
    """Runs submitted jobs in batches, one batch at a time (see the module documentation).

    Create it inside the event loop that uses it.

    Args:
        run: Runs one batch: calls ``succeed`` or ``fail`` on every job it is given. If it
            raises, every job it left without an outcome fails with an
            :class:`~assistant_sessions.AdapterError` of its own (a copy of the raised one,
            keeping its cause; else with the raised exception as the cause).
        max_batch: Most jobs one batch takes (with ``size``: most units); the rest wait for
            the next one. A batch always takes at least one job.
        size: How many units a job's payload counts for; ``None``: one per job.
    """

    def __init__(
        self,
        run: Callable[[list[Job[P, R]]], Awaitable[object]],
        max_batch: int,
        *,
        size: Callable[[P], int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self._max_batch = max_batch
        self._size = size
        self._pending: deque[Job[P, R]] = deque()
        self._busy = False
        #: Batches run so far.
        self.batches = 0

    async def submit(self, payload: P) -> R:
        """Run ``payload`` in the next batch and return its outcome.

        Raises:
            BaseException: Whatever the run set as the job's exception.

        On cancellation: see the module documentation (a pending job is withdrawn; a taken one
        completes first).
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        job: Job[P, R] = Job(payload)
        self._pending.append(job)
        if self._busy:
            wake = job.wake = anyio.Event()
            try:
                await wake.wait()
            except BaseException:
                if job.taken:
                    # Its batch runs: let it end, so that nothing still runs for a caller
                    # that has gone.
                    with anyio.CancelScope(shield=True):
                        await wake.wait()
                else:
                    self._pending.remove(job)
                    if job.lead:
                        self._hand_over()
                raise
            if job.taken:
                return job.outcome()
        else:
            self._busy = True
        # This task leads: it runs the oldest pending jobs, its own first among them.
        batch = self._take()
        self.batches += 1
        try:
            with anyio.CancelScope(shield=True):
                await self._run(batch)
        except BaseException as exc:
            for member in batch:
                if not member.finished:
                    member.fail(batch_failure(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            for done in batch:
                if not done.finished:  # pragma: no cover - a run that forgot a job
                    done.fail(AdapterError("a batch ended without an outcome for this call"))
                if done.wake is not None:
                    done.wake.set()
            self._hand_over()
        return job.outcome()

    def _take(self) -> list[Job[P, R]]:
        pending = self._pending
        limit = self._max_batch
        size = self._size
        if size is None:
            batch = [pending.popleft() for _ in range(min(limit, len(pending)))]
        else:
            first = pending.popleft()
            batch = [first]
            total = size(first.payload)
            while pending:
                more = size(pending[0].payload)
                if total + more > limit:
                    break
                total += more
                batch.append(pending.popleft())
        for taken in batch:
            taken.taken = True
        return batch

    def _hand_over(self) -> None:
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            assert successor.wake is not None  # a pending job waits
            successor.wake.set()
        else:
            self._busy = False
