"""``assistant-sessions demo``: one user's messages from three surfaces, resolved to one session."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import anyio

from . import create_session_store, resolve_session

__all__ = ["main"]


async def _demo() -> None:
    async with create_session_store(default_ttl=1800) as store:
        messages = [
            {"user_id": "ada", "surface_id": "web-thread-1", "workspace_id": "acme"},
            {"user_id": "ada", "surface_id": "slack-dm-99", "workspace_id": "acme"},
            {"user_id": "ada", "surface_id": "phone-call-7", "workspace_id": "acme"},
            {"user_id": "grace", "surface_id": "web-thread-2", "workspace_id": "acme"},
        ]
        for message in messages:
            # The message's surface is attached to the session, in the same atomic step.
            session = await resolve_session(message, store)
            print(f"{message['user_id']:>6} via {message['surface_id']:<13} -> {session.id}")
        # Many concurrent messages of a new user still land in exactly one session.
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(resolve_session, {"user_id": "lin", "surface_id": f"s{i % 3}"}, store)
        lin = await store.find(user_id="lin")
        print(f"100 concurrent resolves of a new user made {len(lin)} session(s)")
        for session in await store.find(workspace_id="acme"):
            print(
                f"{session.user_id:>6}: {session.state.value}, surfaces {session.attached_surfaces}"
            )


def main(argv: Sequence[str]) -> int:
    """Run the demo on asyncio (or ``--backend trio``)."""
    parser = argparse.ArgumentParser(prog="assistant-sessions demo")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    anyio.run(_demo, backend=args.backend)
    return 0
