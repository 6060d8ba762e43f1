"""The core: what an operation does to one user's sessions, with no concurrency and no I/O.

Its names are the ones the runtime and the benchmark's baselines use (the benchmark reaches
the core through this package only); imports run one way: runtime -> core -> model.
"""

from .ops import (
    AttachSurface,
    Create,
    Delete,
    DetachSurface,
    Expire,
    ExpireSuspended,
    Op,
    Purge,
    Resolve,
    SuspendStale,
    Touch,
    UpdateMetadata,
    new_session_id,
)
from .select import ANY_WORKSPACE, SessionSelector, select_default
from .transaction import DEFAULT_POLICY, Policy, Transaction, UserState

__all__ = [
    "ANY_WORKSPACE",
    "DEFAULT_POLICY",
    "AttachSurface",
    "Create",
    "Delete",
    "DetachSurface",
    "Expire",
    "ExpireSuspended",
    "Op",
    "Policy",
    "Purge",
    "Resolve",
    "SessionSelector",
    "SuspendStale",
    "Touch",
    "Transaction",
    "UpdateMetadata",
    "UserState",
    "new_session_id",
    "select_default",
]
