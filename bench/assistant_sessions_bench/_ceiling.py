"""``--write-ceiling``: the most group commit can gain on this disk, from the adapter's own SQL.

The store's comparison (``-a sqlite`` against ``-a sqlite-single``) measures everything: the
store, the event loop, the adapter's threads and the disk. This measures only what group commit
changes: the SQLite adapter's own write transaction
(:func:`~assistant_sessions.adapters.sqlite.write_transaction`, which the adapter exports for
this), on database files opened as the adapter opens them, applied in a plain loop, with no event
loop and no thread, to exactly the commits that the store's bookkeeping makes for the workload's
resolves (computed and encoded beforehand, outside the timing):

* **grouped**: ``concurrency`` commits per transaction. With C clients at most C calls are in
  flight, so no group commit can put more commits into one transaction;
* **single**: one transaction per commit.

Every other cost of a call (the store, encoding, waking tasks) is the same for both and only adds
to each side, so the ratio of the two rates here bounds the ratio the store can reach on this
disk with this schema: ``(single + x) / (grouped + x) < single / grouped`` for any ``x > 0``.

Rounds interleave the two variants, each on a new file filled with the same prefill, and the
result is the median of the per-round ratios. After each run the stored sessions are compared
with the bookkeeping's, so a run that skipped a write fails instead of looking fast.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, final

import attrs

from assistant_sessions import InMemorySessionStoreAdapter, Session
from assistant_sessions._core import Resolve, Transaction, UserState
from assistant_sessions.adapters import sqlite as db
from assistant_sessions.adapters.base import UserCommit
from assistant_sessions.adapters.sqlite import encode_session

from ._adapters import BenchmarkError
from ._workload import RESOLVE, build_workload

__all__ = ["CeilingResult", "CeilingRound", "measure_write_ceiling"]

#: Adapters whose write path this measures.
CEILING_ADAPTERS: Final = ("sqlite", "sqlite-single")

#: The synthetic clock of the bookkeeping: one step per operation.
_STEP: Final = timedelta(milliseconds=1)


@final
@attrs.frozen
class CeilingRound:
    """One round: seconds for the same commits, grouped and one per transaction."""

    grouped_seconds: float
    single_seconds: float

    @property
    def ratio(self) -> float:
        """How many times faster grouped commits went."""
        return self.single_seconds / self.grouped_seconds


@final
@attrs.frozen
class CeilingResult:
    """What ``--write-ceiling`` measured.

    Attributes:
        users: Users of the workload.
        concurrency: Commits per grouped transaction.
        commits: Commits written by each variant in each round.
        synchronous: The durability setting the files were opened with.
        rounds: Per-round timings, in order.
    """

    users: int
    concurrency: int
    commits: int
    synchronous: str
    rounds: tuple[CeilingRound, ...]

    @property
    def grouped_rate(self) -> float:
        """Median grouped commits per second."""
        return self.commits / statistics.median(r.grouped_seconds for r in self.rounds)

    @property
    def single_rate(self) -> float:
        """Median commits per second with one transaction each."""
        return self.commits / statistics.median(r.single_seconds for r in self.rounds)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: the ceiling of the store's group-commit ratio."""
        return statistics.median(r.ratio for r in self.rounds)


def _bookkeeping(
    users: int, operations: int, seed: int, fresh: float
) -> tuple[list[UserCommit], list[UserCommit], dict[str, Session]]:
    """The prefill, the store's commits for the workload's resolves, and the final sessions."""
    workload = build_workload("resolve", users=users, operations=operations, seed=seed, fresh=fresh)
    memory = InMemorySessionStoreAdapter()
    memory.commit_nowait(workload.prefill)
    states: dict[str, UserState] = {}
    at = datetime.now(UTC)
    commits: list[UserCommit] = []
    for index, (kind, user_id, surface_id) in enumerate(workload.operations):
        assert kind == RESOLVE
        state = states.get(user_id)
        if state is None:
            state = states[user_id] = UserState(memory.load_user_nowait(user_id))
        tx = Transaction(state, at + index * _STEP)
        Resolve(user_id, None, surface_id, None).apply(tx)
        if not tx.dirty:
            continue
        commit = tx.to_commit()
        if memory.commit_nowait((commit,))[0] is not None:  # pragma: no cover - one writer
            raise BenchmarkError("the bookkeeping's own commit was rejected")
        state.version += 1
        commits.append(commit)
    final = {s.id: s for state in states.values() for s in state.sessions.values()}
    return list(workload.prefill), commits, final


def _encoded(commits: Sequence[UserCommit]) -> list[db.EncodedCommit]:
    return [
        (c.user_id, c.expected_version, tuple(map(encode_session, c.upserts)), tuple(c.deletes))
        for c in commits
    ]


def _write(
    path: Path,
    synchronous: str,
    prefill: list[db.EncodedCommit],
    groups: list[list[db.EncodedCommit]],
) -> tuple[float, sqlite3.Connection]:
    """Fill a new file with ``prefill``, then time writing ``groups``, one transaction each."""
    writer, reader = db.connect(str(path), synchronous, 30.0)
    reader.close()
    db.write_transaction(writer, prefill)
    write = db.write_transaction
    # As the adapter's writer: it learns the indexed columns of what it writes (not of the
    # prefill, which a store's writer would not have written either).
    indexed = db.IndexedColumns()
    began = time.perf_counter()
    for group in groups:
        if any(write(writer, group, indexed)):
            writer.close()
            raise BenchmarkError("a commit was rejected by the database")
    return time.perf_counter() - began, writer


def _check(writer: sqlite3.Connection, final: dict[str, Session], expected: dict[str, str]) -> None:
    """Every session the bookkeeping touched is stored as it ended."""
    try:
        stored = dict(writer.execute("SELECT id, data FROM sessions").fetchall())
    finally:
        writer.close()
    wrong = [sid for sid in final if stored.get(sid) != expected[sid]]
    if wrong:
        raise BenchmarkError(f"{len(wrong)} sessions were not stored as written, e.g. {wrong[0]}")


def measure_write_ceiling(
    workdir: Path,
    *,
    users: int,
    operations: int,
    concurrency: int,
    rounds: int,
    seed: int = 1,
    fresh: float = 0.1,
    synchronous: str = "FULL",
) -> CeilingResult:
    """Time the adapter's write transaction grouped and single (see the module documentation).

    Raises:
        BenchmarkError: Bad sizes, or the database did not store what was written.
    """
    if min(users, operations, concurrency, rounds) < 1:
        raise BenchmarkError("users, operations, concurrency and rounds must be at least 1")
    prefill, commits, final = _bookkeeping(users, operations, seed, fresh)
    encoded_prefill = _encoded(prefill)
    encoded = _encoded(commits)
    expected = {sid: encode_session(session)[8] for sid, session in final.items()}
    grouped = [encoded[i : i + concurrency] for i in range(0, len(encoded), concurrency)]
    single = [[commit] for commit in encoded]
    results = []
    for number in range(rounds):
        timings = []
        for name, groups in (("grouped", grouped), ("single", single)):
            path = workdir / f"ceiling-{number}-{name}.db"
            seconds, writer = _write(path, synchronous, encoded_prefill, groups)
            _check(writer, final, expected)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            timings.append(seconds)
        results.append(CeilingRound(*timings))
    return CeilingResult(users, concurrency, len(encoded), synchronous, tuple(results))
