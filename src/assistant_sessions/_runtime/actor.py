"""UserActor: the single owner of one user's sessions (``docs/architecture.md``, section 3).

A *virtual actor*: it exists while its user is live, holds the user's sessions as loaded from
storage, and is driven only while work is queued. Exactly one *executor* holds it at a time
(``busy``). On inline storage an idle actor's turn runs in the caller's task without an await;
otherwise a call is a :class:`Request` (the first one held directly, later ones in a bounded
mailbox: backpressure) for the store's executor, the pump
(:mod:`~assistant_sessions._runtime.pump`), which takes what is queued in batches
(:meth:`UserActor.take_batch`), one transaction and one commit each, until nothing is left. A
caller cancelled while its request is queued leaves it unapplied; once a batch has taken it,
the caller gets its cancellation at once and the actor completes or rolls back the turn. The
one engine, :meth:`UserActor.turn`, reloads and re-applies after a version conflict, and rolls
back and drops the cache after a failed commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NoReturn

import anyio
import anyio.lowlevel
import attrs
from anyio import WouldBlock, create_memory_object_stream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._clock import Clock
from .._core import Op, Policy, Transaction, UserState
from ..adapters.base import Rejection
from ..errors import ActorFailedError, AdapterError, StoreClosedError
from .events import EventBus
from .request import ActorCrash, Request, conflict, fail
from .storage import COMMIT, LOAD, Storage, StorageCall, Turn

__all__ = ["ActorContext", "UserActor"]

#: How often a batch is re-applied after version conflicts before callers get an error.
MAX_CONFLICT_RETRIES: Final = 16


@attrs.frozen(slots=True)
class ActorContext:
    """What an actor may use of the runtime, shared by every actor of a store.

    Attributes:
        storage: The storage port.
        clock: The store's clock.
        policy: The rules operations enforce.
        events: Where committed changes are published.
        mailbox_size: Requests that may queue for one actor before callers wait.
        max_batch: Most queued requests applied and committed together.
        spawn: Give the actor to the executor (the actor is already marked busy).
        crashed: Report an unexpected failure of the actor (the registry restarts it).
        storage_failed: Report a storage failure met for a user (counted and logged).
        new_event: Makes the event a queued call waits on: the class of an ``anyio.Event``
            of the running backend, kept once the store runs, because ``anyio.Event()``
            looks the backend up again each time.
    """

    storage: Storage
    clock: Clock
    policy: Policy
    events: EventBus
    mailbox_size: int
    max_batch: int
    spawn: Callable[[UserActor], None]
    crashed: Callable[[UserActor, ActorCrash], None]
    storage_failed: Callable[[str, AdapterError], None]
    new_event: Callable[[], anyio.Event] = anyio.Event


class UserActor:
    """The owner of one user's sessions (see the module documentation)."""

    __slots__ = (
        "_first",
        "_receive",
        "_send",
        "_sending",
        "busy",
        "ctx",
        "last_tick",
        "state",
        "user_id",
    )

    def __init__(self, user_id: str, ctx: ActorContext) -> None:
        self.user_id = user_id
        self.ctx = ctx
        self.state: UserState | None = None
        # Invariant: while requests are queued, ``busy`` is true (an executor will take them).
        self.busy = False
        #: The registry's tick at the last call (idle actors are retired by it).
        self.last_tick = 0
        self._send: MemoryObjectSendStream[Request] | None = None
        #: Callers inside ``send`` on a full mailbox (the mailbox must not be dropped).
        self._sending = 0
        self._receive: MemoryObjectReceiveStream[Request] | None = None
        #: The request that made an idle actor busy: the executor takes it first, so that a
        #: lone call needs no mailbox (one is made when a second call arrives meanwhile).
        self._first: Request | None = None

    # -- calls ------------------------------------------------------------------------------

    async def call(self, op: Op) -> Any:
        """Apply ``op`` as one turn of this actor and return its result.

        The caller has already passed a checkpoint. Cancelled while its request is queued, the
        request is dropped unapplied; once a turn has taken it, the cancellation reaches the
        caller at once and the turn completes on the actor's time.
        """
        if self.busy or not self.ctx.storage.inline:
            return await self._enqueue(op)
        return self.call_now(op)

    def call_now(self, op: Op) -> Any:
        """Apply ``op`` as one turn in the caller's task, without awaiting (inline storage,
        and the actor not busy: the router checks both)."""
        ctx = self.ctx
        storage = ctx.storage
        # The common turn, without a batch, a request or a generator: (load,) apply, commit.
        state = self.state
        if state is None:
            try:
                state = self.state = UserState(storage.load_now(self.user_id))
            except Exception as exc:
                return self._failed_now(op, exc)
        tx = Transaction(state, ctx.clock(), ctx.policy)
        try:
            result = op.apply(tx)
        except Exception:
            tx.rollback()
        else:
            if tx.dirty:
                try:
                    rejection = storage.commit_now(tx.to_commit())
                except Exception as exc:
                    tx.rollback()  # and the cache goes: the commit's outcome is unknown
                    return self._failed_now(op, exc)
                if rejection is None:
                    self._committed(state, tx)
                    return result
                self._settle_rejection(tx, rejection)
        # Any other outcome is the engine's: it verifies the cache (a stale one may err).
        return self._turn_now(op)

    def _failed_now(self, op: Op, exc: Exception) -> Any:
        """The storage raised in :meth:`call_now`: the engine's outcome (the cache goes)."""
        request = Request(op)
        try:
            self._settle_failure([request], exc)
        except ActorCrash as crash:
            self.ctx.crashed(self, crash)
        return request.outcome()

    def _turn_now(self, op: Op) -> Any:
        """Run ``op`` through the engine, in the caller's task (inline storage)."""
        request = Request(op)
        self.busy = True
        try:
            self.ctx.storage.run_now(self.turn([request]))
        except ActorCrash as crash:
            self.busy = False  # before the registry hears of it
            self.ctx.crashed(self, crash)
        else:
            self.busy = False
        return request.outcome()

    async def _enqueue(self, op: Op) -> Any:
        request = Request(op, self.ctx.new_event())
        if not self.busy:
            self.busy = True
            self._first = request
            self.ctx.spawn(self)
            return await self._wait(request)
        if self._send is None:
            self._send, self._receive = create_memory_object_stream[Request](self.ctx.mailbox_size)
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
        # The executor may have finished while this call waited for room.
        self._ensure_executor()
        return await self._wait(request)

    def _ensure_executor(self) -> None:
        if not self.busy:
            self.busy = True
            self.ctx.spawn(self)

    async def _wait(self, request: Request) -> Any:
        assert request.done is not None
        try:
            await request.done.wait()
        except BaseException:
            # A request not yet started is skipped by the executor: the call changes nothing.
            request.abandoned = True
            raise
        return request.outcome()

    # -- for the executor (the pump) ---------------------------------------------------------

    def take_batch(self) -> list[Request] | None:
        """The next requests to apply together (at most ``max_batch``, the abandoned left out),
        for the executor; ``None`` if none is left, and the actor is released."""
        assert self.busy
        batch: list[Request] = []
        first, self._first = self._first, None
        if first is not None and not first.abandoned:
            batch.append(first)
        receive = self._receive
        max_batch = self.ctx.max_batch
        while receive is not None and len(batch) < max_batch:
            try:
                request = receive.receive_nowait()
            except WouldBlock:
                break
            if not request.abandoned:
                batch.append(request)
        if not batch:
            self.release()
            return None
        return batch

    def release(self) -> None:
        """The executor is done and nothing is queued: the actor is idle again."""
        self.busy = False
        # Drop the drained mailbox: after a burst its containers keep their peak size, and a
        # new one is cheap to make at the next contention. Not while a caller is on its way
        # into it (between send's checkpoint and its wait).
        if not self._sending:
            self.close()

    def turn(self, batch: list[Request]) -> Turn:
        """Apply ``batch`` as one transaction and one commit; outcomes go into the requests.

        A generator driven by the storage port: it yields a :class:`StorageCall` whenever it
        needs storage (a load, a commit), and reads the answer when it is resumed.
        """
        ctx = self.ctx
        io = StorageCall()
        # Whether the cached state is known to be the stored one (just loaded).
        verified = False
        for _ in range(MAX_CONFLICT_RETRIES):
            state = self.state
            if state is None:
                io.kind, io.argument, io.error = LOAD, self.user_id, None
                yield io
                try:
                    state = self.state = UserState(io.answer())
                except Exception as exc:
                    self._settle_failure(batch, exc)
                    return
                verified = True
            tx = Transaction(state, ctx.clock(), ctx.policy)
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
                if verified:
                    return
                # No commit, so no version check vouched for the cache, and another store
                # sharing the storage may have changed the user: outcomes computed from a
                # stale cache (not found, wrong state, no-op) must not be served.
                io.kind, io.argument, io.error = LOAD, self.user_id, None
                yield io
                try:
                    snapshot = io.answer()
                except Exception as exc:
                    self._settle_failure(batch, exc)
                    return
                if snapshot.version == state.version:
                    return
                self.state = UserState(snapshot)
                verified = True
                continue
            commit = tx.to_commit()
            io.kind, io.argument, io.error = COMMIT, commit, None
            try:
                yield io
            except BaseException:
                # The turn was closed mid-commit (the store is closing): whether the commit
                # was applied is unknown, so the cache goes.
                tx.rollback()
                self.state = None
                raise
            try:
                rejection = io.answer()
            except Exception as exc:
                tx.rollback()
                self._settle_failure(applied, exc)
                return
            if rejection is None:
                self._committed(state, tx)
                return
            self._settle_rejection(tx, rejection)
            if rejection is Rejection.DUPLICATE_ID:
                if len(applied) == 1:
                    conflict(applied[0], commit, state)
                    return
                # One of several new ids is taken: apply each request alone to find whose.
                for request in applied:
                    yield from self.turn([request])
                return
        fail(batch, AdapterError(f"too many concurrent writers for user {self.user_id!r}"))

    # -- outcomes of storage calls (shared by the engine and ``call_now``) ---------------------

    def _committed(self, state: UserState, tx: Transaction) -> None:
        state.version += 1
        events = self.ctx.events
        if events.subscriptions:
            events.publish_transaction(tx)

    def _settle_failure(self, requests: list[Request], exc: Exception) -> None:
        """A load or a commit raised: drop the cache and fail ``requests``; an error other
        than the storage's is a crash (raises :class:`ActorCrash`)."""
        if isinstance(exc, AdapterError):
            self._storage_failed(requests, exc)
        else:
            self._crash(requests, exc)

    def _settle_rejection(self, tx: Transaction, rejection: Rejection) -> None:
        """The storage rejected the commit of ``tx``: undo it; another writer changed the user
        first (a version rejection), so the cache goes and the next try reloads it."""
        tx.rollback()
        if rejection is Rejection.VERSION:
            self.state = None

    def _storage_failed(self, requests: list[Request], exc: AdapterError) -> None:
        self.state = None
        self.ctx.storage_failed(self.user_id, exc)
        fail(requests, exc)

    def _crash(self, requests: list[Request], exc: Exception) -> NoReturn:
        self.state = None
        failure = ActorFailedError(self.user_id)
        failure.__cause__ = exc
        fail(requests, failure)
        raise ActorCrash(self.user_id) from exc

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Requests waiting in the mailbox (including callers waiting for room)."""
        first = 0 if self._first is None else 1
        if self._send is None:
            return first
        stats = self._send.statistics()
        return first + stats.current_buffer_used + stats.tasks_waiting_send

    @property
    def idle(self) -> bool:
        """Whether nothing is running or queued."""
        return not self.busy and not self.queued

    def take_queued(self) -> list[Request]:
        """Remove and return every queued request (used when the actor cannot run them)."""
        taken = []
        if self._first is not None:
            taken.append(self._first)
            self._first = None
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
