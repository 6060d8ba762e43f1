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
:data:`BATCH` is given a bucket's shared keys and its tag, and names the keys of each user
itself (tag, letter, user): they are in the same slot, which the declared keys route the call to.

With one bucket (the default on a single server) the claims live in the same slot as every
user, and the batch script checks and writes them itself: everything is one atomic step.
With several buckets (the default in a cluster) a new session id's claim usually lives in
another slot, so :mod:`~assistant_sessions.adapters.redis` takes it with :data:`CLAIM` before
the commit runs; see there for the protocol that keeps ids unique across users.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["BATCH", "CAS_CLAIM", "CLAIM", "FENCE", "INIT_META", "Script"]

#: Reply codes of a commit entry of :data:`BATCH` (its reply, or the first element of it).
APPLIED: Final = 0
VERSION: Final = 1
DUPLICATE: Final = 2
NEED_CLAIM: Final = 3
#: The first element of an entry's reply when the entry failed in Redis (its error follows).
FAILED: Final = -1


class Script:
    """A Lua script and its SHA-1, for ``EVALSHA`` with a fallback to ``EVAL``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


#: The per-user operations of any number of users of one bucket, in one call: each *entry*
#: is applied in order, on its own (an entry that fails replies its error, and the others
#: still apply). So one script call serves every load and commit of a batch whose users
#: share a slot: on a single server with one bucket, all of them.
#:
#: KEYS: the bucket's claims, its due zsets of created, active, suspended and expired, and its
#: recency zset (``KeyLayout.shared``). ARGV: the bucket's tag ``P:{bK}:``, inline claims
#: ("1"/"0"), this writer's lease token; then one argument per entry, its fields joined by NUL
#: (no field holds one: ids never do, and the JSON escapes control characters):
#:
#: ``L, user``
#:     The user's version and sessions, read atomically: ``{version, {id, json, ...}}``.
#: ``G, id`` (inline claims only)
#:     The JSON of the session found through its claim, or nil.
#: ``C, user, expected version, upserts n, deletes m, claim epoch, lease ms, ...``
#:     One user's commit; then per upsert: id, JSON, state (1-4), due score, recency score,
#:     claimed beforehand ("1"/"0"); then per delete: its id. Checks the version, then that
#:     every new session id is free (inline claims) or was claimed beforehand at the
#:     current claim epoch (the proof names the epoch), then applies upserts and deletes to
#:     the sessions hash and both indexes, and bumps the version. Reply: ``0`` applied,
#:     ``{1, version, {id, json...}, wait}`` version conflict, the user as it is now (what
#:     the caller reloads next) and how many milliseconds another writer's lease has left
#:     (0: none), ``{2}`` duplicate id, ``{3, epoch, id...}`` these new ids need a claim
#:     first (and the proof must name this epoch).
#:
#: An entry that fails in Redis (a key of its user holding the wrong type, say) replies
#: ``{-1, error}``, having written nothing: its writes begin after every key they touch was
#: read, and a shared key of the wrong type fails the whole call before a commit runs.
#:
#: A writer that keeps losing version races to writers in other processes asks for a
#: *lease* (lease ms > 0): on its next conflict it takes the user's lease (unless another
#: writer holds one), and while the lease lives, commits of other writers are refused as
#: conflicts, so the starving writer's next commit gets through; it drops the lease.
#:
#: Commands of a commit that touches one session: ``MGET`` (version, lease, epoch),
#: ``HGET`` (the stored session, whose state says which sweep index holds it), ``HSET``,
#: ``ZADD`` to the sweep index and to the recency index, ``SET`` of the version; a
#: ``ZREM`` more when the state changed. A session id is new when the user's hash lacks it.
BATCH: Final = Script("""
local claims, recency = KEYS[1], KEYS[6]
local tag, inline, token = ARGV[1], ARGV[2] == '1', ARGV[3]
local STATES = {created = 1, active = 2, suspended = 3, expired = 4}

