"""The exception hierarchy of assistant-sessions, and nothing else.

Every exception the library raises on purpose derives from :class:`SessionError`. Where a
built-in exception fits, the class derives from it too, so ``except LookupError`` or
``except ValueError`` keep working for callers that do not know this library.
"""

from __future__ import annotations

__all__ = [
    "ActorFailedError",
    "AdapterError",
    "InvalidInputError",
    "InvalidTypeError",
    "SessionConflictError",
    "SessionError",
    "SessionNotFoundError",
    "SessionStateError",
    "StoreClosedError",
    "WrongThreadError",
]


class SessionError(Exception):
    """Root of every exception raised by assistant-sessions."""


class SessionNotFoundError(SessionError, LookupError):
    """No session with this id exists (it was never created, or it was deleted)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class SessionConflictError(SessionError):
    """A session with this id already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists")
        self.session_id = session_id


class SessionStateError(SessionError):
    """The session's current state does not allow the attempted transition."""

    def __init__(self, session_id: str, current_state: str, attempted_transition: str) -> None:
        super().__init__(
            f"cannot {attempted_transition} session {session_id!r}: it is {current_state}"
        )
        self.session_id = session_id
        self.current_state = current_state
        self.attempted_transition = attempted_transition


class InvalidInputError(SessionError, ValueError):
    """An argument has the right type but a value the store does not accept."""


class InvalidTypeError(SessionError, TypeError):
    """An argument has a type the store does not accept."""


class StoreClosedError(SessionError):
    """The store is not open: it was never entered, or its ``async with`` block has ended.

    This is the *you closed it* error; failures of the storage behind the store are
    :class:`AdapterError`.
    """


class WrongThreadError(SessionError, RuntimeError):
    """The store was called from a thread other than the one running its event loop.

    A store belongs to the event loop it was entered in. From another thread, call it through
    that loop: ``anyio.from_thread.run(store.get, session_id)`` (with a portal, or from a
    worker thread started by ``anyio.to_thread.run_sync``).
    """


class AdapterError(SessionError):
    """The storage adapter failed; the operation changed nothing.

    The driver's exception, when there is one, is kept as ``__cause__``.
    """


class ActorFailedError(SessionError):
    """The actor that owns this user's sessions failed unexpectedly.

    The operation that was being applied changed nothing that was acknowledged. The supervisor
    restarts the actor; when it fails too often (the restart intensity of
    ``create_session_store``), calls for this user raise this error until the restart window
    has passed. The original exception is kept as ``__cause__``.
    """

    def __init__(self, user_id: str, message: str = "") -> None:
        super().__init__(message or f"the actor of user {user_id!r} failed")
        self.user_id = user_id
