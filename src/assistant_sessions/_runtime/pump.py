"""The executor of busy actors: the pump, and the storage workers it hands calls to.

An actor with queued calls and no executor is *scheduled* here (:meth:`Pump.schedule`), and
its queued calls are applied in batches (:meth:`~assistant_sessions._runtime.actor.UserActor.
take_batch`), one turn each (:meth:`~assistant_sessions._runtime.actor.UserActor.turn`). How
depends on whether the adapter groups commits (:attr:`Storage.grouped`):

* **Grouped** (the SQLite, Redis and PostgreSQL adapters): the *pump*, one task, takes a batch
  of every scheduled actor and drives each turn until it asks for storage. A commit waits for
  the next *round*, which hands the commits of every turn then waiting to the adapter in one
  call. Loads go the same way: where the adapter also reads many users in one call
  (:class:`~assistant_sessions.adapters.GroupLoadAdapter`), the loads of every turn waiting
  when the pump has stepped the scheduled actors go in one ``load_users`` call; otherwise each
  load is a job of its own (concurrent loads still share the adapter's round trips). A reload
  after a version conflict runs at once in the worker that committed (an adapter may answer it
  from what the conflict read). When an answer comes, the turn goes on where it stopped. A call
  thus costs its caller one wake-up, and a round's turns share one adapter call.
* **Not grouped** (an adapter that writes each commit on its own): a worker takes the actor and
  runs its turn's storage calls itself, one commit per adapter call, so that storage stalling on
  one user's commit holds no other user.

Storage calls run in *workers*: tasks of the store that run one job after another. A worker
that finished a job waits for the next one, so a job is handed over (an event set) instead of
starting a task, which costs several times more. At most :data:`MAX_IDLE_WORKERS` wait at a
time, and every waiting one ends at :meth:`Pump.release_workers` (the registry's idle
retirement): workers follow the work, as actors do. Rounds and loads run concurrently, so a
call that stalls holds only the turns in it.

When a turn ends, its callers are woken and the actor, if more calls queued meanwhile, is
scheduled again. On inline storage a turn runs to its end at once (:meth:`Storage.run_now`).
Only the store's exit cancels these tasks: a commit in flight completes first, so its callers
learn its outcome; every other unfinished turn is closed and its callers get
:class:`~assistant_sessions.StoreClosedError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ..errors import StoreClosedError
from .actor import UserActor
from .request import ActorCrash, Request
from .storage import COMMIT, LOAD, Storage, StorageCall, Turn

__all__ = ["MAX_IDLE_WORKERS", "MAX_ROUND", "Pump"]

#: Most commits (or loads) handed to the adapter in one round; the rest go in the next one.
MAX_ROUND: Final = 1024

#: Most workers waiting for a job at a time.
MAX_IDLE_WORKERS: Final = 256


@final
class _Running:
    """A turn in progress: whose it is, the requests it serves and what it asked for last."""

    __slots__ = ("actor", "batch", "call", "turn")

    def __init__(self, actor: UserActor, batch: list[Request], turn: Turn) -> None:
        self.actor = actor
        self.batch = batch
        self.turn = turn
        self.call: StorageCall | None = None


#: A job: ``(LOAD, turns)``, ``(COMMIT, turns)``, or an actor whose next batch the worker
#: applies itself (storage that does not group commits).
_Job = tuple[int, "list[_Running]"] | UserActor


@final
@attrs.define(eq=False)
class _Idle:
    """A waiting worker: ``wake`` is set with the ``job`` to run, or ``None`` to end."""

    wake: anyio.Event = attrs.Factory(anyio.Event)
    job: _Job | None = None


@final
class Pump:
    """Applies busy actors' queued calls (see the module documentation)."""

    def __init__(self, storage: Storage, crashed: Callable[[UserActor, ActorCrash], None]) -> None:
        self._storage = storage
        self._crashed = crashed
        self._task_group: anyio.abc.TaskGroup | None = None
        #: Actors with work to take, in the order they were scheduled (grouped storage).
        self._ready: list[UserActor] = []
        #: Turns waiting for the next round's commit.
        self._commits: list[_Running] = []
        #: Turns waiting for the next round's load (storage that groups loads).
        self._loads: list[_Running] = []
        #: Set to wake the pump while it waits for work.
        self._wake: anyio.Event | None = None
        #: Workers waiting for a job.
        self._idle: list[_Idle] = []
        #: The store is past its exit: turns that go on are aborted.
        self._closed = False

    def bind(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run the workers in ``task_group`` (the store's)."""
        self._task_group = task_group

    def schedule(self, actor: UserActor) -> None:
        """Apply the queued calls of ``actor`` soon (the actor is already marked busy)."""
        if self._closed:
            # Past the store's exit nothing will run them.
            for request in actor.take_queued():
                _closed(request)
            actor.busy = False
        elif self._storage.grouped:
            self._ready.append(actor)
            self._kick()
        else:
            self._dispatch(actor)

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The pump's task: start turns and rounds until the store's exit cancels it."""
        task_status.started()
        try:
            while True:
                if not self._ready and not self._commits and not self._loads:
                    wake = self._wake = anyio.Event()
                    await wake.wait()
                ready, self._ready = self._ready, []
                for actor in ready:
                    batch = actor.take_batch()
                    if batch is not None:
                        self._advance(_Running(actor, batch, actor.turn(batch)))
                if self._loads:
                    self._loads = self._round(LOAD, self._loads)
                if self._commits:
                    self._commits = self._round(COMMIT, self._commits)
                # Let the callers and workers just woken run before the next batches are taken.
                await anyio.lowlevel.checkpoint()
        finally:
            self._closed = True
            waiting = [*self._loads, *self._commits]
            self._loads, self._commits = [], []
            for running in waiting:
                self._abort(running)

    def _round(self, kind: int, waiting: list[_Running]) -> list[_Running]:
        """Hand the first :data:`MAX_ROUND` of ``waiting`` to a worker as one job; the rest."""
        self._dispatch((kind, waiting[:MAX_ROUND]))
        return waiting[MAX_ROUND:]

    # -- turns ---------------------------------------------------------------------------------

    def _step(self, running: _Running) -> StorageCall | None:
        """Resume the turn with its answer in place: its next storage call, or ``None`` once it
        has ended (and its callers are woken)."""
        storage = self._storage
        try:
            if storage.inline:
                storage.run_now(running.turn)
                call = None
            else:
                call = running.call = next(running.turn, None)
        except ActorCrash as crash:
            self._finish(running, crash)
            return None
        except Exception as exc:  # a defect in the engine itself: restart all the same
            defect = ActorCrash(running.actor.user_id)
            defect.__cause__ = exc
            self._finish(running, defect)
            return None
        if call is None:
            self._finish(running)
        elif self._closed:
            self._abort(running)
            return None
        return call

    def _advance(self, running: _Running, loads: list[_Running] | None = None) -> None:
        """Step a turn of grouped storage: its commit waits for a round, and so does its load
        where loads are grouped, else it is a job (into ``loads`` instead, if given)."""
        call = self._step(running)
        if call is None:
            return
        if call.kind is COMMIT:
            self._commits.append(running)
            self._kick()
        elif loads is not None:
            loads.append(running)
        elif self._storage.group_loads:
            self._loads.append(running)
            self._kick()
        else:
            self._dispatch((LOAD, [running]))

    def _finish(self, running: _Running, crash: ActorCrash | None = None) -> None:
        for request in running.batch:
            assert request.done is not None
            request.done.set()
        actor = running.actor
        if crash is not None:
            actor.busy = False  # before the registry hears of it: it may restart the actor
            self._crashed(actor, crash)
        elif actor.queued:
            self.schedule(actor)  # still busy: calls came meanwhile
        else:
            actor.release()

    def _abort(self, running: _Running) -> None:
        """The store's exit ends ``running`` unfinished: close the turn (it drops the cache
        where a commit's outcome is unknown) and tell its callers that the store closed."""
        try:
            running.turn.close()
        finally:
            for request in running.batch:
                if request.error is None and request.result is None:
                    _closed(request)
                else:
                    assert request.done is not None
                    request.done.set()
            running.actor.busy = False

    # -- workers -------------------------------------------------------------------------------

    def _dispatch(self, job: _Job) -> None:
        """Give ``job`` to a waiting worker, else to a new one."""
        if self._idle:
            idle = self._idle.pop()
            idle.job = job
            idle.wake.set()
            return
        assert self._task_group is not None
        self._task_group.start_soon(self._work, job, name="actor storage worker")

    async def _work(self, job: _Job | None) -> None:
        """Run jobs, one after another, until none comes (see the module documentation)."""
        while job is not None:
            if isinstance(job, UserActor):
                await self._drive(job)
            elif job[0] is COMMIT:
                turns = job[1]
                await self._commit(turns)
                reloads: list[_Running] = []
                for running in turns:
                    self._advance(running, reloads)
                await self._reload(reloads)
            else:
                await self._load(job[1])
                for running in job[1]:
                    self._advance(running)
            if len(self._idle) >= MAX_IDLE_WORKERS or self._closed:
                return
            idle = _Idle()
            self._idle.append(idle)
            try:
                await idle.wake.wait()
            except BaseException:
                # Only the store's exit cancels a worker. A job handed over in that instant is
                # aborted (an actor to drive has its queued calls failed by the exit).
                if idle.job is None:
                    self._idle.remove(idle)
                elif not isinstance(idle.job, UserActor):
                    for running in idle.job[1]:
                        self._abort(running)
                raise
            job = idle.job

    def release_workers(self) -> None:
        """End every waiting worker."""
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.set()

    async def _drive(self, actor: UserActor) -> None:
        """Apply one batch of ``actor`` in this task, one storage call at a time."""
        batch = actor.take_batch()
        if batch is None:
            return
        running = _Running(actor, batch, actor.turn(batch))
        storage = self._storage
        call = self._step(running)
        while call is not None:
            if call.kind is COMMIT:
                with anyio.CancelScope(shield=True):  # as in _commit
                    await storage.commit_many([call])
            else:
                await self._load([running])
            call = self._step(running)

    async def _load(self, turns: list[_Running]) -> None:
        """Load the snapshots ``turns`` ask for (in one adapter call where loads are grouped);
        the answers in place."""
        calls = [running.call for running in turns if running.call is not None]
        try:
            await self._storage.load_many(calls)
        except BaseException:
            for running in turns:
                self._abort(running)
            raise

    async def _reload(self, turns: list[_Running]) -> None:
        """Load again the users whose commit a round just found out of date, in this task, at
        once: an adapter may answer such a reload from what the conflict read, without a round
        trip, when it comes from the task that committed (the Redis adapter does)."""
        if not turns:
            return
        if self._storage.group_loads:
            await self._load(turns)
            for running in turns:
                self._advance(running)
            return
        for index, running in enumerate(turns):
            try:
                await self._load([running])
            except BaseException:
                for rest in turns[index + 1 :]:
                    self._abort(rest)
                raise
            self._advance(running)

    async def _commit(self, turns: list[_Running]) -> None:
        """Commit the commits ``turns`` wait for, in one adapter call; the answers in place."""
        calls = [running.call for running in turns if running.call is not None]
        # Shielded: once sent, a commit's outcome is learnt even while the store exits.
        with anyio.CancelScope(shield=True):
            await self._storage.commit_many(calls)


def _closed(request: Request) -> None:
    request.error = StoreClosedError("the store closed before this call was applied")
    if request.done is not None:
        request.done.set()
