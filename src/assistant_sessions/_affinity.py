"""Affinity: which of a user's sessions an inbound message belongs to.

``SessionStore.resolve`` runs the choice inside the user's actor, so lookup-or-create is atomic.
A custom choice plugs in as a :class:`SessionSelector`: its ``select`` runs in that same turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._core import SessionSelector, select_default
from ._validate import check_id, check_optional_id
from .errors import InvalidInputError
from .model import LIVE_STATES, Session

if TYPE_CHECKING:
    from ._store import SessionStore

__all__ = [
    "AffinityResolver",
    "SessionSelector",
    "default_affinity_resolver",
    "resolve_session",
]

# Upper bound on the sessions one user is expected to have, for the read-only lookup.
_LOOKUP_LIMIT = 100_000


class AffinityResolver:
    """The default affinity rule, bound to a store.

    Prefers the most recently active candidate attached to the message's surface, else the
    most recently active candidate. Subclass it and override :meth:`select` for another rule.
    """

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        """The default rule (see the class documentation)."""
        return select_default(candidates, surface_id)

    async def resolve(
        self, user_id: str, surface_id: str | None = None, *, workspace_id: str | None = None
    ) -> Session | None:
        """Look up, without touching or creating, the session a message would resolve to.

        This is a read: another call may change the answer at once. To look up *or create*
        atomically, use :func:`resolve_session` or ``store.resolve(..., resolver=self)``.
        """
        user_id = check_id(user_id, "user_id")
        surface_id = check_optional_id(surface_id, "surface_id")
        workspace_id = check_optional_id(workspace_id, "workspace_id")
        sessions = await self.store.find(user_id=user_id, limit=_LOOKUP_LIMIT)
        candidates = [
            s for s in sessions if s.state in LIVE_STATES and s.workspace_id == workspace_id
        ]
        return self.select(candidates, surface_id=surface_id)


def default_affinity_resolver(store: SessionStore) -> AffinityResolver:
    """Return the default :class:`AffinityResolver` for ``store``."""
    return AffinityResolver(store)


async def resolve_session(
    message: object,
    store: SessionStore,
    resolver: SessionSelector | None = None,
    *,
    attach_surface: bool = True,
) -> Session:
    """Resolve an inbound message to a session: reuse the best live one or create one, atomically.

    Args:
        message: A mapping, or an object with attributes, carrying ``user_id`` and optionally
            ``surface_id`` and ``workspace_id``.
        store: The session store.
        resolver: The affinity rule; the default rule when ``None``.
        attach_surface: Attach the message's surface to the session returned (default), as
            :meth:`SessionStore.resolve` does.

    Raises:
        InvalidInputError: ``message`` has no ``user_id``, an id is not valid, or as
            :meth:`SessionStore.resolve` (the chosen session's surfaces are full).
        InvalidTypeError: An id has the wrong type.
        StoreClosedError, AdapterError: As :meth:`SessionStore.resolve`.
    """
    fields = {}
    for name in ("user_id", "surface_id", "workspace_id"):
        if isinstance(message, Mapping):
            fields[name] = message.get(name)
        else:
            fields[name] = getattr(message, name, None)
    if fields["user_id"] is None:
        raise InvalidInputError("message has no user_id")
    return await store.resolve(
        user_id=fields["user_id"],
        surface_id=fields["surface_id"],
        workspace_id=fields["workspace_id"],
        resolver=resolver,
        attach_surface=attach_surface,
    )
