"""create_session_store(): a store's options, checked, and the store built from them."""

from __future__ import annotations

from datetime import timedelta

from ._clock import Clock, check_clock
from ._core import Policy
from ._runtime import Runtime
from ._store import SessionStore
from ._validate import check_duration, check_optional_duration
from .adapters.base import SessionStoreAdapter
from .adapters.memory import InMemorySessionStoreAdapter
from .errors import InvalidInputError, InvalidTypeError

__all__ = ["create_session_store"]


def create_session_store(
    adapter: SessionStoreAdapter | None = None,
    *,
    default_ttl: float | timedelta = 3600,
    sweep_interval: float | timedelta | None = 60,
    expire_after: float | timedelta | None = 86400,
    clock: Clock | None = None,
    purge_after: float | timedelta | None = 30 * 86400,
    exclusive_surfaces: bool = True,
    max_surfaces: int = 64,
    max_metadata_bytes: int = 64 * 1024,
    idle_after: float | timedelta = 30.0,
    mailbox_size: int = 64,
    max_batch: int = 256,
    max_restarts: int = 3,
    restart_window: float | timedelta = 5.0,
) -> SessionStore:
    """Create a session store; use it as ``async with create_session_store() as store:``.

    Entering starts the store's task group (its supervisor and actors); leaving it waits for
    calls in flight, then stops every task. Nothing outlives the ``async with``.

    By default sessions go stale on their own, as ``default_ttl`` promises: a sweep runs every
    minute, suspends sessions idle longer than ``default_ttl``, expires sessions suspended for
    a day and deletes sessions expired for 30 days, so storage does not grow forever with
    sessions nobody will resume. Pass ``None`` for any of the three to turn that step off
    (``sweep_interval=None``: nothing happens unless you call ``sweep_stale``).

    Args:
        adapter: Where sessions are kept; a new :class:`InMemorySessionStoreAdapter` if ``None``.
        default_ttl: Seconds (or a ``timedelta``) of inactivity after which ``sweep_stale``
            suspends an active session.
        sweep_interval: Run a sweep this often (seconds or ``timedelta``; default 60 s);
            ``None``: never.
        expire_after: With periodic sweeps, expire sessions suspended longer than this
            (default one day); ``None``: never.
        purge_after: With periodic sweeps, delete sessions expired longer than this
            (default 30 days); ``None``: keep them.
        exclusive_surfaces: A surface is attached to at most one live session of a user:
            attaching it to one session detaches it from the user's other sessions, atomically.
        max_surfaces: Most surfaces one session may have attached; attaching more is invalid
            input.
        max_metadata_bytes: Largest metadata of one session (compact UTF-8 JSON); a larger
            merge is invalid input.
        clock: Zero-argument callable returning the current aware UTC ``datetime``.
        idle_after: Retire a user's actor (drop its cached sessions) after about this long
            without calls; it is re-activated on the next call.
        mailbox_size: Requests that may queue for one user before callers wait (backpressure).
        max_batch: Most queued requests applied and committed together.
        max_restarts: Restarts of one actor allowed within ``restart_window``; past that its
            calls raise :class:`ActorFailedError` until the window has passed.
        restart_window: Seconds (or ``timedelta``) of the restart-intensity window.

    Raises:
        InvalidInputError: A duration is not positive, or a size is below 1.
        InvalidTypeError: An argument has the wrong type.
    """
    if adapter is None:
        adapter = InMemorySessionStoreAdapter()
    elif not isinstance(adapter, SessionStoreAdapter):
        raise InvalidTypeError(
            f"adapter must implement SessionStoreAdapter, not {type(adapter).__name__}"
        )
    if not isinstance(exclusive_surfaces, bool):
        raise InvalidTypeError("exclusive_surfaces must be a bool")
    for name, value in (
        ("mailbox_size", mailbox_size),
        ("max_batch", max_batch),
        ("max_restarts", max_restarts),
        ("max_surfaces", max_surfaces),
        ("max_metadata_bytes", max_metadata_bytes),
    ):
        if type(value) is not int:
            raise InvalidTypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < (0 if name == "max_restarts" else 1):
            raise InvalidInputError(f"{name} is too small: {value}")
    runtime = Runtime(
        adapter,
        clock=check_clock(clock),
        default_ttl=check_duration(default_ttl, "default_ttl"),
        sweep_interval=check_optional_duration(sweep_interval, "sweep_interval"),
        expire_after=check_optional_duration(expire_after, "expire_after"),
        purge_after=check_optional_duration(purge_after, "purge_after"),
        policy=Policy(exclusive_surfaces, max_surfaces, max_metadata_bytes),
        idle_after=check_duration(idle_after, "idle_after"),
        mailbox_size=mailbox_size,
        max_batch=max_batch,
        max_restarts=max_restarts,
        restart_window=check_duration(restart_window, "restart_window").total_seconds(),
    )
    return SessionStore(adapter, runtime)
