"""A lane: blocking work run in a worker thread one batch at a time, batching what waits.

Tasks submit jobs; a lane runs at most one thread call at a time, and that call takes *every* job
pending when it starts. While it runs, new jobs wait, and go together into the next call. So a
flood of concurrent submissions costs a few thread calls (and, for the SQLite writer, a few
transactions and disk syncs), and a lone submission runs at once: group commit without a timer.

There is no lane task. The task whose job starts a call is its *leader*: it runs the batch, sets
every job's outcome, and hands the lane to the first job still pending, whose task becomes the
next leader. A leader therefore never works for others after its own job is done, and no task
outlives its call. The thread call is shielded from cancellation: a batch that started always
completes, so a job is either never run (its task was cancelled while it was pending) or run
whole, before its call ends.

Everything here runs on the event loop except ``run_batch``, which runs in a worker thread
(``anyio.to_thread.run_sync`` with a one-token limiter) and must finish every job it is given.
Only the thread touches the jobs of a batch while it runs, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["Job", "Lane"]

P = TypeVar("P")


@final
class Job(Generic[P]):
    """One submission: its payload and, once run, its outcome."""

    __slots__ = ("error", "finished", "lead", "payload", "result", "taken", "wake")

    def __init__(self, payload: P) -> None:
        self.payload = payload
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        #: The job is in a batch that runs or ran; its task no longer owns it.
        self.taken = False
        #: The job's task was woken to lead the next batch.
        self.lead = False
        #: Set when the job's task may go on; made only for a job that waits (a leader's
        #: own job never does).
        self.wake: anyio.Event | None = None

    def succeed(self, result: Any) -> None:
        """Set the job's result (from the worker thread)."""
        self.result = result
        self.finished = True

    def fail(self, error: BaseException) -> None:
        """Set the job's error (from the worker thread)."""
        self.error = error
        self.finished = True

    def outcome(self) -> Any:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.result


@final
class Lane(Generic[P]):
    """Runs submitted jobs in batches, one thread call at a time (see the module docs).

    Create it inside the event loop that uses it.

    Args:
        run_batch: Runs in a worker thread; calls ``succeed`` or ``fail`` on every job.
        max_batch: Most jobs one thread call takes; the rest wait for the next one.
    """

    def __init__(self, run_batch: Callable[[list[Job[P]]], None], max_batch: int) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._limiter = anyio.CapacityLimiter(1)
        self._pending: list[Job[P]] = []
        self._busy = False
        self.calls = 0

    async def submit(self, payload: P) -> Any:
        """Run ``payload`` in the next batch and return its outcome.

        Raises:
            BaseException: Whatever ``run_batch`` set as the job's error.

        On cancellation: a job still pending is withdrawn and never runs. Once its batch has
        started, the job completes before the call ends: the cancellation is raised after it
        (the leader, whose own call runs the batch, returns its outcome instead).
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        job = Job(payload)
        self._pending.append(job)
        if self._busy:
            wake = job.wake = anyio.Event()
            try:
                await wake.wait()
            except BaseException:
                if job.taken:
                    # Its batch runs: let it finish, so nothing is still running for a caller
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
        # This task leads: it runs the oldest pending jobs (its own among them) in one call.
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        for taken in batch:
            taken.taken = True
        try:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._run_all, batch, limiter=self._limiter)
        finally:
            for done in batch:
                if done.wake is not None:
                    done.wake.set()
            self._hand_over()
        return job.outcome()

    async def idle(self) -> None:
        """Wait until no thread call runs (new ones may start right after)."""
        async with self._limiter:
            pass

    def _run_all(self, batch: list[Job[P]]) -> None:
        self.calls += 1
        try:
            self._run_batch(batch)
        except Exception as exc:
            # A defect in run_batch: every job without an outcome gets its exception.
            for job in batch:
                if not job.finished:
                    job.fail(exc)

    def _hand_over(self) -> None:
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            assert successor.wake is not None  # a pending job waits
            successor.wake.set()
        else:
            self._busy = False
