"""UserActor: the single owner of one user's sessions.

An actor is a *virtual actor*: an object that exists while its user is live, holding the
user's sessions as loaded from the adapter, and a task only while it has queued work. Its turns
never overlap: exactly one *executor* holds the actor at a time (``busy``), and only the
executor applies operations.

How a call runs:

* **Idle actor, nothing queued**: the caller's own task is the executor. With a
  :class:`~assistant_sessions.adapters.SynchronousAdapter` (the in-memory one) the whole turn
  runs without an await, so it needs neither a task switch nor a reply; that is where the
  in-memory speed comes from (DESIGN.md section 5).
* **Busy actor**: the call is a request in the actor's mailbox, a bounded memory object stream
  (a full mailbox blocks the caller: backpressure), and the caller waits for its reply. The
  executor, on finishing, hands the mailbox to a *drain task* started in the store's task group,
  which applies queued requests in batches: each batch is one transaction and one adapter
  commit (group commit), and ends when the mailbox is empty. So live tasks follow users with
  work in flight, not users ever seen.

A commit the adapter rejects for a version conflict (another store or process changed the user)
reloads the user and re-applies the batch, invisibly to callers. A failed commit rolls the
batch back and drops the cache, so the actor's view never diverges from storage.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, NoReturn

import anyio
from anyio import WouldBlock, create_memory_object_stream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._core import Op, Transaction, UserState
from ..adapters.base import Rejection, SynchronousAdapter, UserCommit
from ..errors import ActorFailedError, AdapterError, SessionConflictError, StoreClosedError

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["ActorCrash", "Request", "UserActor"]

#: How often a batch is re-applied after version conflicts before callers get an error.
MAX_CONFLICT_RETRIES: Final = 16

_RETRY: Final = object()


class ActorCrash(Exception):
    """An unexpected failure inside an actor: the supervisor restarts it (carries the cause)."""


class Request:
    """One call: the operation, and where its outcome goes (``done`` is set for queued calls)."""

    __slots__ = ("abandoned", "done", "error", "op", "result", "started")

    def __init__(self, op: Op, done: anyio.Event | None = None) -> None:
        self.op = op
        self.done = done
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.started = False

    def outcome(self) -> Any:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.result


class UserActor:
    """The owner of one user's sessions (see the module documentation)."""

    __slots__ = (
        "_receive",
        "_send",
        "_sending",
        "broken_until",
        "busy",
        "failures",
        "last_tick",
        "state",
        "supervisor",
        "user_id",
    )

    def __init__(self, user_id: str, supervisor: Supervisor) -> None:
        self.user_id = user_id
        self.supervisor = supervisor
        self.state: UserState | None = None
        # Invariant: while requests are queued, ``busy`` is true (an executor will take them).
        self.busy = False
        self.last_tick = supervisor.tick
        self.failures: list[float] = []
        self.broken_until = -math.inf
        self._send: MemoryObjectSendStream[Request] | None = None
        #: Callers inside ``send`` on a full mailbox (the mailbox must not be dropped).
        self._sending = 0
        self._receive: MemoryObjectReceiveStream[Request] | None = None

    # -- calls ------------------------------------------------------------------------------

    async def call(self, op: Op) -> Any:
        """Apply ``op`` as one turn of this actor and return its result.

        The caller has already passed a checkpoint. If the caller is cancelled while its request
        waits in the mailbox, the request is dropped unapplied; once a turn has started, it
        completes (its commit is shielded) and the cancellation is delivered afterwards.
        """
        supervisor = self.supervisor
        self.last_tick = supervisor.tick
        if self.broken_until != -math.inf:
            supervisor.check_broken(self)
        if self.busy:
            return await self._enqueue(op)
        sync = supervisor.sync_adapter
        if sync is not None and self.state is not None:
            result = self._turn_now(op, sync)
            if result is not _RETRY:
                return result
        return await self._turn_inline(op)

    def _turn_now(self, op: Op, adapter: SynchronousAdapter) -> Any:
        """The whole turn without awaiting; ``_RETRY`` if it needs the general path."""
        state = self.state
        assert state is not None
        supervisor = self.supervisor
        tx = Transaction(state, supervisor.clock(), supervisor.policy)
        try:
            result = op.apply(tx)
        except Exception:
            tx.rollback()
            if not self._cache_is_current(adapter):
                return _RETRY
            raise
        except BaseException:
            tx.rollback()
            raise
        if not tx.dirty:
            return result if self._cache_is_current(adapter) else _RETRY
        try:
            rejection = adapter.commit_nowait((tx.to_commit(),))[0]
        except AdapterError as exc:
            tx.rollback()
            self.state = None
            supervisor.adapter_failed(self, exc)
            raise
        except Exception as exc:
            tx.rollback()
            request = Request(op)
            try:
                self._crash([request], exc)
            except ActorCrash as crash:
                self.supervisor.actor_crashed(self, crash)
            return request.outcome()
        if rejection is not None:
            tx.rollback()
            if rejection is Rejection.VERSION:
                self.state = None
            return _RETRY
        state.version += 1
        if supervisor.events:
            supervisor.publish(tx)
        return result

    def _cache_is_current(self, adapter: SynchronousAdapter) -> bool:
        """Whether the cache is still at the stored version; if not, drop it.

        A turn that commits nothing (a no-op, or an error) had no version check vouch for the
        cache, and another store sharing the adapter may have changed the user since: its
        outcome must not be served from a stale cache.
        """
        assert self.state is not None
        try:
            current = adapter.load_user_nowait(self.user_id).version == self.state.version
        except Exception:
            current = False  # the general path reloads, and reports the failure properly
        if not current:
            self.state = None
        return current

    async def _turn_inline(self, op: Op) -> Any:
        """Run one request as the executor, in the caller's task."""
        request = Request(op)
        crash: ActorCrash | None = None
        self.busy = True
        try:
            await self._run_batch([request])
        except ActorCrash as exc:
            crash = exc
        finally:
            self.busy = False
            if crash is not None:
                self.supervisor.actor_crashed(self, crash)
            elif self._send is not None and self._has_queued():
                self.busy = True
                self.supervisor.spawn(self)
        return request.outcome()

    async def _enqueue(self, op: Op) -> Any:
        request = Request(op, anyio.Event())
        if self._send is None:
            self._send, self._receive = create_memory_object_stream[Request](
                self.supervisor.mailbox_size
            )
        try:
            self._send.send_nowait(request)
        except WouldBlock:
            # A full mailbox is backpressure: wait for room. Cancelled here, nothing was queued.
            self._sending += 1
            try:
                await self._send.send(request)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise StoreClosedError("the store closed before this call was queued") from None
            finally:
                self._sending -= 1
        if not self.busy:
            self.busy = True
            self.supervisor.spawn(self)
        assert request.done is not None
        try:
            await request.done.wait()
        except BaseException:
            # A request not yet started is skipped by the executor: the call changes nothing.
            request.abandoned = True
            raise
        return request.outcome()

    def _has_queued(self) -> bool:
        assert self._send is not None
        stats = self._send.statistics()
        return stats.current_buffer_used > 0 or stats.tasks_waiting_send > 0

    # -- the executor --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Apply queued requests in batches until the mailbox is empty (the actor's task body)."""
        receive = self._receive
        if receive is None:  # drained and dropped already, by an executor that ran before us
            self.busy = False
            return
        assert self.busy
        max_batch = self.supervisor.max_batch
        try:
            while True:
                batch: list[Request] = []
                while len(batch) < max_batch:
                    try:
                        request = receive.receive_nowait()
                    except WouldBlock:
                        break
                    if not request.abandoned:
                        batch.append(request)
                if not batch:
                    # Drop the drained mailbox: after a burst its containers keep their peak
                    # size, and a new one is cheap to make at the next contention. Not while a
                    # caller is on its way into it (between send's checkpoint and its wait).
                    if not self._sending:
                        self.close()
                    return
                try:
                    await self._run_batch(batch)
                except BaseException:
                    # Cancelled (the store is closing past its drain timeout) before these
                    # requests had an outcome: their callers must not wait forever.
                    for request in batch:
                        if request.error is None and request.result is None:
                            request.error = StoreClosedError(
                                "the store closed before this call was applied"
                            )
                    raise
                finally:
                    for request in batch:
                        assert request.done is not None
                        request.done.set()
                # Let other tasks run between batches, so a busy user cannot starve the rest.
                await anyio.lowlevel.checkpoint()
        finally:
            self.busy = False

    async def _run_batch(self, batch: list[Request]) -> None:
        """Apply a batch as one transaction and one commit; outcomes go into the requests."""
        # Whether the cached state is known to be the stored one (just loaded).
        verified = False
        for _ in range(MAX_CONFLICT_RETRIES):
            if self.state is None:
                try:
                    self.state = UserState(await self.supervisor.load_user(self.user_id))
                except AdapterError as exc:
                    self.supervisor.adapter_failed(self, exc)
                    _fail(batch, exc)
                    return
                except Exception as exc:
                    self._crash(batch, exc)
                verified = True
            tx = Transaction(self.state, self.supervisor.clock(), self.supervisor.policy)
            applied: list[Request] = []
            for request in batch:
                if request.abandoned and not request.started:
                    continue
                request.started = True
                request.error = None
                mark = tx.mark()
                try:
                    request.result = request.op.apply(tx)
                except Exception as exc:
                    tx.rollback(mark)
                    request.error = exc
                else:
                    applied.append(request)
            if not tx.dirty:
                if verified or self.supervisor.sync_adapter is not None:
                    return
                # No commit, so no version check vouched for the cache, and another process
                # sharing the adapter may have changed the user: outcomes computed from a
                # stale cache (not found, wrong state, no-op) must not be served.
                try:
                    snapshot = await self.supervisor.load_user(self.user_id)
                except AdapterError as exc:
                    self.state = None
                    self.supervisor.adapter_failed(self, exc)
                    _fail(batch, exc)
                    return
                except Exception as exc:
                    self._crash(batch, exc)
                if snapshot.version == self.state.version:
                    return
                self.state = UserState(snapshot)
                verified = True
                continue
            commit = tx.to_commit()
            try:
                rejection = await self._commit(commit)
            except AdapterError as exc:
                tx.rollback()
                self.state = None
                self.supervisor.adapter_failed(self, exc)
                _fail(applied, exc)
                return
            except Exception as exc:
                tx.rollback()
                self._crash(applied, exc)
            if rejection is None:
                self.state.version += 1
                if self.supervisor.events:
                    self.supervisor.publish(tx)
                return
            tx.rollback()
            if rejection is Rejection.DUPLICATE_ID:
                self._resolve_duplicate(applied, commit)
                if len(applied) == 1:
                    return
                for request in applied:
                    await self._run_batch([request])
                return
            self.state = None  # Another writer got there first: reload and apply again.
        _fail(batch, AdapterError(f"too many concurrent writers for user {self.user_id!r}"))

    def _resolve_duplicate(self, applied: list[Request], commit: UserCommit) -> None:
        if len(applied) != 1:
            return
        assert self.state is not None
        new_ids = [s.id for s in commit.upserts if s.id not in self.state.sessions]
        applied[0].error = SessionConflictError(new_ids[0] if new_ids else "?")
        applied[0].result = None

    async def _commit(self, commit: UserCommit) -> Rejection | None:
        sync = self.supervisor.sync_adapter
        if sync is not None:
            return sync.commit_nowait((commit,))[0]
        # Once sent, a commit completes even if the caller is cancelled: never half-applied.
        with anyio.CancelScope(shield=True):
            rejections = await self.supervisor.adapter.commit((commit,))
        return rejections[0]

    def _crash(self, requests: list[Request], exc: Exception) -> NoReturn:
        self.state = None
        failure = ActorFailedError(self.user_id)
        failure.__cause__ = exc
        _fail(requests, failure)
        raise ActorCrash(self.user_id) from exc

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting in the mailbox (including callers waiting for room)."""
        if self._send is None:
            return 0
        stats = self._send.statistics()
        return stats.current_buffer_used + stats.tasks_waiting_send

    @property
    def idle(self) -> bool:
        """Whether nothing is running or queued."""
        return not self.busy and (self._send is None or not self._has_queued())

    def take_queued(self) -> list[Request]:
        """Remove and return every queued request (used when the actor cannot run them)."""
        taken = []
        if self._receive is not None:
            while True:
                try:
                    taken.append(self._receive.receive_nowait())
                except WouldBlock:
                    break
        return taken

    def close(self) -> None:
        """Close the mailbox; the actor must be idle."""
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()
        self._send = self._receive = None


def _fail(requests: list[Request], error: BaseException) -> None:
    for request in requests:
        request.error = error
        request.result = None
