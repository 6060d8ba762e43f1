"""The README's Python blocks run as written (on asyncio and trio), so the docs stay true."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

if TYPE_CHECKING:
    from postgres_fixtures import PostgresServer
    from redis_fixtures import RedisServer

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)

pytestmark = pytest.mark.anyio


def _block(containing: str) -> str:
    matches = [b for b in BLOCKS if containing in b]
    assert len(matches) == 1, f"one README block with {containing!r}, found {len(matches)}"
    return matches[0]


async def _run_body(code: str, namespace: dict[str, Any]) -> None:
    """Run ``code`` as the body of an async function (the README's snippets use ``async with``
    at their top level, as inside an application's own coroutine)."""
    source = "async def _snippet():\n" + textwrap.indent(code, "    ")
    exec(compile(source, "README.md", "exec"), namespace)  # our own README
    await namespace["_snippet"]()


def test_every_python_block_parses() -> None:
    assert BLOCKS
    for block in BLOCKS:
        ast.parse("async def _snippet():\n" + textwrap.indent(block, "    "))


def test_the_quick_start_runs(anyio_backend: str) -> None:
    code = _block("resolve_session(")
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("anyio.run(main)")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines[:-1]), "README.md", "exec"), namespace)  # our own README
    anyio.run(namespace["main"], backend=anyio_backend)


async def test_the_sqlite_block_runs(tmp_path: Path) -> None:
    code = _block("SqliteSessionStoreAdapter(").replace(
        '"sessions.db"', repr(str(tmp_path / "sessions.db"))
    )
    code = code.replace("    ...", "    assert (await store.resolve(user_id='u')).user_id == 'u'")
    await _run_body(code, {})
    assert (tmp_path / "sessions.db").exists()


async def test_the_redis_block_runs(redis_server: RedisServer) -> None:
    code = _block("RedisSessionStoreAdapter(").replace(
        '"redis://localhost:6379/0"', repr(redis_server.url)
    )
    code = code.replace("    ...", "    assert (await store.resolve(user_id='u')).user_id == 'u'")
    await _run_body(code, {})


async def test_the_postgres_block_runs(postgres_server: PostgresServer, pg_schema: str) -> None:
    code = _block("PostgresSessionStoreAdapter(").replace(
        '"postgresql://app@localhost/app"', repr(postgres_server.dsn)
    )
    code = code.replace('schema="assistant_sessions"', f"schema={pg_schema!r}")
    assert pg_schema in code
    code = code.replace("    ...", "    assert (await store.resolve(user_id='u')).user_id == 'u'")
    await _run_body(code, {})


async def test_the_events_block_runs() -> None:
    from assistant_sessions import create_session_store

    code = _block("store.subscribe(").replace(
        "        ...", "        seen.append(event.kind)\n        break"
    )
    seen: list[str] = []
    async with create_session_store() as store, anyio.create_task_group() as tg:
        tg.start_soon(_run_body, code, {"store": store, "seen": seen})
        await anyio.wait_all_tasks_blocked()
        await store.resolve(user_id="u")
    assert seen == ["created"]
