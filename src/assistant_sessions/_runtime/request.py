"""A call as an actor serves it (:class:`Request`), and how a failure inside an actor is raised."""

from __future__ import annotations

from typing import Any

import anyio
import attrs

from .._core import Op, UserState
from ..adapters.base import UserCommit
from ..errors import SessionConflictError

__all__ = ["ActorCrash", "Request", "conflict", "fail"]


class ActorCrash(Exception):
    """An unexpected failure inside an actor: the registry restarts it (carries the cause)."""


@attrs.define(eq=False)
class Request:
    """One call: the operation and its outcome (``done`` is set for queued calls)."""

    op: Op
    done: anyio.Event | None = None
    result: Any = None
    error: BaseException | None = None
    #: The caller left while the request was queued.
    abandoned: bool = False
    #: The request was taken into a batch: it completes whatever its caller does.
    started: bool = False

    def outcome(self) -> Any:
        """The result, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.result


def conflict(request: Request, commit: UserCommit, state: UserState) -> None:
    """Fail ``request``: a session it creates has an id that another user's session has."""
    new_ids = [s.id for s in commit.upserts if s.id not in state.sessions]
    request.error = SessionConflictError(new_ids[0] if new_ids else "?")
    request.result = None


def fail(requests: list[Request], error: BaseException) -> None:
    """Give every one of ``requests`` the outcome ``error``."""
    for request in requests:
        request.error = error
        request.result = None
