"""What the benchmark asks of a store: the same seeded sequence of operations for every subject.

A workload is generated once per measured point and shared by every subject and round, so the
store and its baselines do exactly the same work. Sessions stored before the run (the *prefill*)
is a tuple of frozen per-user commits of frozen :class:`~assistant_sessions.Session` objects, so
the very same objects are committed into each fresh adapter without copying.

Operations are plain tuples ``(kind, key, argument)``, cheap to dispatch in the timed loop:

* ``(RESOLVE, user_id, surface_id)``
* ``(UPDATE, session_id, metadata)``: ``update_metadata``
* ``(ATTACH, session_id, surface_id)`` and ``(DETACH, session_id, surface_id)``
* ``(FIND, user_id, None)``: ``find(user_id=...)``

Workloads: ``resolve`` (every operation a resolve), ``hot`` (every resolve on one user, never
stored before, so the first resolves race to create its session), and ``mixed`` (80 % resolve,
10 % update_metadata, 5 % attach or detach, 5 % find). Users are picked uniformly or by a Zipf
law. A fraction of the users (``fresh``) has no session before the run, so resolves also take
the create path, and concurrent first resolves of one user test exactly-once.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, final

import attrs

from assistant_sessions import Session, SessionState
from assistant_sessions.adapters.base import UserCommit

__all__ = [
    "ATTACH",
    "DETACH",
    "DISTRIBUTIONS",
    "FIND",
    "RESOLVE",
    "UPDATE",
    "WORKLOADS",
    "Operation",
    "Workload",
    "build_workload",
    "user_ids",
]

RESOLVE: Final = 0
UPDATE: Final = 1
ATTACH: Final = 2
DETACH: Final = 3
FIND: Final = 4

KIND_NAMES: Final = ("resolve", "update_metadata", "attach_surface", "detach_surface", "find")

WORKLOADS: Final = ("resolve", "hot", "mixed")
DISTRIBUTIONS: Final = ("uniform", "zipf")

#: The surfaces messages come from; prefilled sessions are attached to the first.
SURFACES: Final = ("web", "slack", "phone")

#: The one user of the ``hot`` workload (not among the prefilled users).
HOT_USER: Final = "hot-user"

Operation = tuple[int, str, Any]

# Weights of the mixed workload, per thousand: resolve, update, attach, detach, find.
_MIXED_WEIGHTS: Final = (800, 100, 25, 25, 50)


@final
@attrs.frozen(eq=False)
class Workload:
    """One point's operations and the data stored before them.

    Attributes:
        name: ``resolve``, ``hot`` or ``mixed``.
        users: How many users the point has (prefilled or fresh).
        prefill: What to store before the run: one commit of one session per prefilled user.
        operations: The operations, in order; concurrent clients take the next one in turn.
        resolved_users: Users with at least one resolve: each must end with exactly one session.
    """

    name: str
    users: int
    prefill: tuple[UserCommit, ...]
    operations: list[Operation]
    resolved_users: frozenset[str]

    def counts(self) -> dict[str, int]:
        """How many operations of each kind."""
        counts = dict.fromkeys(KIND_NAMES, 0)
        for kind, _, _ in self.operations:
            counts[KIND_NAMES[kind]] += 1
        return {name: n for name, n in counts.items() if n}


def user_ids(count: int, prefix: str = "user") -> list[str]:
    """``count`` distinct user ids of equal length."""
    width = len(str(max(count - 1, 0)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def _session_id(rng: random.Random) -> str:
    # Same shape and size as the store's own ids (UUID4 text), but reproducible from the seed.
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_workload(
    workload: str,
    *,
    users: int,
    operations: int,
    distribution: str = "uniform",
    zipf_s: float = 1.1,
    fresh: float = 0.1,
    seed: int = 1,
    now: datetime | None = None,
) -> Workload:
    """Generate a workload (deterministic for a given seed).

    Args:
        workload: ``resolve``, ``hot`` or ``mixed``.
        users: Users in the store (prefilled, or fresh ones that resolves create).
        operations: How many operations the run makes.
        distribution: How users are picked: ``uniform`` or ``zipf``.
        zipf_s: The Zipf exponent.
        fresh: Fraction of the users without a session before the run.
        seed: The random seed.
        now: The time prefilled sessions were last active at (default: a minute ago).

    Raises:
        ValueError: An unknown workload or distribution, or a count below 1.
    """
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}")
    if users < 1 or operations < 1:
        raise ValueError("users and operations must be at least 1")
    if not 0.0 <= fresh <= 1.0:
        raise ValueError("fresh must be between 0 and 1")
    rng = random.Random(seed)
    ids = user_ids(users)
    at = (now or datetime.now(UTC)) - timedelta(minutes=1)
    prefill: list[UserCommit] = []
    session_of: dict[str, str] = {}
    for user_id in ids:
        if rng.random() < fresh:
            continue
        session = Session(
            _session_id(rng), user_id, None, SessionState.ACTIVE, at, at, at, SURFACES[:1]
        )
        prefill.append(UserCommit(user_id, 0, (session,)))
        session_of[user_id] = session.id

    if workload == "hot":
        surfaces = rng.choices(SURFACES, k=operations)
        ops: list[Operation] = [(RESOLVE, HOT_USER, surface) for surface in surfaces]
        return Workload(workload, users, tuple(prefill), ops, frozenset({HOT_USER}))

    picks = _pick_users(rng, users, operations, distribution, zipf_s)
    kinds: Iterable[int]
    if workload == "resolve":
        kinds = itertools.repeat(RESOLVE, operations)
    else:
        kinds = iter(rng.choices(range(5), weights=_MIXED_WEIGHTS, k=operations))
    metadata = [{"topic": f"t{i}", "turn": i} for i in range(16)]
    ops = []
    resolved: set[str] = set()
    for kind, index in zip(kinds, picks, strict=False):
        user_id = ids[index]
        session_id = session_of.get(user_id)
        if kind == RESOLVE or (kind != FIND and session_id is None):
            # Calls by session id need a session: for a fresh user, resolve instead.
            ops.append((RESOLVE, user_id, rng.choice(SURFACES)))
            resolved.add(user_id)
        elif kind == FIND:
            ops.append((FIND, user_id, None))
        elif kind == UPDATE:
            assert session_id is not None
            ops.append((UPDATE, session_id, rng.choice(metadata)))
        else:
            assert session_id is not None
            ops.append((kind, session_id, rng.choice(SURFACES)))
    return Workload(workload, users, tuple(prefill), ops, frozenset(resolved))


def _pick_users(
    rng: random.Random, users: int, count: int, distribution: str, zipf_s: float
) -> list[int]:
    population = range(users)
    if distribution == "uniform":
        return [rng.randrange(users) for _ in range(count)]
    # Zipf: rank r has weight 1 / r**s; ranks are shuffled so popularity is not the id order.
    cumulative = list(itertools.accumulate(1.0 / (rank**zipf_s) for rank in range(1, users + 1)))
    ranks = rng.choices(population, cum_weights=cumulative, k=count)
    order = list(population)
    rng.shuffle(order)
    return [order[rank] for rank in ranks]
