"""Corrupt data: a stored session that does not decode fails alone.

Only durable adapters can hold damaged data, so this suite runs on SQLite: a row of the
``sessions`` table is damaged behind the store's back (as a bad disk, a manual edit or a buggy
writer of another version would), in each of the ways a document can be wrong. Then, while
other users work concurrently:

* reading that session gives a clear ``AdapterError`` naming it, with the decoding error as its
  cause; the owner's other sessions still read fine;
* calls that need the owner's sessions (its actor loads all of them) fail with that same clear
  error -- never a crash, a hang or another user's trouble -- and the owner is served again as
  soon as the row is repaired, without restarting anything;
* every other user is served as usual, and sweeps go on suspending other users' sessions.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from assistant_sessions import (
    AdapterError,
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


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain second connection to the database, as another process would have."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        yield connection
    finally:
        connection.close()


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


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_a_corrupt_row_fails_alone(
    path: Path, raw: sqlite3.Connection, clock: FakeClock, damage: str
) -> None:
    async with _store(path, clock) as store:
        # The victim's sessions are the oldest, so a sweep meets them first.
        bad = await store.create(user_id=VICTIM, id="bad", metadata={"k": "v"})
        good = await store.create(user_id=VICTIM, id="good", workspace_id="w")
        clock.advance(1)
        before = {u: await store.resolve(user_id=u) for u in OTHERS}
    # The row is damaged on disk while no store has it open (the next store loads it).
    original = _data(raw, "bad")
    raw.execute(
        "UPDATE sessions SET data = ? WHERE id = 'bad'",
        (DAMAGE[damage](original, _data(raw, "good")),),
    )
    async with _store(path, clock) as store:
        # Reading the damaged session: a clear error naming it, with its cause.
        with pytest.raises(AdapterError, match="'bad'") as caught:
            await store.get("bad")
        if damage != "another row's document":  # that one has no decoding error behind it
            assert caught.value.__cause__ is not None
        # The owner's other session still reads fine; so does everyone else's.
        assert await store.get("good") == good
        for user_id, session in before.items():
            assert await store.find(user_id=user_id) == [session]

        # While other users work concurrently, every call needing the victim's sessions fails
        # with the same clear error (never a crash of its actor), and only those calls.
        done = [0]
        victim_errors: list[AdapterError] = []

        async def victim_calls() -> None:
            for call in (
                lambda: store.resolve(user_id=VICTIM),
                lambda: store.touch("good"),
                lambda: store.update_metadata("good", {"x": 1}),
                lambda: store.create(user_id=VICTIM, workspace_id="w2"),
                lambda: store.find(user_id=VICTIM),
            ) * 3:
                try:
                    await call()
                except AdapterError as exc:
                    victim_errors.append(exc)
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for seed in range(4):
                    tg.start_soon(_others_workload, store, seed, done)
                tg.start_soon(victim_calls)
        assert done[0] == 4 * 40
        assert len(victim_errors) == 15
        for exc in victim_errors:
            assert type(exc) is AdapterError
            assert "'bad'" in str(exc)
        stats = store.statistics()
        assert stats.restarts == 0
        assert (stats.in_flight, stats.busy_actors) == (0, 0)

        # A sweep meets the victim first, and goes on with everyone else before it reports
        # the victim's failure.
        clock.advance(3600)
        with pytest.raises(AdapterError, match="'bad'"):
            await store.sweep_stale()
        for session in before.values():
            stored = await store.get(session.id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED, session.user_id

        # Repairing the row brings the victim back, without a restart.
        raw.execute("UPDATE sessions SET data = ? WHERE id = 'bad'", (original,))
        assert await store.get("bad") == bad
        touched = await store.touch("good")
        assert touched.state is SessionState.ACTIVE
        resolved = await store.resolve(user_id=VICTIM)
        assert resolved.id == "bad"
        assert {s.id for s in await store.find(user_id=VICTIM)} == {"bad", "good"}
        assert store.statistics().restarts == 0


async def test_the_periodic_sweep_goes_on_past_a_corrupt_row(
    path: Path, raw: sqlite3.Connection, clock: FakeClock
) -> None:
    """The supervisor's sweep round suspends every other user's stale sessions even when the
    first candidate's owner cannot be loaded, then reports that owner's failure."""
    async with _store(path, clock) as store:
        await store.create(user_id=VICTIM, id="bad")
        await store.create(user_id=VICTIM, id="good")
        await store.touch("good")
        clock.advance(1)
        others = [await store.resolve(user_id=u) for u in OTHERS]
        for session in others:
            await store.touch(session.id)
    raw.execute("UPDATE sessions SET data = 'garbage' WHERE id = 'bad'")
    async with _store(path, clock) as store:
        clock.advance(3600)
        with pytest.raises(AdapterError, match="'bad'"):
            await store._supervisor.sweep_once()
        for session in others:
            stored = await store.get(session.id)
            assert stored is not None
            assert stored.state is SessionState.SUSPENDED
        assert store.statistics().sessions_suspended == len(others)
