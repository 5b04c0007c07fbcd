"""The market clock: what time it is on the market, for every service.

ITS runs against Polygon in real time and against its simulator replaying or accelerating a
session, so "now" for market purposes (regular hours, the minute in progress, staleness of a
price, a gap window's bounds) is the **feed's clock**: the newest event time the router has
written, kept in the hash :data:`FEED_CLOCK_KEY` (``event_ms``: that event time; ``wall_ms``: the
wall clock when it was written). Only when no feed time exists yet (nothing received since Redis
was emptied) or a service is configured with ``clock="wall"`` is the wall clock used.

Within one router process the feed clock never goes backwards; a new router process starts
from the stored value so a replay that restarts at 09:30 moves the clock back once the new
router writes its first event (the stored value is overwritten, not maxed across processes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from its_common.streams import now_ms

FEED_CLOCK_KEY: Final = "its:clock:feed"
# Where a new router process must open its restart gap at the latest (the oldest value wins):
# with several write workers (ITS_ROUTER_WORKERS > 1) the newest event time each has written
# (field ``w<index>``: a worker killed with frames in hand may be behind the feed clock another
# one wrote), and the start of gaps a writer has not published yet (``gap`` or ``gap<index>``:
# a router killed while a reconnect window was still settling).
WORKER_CLOCK_KEY: Final = "its:clock:router-workers"
# Hash fields set only when newer: ``KEYS[1]`` the hash, ``ARGV[1]`` the ordering field,
# ``ARGV[2]`` its new value, ``ARGV[3]`` the writing run (a router process), then field/value
# pairs. Within one run the hash never goes back (several workers write it out of order); a new
# run overwrites it (a replay restarting at 09:30 moves the clock back, as with one process).
ADVANCE_HASH_LUA: Final = """
local run = redis.call('HGET', KEYS[1], 'run')
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
if run == ARGV[3] and stored ~= nil and stored > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'run', ARGV[3], unpack(ARGV, 4))
return 1
"""
ClockMode = Literal["feed", "wall"]


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def feed_clock_mapping(event_ms: int, written_ms: int | None = None) -> dict[Any, Any]:
    """The hash fields the router writes (in the same pipeline as the events)."""
    return {"event_ms": str(event_ms), "wall_ms": str(written_ms or now_ms())}


async def read_feed_clock(redis: aioredis.Redis) -> int | None:
    """The feed's newest written event time (UTC ms), or None when there is none."""
    raw = await redis.hget(FEED_CLOCK_KEY, "event_ms")
    return int(raw) if raw else None


async def read_feed_clock_written(redis: aioredis.Redis) -> tuple[int, int] | None:
    """``(event_ms, wall_ms)``: the feed's newest event time and when it was written."""
    raw = await redis.hmget(FEED_CLOCK_KEY, ["event_ms", "wall_ms"])
    if not raw[0] or not raw[1]:
        return None
    return int(raw[0]), int(raw[1])


class MarketClock:
    """``await clock.now_ms()``: the feed's clock (mode ``feed``), the wall clock otherwise
    (also without Redis: a process that has no feed has no feed time)."""

    def __init__(self, redis: aioredis.Redis | None, mode: ClockMode = "feed") -> None:
        self.redis = redis
        self.mode = mode

    async def feed_ms(self) -> int | None:
        """The feed's time, None when there is none (or the clock is not in feed mode)."""
        if self.mode != "feed" or self.redis is None:
            return None
        return await read_feed_clock(self.redis)

    async def now_ms(self) -> int:
        feed = await self.feed_ms()
        return feed if feed is not None else now_ms()

    async def now(self) -> datetime:
        return to_datetime(await self.now_ms())
