"""``--processes P``: aggregate resolve throughput of P worker processes sharing one storage.

Every worker runs its own store (its own actors) over the *same* data -- one Redis key prefix,
or one PostgreSQL schema, or one SQLite file -- as the workers of a deployment do. All workers
start at once on a barrier and resolve random users from one shared set, so they race on the
same new users; afterwards the exactly-once check runs across all of them: every user must have
exactly one live session, and every worker must have been given that one. The same run with
``batched=False`` is the per-operation baseline: one commit per operation (``max_batch=1``), on
an adapter made with ``group_commit=False``, so one round trip per commit: for Redis one script
call per round trip, for PostgreSQL and SQLite one transaction per commit. What a run writes to
a server is removed when it ends, however it ends: its Redis keys, its PostgreSQL schema (``DROP
SCHEMA ... CASCADE``).
"""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

from assistant_sessions import SqliteSessionStoreAdapter, create_session_store
from assistant_sessions.adapters.base import SessionStoreAdapter

from ._adapters import BenchmarkError
from ._cleanup import RedisKeyLog
from ._postgres import NEEDS_DSN, PostgresSchemaLog

__all__ = ["ProcessesResult", "run_processes"]

#: Adapters whose data several processes can share.
SHARED_ADAPTERS: Final = ("redis", "postgres", "sqlite")

_READY_TIMEOUT: Final = 60.0

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"


@attrs.frozen
class ProcessesResult:
    """One multi-process run."""

    processes: int
    batched: bool
    operations: int
    seconds: float
    users: int
    duplicates: int
    disagreements: int

    @property
    def throughput(self) -> float:
        """Aggregate resolves per second (all operations over the slowest worker's time)."""
        return self.operations / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """Whether exactly-once held across every worker."""
        return self.duplicates == 0 and self.disagreements == 0


def _make_adapter(
    adapter: str, url: str | None, path: Path, prefix: str, batched: bool = True
) -> SessionStoreAdapter:
    if adapter == "redis":
        # Imported here: the Redis adapter needs the optional coredis (the ``redis`` extra).
        from assistant_sessions.adapters.redis import RedisSessionStoreAdapter

        return RedisSessionStoreAdapter(
            url or DEFAULT_REDIS_URL, key_prefix=prefix, group_commit=batched
        )
    if adapter == "postgres":
        # Imported here: the PostgreSQL adapter needs the optional psycopg (``postgres``).
        from assistant_sessions.adapters.postgres import PostgresSessionStoreAdapter

        if url is None:
            raise BenchmarkError(NEEDS_DSN)
        return PostgresSessionStoreAdapter(url, schema=prefix, group_commit=batched)
    return SqliteSessionStoreAdapter(path, group_commit=batched)


def _worker(
    conn: Connection,
    start: Any,
    adapter: str,
    url: str | None,
    path: str,
    prefix: str,
    users: int,
    operations: int,
    concurrency: int,
    backend: str,
    seed: int,
    batched: bool,
) -> None:
    async def main() -> tuple[int, float, dict[str, list[str]]]:
        seen: defaultdict[str, set[str]] = defaultdict(set)
        store = create_session_store(
            _make_adapter(adapter, url, Path(path), prefix, batched),
            max_batch=256 if batched else 1,
        )
        async with store:
            conn.send("ready")
            await anyio.to_thread.run_sync(start.wait)
            per_client = operations // concurrency

            async def client(n: int) -> None:
                rnd = random.Random(seed * 7919 + n)
                for _ in range(per_client):
                    user = f"user-{rnd.randrange(users)}"
                    seen[user].add((await store.resolve(user_id=user)).id)

            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for n in range(concurrency):
                    tg.start_soon(client, n)
            elapsed = time.perf_counter() - began
        return per_client * concurrency, elapsed, {u: sorted(ids) for u, ids in seen.items()}

    try:
        conn.send(("done", anyio.run(main, backend=backend)))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


async def _live_sessions(
    adapter: str, url: str | None, path: Path, prefix: str, users: Sequence[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    async with create_session_store(_make_adapter(adapter, url, path, prefix)) as store:
        for user in users:
            found[user] = [s.id for s in await store.find(user_id=user, limit=1000) if s.is_live]
    return found


def run_processes(
    *,
    adapter: str,
    url: str | None,
    workdir: Path,
    processes: int,
    users: int,
    operations: int,
    concurrency: int,
    backend: str,
    seed: int,
    batched: bool,
) -> ProcessesResult:
    """Run ``processes`` workers against fresh shared storage; see the module documentation.

    Raises:
        BenchmarkError: The adapter cannot be shared, or a worker failed.
    """
    if adapter not in SHARED_ADAPTERS:
        raise BenchmarkError(
            f"--processes needs shared storage: one of {', '.join(SHARED_ADAPTERS)}"
        )
    if adapter == "postgres" and url is None:
        raise BenchmarkError(NEEDS_DSN)
    # A Redis key prefix, or a PostgreSQL schema (a plain identifier), of this run's own.
    prefix = (
        f"bench_p_{uuid.uuid4().hex[:12]}"
        if adapter == "postgres"
        else (f"bench-p-{uuid.uuid4().hex[:12]}")
    )
    path = workdir / f"{prefix}.db"
    redis_keys = RedisKeyLog()
    schemas = PostgresSchemaLog()
    if adapter == "redis":
        redis_keys.record(url or DEFAULT_REDIS_URL, prefix)
    elif adapter == "postgres" and url is not None:
        schemas.record(url, prefix)
    try:
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        pipes, workers = [], []
        for n in range(processes):
            parent, child = context.Pipe()
            worker = context.Process(
                target=_worker,
                args=(
                    child,
                    start,
                    adapter,
                    url,
                    str(path),
                    prefix,
                    users,
                    operations // processes,
                    concurrency,
                    backend,
                    seed + n,
                    batched,
                ),
                daemon=True,
            )
            worker.start()
            pipes.append(parent)
            workers.append(worker)
        try:
            for parent in pipes:
                if not parent.poll(_READY_TIMEOUT) or parent.recv() != "ready":
                    raise BenchmarkError("a worker process did not start")
            start.set()
            outcomes = []
            for parent in pipes:
                kind, payload = parent.recv()
                if kind != "done":
                    raise BenchmarkError(f"a worker process failed: {payload}")
                outcomes.append(payload)
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
        given: defaultdict[str, set[str]] = defaultdict(set)
        for _, _, seen in outcomes:
            for user, ids in seen.items():
                given[user].update(ids)
        stored = anyio.run(
            _live_sessions, adapter, url, path, prefix, sorted(given), backend=backend
        )
        duplicates = sum(len(ids) - 1 for ids in stored.values() if len(ids) > 1)
        disagreements = sum(1 for user, ids in given.items() if ids != set(stored[user]))
        return ProcessesResult(
            processes=processes,
            batched=batched,
            operations=sum(ops for ops, _, _ in outcomes),
            seconds=max(seconds for _, seconds, _ in outcomes),
            users=len(given),
            duplicates=duplicates,
            disagreements=disagreements,
        )
    finally:
        # The workers' keys or schema (SQLite's file goes with the work directory), however
        # it ended.
        redis_keys.delete_all()
        schemas.drop_all()
