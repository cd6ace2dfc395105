"""The Lua scripts: each admission is one script, so it is atomic across every node.

Redis runs a script alone (no other command interleaves), so "count what the live nodes
hold, compare with the limit, add" cannot be split by another node's admission. Scripts are
sent once and then run by their SHA-1 (``EVALSHA``); a Redis that forgot them (a restart,
``SCRIPT FLUSH``) answers NOSCRIPT and ``connection.Link`` sends the text again.

Numbers: Redis's Lua 5.1 has only doubles, exact for integers below 2**53, so amounts and
limits are checked against :data:`MAX_AMOUNT` in Python, counts go to Redis as the strings
Python sent (a node writes its field as its whole holding, ``HSET``, never a delta), and
times are written with ``string.format('%.0f')`` (Lua's own ``tostring`` would print 1.7e+15).

Liveness: a hash field is ``<node_id>#<incarnation>`` and counts while the node's lease key
``<prefix>:node:<node_id>`` holds that incarnation. A node that died (its key expired) or
restarted (a new incarnation) no longer counts, and the first script that reads the hash
deletes the field. These lease keys are read by name inside the scripts rather than passed as
KEYS, which a single Redis (or a replicated primary) allows and Redis Cluster does not.

Clocks: windows use Redis's ``TIME``, so the nodes' own clocks never matter. Scripts are
replicated as their effects (the only mode of Redis 7, the default since 5), which is what
lets a script read ``TIME`` and still write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = [
    "ACQUIRE",
    "BLOCKS",
    "LEASE",
    "LEAVE",
    "MAX_AMOUNT",
    "NOTE_FAILURE",
    "RATE",
    "RELEASE",
    "TOTAL",
    "Script",
]

#: Amounts and limits must stay below this (2**53: exact in Lua's doubles). In nano-units of
#: money that is 9,007,199.25 currency units held or allowed on one key.
MAX_AMOUNT = 2**53


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


_NOW_US = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function int(x) return string.format('%.0f', x) end
"""

# Sum of what the live nodes hold in a hash, deleting the fields of the dead ones. ``own`` is
# the calling node's field, already known alive ('' to check every field). ``seen_prefix``
# ('' for none): a field whose lease is gone still counts while its ``seen`` key lives (the
# grace a node's credit holds outlive it by, until its calls are settled in the ledger).
_LIVE_TOTAL = """
local function live_total(hold, node_prefix, own, seen_prefix)
  local fields = redis.call('HGETALL', hold)
  local total = 0
  for i = 1, #fields, 2 do
    local name = fields[i]
    local alive = name == own
    if not alive then
      local at = string.find(name, '#[^#]*$')
      if at then
        local lease = redis.call('GET', node_prefix .. string.sub(name, 1, at - 1))
        alive = lease == string.sub(name, at + 1)
      end
    end
    if not alive and seen_prefix ~= '' then
      alive = redis.call('EXISTS', seen_prefix .. name) == 1
    end
    if alive then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', hold, name)
    end
  end
  return total
end
"""

ACQUIRE = Script(
    "acquire",
    _LIVE_TOTAL
    + """
-- KEYS: hold hash, own lease key. ARGV: node key prefix, own field, incarnation, this
-- node's holding after the acquire (absolute: its book plus the amount), limit, seen key
-- prefix ('' unless dead holders count for their grace)
-- -> {1, total after} admitted, {0, total} refused, {-1, 0} this node's lease is not held
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {-1, 0} end
local total = live_total(KEYS[1], ARGV[1], ARGV[2], ARGV[6])
local others = total - tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if others + tonumber(ARGV[4]) > tonumber(ARGV[5]) then return {0, total} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
return {1, others + tonumber(ARGV[4])}
""",
)

RELEASE = Script(
    "release",
    """
-- KEYS: hold hash. ARGV: own field, amount, this node's holding after (absolute).
-- -> what of the amount was not in Redis (0: all of it was)
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local amount = tonumber(ARGV[2])
local after = tonumber(ARGV[3])
if after > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local short = after + amount - held
if short < 0 then return 0 end
if short > amount then return amount end
return short
""",
)

TOTAL = Script(
    "total",
    _LIVE_TOTAL
    + """
-- KEYS: hold hash. ARGV: node key prefix, seen key prefix ('' for none).
-- -> what the live nodes hold (and the dead ones within their grace)
return live_total(KEYS[1], ARGV[1], '', ARGV[2])
""",
)

LEASE = Script(
    "lease",
    """
-- KEYS: own lease key, own seen key, then hold hashes to set this node's field in.
-- ARGV: incarnation, lease ms, own field, mode ('renew' or 'claim'), grace ms ('0': none),
-- then one amount per hash (0 deletes the field).
-- -> 1 the lease was held and is renewed; 0 it was gone ('claim': now taken again with the
-- amounts; 'renew': nothing done); -1 another process holds this node id.
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return -1 end
if not current and ARGV[4] == 'renew' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] ~= '0' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[5]) end
for i = 3, #KEYS do
  if ARGV[i + 3] == '0' then
    redis.call('HDEL', KEYS[i], ARGV[3])
  else
    redis.call('HSET', KEYS[i], ARGV[3], ARGV[i + 3])
  end
end
if current then return 1 end
return 0
""",
)

LEAVE = Script(
    "leave",
    """
-- KEYS: own lease key, own seen key, then hold hashes (the lease key alone: a dead
-- holder's lease dropped, its seen key left to run out). ARGV: incarnation, own field.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if #KEYS >= 2 then redis.call('DEL', KEYS[2]) end
for i = 3, #KEYS do redis.call('HDEL', KEYS[i], ARGV[2]) end
return 0
""",
)

RATE = Script(
    "rate",
    _NOW_US
    + """
-- KEYS: rate zset. ARGV: limit, window µs, member suffix. -> 1 admitted, 0 refused
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], int(now), int(now) .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], int(math.ceil(window / 1000) + 1))
return 1
""",
)

NOTE_FAILURE = Script(
    "note_failure",
    _NOW_US
    + """
-- KEYS: failures zset, blocks zset. ARGV: limit, window µs, block ms, member suffix, IP.
-- -> 1 this failure reached the limit: the IP is blocked (a longer block is kept), 0 not
local window = tonumber(ARGV[2])
local block_ms = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], int(now), int(now) .. ':' .. ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
if block_ms > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  local now_ms = math.floor(now / 1000)
  local ends = now_ms + block_ms
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now_ms))
  local current = redis.call('ZSCORE', KEYS[2], ARGV[5])
  if not current or tonumber(current) < ends then
    redis.call('ZADD', KEYS[2], int(ends), ARGV[5])
  end
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[2], int(tonumber(last[2]) - now_ms + 1))
  return 1
end
redis.call('PEXPIRE', KEYS[1], int(math.ceil(window / 1000) + 1))
return 0
""",
)

BLOCKS = Script(
    "blocks",
    _NOW_US
    + """
-- KEYS: blocks zset. ARGV: one IP, or '' for all. Ended blocks are trimmed first.
-- -> {ip, ms left, ip, ms left, ...} for the IPs blocked now
local now_ms = math.floor(now / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now_ms))
local found = {}
if ARGV[1] ~= '' then
  local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if ends then found = {ARGV[1], ends} end
else
  found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now_ms), '+inf', 'WITHSCORES')
end
for i = 2, #found, 2 do found[i] = int(tonumber(found[i]) - now_ms) end
return found
""",
)
