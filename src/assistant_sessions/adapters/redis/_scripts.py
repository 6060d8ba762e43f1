"""The Lua scripts of the Redis adapter, and the key layout they rely on.

Key layout (``P`` is the adapter's key prefix, ``{bK}`` the hash tag of bucket ``K``)::

    P:meta            hash   layout version and bucket count, checked when the adapter opens
    P:{bK}:v:<user>   string the user's version (absent: 0)
    P:{bK}:e:<user>   string the user's claim epoch, bumped when a claim is taken from it
    P:{bK}:l:<user>   string a lease on the user's commits for a writer that kept losing races
    P:{bK}:s:<user>   hash   session id -> session JSON, every session of the user
    P:{bK}:d:<state>  zset   member -> state clock in microseconds, per state (the sweep index)
    P:{bK}:r          zset   member -> last activity in microseconds (``find`` without a user)
    P:{bK}:i          hash   session id -> claim: ``o:<user>`` (owned) or ``f:<user>`` (fenced)
    P:{bK}:t          hash   session id -> when its claim was taken (server time, ms)

A user lives in bucket ``crc32(user) % buckets``, and a session id's claim in bucket
``crc32(id) % buckets``. Every key of one user carries its bucket's hash tag, so one script
sees all of them in a cluster; so do the bucket's sweep and recency indexes, which is why the
script keeps them exact in the same step. The raw user id follows the tag, so ids need no
escaping: Redis hashes only what lies between the *first* ``{`` and the next ``}``. A zset
member is ``<byte length of user>:<user><session id>``, which names both without ambiguity.

With one bucket (the default on a single server) the claims live in the same slot as every
user, and the commit script checks and writes them itself: everything is one atomic step.
With several buckets (the default in a cluster) a new session id's claim usually lives in
another slot, so :mod:`~assistant_sessions.adapters.redis` takes it with :data:`CLAIM` before
the commit script runs; see there for the protocol that keeps ids unique across users.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["CAS_CLAIM", "CLAIM", "COMMIT", "FENCE", "GET_INLINE", "INIT_META", "LOAD", "Script"]

#: Reply codes of :data:`COMMIT` (first element of its reply).
APPLIED: Final = 0
VERSION: Final = 1
DUPLICATE: Final = 2
NEED_CLAIM: Final = 3


class Script:
    """A Lua script and its SHA-1, for ``EVALSHA`` with a fallback to ``EVAL``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


