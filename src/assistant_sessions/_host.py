"""What a host runtime may depend on to look sessions up (the original's "Core Integration").

A host registers the store (say under ``"sessions"``) and, when it has something to say in a
session, calls ``get(session_id)`` to learn which surfaces to answer on. :class:`SessionStore`
satisfies :class:`SessionLookup` structurally; so can any other component.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["SessionLookup", "SurfacedSession"]


@runtime_checkable
class SurfacedSession(Protocol):
    """A session as a host sees it: who it belongs to and where it can be reached."""

    @property
    def id(self) -> str:
        """The session id."""
        ...

    @property
    def user_id(self) -> str:
        """The owner."""
        ...

    @property
    def attached_surfaces(self) -> Sequence[str]:
        """The surfaces to answer on."""
        ...


@runtime_checkable
class SessionLookup(Protocol):
    """Session lookup by id, as a host runtime needs it."""

    async def get(self, session_id: str) -> SurfacedSession | None:
        """Return the session, or ``None`` if there is none."""
        ...
