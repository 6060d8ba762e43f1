"""``-a redis --write-ceiling``: what the client can do at best on Redis, with no store around it.

The store's throughput on Redis is bounded by the client, whose every commit costs the store's
bookkeeping, the event loop, the adapter and the driver. This measures the part no store can
avoid: exactly the commits that the store's bookkeeping makes for the workload's resolves
(computed and encoded beforehand, outside the timing, as ``_ceiling`` does for SQLite), sent
through the Redis adapter's own script calls
(:func:`~assistant_sessions.adapters.redis.send_entries`) from one task, one round trip at a
time, ``concurrency`` commits a round trip (with C clients at most C commits are in flight):

* **grouped**: the round trip's commits applied by one script call (as the adapter does where
  their users share a slot: on a single server, all of them);
* **single**: one script call per commit, all of them in one pipeline (what the adapter did
  before it grouped).

The store's resolves per second over ``grouped``'s commits per second is how close the store
comes to its client-side ceiling. Rounds interleave the two variants, each under a new key
prefix filled with the same prefill; rates are medians, and the ratio the median of per-round
ratios. Client CPU (this process) and server CPU (``INFO CPU``) per commit are reported too.
After each run the stored sessions are compared with the bookkeeping's, so a run that skipped
a write fails instead of looking fast. Every key written is deleted when the command ends.

This module also reads the server CPU the benchmark reports per operation for ``-a redis``
(:func:`server_cpu`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any, Final, final

import anyio
import attrs

from assistant_sessions import Session
from assistant_sessions.adapters.base import SessionStoreAdapter

from ._adapters import BenchmarkError
from ._ceiling import _bookkeeping
from ._cleanup import RedisKeyLog
from ._options import DEFAULT_OPERATIONS, _flat, _operations

__all__ = [
    "REDIS_CEILING_ADAPTERS",
    "RedisCeilingResult",
    "RedisCeilingRun",
    "main_redis_ceiling",
    "measure_redis_ceiling",
    "server_cpu",
]

#: Adapters whose client-side ceiling this measures.
REDIS_CEILING_ADAPTERS: Final = ("redis",)

#: The variants, in the order each round runs them: entries per script call (0: all).
VARIANTS: Final = (("grouped", 0), ("single", 1))

_FILL_BATCH: Final = 1000
_CHECK_TASKS: Final = 64


@final
@attrs.frozen
class RedisCeilingRun:
    """One variant in one round: seconds and CPU seconds for all the commits."""

    variant: str
    seconds: float
    client_cpu: float
    server_cpu: float


@final
@attrs.frozen
class RedisCeilingResult:
    """What ``-a redis --write-ceiling`` measured.

    Attributes:
        users: Users of the workload.
        concurrency: Commits per round trip.
        commits: Commits sent by each variant in each round.
        rounds: Per round, one run of each variant (grouped, single).
    """

    users: int
    concurrency: int
    commits: int
    rounds: tuple[tuple[RedisCeilingRun, ...], ...]

    def runs(self, variant: str) -> list[RedisCeilingRun]:
        """The runs of ``variant``, in round order."""
        return [run for runs in self.rounds for run in runs if run.variant == variant]

    def rate(self, variant: str) -> float:
        """Median commits per second."""
        return self.commits / statistics.median(r.seconds for r in self.runs(variant))

    def cpu_per_commit(self, variant: str) -> tuple[float, float]:
        """Median client and server CPU seconds per commit."""
        runs = self.runs(variant)
        return (
            statistics.median(r.client_cpu for r in runs) / self.commits,
            statistics.median(r.server_cpu for r in runs) / self.commits,
        )

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios grouped/single (commits per second)."""
        return statistics.median(r.seconds / g.seconds for g, r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            **attrs.asdict(self),
            "commits_per_second": {name: self.rate(name) for name, _ in VARIANTS},
            "cpu_per_commit_s": {name: self.cpu_per_commit(name) for name, _ in VARIANTS},
            "ratio": self.ratio,
        }


async def server_cpu(adapter: SessionStoreAdapter) -> float | None:
    """CPU seconds the adapter's Redis server has used so far; ``None`` for other adapters."""
    try:
        from assistant_sessions.adapters.redis import (
            RedisSessionStoreAdapter,
            server_cpu_seconds,
        )
    except ImportError:  # no coredis: no Redis adapter either
        return None
    if not isinstance(adapter, RedisSessionStoreAdapter):
        return None
    return await server_cpu_seconds(adapter)