#: One user's commit. Checks the version, then that every new session id is free (inline
#: claims) or was claimed beforehand at the current claim epoch, then applies upserts and
#: deletes to the sessions hash and to both indexes, and bumps the version. Reply: ``{0}``
#: applied, ``{1, version, {id, json...}, wait}`` version conflict, the user as it is now
#: (what the caller reloads next) and how many milliseconds another writer's lease has left
#: (0: none), ``{2}`` duplicate id, ``{3, epoch, id...}`` these new ids need a
#: claim first (and the proof must name this epoch).
#:
#:
#: A writer that keeps losing version races to writers in other processes asks for a *lease*:
#: on its next conflict it takes the user's lease (unless another writer holds one), and
#: while the lease lives, commits of other writers are refused as conflicts, so the starving
#: writer's next commit gets through; it drops the lease.
#:
#: KEYS: version, sessions, claims (the user's bucket), due zsets of created, active,
#: suspended and expired, recency zset, claim epoch, lease.
#: ARGV: expected version, inline claims ("1"/"0"), the claim value ``o:<user>``, the prefix
#: of session hashes in this bucket, upsert count, delete count, the claim epoch the claims
#: were taken at, this writer's lease token, lease milliseconds to take on a conflict ("0":
#: none); then per upsert: id, JSON, member, state (1-4), due score, recency score, claimed
#: ("1"/"0"); then per delete: id, member.
COMMIT: Final = Script("""
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local lease = redis.call('GET', KEYS[10])
if version ~= tonumber(ARGV[1]) or (lease and lease ~= ARGV[8]) then
  local wait = 0
  if lease and lease ~= ARGV[8] then
    wait = redis.call('PTTL', KEYS[10])
  elseif ARGV[9] ~= '0' and not lease then
    redis.call('SET', KEYS[10], ARGV[8], 'PX', ARGV[9])
  end
  return {1, version, redis.call('HGETALL', KEYS[2]), wait}
end
local sessions, claims = KEYS[2], KEYS[3]
local inline, owner, prefix = ARGV[2] == '1', ARGV[3], ARGV[4]
local n, m = tonumber(ARGV[5]), tonumber(ARGV[6])
local epoch = redis.call('GET', KEYS[9]) or '0'
local stale = epoch ~= ARGV[7]
local fresh = {}
local need = {3, epoch}
local missing = false
for i = 0, n - 1 do
  local at = 9 + i * 7
  local id = ARGV[at + 1]
  if redis.call('HEXISTS', sessions, id) == 0 then
    fresh[i] = true
    if inline then
      local held = redis.call('HGET', claims, id)
      if held and held ~= owner
        and redis.call('HEXISTS', prefix .. string.sub(held, 3), id) == 1 then
        if lease then redis.call('DEL', KEYS[10]) end
        return {2}
      end
    else
      need[#need + 1] = id
      if stale or ARGV[at + 7] ~= '1' then missing = true end
    end
  end
end
if missing then return need end
for j = 0, m - 1 do
  local at = 9 + n * 7 + j * 2
  local id, member = ARGV[at + 1], ARGV[at + 2]
  if redis.call('HDEL', sessions, id) == 1 then
    for s = 4, 8 do redis.call('ZREM', KEYS[s], member) end
    if inline and redis.call('HGET', claims, id) == owner then
      redis.call('HDEL', claims, id)
    end
  end
end
for i = 0, n - 1 do
  local at = 9 + i * 7
  local member, state = ARGV[at + 3], tonumber(ARGV[at + 4])
  redis.call('HSET', sessions, ARGV[at + 1], ARGV[at + 2])
  for s = 1, 4 do
    if s ~= state then redis.call('ZREM', KEYS[3 + s], member) end
  end
  redis.call('ZADD', KEYS[3 + state], ARGV[at + 5], member)
  redis.call('ZADD', KEYS[8], ARGV[at + 6], member)
  if inline and fresh[i] then redis.call('HSET', claims, ARGV[at + 1], owner) end
end
redis.call('SET', KEYS[1], version + 1)
if lease then redis.call('DEL', KEYS[10]) end
return {0}
""")

#: One user's version and sessions, read atomically. KEYS: version, sessions.
#: Reply: ``{version, {id, json, id, json...}}``.
LOAD: Final = Script("""
return {tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('HGETALL', KEYS[2])}
""")

#: With one bucket: the JSON of a session found through its claim, or nil.
#: KEYS: claims. ARGV: session id, prefix of session hashes.
GET_INLINE: Final = Script("""
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return false end
return redis.call('HGET', ARGV[2] .. string.sub(held, 3), ARGV[1])
""")

#: Claim a session id for a user if nobody holds it. KEYS: claims, claim times.
#: ARGV: id, ``o:<user>``. Reply: ``{1}`` held by this user now, or ``{0, claim, age}``
#: someone's claim and how many milliseconds ago it was taken.
CLAIM: Final = Script("""
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], now)
  return {1}
end
if held == ARGV[2] then return {1} end
return {0, held, now - tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')}
""")

#: Compare and set a claim. KEYS: claims, claim times. ARGV: id, expected claim, new claim
#: ("" deletes). Reply: 1 if it was the expected one (and now changed), else 0.
CAS_CLAIM: Final = Script("""
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
end
return 1
""")

#: Fence a user before taking a claim away from it: if the user holds the session, reply 1;
#: else bump its claim epoch, so that no claim it took before can be used by a commit, and
#: reply 0. KEYS: claim epoch, sessions. ARGV: id.
FENCE: Final = Script("""
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
redis.call('INCR', KEYS[1])
return 0
""")

#: Record the key layout unless one is recorded, and return the recorded one.
#: KEYS: meta. ARGV: layout version, buckets. Reply: ``{layout, buckets}``.
INIT_META: Final = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'layout', ARGV[1], 'buckets', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'layout', 'buckets')
""")
