"""The lease outside a cluster: a Redis key with a fencing token.

``its:leader:{<name>}`` holds ``<identity>|<token>`` with a PX expiry; ``its:leader:{<name>}:token``
is the counter INCRemented at every new holding, so a later holder always has a larger token (a
new counter starts at the Redis clock in microseconds, so a lost counter never restarts below the
tokens the database fence has already seen).
Taking, extending and releasing are Lua scripts: each check and its write are one atomic step.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from its_common.leader.lease import LeaseTiming

KEY_PREFIX: Final = "its:leader:"


def lease_key(name: str) -> str:
    # The hash tag keeps the lease and its counter in one Redis Cluster slot: the scripts below
    # touch both (its_common.rediscluster).
    return f"{KEY_PREFIX}{{{name}}}"


def token_key(name: str) -> str:
    return f"{KEY_PREFIX}{{{name}}}:token"


# Returns the token when the caller holds the lease after the call, -1 when someone else does.
ACQUIRE_OR_RENEW: Final = """
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and string.sub(v, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(v, sep + 1))
  end
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- A new counter starts at the clock in microseconds: tokens stay above any earlier ones (the
  -- database fence keeps the highest seen) even when Redis lost the old counter.
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
end
redis.call('INCR', KEYS[2])
-- The counter's own text: Lua's number formatting would round a 16-digit token.
local token = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return tonumber(token)
"""

RELEASE: Final = """
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  if sep and string.sub(v, 1, sep - 1) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
  end
end
return 0
"""


class RedisLease:
    def __init__(
        self, redis: aioredis.Redis, name: str, identity: str, timing: LeaseTiming
    ) -> None:
        if "|" in identity:
            raise ValueError("a lease identity cannot contain '|'")
        self.redis = redis
        self.name = name
        self.identity = identity
        self.timing = timing

    async def acquire_or_renew(self) -> int | None:
        token = await self.redis.eval(
            ACQUIRE_OR_RENEW,
            2,
            lease_key(self.name),
            token_key(self.name),
            self.identity,
            str(int(self.timing.lease_s * 1000)),
        )
        value = int(token)
        return None if value < 0 else value

    async def release(self) -> None:
        await self.redis.eval(RELEASE, 1, lease_key(self.name), self.identity)

    async def holder(self) -> str | None:
        """The identity holding the lease now (None when free)."""
        raw = await self.redis.get(lease_key(self.name))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text.split("|", 1)[0]
