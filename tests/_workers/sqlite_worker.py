"""Child processes of the SQLite process tests; run as ``python sqlite_worker.py MODE ...``.

``resolve PATH BACKEND WRITER USERS ROUNDS``
    Open a store on PATH and print ``ready``. Then, ROUNDS times: wait for a line on stdin,
    resolve USERS new users (``r<round>-u<n>``) all at once, and print one JSON line: user id
    to session id, and how many user commits the adapter wrote for them.

``crash PATH BACKEND WRITER ROUND SEED``
    Open a store on PATH, print ``ready``, then resolve and update metadata forever, printing
    one line per acknowledged write, after the store returned it: ``R <session id>`` for a
    resolve and ``M <session id> <key> <value>`` for a metadata update (every key is new).
    The test kills it with SIGKILL.

WRITER is the adapter's ``writer`` (``thread`` or ``process``).
"""

from __future__ import annotations

import json
import random
import sys

import anyio

from assistant_sessions import SessionStore, create_session_store
from assistant_sessions.adapters.sqlite import SqliteSessionStoreAdapter, Writer

CRASH_USERS = 30
CRASH_TASKS = 8


def say(line: str) -> None:
    # One write per line, flushed: the parent reads every acknowledgment that got out.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def resolve(store: SessionStore, user: str, ids: dict[str, str]) -> None:
    ids[user] = (await store.resolve(user_id=user, surface_id="web")).id


async def resolve_many(path: str, writer: Writer, users: int, rounds: int) -> None:
    adapter = SqliteSessionStoreAdapter(path, writer=writer)
    async with create_session_store(adapter) as store:
        say("ready")
        for round_ in range(rounds):
            await anyio.to_thread.run_sync(sys.stdin.readline)
            ids: dict[str, str] = {}
            commits = adapter.statistics().user_commits
            async with anyio.create_task_group() as tg:
                for n in range(users):
                    tg.start_soon(resolve, store, f"r{round_}-u{n}", ids)
            commits = adapter.statistics().user_commits - commits
            say(json.dumps({"ids": ids, "user_commits": commits}))


async def crash_loop(path: str, writer: Writer, round_: int, seed: int) -> None:
    rng = random.Random(seed)
    counter = 0

    async def work(store: SessionStore) -> None:
        nonlocal counter
        while True:
            user = f"u{rng.randrange(CRASH_USERS)}"
            surface = rng.choice(["web", "slack", "phone"])
            session = await store.resolve(user_id=user, surface_id=surface)
            say(f"R {session.id}")
            counter += 1
            key, value = f"k{round_}_{counter}", counter
            await store.update_metadata(session.id, {key: value})
            say(f"M {session.id} {key} {value}")

    async with create_session_store(SqliteSessionStoreAdapter(path, writer=writer)) as store:
        say("ready")
        async with anyio.create_task_group() as tg:
            for _ in range(CRASH_TASKS):
                tg.start_soon(work, store)


def main(argv: list[str]) -> None:
    mode, path, backend, writer, *rest = argv
    if writer not in ("thread", "process"):
        raise SystemExit(f"unknown writer {writer!r}")
    if mode == "resolve":
        anyio.run(resolve_many, path, writer, int(rest[0]), int(rest[1]), backend=backend)
    elif mode == "crash":
        anyio.run(crash_loop, path, writer, int(rest[0]), int(rest[1]), backend=backend)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
