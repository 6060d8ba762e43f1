"""Affinity: which of a user's live sessions a message belongs to.

:func:`select_default` is the one default rule; :class:`SessionSelector` is how a custom rule
plugs into ``resolve`` (it runs inside the user's turn, so lookup-or-create stays atomic).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

from ..model import Session, SessionState

__all__ = ["ANY_WORKSPACE", "SessionSelector", "select_default"]

_EXPIRED = SessionState.EXPIRED

#: Passed as ``workspace_id`` to :func:`select_default`: do not filter by workspace.
ANY_WORKSPACE: Final = object()


@runtime_checkable
class SessionSelector(Protocol):
    """Chooses the session a message belongs to among a user's live sessions.

    ``select`` runs inside the user's actor turn: it must be quick, must not block, and must not
    call the store. It returns one of ``candidates`` (which are the user's created, active and
    suspended sessions in the message's workspace, most recently active first), or ``None`` to
    have a new session created.
    """

    def select(self, candidates: Sequence[Session], *, surface_id: str | None) -> Session | None:
        """Return the chosen candidate, or ``None`` for a new session."""
        ...


def select_default(
    sessions: Iterable[Session],
    surface_id: str | None,
    workspace_id: str | object | None = ANY_WORKSPACE,
) -> Session | None:
    """The default affinity rule.

    Among the live (not expired) ``sessions`` of ``workspace_id`` (any workspace when it is
    :data:`ANY_WORKSPACE`), the most recently active one attached to ``surface_id`` wins, else
    the most recently active one; ties go to the greater id. ``None`` if there is none.
    """
    best: Session | None = None
    best_on_surface: Session | None = None
    any_workspace = workspace_id is ANY_WORKSPACE
    for s in sessions:
        if s.state is _EXPIRED or (not any_workspace and s.workspace_id != workspace_id):
            continue
        # Most recently active wins, ties by id: model.recency_key written out, without tuples
        # (this runs in every resolve).
        if (
            best is None
            or s.last_activity_at > best.last_activity_at
            or (s.last_activity_at == best.last_activity_at and s.id > best.id)
        ):
            best = s
        if (
            surface_id is not None
            and surface_id in s.attached_surfaces
            and (
                best_on_surface is None
                or s.last_activity_at > best_on_surface.last_activity_at
                or (
                    s.last_activity_at == best_on_surface.last_activity_at
                    and s.id > best_on_surface.id
                )
            )
        ):
            best_on_surface = s
    return best_on_surface if best_on_surface is not None else best
