"""Lifecycle events: what the actors applied, as a stream subscribers can read.

Actors publish after each successful commit, synchronously and without awaiting, so events of
one user arrive in the order that user's actor applied them. A subscriber has a bounded buffer;
when it is full the *oldest* buffered event is dropped and counted, so a slow or stuck subscriber
can never stall an actor. The next event the subscriber reads carries how many were dropped
before it (``missed_before``), and :attr:`Subscription.missed` keeps the total.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Self, final

import anyio
import anyio.lowlevel
import attrs

from .._core import Transaction
from ..errors import InvalidInputError, InvalidTypeError
from ..model import Session, SessionState

__all__ = ["EventBus", "EventKind", "SessionEvent", "Subscription", "diff_events"]


class EventKind(enum.StrEnum):
    """What happened to a session."""

    CREATED = "created"
    ACTIVATED = "activated"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    DELETED = "deleted"
    SURFACE_ATTACHED = "surface_attached"
    SURFACE_DETACHED = "surface_detached"
    METADATA_UPDATED = "metadata_updated"


@attrs.frozen(slots=True)
class SessionEvent:
    """One lifecycle event.

    Attributes:
        kind: What happened.
        session: The session snapshot after the change (before it, for ``deleted``).
        at: When the owning actor applied it (the store's clock).
        surface_id: The surface, for ``surface_attached`` and ``surface_detached``.
        missed_before: Events dropped from this subscription's buffer just before this one.
    """

    kind: EventKind
    session: Session
    at: datetime
    surface_id: str | None = None
    missed_before: int = 0


_STATE_EVENTS = {
    SessionState.ACTIVE: EventKind.ACTIVATED,
    SessionState.SUSPENDED: EventKind.SUSPENDED,
    SessionState.EXPIRED: EventKind.EXPIRED,
}


def diff_events(before: Session | None, after: Session | None, at: datetime) -> list[SessionEvent]:
    """The events that turn ``before`` into ``after`` (``None``: absent)."""
    if after is None:
        return [] if before is None else [SessionEvent(EventKind.DELETED, before, at)]
    if before is None:
        events = [SessionEvent(EventKind.CREATED, after, at)]
        events.extend(
            SessionEvent(EventKind.SURFACE_ATTACHED, after, at, surface)
            for surface in after.attached_surfaces
        )
        return events
    events = []
    if after.state is not before.state:
        events.append(SessionEvent(_STATE_EVENTS[after.state], after, at))
    if after.attached_surfaces != before.attached_surfaces:
        old, new = set(before.attached_surfaces), set(after.attached_surfaces)
        events.extend(
            SessionEvent(EventKind.SURFACE_DETACHED, after, at, s)
            for s in before.attached_surfaces
            if s not in new
        )
        events.extend(
            SessionEvent(EventKind.SURFACE_ATTACHED, after, at, s)
            for s in after.attached_surfaces
            if s not in old
        )
    if after.metadata is not before.metadata and after.metadata != before.metadata:
        events.append(SessionEvent(EventKind.METADATA_UPDATED, after, at))
    return events


@final
class Subscription:
    """A subscriber's view of the event stream: an async iterator, and a context manager that
    frees it on exit. Create it with :meth:`SessionStore.subscribe`.
    """

    def __init__(
        self,
        bus: EventBus,
        buffer_size: int,
        user_id: str | None,
        kinds: frozenset[EventKind] | None,
    ) -> None:
        self._bus = bus
        self._buffer: deque[SessionEvent] = deque()
        self._buffer_size = buffer_size
        self._user_id = user_id
        self._kinds = kinds
        self._wakeup: anyio.Event | None = None
        self._missed_pending = 0
        self._closed = False
        #: Total events dropped because the buffer was full.
        self.missed = 0

    def _offer(self, event: SessionEvent) -> None:
        if self._user_id is not None and event.session.user_id != self._user_id:
            return
        if self._kinds is not None and event.kind not in self._kinds:
            return
        if len(self._buffer) >= self._buffer_size:
            self._buffer.popleft()
            self.missed += 1
            self._missed_pending += 1
        self._buffer.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        """Stop receiving events and free the buffer; iteration ends after it."""
        if not self._closed:
            self._closed = True
            self._bus.remove(self)
            self._buffer.clear()
            if self._wakeup is not None:
                self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the store closed)."""
        return self._closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionEvent:
        """Wait for the next event; ``StopAsyncIteration`` once closed."""
        await anyio.lowlevel.checkpoint()
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
            self._wakeup = None
        event = self._buffer.popleft()
        if self._missed_pending:
            event = attrs.evolve(event, missed_before=self._missed_pending)
            self._missed_pending = 0
        return event

    def receive_nowait(self) -> list[SessionEvent]:
        """Take every buffered event without waiting (gap counts as in iteration)."""
        events = []
        while self._buffer:
            event = self._buffer.popleft()
            if self._missed_pending:
                event = attrs.evolve(event, missed_before=self._missed_pending)
                self._missed_pending = 0
            events.append(event)
        return events

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Fan-out of events to subscriptions; publishing never blocks."""

    __slots__ = ("subscriptions",)

    def __init__(self) -> None:
        #: Open subscriptions; read-only outside this class. Publishers on the hot path test
        #: it before building events (a plain attribute read, not a ``__bool__`` call).
        self.subscriptions: list[Subscription] = []

    def __bool__(self) -> bool:
        return bool(self.subscriptions)

    def __len__(self) -> int:
        return len(self.subscriptions)

    def subscribe(
        self,
        *,
        buffer_size: int = 1000,
        user_id: str | None = None,
        kinds: EventKind | str | Iterable[EventKind | str] | None = None,
    ) -> Subscription:
        """Add a subscription (see :meth:`SessionStore.subscribe`). ``kinds`` is one kind or
        an iterable of kinds (a ``str`` is one kind, never an iterable of letters)."""
        if type(buffer_size) is not int:
            raise InvalidTypeError(f"buffer_size must be an int, not {type(buffer_size).__name__}")
        if buffer_size < 1:
            raise InvalidInputError(f"buffer_size must be at least 1, got {buffer_size}")
        wanted: frozenset[EventKind] | None = None
        if kinds is not None:
            if isinstance(kinds, str):  # EventKind is a str too
                kinds = (kinds,)
            elif not isinstance(kinds, Iterable):
                raise InvalidTypeError(
                    f"kinds must be an event kind or an iterable of them, not "
                    f"{type(kinds).__name__}"
                )
            try:
                wanted = frozenset(EventKind(k) for k in kinds)
            except ValueError as exc:
                raise InvalidInputError(f"unknown event kind: {exc}") from None
        subscription = Subscription(self, buffer_size, user_id, wanted)
        self.subscriptions.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        """Forget a subscription (idempotent)."""
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)

    def publish(self, events: Iterable[SessionEvent]) -> None:
        """Hand events to every subscription, in order."""
        subscriptions = self.subscriptions
        for event in events:
            for subscription in subscriptions:
                subscription._offer(event)

    def publish_transaction(self, tx: Transaction) -> None:
        """Publish the lifecycle events of a committed transaction."""
        now = tx.now
        events = []
        for before, after in tx.changes():
            if (
                before is not None
                and after is not None
                and before.state is after.state
                and before.attached_surfaces is after.attached_surfaces
                and before.metadata is after.metadata
            ):
                continue  # a touch of an active session: activity only, no lifecycle event
            events.extend(diff_events(before, after, now))
        if events:
            self.publish(events)

    def close(self) -> None:
        """End every subscription (the store is closing): buffered events can still be read."""
        for subscription in self.subscriptions:
            subscription._end()
        self.subscriptions.clear()
