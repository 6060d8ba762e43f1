"""Crash safety: what the store acknowledged on SQLite survives ``kill -9``.

A child process resolves and updates metadata against one database file and prints each
acknowledgment after the store returned it. The test kills it with SIGKILL at random moments,
again and again on the same file (so every start also recovers a crashed database), and checks
after each kill that the database is intact and that every acknowledged write is there.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).parent / "_workers" / "sqlite_worker.py"
KILLS = 20
#: A kill lands this long (seconds, uniformly drawn) after the child said it was ready.
KILL_AFTER = (0.0, 0.25)


class Acks:
    """Acknowledged writes: sessions that exist, and metadata keys with their values."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.metadata: dict[str, dict[str, int]] = {}

    def add(self, line: str) -> None:
        kind, *fields = line.split()
        if kind == "R":
            self.sessions.add(fields[0])
        elif kind == "M":
            session_id, key, value = fields
            self.metadata.setdefault(session_id, {})[key] = int(value)
        else:
            raise AssertionError(f"unexpected line from the child: {line!r}")

    def __len__(self) -> int:
        return len(self.sessions) + sum(map(len, self.metadata.values()))


async def run_until_killed(
    path: Path, backend: str, writer: str, round_: int, rng: random.Random
) -> Acks:
    """Start a child, kill it at a random moment, return what it acknowledged."""
    command = [sys.executable, str(WORKER), "crash", str(path), backend, writer, str(round_)]
    command.append(str(rng.randrange(1 << 30)))
    acks = Acks()
    process = await anyio.open_process(command, stderr=None)
    try:
        assert process.stdout is not None
        output = BufferedByteReceiveStream(process.stdout)
        assert await output.receive_until(b"\n", 1 << 16) == b"ready"

        async def collect() -> None:
            while True:
                try:
                    line = await output.receive_until(b"\n", 1 << 16)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return  # a line cut short by the kill was never acknowledged
                acks.add(line.decode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            # A real process dies at a real moment: this sleep is the random kill time.
            await anyio.sleep(rng.uniform(*KILL_AFTER))
            assert process.returncode is None, "the child exited before it was killed"
            process.send_signal(signal.SIGKILL)
            # Every line written before the kill is still in the pipe: read it to the end.
        assert await process.wait() == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()
    return acks


def check_file(path: Path, acks: Acks) -> None:
    """The database is intact and holds every acknowledged write (plain sqlite3, no adapter)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = dict(connection.execute("SELECT id, data FROM sessions").fetchall())
    finally:
        connection.close()
    missing = acks.sessions - stored.keys()
    assert not missing, f"acknowledged sessions lost: {sorted(missing)[:5]}"
    for session_id, keys in acks.metadata.items():
        assert session_id in stored, f"acknowledged session {session_id} lost"
        for key in keys:
            # Keys are unique to one acknowledgment, so a plain text search is exact enough
            # here; the adapter check below decodes them.
            assert f'"{key}":{keys[key]}' in stored[session_id], f"{session_id}: {key} lost"


# With writer="process" the killed store's own child (the writer) lives on until it has read
# its end of input: it may still be committing while the next store opens the file.
@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_acknowledged_writes_survive_sigkill(
    tmp_path: Path, anyio_backend: str, writer: str
) -> None:
    path = tmp_path / "crash.db"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    everything = Acks()
    with anyio.fail_after(100):
        for round_ in range(KILLS):
            acks = await run_until_killed(path, anyio_backend, writer, round_, rng)
            check_file(path, acks)
            everything.sessions |= acks.sessions
            for session_id, keys in acks.metadata.items():
                everything.metadata.setdefault(session_id, {}).update(keys)
    assert len(everything) > KILLS, f"the children acknowledged too little (seed {seed})"

    # Finally read everything back through the adapter (decoding each session).
    adapter = SqliteSessionStoreAdapter(path)
    await adapter.open()
    try:
        for session_id in everything.sessions | everything.metadata.keys():
            session = await adapter.get(session_id)
            assert session is not None, f"session {session_id} lost (seed {seed})"
            for key, value in everything.metadata.get(session_id, {}).items():
                assert session.metadata.get(key) == value, f"{key} lost (seed {seed})"
    finally:
        await adapter.aclose()
