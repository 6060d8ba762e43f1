"""Corrupt data: a stored session that does not decode fails alone.

Only durable adapters can hold damaged data, so this suite runs on SQLite: a row of the
``sessions`` table is damaged behind the store's back (as a bad disk, a manual edit or a buggy
writer of another version would), in each of the ways a document can be wrong. Then, while
other users work concurrently:

* every call on that session gives a clear ``AdapterError`` naming it (with the decoding error
  as its cause) -- never a crash, a hang or another user's trouble;
* the owner's other sessions stay readable and writable, and a resolve for the owner works (it
  creates a session if the damaged one was its only candidate); the damaged row stays as it was,
  and its id stays taken;
* every other user is served as usual, and sweeps go on past the damaged row;
* a repaired row (with its user's version bumped, so running stores reload the user) is served
  again, without restarting anything.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from assistant_sessions import (
    AdapterError,
    SessionConflictError,
    SessionState,
    SessionStore,
    create_session_store,
)
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter
from assistant_sessions.testing import FakeClock

pytestmark = pytest.mark.anyio

OTHERS = tuple(f"u{i}" for i in range(5))
VICTIM = "victim"


def _doc(data: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(data)
    return document


def _edit(change: Callable[[dict[str, Any]], object]) -> Callable[[str, str], object]:
    def damage(data: str, _other: str) -> object:
        document = _doc(data)
        change(document)
        return json.dumps(document)

    return damage


#: Ways to damage a row's document, given its data and the data of another session's row.
DAMAGE: dict[str, Callable[[str, str], object]] = {
    "not JSON": lambda data, _other: data[: len(data) // 2],
    "JSON but not an object": lambda _data, _other: "[1, 2, 3]",
    "not text": lambda _data, _other: b"\x00\xffbinary",
    "unknown state": _edit(lambda d: d.update(state="hibernating")),
    "naive timestamp": _edit(lambda d: d.update(created_at="2026-01-01T00:00:00")),
    "not a timestamp": _edit(lambda d: d.update(last_activity_at="yesterday")),
    "metadata not a mapping": _edit(lambda d: d.update(metadata=[1, 2])),
    "surfaces not a list": _edit(lambda d: d.update(attached_surfaces=7)),
    "missing field": _edit(lambda d: d.pop("state")),
    "unexpected field": _edit(lambda d: d.update(colour="blue")),
    "another row's document": lambda _data, other: other,
}


def _store(path: Path, clock: FakeClock) -> SessionStore:
    adapter = SqliteSessionStoreAdapter(path, synchronous="OFF")
    return create_session_store(adapter, clock=clock, default_ttl=60)


def _data(raw: sqlite3.Connection, session_id: str) -> str:
    value: str = raw.execute("SELECT data FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]
    return value


async def _others_workload(store: SessionStore, seed: int, done: list[int]) -> None:
    """Calls of the healthy users; any error fails the test."""
    rng = random.Random(seed)
    for _ in range(40):
        user_id = rng.choice(OTHERS)
        session = await store.resolve(user_id=user_id, surface_id=rng.choice(["web", "slack"]))
        assert session.user_id == user_id
        value = rng.randint(0, 9)
        key = f"worker{seed}"  # only this worker writes it
        updated = await store.update_metadata(session.id, {key: value})
        assert updated.metadata[key] == value
        stored = await store.get(session.id)
        assert stored is not None
        assert stored.metadata[key] == value
        done[0] += 1


def _damaged_calls(store: SessionStore) -> list[Callable[[], Awaitable[object]]]:
    """Every call on the damaged session by its id."""
    return [
        lambda: store.get("bad"),
        lambda: store.touch("bad"),
        lambda: store.update_metadata("bad", {"x": 1}),
        lambda: store.attach_surface("bad", "phone"),
        lambda: store.detach_surface("bad", "web"),
        lambda: store.expire("bad"),
    ]


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_a_corrupt_row_fails_alone(
    path: Path, raw: sqlite3.Connection, clock: FakeClock, damage: str
) -> None:
    async with _store(path, clock) as store:
        # The victim's sessions are the oldest, so a sweep meets them first.
        bad = await store.create(user_id=VICTIM, id="bad", initial_surface_id="web")
        good = await store.create(user_id=VICTIM, id="good", workspace_id="w")
        clock.advance(1)
        before = {u: await store.resolve(user_id=u) for u in OTHERS}
    # The row is damaged on disk while no store has it open (the next store loads it).
    original = _data(raw, "bad")
    damaged = DAMAGE[damage](original, _data(raw, "good"))
    raw.execute("UPDATE sessions SET data = ? WHERE id = 'bad'", (damaged,))
    async with _store(path, clock) as store:
        # Reading the damaged session: a clear error naming it, with its cause.
        with pytest.raises(AdapterError, match="'bad'") as caught:
            await store.get("bad")
        if damage != "another row's document":  # that one has no decoding error behind it
            assert caught.value.__cause__ is not None
        # The owner's other session still reads fine; so does everyone else's.
        assert await store.get("good") == good
        assert await store.find(user_id=VICTIM) == [good]
        for user_id, session in before.items():
            assert await store.find(user_id=user_id) == [session]

        # While other users work concurrently, every call on the damaged session fails with
        # the same clear error, and the owner's other calls work.
        done = [0]
        victim_errors: list[AdapterError] = []
        resolved: list[str] = []

        async def victim_calls() -> None:
            for round_ in range(3):
                for call in _damaged_calls(store):
                    try:
                        await call()
                    except AdapterError as exc:
                        victim_errors.append(exc)
                    await anyio.lowlevel.checkpoint()
                touched = await store.touch("good")
                assert touched.state is SessionState.ACTIVE
                updated = await store.update_metadata("good", {"round": round_})
                assert updated.metadata["round"] == round_
                # The damaged session was the only one without a workspace: a resolve there
                # creates one (once); in workspace "w" it finds the healthy session.
                resolved.append((await store.resolve(user_id=VICTIM, surface_id="web")).id)
                assert (await store.resolve(user_id=VICTIM, workspace_id="w")).id == "good"

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for seed in range(4):
                    tg.start_soon(_others_workload, store, seed, done)
                tg.start_soon(victim_calls)
        assert done[0] == 4 * 40
        assert len(victim_errors) == 3 * len(_damaged_calls(store))
        for exc in victim_errors:
            assert type(exc) is AdapterError
            assert "'bad'" in str(exc)
        assert len(set(resolved)) == 1
        assert resolved[0] not in {"bad", "good"}
        victim = {s.id: s for s in await store.find(user_id=VICTIM)}
        assert set(victim) == {"good", resolved[0]}
        assert victim["good"].metadata["round"] == 2
        # The id stays taken: nobody else can have it.
        with pytest.raises(SessionConflictError):
            await store.create(user_id=OTHERS[0], id="bad")
        stats = store.statistics()
        assert stats.restarts == 0
        assert (stats.in_flight, stats.busy_actors) == (0, 0)

        # A sweep goes on past the damaged row: it suspends everyone's stale sessions, the
        # victim's healthy ones too.
        clock.advance(3600)
        swept = await store.sweep_stale()
        assert {s.id for s in swept} == {s.id for s in before.values()} | set(victim)
        for session in [*before.values(), *victim.values()]:
            stored = await store.get(session.id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED, session.id
        # Nothing ever wrote over the damaged row.
        assert raw.execute("SELECT data FROM sessions WHERE id = 'bad'").fetchone() == (damaged,)

        # Repairing the row (and bumping its user's version, so the store reloads the user)
        # brings the session back, without a restart.
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE sessions SET data = ? WHERE id = 'bad'", (original,))
        raw.execute("UPDATE users SET version = version + 1 WHERE user_id = ?", (VICTIM,))
        raw.execute("COMMIT")
        assert await store.get("bad") == bad
        touched = await store.touch("bad")
        assert (touched.state, touched.attached_surfaces) == (SessionState.ACTIVE, ("web",))
        assert (await store.resolve(user_id=VICTIM, surface_id="web")).id == "bad"
        assert {s.id for s in await store.find(user_id=VICTIM)} == {"bad", *victim}
        assert store.statistics().restarts == 0


async def test_the_periodic_sweep_goes_on_past_a_corrupt_row(
    path: Path, raw: sqlite3.Connection, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's sweep round suspends every stale session, the damaged row's owner's
    healthy ones included, and leaves the damaged row alone (with a warning)."""
    async with _store(path, clock) as store:
        await store.create(user_id=VICTIM, id="bad")
        await store.create(user_id=VICTIM, id="good")
        await store.touch("bad")
        await store.touch("good")
        clock.advance(1)
        others = [await store.resolve(user_id=u) for u in OTHERS]
        for session in others:
            await store.touch(session.id)
    raw.execute("UPDATE sessions SET data = 'garbage' WHERE id = 'bad'")
    async with _store(path, clock) as store:
        clock.advance(3600)
        with caplog.at_level(logging.WARNING, logger="assistant_sessions"):
            suspended, _, _ = await store._runtime.sweeper.sweep_once()
        assert {s.id for s in suspended} == {"good"} | {s.id for s in others}
        for session_id in ["good", *(s.id for s in others)]:
            stored = await store.get(session_id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED
        assert store.statistics().sessions_suspended == len(others) + 1
        assert "'bad'" in caplog.text
        with pytest.raises(AdapterError, match="'bad'"):
            await store.touch("bad")
    assert raw.execute("SELECT state, data FROM sessions WHERE id = 'bad'").fetchone() == (
        "active",
        "garbage",
    )
