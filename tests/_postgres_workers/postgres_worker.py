"""A worker process for the cross-process PostgreSQL tests.

Usage: ``postgres_worker.py MODE DSN SCHEMA BACKEND JSON_PARAMS``. The worker opens a store on
PostgreSQL, prints ``ready``, waits for a ``go`` line on stdin (so that all workers start at the
same moment), does its part, prints one JSON line with what it saw, and exits.

Modes:
    resolve   ``{"users": [...], "per_user": n}``: n concurrent resolves for every user at once.
    update    ``{"session_id": id, "tag": t, "count": n}``: n concurrent metadata updates and
              n concurrent surface attaches on one session.
    sweep     ``{"now": iso, "ttl": seconds, "touch": [ids]}``: a sweep at ``now``, while
              touching the given sessions concurrently.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import anyio

from assistant_sessions import Session, create_session_store
from assistant_sessions.adapters.postgres import PostgresSessionStoreAdapter
from assistant_sessions.testing import FakeClock


def _session(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "user_id": session.user_id,
        "state": session.state.value,
        "last_activity_at": session.last_activity_at.isoformat(),
    }


async def _wait_for_go() -> None:
    print("ready", flush=True)
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected 'go', got {line!r}")


async def resolve(store: Any, params: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, set[str]] = {user: set() for user in params["users"]}

    async def one(user: str) -> None:
        got[user].add((await store.resolve(user_id=user, surface_id="web")).id)

    await _wait_for_go()
    async with anyio.create_task_group() as tg:
        for _ in range(params["per_user"]):
            for user in params["users"]:
                tg.start_soon(one, user)
    return {"ids": {user: sorted(ids) for user, ids in got.items()}}


async def update(store: Any, params: dict[str, Any]) -> dict[str, Any]:
    session_id, tag = params["session_id"], params["tag"]

    async def metadata(n: int) -> None:
        await store.update_metadata(session_id, {f"{tag}-{n}": n})

    async def surface(n: int) -> None:
        await store.attach_surface(session_id, f"{tag}-s{n}")

    await _wait_for_go()
    async with anyio.create_task_group() as tg:
        for n in range(params["count"]):
            tg.start_soon(metadata, n)
            tg.start_soon(surface, n)
    return {"done": True}


async def sweep(store: Any, params: dict[str, Any]) -> dict[str, Any]:
    touched: list[dict[str, Any]] = []
    suspended: list[Session] = []

    async def touch(session_id: str) -> None:
        touched.append(_session(await store.touch(session_id)))

    async def run_sweep() -> None:
        suspended.extend(await store.sweep_stale(params["ttl"]))

    await _wait_for_go()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_sweep)
        for session_id in params["touch"]:
            tg.start_soon(touch, session_id)
    return {"suspended": [_session(s) for s in suspended], "touched": touched}


MODES = {"resolve": resolve, "update": update, "sweep": sweep}


async def main(mode: str, dsn: str, schema: str, raw: str) -> None:
    params = json.loads(raw)
    clock = FakeClock(datetime.fromisoformat(params["now"])) if "now" in params else None
    adapter = PostgresSessionStoreAdapter(dsn, schema=schema)
    async with create_session_store(adapter, clock=clock) as store:
        with anyio.fail_after(60):
            result = await MODES[mode](store, params)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    mode, dsn, schema, backend, raw = sys.argv[1:6]
    anyio.run(main, mode, dsn, schema, raw, backend=backend)
