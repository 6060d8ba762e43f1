"""The core: what an operation does to one user's sessions, with no concurrency and no I/O.

Its names are the ones the runtime and the benchmark's baselines use (the benchmark reaches
the library's internals through this package only, so it also re-exports the input checks and
the clock that the facade applies before an operation is built); imports run one way:
runtime -> core -> model.
"""

from .._clock import utc_now
from .._validate import check_id, check_optional_id, freeze_metadata
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
    "check_id",
    "check_optional_id",
    "freeze_metadata",
    "new_session_id",
    "select_default",
    "utc_now",
]