local function fields(entry)
  local f, from = {}, 1
  while true do
    local stop = string.find(entry, '\\0', from, true)
    if not stop then
      f[#f + 1] = string.sub(entry, from)
      return f
    end
    f[#f + 1] = string.sub(entry, from, stop - 1)
    from = stop + 1
  end
end

-- The sweep index (1-4) of a session stored as this library writes it (compact JSON with
-- the id first and the state before the metadata); nil for any other text.
local function stored_state(json)
  if string.sub(json, 1, 7) ~= '{"id":"' then return nil end
  return STATES[string.match(json, '"state":"(%l+)"')]
end

local function version_of(key, stored)
  local version = tonumber(stored or redis.call('GET', key) or '0')
  if not version then error('the version at ' .. key .. ' is not a number') end
  return version
end

local function load(f)
  local user = f[2]
  return {version_of(tag .. 'v:' .. user, false), redis.call('HGETALL', tag .. 's:' .. user)}
end

local function get(f)
  local id = f[2]
  local held = redis.call('HGET', claims, id)
  if not held then return false end
  return redis.call('HGET', tag .. 's:' .. string.sub(held, 3), id)
end

local function commit(f)
  local user, n, m = f[2], tonumber(f[4]), tonumber(f[5])
  local vkey, skey, lkey = tag .. 'v:' .. user, tag .. 's:' .. user, tag .. 'l:' .. user
  local got = redis.call('MGET', vkey, lkey, tag .. 'e:' .. user)
  local version, lease = version_of(vkey, got[1]), got[2]
  if version ~= tonumber(f[3]) or (lease and lease ~= token) then
    local wait = 0
    if lease and lease ~= token then
      wait = redis.call('PTTL', lkey)
    elseif f[7] ~= '0' and not lease then
      redis.call('SET', lkey, token, 'PX', f[7])
    end
    return {1, version, redis.call('HGETALL', skey), wait}
  end
  local owner, epoch = 'o:' .. user, got[3] or '0'
  local stale = epoch ~= f[6]
  local olds = {}
  local need, missing = {3, epoch}, false
  for u = 8, 7 + n * 6, 6 do
    local id = f[u]
    local old = redis.call('HGET', skey, id)
    olds[u] = old
    if not old then
      if inline then
        local held = redis.call('HGET', claims, id)
        if held and held ~= owner
          and redis.call('HEXISTS', tag .. 's:' .. string.sub(held, 3), id) == 1 then
          if lease then redis.call('DEL', lkey) end
          return {2}
        end
      else
        need[#need + 1] = id
        if stale or f[u + 5] ~= '1' then missing = true end
      end
    end
  end
  if missing then return need end
  local named = #user .. ':' .. user
  for d = 8 + n * 6, 7 + n * 6 + m do
    local id = f[d]
    if redis.call('HDEL', skey, id) == 1 then
      local member = named .. id
      for s = 2, 6 do redis.call('ZREM', KEYS[s], member) end
      if inline and redis.call('HGET', claims, id) == owner then
        redis.call('HDEL', claims, id)
      end
    end
  end
  for u = 8, 7 + n * 6, 6 do
    local id, state, old = f[u], tonumber(f[u + 2]), olds[u]
    local member = named .. id
    redis.call('HSET', skey, id, f[u + 1])
    local was = old and stored_state(old)
    if was ~= state then
      if was then
        redis.call('ZREM', KEYS[1 + was], member)
      else
        for s = 1, 4 do
          if s ~= state then redis.call('ZREM', KEYS[1 + s], member) end
        end
      end
    end
    redis.call('ZADD', KEYS[1 + state], f[u + 3], member)
    redis.call('ZADD', recency, f[u + 4], member)
    if inline and not old then redis.call('HSET', claims, id, owner) end
  end
  redis.call('SET', vkey, version + 1)
  if lease then redis.call('DEL', lkey) end
  return 0
end

-- A shared key of the wrong type would fail commits half-way through their writes: before
-- the first commit, refuse the whole call if one does, so that nothing is written.
local function broken_shared_key()
  for i = 1, 6 do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'none' and kind ~= (i == 1 and 'hash' or 'zset') then return KEYS[i] end
  end
  return nil
end

local OPS = {C = commit, L = load, G = get}
local replies, checked = {}, false
for at = 4, #ARGV do
  local f = fields(ARGV[at])
  local op = OPS[f[1]]
  if not op then return redis.error_reply('ERR unknown batch entry ' .. tostring(f[1])) end
  if op == commit and not checked then
    local broken = broken_shared_key()
    if broken then
      return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of '
        .. 'value: ' .. broken)
    end
    checked = true
  end
  local ok, reply = pcall(op, f)
  if not ok then
    if type(reply) == 'table' then reply = reply.err end
    reply = {-1, tostring(reply)}
  end
  replies[#replies + 1] = reply
end
return replies
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