async def _run_variant(
    url: str,
    prefix: str,
    prefill: Sequence[Any],
    commits: Sequence[Any],
    final: dict[str, Session],
    concurrency: int,
    variant: tuple[str, int],
) -> RedisCeilingRun:
    """Fill a new prefix, time the commits in round trips of ``concurrency``, check them."""
    from assistant_sessions.adapters.redis import (
        RedisSessionStoreAdapter,
        encode_commits,
        send_entries,
        server_cpu_seconds,
    )

    name, per_call = variant
    adapter = RedisSessionStoreAdapter(url, key_prefix=prefix)
    await adapter.open()
    try:
        for start in range(0, len(prefill), _FILL_BATCH):
            if any(await adapter.commit(prefill[start : start + _FILL_BATCH])):
                raise BenchmarkError("the adapter rejected the prefill: was it empty?")
        entries = encode_commits(adapter, commits)
        groups = [entries[i : i + concurrency] for i in range(0, len(entries), concurrency)]
        per = per_call or concurrency
        server_before = await server_cpu_seconds(adapter)
        cpu_before, began = time.process_time(), time.perf_counter()
        rejected = 0
        for group in groups:
            replies = await send_entries(adapter, group, per_call=per)
            rejected += sum(1 for reply in replies if reply != 0)
        seconds = time.perf_counter() - began
        client_cpu = time.process_time() - cpu_before
        server = await server_cpu_seconds(adapter) - server_before
        if rejected:
            raise BenchmarkError(f"{rejected} commits were rejected by Redis")
        await _check(adapter, final)
    finally:
        await adapter.aclose()
    return RedisCeilingRun(name, seconds, client_cpu, server)


async def _check(adapter: Any, final: dict[str, Session]) -> None:
    """Every session the bookkeeping touched is stored as it ended."""
    users = sorted({session.user_id for session in final.values()})
    stored: dict[str, Session] = {}
    pending = iter(users)

    async def read() -> None:
        for user in pending:
            stored.update((s.id, s) for s in (await adapter.load_user(user)).sessions)

    async with anyio.create_task_group() as tg:
        for _ in range(_CHECK_TASKS):
            tg.start_soon(read)
    wrong = [sid for sid, session in final.items() if stored.get(sid) != session]
    if wrong:
        raise BenchmarkError(f"{len(wrong)} sessions were not stored as written, e.g. {wrong[0]}")


def measure_redis_ceiling(
    url: str,
    keys: RedisKeyLog,
    *,
    users: int,
    operations: int,
    concurrency: int,
    rounds: int,
    seed: int = 1,
    fresh: float = 0.1,
) -> RedisCeilingResult:
    """Time the workload's commits grouped and single (see the module documentation); each
    run's key prefix is recorded in ``keys`` before anything is written.

    Raises:
        BenchmarkError: Bad sizes, Redis rejected a commit, or did not store what was sent.
    """
    if min(users, operations, concurrency, rounds) < 1:
        raise BenchmarkError("users, operations, concurrency and rounds must be at least 1")
    prefill, commits, final = _bookkeeping(users, operations, seed, fresh)
    instances = itertools.count()
    results = []
    for _ in range(rounds):
        runs = []
        for variant in VARIANTS:
            prefix = f"bench-{os.getpid()}-c{next(instances)}"
            keys.record(url, prefix)
            runs.append(
                anyio.run(_run_variant, url, prefix, prefill, commits, final, concurrency, variant)
            )
        results.append(tuple(runs))
    return RedisCeilingResult(users, concurrency, len(commits), tuple(results))


def main_redis_ceiling(args: argparse.Namespace) -> int:
    """``-a redis --write-ceiling``: the Redis adapter's own script calls, grouped and single."""
    from ._modes import usage_error

    users = _flat(args.users, [10_000])[0]
    concurrency = _flat(args.concurrency, [256])[0]
    operations = _operations(args, DEFAULT_OPERATIONS)
    url = args.adapter_url or "redis://127.0.0.1:6379/0"
    keys = RedisKeyLog()
    try:
        result = measure_redis_ceiling(
            url,
            keys,
            users=users,
            operations=operations,
            concurrency=concurrency,
            rounds=args.rounds,
            seed=args.seed,
            fresh=args.fresh,
        )
    except BenchmarkError as exc:
        return usage_error(exc)
    except Exception as exc:  # Redis unreachable, and the like: say so, as other modes do
        return usage_error(f"the Redis write ceiling failed: {exc}")
    finally:
        keys.delete_all()
    print(
        f"Redis write ceiling: the adapter's own script calls, no store, U={users:,}, "
        f"{result.commits:,} commits of {operations:,} resolves, {concurrency} a round trip, "
        f"at {url}"
    )
    print(f"{'round':>6} {'grouped':>10} {'single':>10} {'ratio':>7}")
    for number, (grouped, single) in enumerate(result.rounds, 1):
        print(
            f"{number:>6} {result.commits / grouped.seconds:>10,.0f} "
            f"{result.commits / single.seconds:>10,.0f} {single.seconds / grouped.seconds:>6.2f}x"
        )
    print(
        f"{'median':>6} {result.rate('grouped'):>10,.0f} {result.rate('single'):>10,.0f} "
        f"{result.ratio:>6.2f}x"
    )
    for name, _ in VARIANTS:
        client, server = result.cpu_per_commit(name)
        print(
            f"{name}: CPU per commit: client {client * 1e6:,.1f} µs, server {server * 1e6:,.1f} µs"
        )
    print(
        "(commits/s; grouped: a round trip's commits in one script call, single: one script "
        "call per commit; the store's resolves/s over grouped is how close it comes)"
    )
    return 0
