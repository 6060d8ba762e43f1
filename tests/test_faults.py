"""Storage faults: a failing adapter under a concurrent workload of many users.

:class:`~_fault_adapter.FailingAdapter` fails a seeded fraction of the commits and loads of
the *faulty* users, with ``AdapterError`` (a storage failure) or ``RuntimeError`` (which the
store treats as an actor crash: ``ActorFailedError`` and a restart), either before anything
reached storage or after the commit was applied (the caller cannot know the outcome). Every
metadata update writes a key of its own, so storage shows exactly which updates took effect.

Afterwards: callers got only those clear errors; every acknowledged write is in storage; no
write whose commit failed cleanly is; storage holds nothing that was not committed; each
actor's cached view equals storage; a fresh store over the same storage reads the same; the
healthy users never saw an error; and every user is served again once the faults stop.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from _fault_adapter import (
    AFTER,
    FailingAdapter,
    InjectedAdapterError,
    InjectedCrash,
    Storage,
    SyncFailingAdapter,
    adapter_kinds,
    make_adapter,
    server_url,
)
from assistant_sessions import (
    ActorFailedError,
    AdapterError,
    InMemorySessionStoreAdapter,
    SessionError,
    SessionState,
    SessionStore,
    create_session_store,
)
from assistant_sessions.adapters import SessionStoreAdapter
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

FAULTY_USERS = tuple(f"f{i}" for i in range(8))
HEALTHY_USERS = tuple(f"h{i}" for i in range(4))
USERS = FAULTY_USERS + HEALTHY_USERS
WORKSPACES = (None, "w")
SURFACES = ("web", "slack", "phone")
WORKERS_PER_USER = 3
OPS_PER_WORKER = 40


#: How the store drives the failing wrapper: ``sync`` (the memory fast path), ``async`` (one
#: commit per call), ``grouped`` (many users' commits per call, which a fault strikes together).
SYNC, ASYNC, GROUPED = "sync", "async", "grouped"


@pytest.fixture(
    params=[(kind, ASYNC) for kind in adapter_kinds()]
    + [("memory", SYNC), ("memory", GROUPED), ("sqlite", GROUPED)],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def adapter_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[int], tuple[SessionStoreAdapter, FailingAdapter]]:
    """Makes ``(inner, failing wrapper)`` for a seed, driven as the parameter says."""
    kind, mode = request.param
    storage = Storage(tmp_path, server_url(kind, request))

    def make(seed: int) -> tuple[SessionStoreAdapter, FailingAdapter]:
        inner = make_adapter(kind, storage)
        options = {"seed": seed, "faulty": lambda user: user in FAULTY_USERS}
        if mode == SYNC:
            assert isinstance(inner, InMemorySessionStoreAdapter)
            return inner, SyncFailingAdapter(inner, **options)
        grouped = mode == GROUPED
        return inner, FailingAdapter(inner, grouped=grouped, **options)  # type: ignore[arg-type]

    return make


@dataclass
class Ledger:
    """What the callers were told, per user (metadata keys stand for the updates)."""

    acknowledged: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    failed_cleanly: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ambiguous: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    resolved: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    errors: defaultdict[str, list[SessionError]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[BaseException] = field(default_factory=list)
    successes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


def _injected(exc: SessionError) -> InjectedAdapterError | InjectedCrash | None:
    """The injected fault behind a caller's error, or ``None`` if it has another cause."""
    if type(exc) is InjectedAdapterError:
        return exc
    if type(exc) is ActorFailedError and isinstance(exc.__cause__, InjectedCrash):
        return exc.__cause__
    return None


async def _worker(
    store: SessionStore, user_id: str, seed: int, counter: list[int], ledger: Ledger
) -> None:
    rng = random.Random(seed)
    known: list[str] = []
    for _ in range(OPS_PER_WORKER):
        op = rng.choice(["resolve", "update", "update", "attach", "touch"])
        if not known:
            op = "resolve"
        key = None
        try:
            if op == "resolve":
                session = await store.resolve(
                    user_id=user_id,
                    workspace_id=rng.choice(WORKSPACES),
                    surface_id=rng.choice(SURFACES),
                )
                assert session.user_id == user_id
                known.append(session.id)
                ledger.resolved[user_id].add(session.id)
            else:
                session_id = rng.choice(known)
                if op == "update":
                    counter[0] += 1
                    number = counter[0]
                    key = f"k{number}"
                    session = await store.update_metadata(session_id, {key: number})
                    assert session.metadata[key] == number
                    ledger.acknowledged[user_id].add(key)
                elif op == "attach":
                    session = await store.attach_surface(session_id, rng.choice(SURFACES))
                else:
                    session = await store.touch(session_id)
            ledger.successes[user_id] += 1
        except SessionError as exc:
            ledger.errors[user_id].append(exc)
            fault = _injected(exc)
            if fault is None:
                ledger.unexpected.append(exc)
            elif key is not None:
                (ledger.ambiguous if fault.where == AFTER else ledger.failed_cleanly)[user_id].add(
                    key
                )


def _keys(sessions: object) -> set[str]:
    return {key for session in sessions for key in session.metadata}  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [1, 2])
