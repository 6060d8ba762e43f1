"""The Redis adapter's claim protocol: session ids unique across users in a cluster.

With several buckets a session id's claim usually lives on another node than its user, so no
one script can check it; the steps that keep two users from both holding an id -- claiming,
fencing the holder of a stale claim, releasing -- are subtle enough to live apart from the
commit that uses them. The protocol is described in the documentation of
:mod:`~assistant_sessions.adapters.redis`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ...errors import AdapterError
from . import _scripts as lua
from ._codec import from_bytes
from ._driver import Client, Connection
from ._keys import KeyLayout

__all__ = ["ATTEMPTS", "claim", "holder", "owner", "release"]

logger = logging.getLogger("assistant_sessions.redis")

#: Attempts to claim one session id against concurrent claimers before giving up.
ATTEMPTS: Final = 8
_OWNED: Final = b"o:"
_FENCED: Final = b"f:"


def owner(user: bytes) -> bytes:
    """The claim of an id ``user`` holds."""
    return _OWNED + user


def holder(held: bytes) -> bytes:
    """The user a claim names, whether it owns the id or is fenced."""
    return held[len(_OWNED) :]


def _has_session(key: bytes, session_id: bytes) -> Callable[[Client], Awaitable[bool]]:
    """The command asking whether the user's sessions hash at ``key`` holds ``session_id``."""
    return lambda client: client.hexists(key, session_id)


async def claim(
    redis: Connection, keys: KeyLayout, user: bytes, session_id: bytes, *, grace: float
) -> bool:
    """Make ``user`` the holder of ``session_id``'s claim; ``False`` if another user has it.

    A claim held by another user is taken only when it is older than ``grace`` seconds (a
    create can take that long), from a holder that does not have the session, and only after
    fencing it.

    Raises:
        AdapterError: Too many concurrent claimers.
    """
    claims = keys.claims_keys(session_id)
    owned = owner(user)
    for _ in range(ATTEMPTS):
        reply = await redis.eval(lua.CLAIM, claims, [session_id, owned])
        if int(reply[0]) == 1:
            return True
        held: bytes = reply[1]
        held_by = holder(held)
        if held.startswith(_OWNED):
            if int(reply[2]) < grace * 1000:
                return False  # the holder's create may be in flight: it goes first
            if await redis.call(_has_session(keys.sessions_key(held_by), session_id)):
                return False
            fenced = _FENCED + held_by
            if not await redis.eval(lua.CAS_CLAIM, claims, [session_id, held, fenced]):
                continue
            held = fenced
        if await _fence(redis, keys, held_by, session_id):
            # The holder has the session after all: the claim goes back to it.
            await redis.eval(lua.CAS_CLAIM, claims, [session_id, held, owner(held_by)])
            if held_by != user:
                return False
            continue
        if await redis.eval(lua.CAS_CLAIM, claims, [session_id, held, owned]):
            return True
    raise AdapterError(
        f"could not claim session id {from_bytes(session_id)!r}: too many concurrent claimers"
    )


async def _fence(redis: Connection, keys: KeyLayout, user: bytes, session_id: bytes) -> bool:
    """Whether ``user`` has the session; if not, bump its claim epoch."""
    fence_keys = [keys.epoch_key(user), keys.sessions_key(user)]
    return int(await redis.eval(lua.FENCE, fence_keys, [session_id])) == 1


async def release(redis: Connection, keys: KeyLayout, user: bytes, session_id: bytes) -> None:
    """Drop the claim of a session ``user`` deleted, unless it came back meanwhile.

    Best effort: a claim left behind only keeps a few bytes until someone reuses the id.
    """
    claims = keys.claims_keys(session_id)
    owned, fenced = owner(user), _FENCED + user
    try:
        with redis.errors("release a claim in"):
            if not await redis.eval(lua.CAS_CLAIM, claims, [session_id, owned, fenced]):
                return
            if await _fence(redis, keys, user, session_id):
                await redis.eval(lua.CAS_CLAIM, claims, [session_id, fenced, owned])
            else:
                await redis.eval(lua.CAS_CLAIM, claims, [session_id, fenced, b""])
    except AdapterError as exc:
        logger.info("left the claim of session %r in place: %s", from_bytes(session_id), exc)
