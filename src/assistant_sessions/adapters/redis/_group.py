"""Group commit for the Redis adapter: concurrent script calls share one pipeline.

Every actor commits its own user, so a busy store makes many small, concurrent commits. Sent
one by one they each cost a round trip and the driver's per-command work; sent together as one
pipeline they cost one round trip and much less work each. :class:`ScriptGroup` does that
without a timer and without a task of its own: the task whose submission finds no pipeline in
flight is the *leader*; it sends every submission pending at that moment as one pipeline,
hands the outcomes out, and passes the lead to the first submission that arrived meanwhile,
whose task sends the next pipeline. A lone submission goes out at once.

A pipeline, once sent, is shielded from cancellation, so a submission is either never sent
(its task was cancelled while it waited) or sent whole. Like any Redis call, a submission
whose task is cancelled while its pipeline is in flight may or may not have been applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeAlias, final

import anyio

from ...errors import AdapterError

__all__ = ["Call", "ScriptGroup"]

#: One script call: the script (an opaque object for the runner), its keys and its arguments.
Call: TypeAlias = "tuple[Any, list[bytes], list[bytes]]"

#: Most script calls sent in one pipeline; what is left waits for the next one.
MAX_CALLS: Final = 512


@final
class _Job:
    __slots__ = ("calls", "done", "error", "lead", "replies", "taken")

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.done = anyio.Event()
        self.replies: list[Any] = []
        self.error: BaseException | None = None
        #: The job is in a pipeline that was sent; its task no longer decides its fate.
        self.taken = False
        #: The job's task was woken to send the next pipeline.
        self.lead = False

    def outcome(self) -> list[Any]:
        error = self.error
        if error is not None:
            # One failure reaches every task of the pipeline: each gets its own exception.
            raise AdapterError(str(error)) from error.__cause__ or error
        return self.replies


@final
class ScriptGroup:
    """Sends concurrent submissions of script calls together (see the module documentation).

    Args:
        run: Sends calls as one pipeline and returns their replies in order; raises
            :class:`~assistant_sessions.AdapterError` when Redis fails.
    """

    def __init__(self, run: Callable[[list[Call]], Awaitable[list[Any]]]) -> None:
        self._run = run
        self._pending: deque[_Job] = deque()
        self._busy = False

    async def submit(self, calls: Sequence[Call]) -> list[Any]:
        """Send ``calls`` (in one pipeline with whatever else is pending); return the replies.

        Raises:
            AdapterError: Redis failed; which calls were applied is unknown.
        """
        job = _Job(calls)
        self._pending.append(job)
        if not self._busy:
            self._busy = True
            return await self._lead(job)
        try:
            await job.done.wait()
        except BaseException:
            if not job.taken:
                # Never sent: nothing was applied. A lead handed to this job passes on.
                self._pending.remove(job)
                if job.lead:
                    self._hand_off()
            raise
        if job.lead:
            return await self._lead(job)
        return job.outcome()

    async def _lead(self, job: _Job) -> list[Any]:
        batch: list[_Job] = []
        calls: list[Call] = []
        while self._pending and (
            not calls or len(calls) + len(self._pending[0].calls) <= MAX_CALLS
        ):
            taken = self._pending.popleft()
            taken.taken = True
            batch.append(taken)
            calls.extend(taken.calls)
        try:
            with anyio.CancelScope(shield=True):
                replies = await self._run(calls)
        except Exception as exc:
            for member in batch:
                member.error = exc
        except BaseException:
            for member in batch:
                member.error = AdapterError("a pipeline of script calls was interrupted")
            raise
        else:
            start = 0
            for member in batch:
                member.replies = replies[start : start + len(member.calls)]
                start += len(member.calls)
        finally:
            for member in batch:
                if member is not job:
                    member.done.set()
            self._hand_off()
        return job.outcome()

    def _hand_off(self) -> None:
        if self._pending:
            successor = self._pending[0]
            successor.lead = True
            successor.done.set()
        else:
            self._busy = False