async def test_faults_lose_no_acknowledged_write_and_add_no_phantom(
    adapter_factory: Callable[[int], tuple[SessionStoreAdapter, FailingAdapter]],
    clock: FakeClock,
    seed: int,
) -> None:
    inner, failing = adapter_factory(seed)
    ledger = Ledger()
    counter = [0]
    async with create_session_store(failing, clock=clock, max_restarts=10**6) as store:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n, user_id in enumerate(USERS):
                    for w in range(WORKERS_PER_USER):
                        tg.start_soon(
                            _worker, store, user_id, seed * 1000 + n * 10 + w, counter, ledger
                        )
        await anyio.wait_all_tasks_blocked()
        stats = store.statistics()
        assert (stats.in_flight, stats.busy_actors, stats.mailbox_depth_total) == (0, 0, 0)

        # Every kind of fault struck, so every path was taken (not a vacuous pass); a grouped
        # adapter crashes only before applying (the contract).
        struck = {(k, w) for k in ("error", "crash") for w in ("before", "after", "load")}
        if failing.group_commit:
            struck.remove(("crash", "after"))
        assert set(failing.faults) == struck, failing.faults
        assert stats.adapter_errors > 0
        assert stats.restarts > 0

        # Callers saw only clear errors, each caused by an injected fault. A healthy user's
        # commit shares the fate of a faulty one's in a grouped call, but a crash is sent again
        # commit by commit, so it reaches only its own user.
        assert ledger.unexpected == []
        for user_id in HEALTHY_USERS:
            if failing.group_commit:
                for exc in ledger.errors[user_id]:
                    assert type(exc) is InjectedAdapterError, (user_id, exc)
                assert ledger.successes[user_id] > 0, user_id
            else:
                assert ledger.errors[user_id] == [], user_id
                assert ledger.successes[user_id] == WORKERS_PER_USER * OPS_PER_WORKER
        for user_id in FAULTY_USERS:
            assert ledger.errors[user_id], user_id
            assert ledger.successes[user_id] > 0, user_id
            for exc in ledger.errors[user_id]:
                assert isinstance(exc, AdapterError | ActorFailedError)

        # Storage, read directly, against what callers were told and what was committed.
        failing.enabled = False
        for user_id in USERS:
            snapshot = await inner.load_user(user_id)
            stored = _keys(snapshot.sessions)
            assert ledger.acknowledged[user_id] <= stored, user_id  # nothing acknowledged lost
            assert not ledger.failed_cleanly[user_id] & stored, user_id  # no phantom write
            committed = _keys(s for c in failing.applied if c.user_id == user_id for s in c.upserts)
            assert stored == committed, user_id  # nothing that was never committed
            assert ledger.resolved[user_id] <= {s.id for s in snapshot.sessions}, user_id
            # Exactly-once resolve held through the faults: one live session per workspace.
            for workspace_id in WORKSPACES:
                live = [
                    s
                    for s in snapshot.sessions
                    if s.workspace_id == workspace_id and s.state is not SessionState.EXPIRED
                ]
                assert len(live) <= 1, (user_id, workspace_id, live)
            # The actor's cached view never diverged from storage.
            actor = store._registry.actors.get(user_id)
            if actor is not None and actor.state is not None:
                assert actor.state.version == snapshot.version, user_id
                assert actor.state.sessions == {s.id: s for s in snapshot.sessions}, user_id
        assert sum(map(len, ledger.failed_cleanly.values())) > 0
        assert sum(map(len, ledger.ambiguous.values())) > 0

        # With the faults gone, every user is served again, from a view equal to storage.
        for user_id in USERS:
            for workspace_id in WORKSPACES:
                session = await store.resolve(user_id=user_id, workspace_id=workspace_id)
                updated = await store.update_metadata(session.id, {"final": user_id})
                assert updated == await inner.get(session.id)
        before = {u: await store.find(user_id=u, limit=1000) for u in USERS}

    # A fresh store over the same storage reads and resolves the same sessions.
    async with create_session_store(inner, clock=clock) as fresh:
        for user_id in USERS:
            assert await fresh.find(user_id=user_id, limit=1000) == before[user_id]
            direct = await inner.load_user(user_id)
            assert sorted(before[user_id], key=lambda s: s.id) == sorted(
                direct.sessions, key=lambda s: s.id
            )
            for workspace_id in WORKSPACES:
                again = await fresh.resolve(user_id=user_id, workspace_id=workspace_id)
                assert again.id in {s.id for s in before[user_id]}


async def test_failed_storage_does_not_stop_other_users(
    adapter_factory: Callable[[int], tuple[SessionStoreAdapter, FailingAdapter]],
    clock: FakeClock,
) -> None:
    """A user whose every commit fails gets AdapterError each time; others are unaffected,
    during the failures and after them."""
    inner, failing = adapter_factory(7)
    failing._commit_rate = 1.0
    failing._load_rate = 0.0
    failing._crash_share = 0.0
    async with create_session_store(failing, clock=clock) as store:
        for _ in range(5):
            with pytest.raises(AdapterError):
                await store.resolve(user_id="f0", surface_id="web")
            healthy = await store.resolve(user_id="h0", surface_id="web")
        assert await store.find(user_id="h0") == [healthy]
        stored_before = (await inner.load_user("f0")).sessions
        # Half of the failures were after the commit applied: at most one session, all the same.
        assert len(stored_before) <= 1
        failing.enabled = False
        recovered = await store.resolve(user_id="f0", surface_id="web")
        assert [s.id for s in await store.find(user_id="f0")] == [recovered.id]
        if stored_before:
            assert recovered.id == stored_before[0].id
