"""The check that matters most: after a run, every resolved user has exactly one session.

Resolve is lookup-or-create, and the benchmark's workloads never expire a session nor use a
workspace, so each user that was resolved at least once must end with exactly one live session:
two or more is a duplicate (a broken exactly-once), none is a lost create. Either fails the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final, final

import attrs

from assistant_sessions import SessionState
from assistant_sessions.adapters.base import SessionStoreAdapter, SynchronousAdapter, UserSnapshot

__all__ = ["ExactlyOnce", "check_exactly_once", "count_sessions"]

#: How many offending user ids a result keeps, as examples.
_EXAMPLES: Final = 10


@final
@attrs.frozen
class ExactlyOnce:
    """The outcome of :func:`check_exactly_once`.

    Attributes:
        users_checked: How many users were read back.
        sessions_per_user: How many users have 0, 1, 2... live sessions (in one workspace).
        duplicated: Users with more than one live session in one workspace.
        missing: Users without a session although they were resolved.
        examples: A few offending user ids.
    """

    users_checked: int
    sessions_per_user: dict[int, int]
    duplicated: int
    missing: int
    examples: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every resolved user has exactly one session."""
        return not self.duplicated and not self.missing

    def describe(self) -> str:
        """One line for the table: ``ok`` or what went wrong."""
        if self.ok:
            return f"ok: {self.users_checked:,} x 1"
        return (
            f"FAILED: {self.duplicated} duplicated, {self.missing} missing"
            f" (e.g. {', '.join(self.examples[:3])})"
        )


async def check_exactly_once(adapter: SessionStoreAdapter, users: Iterable[str]) -> ExactlyOnce:
    """Read each of ``users`` back from ``adapter`` (open) and count their live sessions."""
    sync = adapter if isinstance(adapter, SynchronousAdapter) else None
    histogram: Counter[int] = Counter()
    duplicated = missing = checked = 0
    examples: list[str] = []
    for user_id in sorted(users):
        snapshot: UserSnapshot = (
            sync.load_user_nowait(user_id) if sync is not None else await adapter.load_user(user_id)
        )
        per_workspace = Counter(
            s.workspace_id for s in snapshot.sessions if s.state is not SessionState.EXPIRED
        )
        most = max(per_workspace.values(), default=0)
        histogram[sum(per_workspace.values())] += 1
        checked += 1
        if most != 1:
            if most > 1:
                duplicated += 1
            else:
                missing += 1
            if len(examples) < _EXAMPLES:
                examples.append(user_id)
    return ExactlyOnce(
        checked, dict(sorted(histogram.items())), duplicated, missing, tuple(examples)
    )


def count_sessions(sessions_of: Mapping[str, int]) -> ExactlyOnce:
    """The check from how many sessions each resolved user has (a store without workspaces,
    read through its own API: the ADK baselines)."""
    histogram = Counter(sessions_of.values())
    offending = sorted(user for user, count in sessions_of.items() if count != 1)
    duplicated = sum(1 for count in sessions_of.values() if count > 1)
    return ExactlyOnce(
        len(sessions_of),
        dict(sorted(histogram.items())),
        duplicated,
        sum(1 for count in sessions_of.values() if count < 1),
        tuple(offending[:_EXAMPLES]),
    )
