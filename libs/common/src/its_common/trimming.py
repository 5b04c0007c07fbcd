"""Lag-aware stream trimming: no entry leaves Redis unread without a record.

Writers XADD without MAXLEN; one periodic trimmer (the router runs it) bounds every stream of a
policy table (:data:`its_common.streams.DEFAULT_TRIM`):

- **The policy says what may go**: entries beyond the policy's MAXLEN (sized from the stream's
  budget and its observed entry size: the larger of ``MEMORY USAGE``'s estimate, which samples
  the oldest nodes, and the size of the newest entries, so growing batches are sized right) and
  entries older than its age bound.
- **The groups say what may not**: while Redis' ``used_memory`` is under the high-water mark, an
  entry goes only once every consumer group has read and acked it. The safe point of a stream is
  the minimum over its groups of last-delivered-id (exclusive of later ids) and the oldest pending
  id (XINFO GROUPS, XPENDING summary); trimming is ``XTRIM MINID`` below it, so a lagging group
  keeps its backlog.
- **Memory wins at the high-water mark**: over it, the policy is applied regardless of the groups.
  What that removes unread is counted (``its_stream_trimmed_entries_total{outcome="unread"}``) and
  logged as an error (``alert=stream_trimmed_unread``); the consumers then see the hole and publish
  it as a ``trimmed_unread`` gap window (:mod:`its_common.consumer`) for the loader to backfill.
- A stream without consumer groups (nobody reads it through a group) is trimmed by the policy.

The MAXLEN cut is found inside Redis (a Lua script), so no entry payload crosses the network and
the check and the trim are atomic: when no entry is at or after the safe point (every group caught
up), or the stream has no group, it is a plain exact ``XTRIM MAXLEN``; otherwise the script walks
the oldest entries below the safe point in small chunks and trims with an exact ``MINID``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from its_common.backoff import Backoff
from its_common.rediscluster import memory_info
from its_common.streams import DEFAULT_TRIM, MIB, TrimPolicy, now_ms

log = logging.getLogger("its.trimming")

# Redis runs with maxmemory 200 MB (noeviction; the memory alert fires at 180 MB). The stream
# budgets of DEFAULT_TRIM add up to ~130 MiB; above this mark unread entries are trimmed anyway.
DEFAULT_HIGH_WATER_BYTES: Final = 160 * MIB
# A writer that reports what it writes (note_written) starts a pass after this many bytes, so
# memory grows past the policies by at most this much plus one pass, whatever the write rate.
DEFAULT_PASS_BYTES: Final = 16 * MIB
WALK_LIMIT: Final = 10_000  # entries one script call walks (bounds how long Redis is blocked)
SCAN_CHUNK: Final = 100  # entries per XRANGE of the MAXLEN walk (its reply is buffered)

StreamId = tuple[int, int]
NEWEST_SAMPLE: Final = 20  # newest entries whose size sizes a stream's MAXLEN

# KEYS[1] the stream, ARGV[1] how many of its newest entries: their bytes (ids, field names and
# values) and their count, measured inside Redis. MEMORY USAGE with a few samples reads the
# stream's *oldest* nodes: after a quiet start (small entries) a busy feed's large batches would
# be sized by the small ones, MAXLEN would come out huge and nothing would be trimmed.
_NEWEST_SIZE_SCRIPT: Final = """
local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', tonumber(ARGV[1]))
local bytes = 0
for _, entry in ipairs(entries) do
  bytes = bytes + #entry[1] + 16
  for _, value in ipairs(entry[2]) do bytes = bytes + #value + 2 end
end
return {bytes, #entries}
"""

# KEYS[1] the stream. ARGV: [1] MINID of the age bound ('' for none), [2] the XRANGE end bound
# entries must stay under ('+' for none, '(<id>' exclusive), [3] MAXLEN (-1 for none), [4] chunk,
# [5] walk limit. Drops entries below the age MINID, then the oldest entries beyond MAXLEN (at most
# the walk limit of them when it has to walk), never one at or above the end bound. Returns the
# number of entries removed.
_TRIM_SCRIPT: Final = """
local key, age_minid, bound = KEYS[1], ARGV[1], ARGV[2]
local maxlen, chunk, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local removed = 0
if age_minid ~= '' then
  removed = redis.call('XTRIM', key, 'MINID', age_minid)
end
if maxlen < 0 then return removed end
local excess = redis.call('XLEN', key) - maxlen
if excess <= 0 then return removed end
if bound ~= '+' and #redis.call('XRANGE', key, string.sub(bound, 2), '+', 'COUNT', 1) == 0 then
  bound = '+'  -- nothing at or after the bound: every entry was read
end
if bound == '+' then
  return removed + redis.call('XTRIM', key, 'MAXLEN', maxlen)
end
excess = math.min(excess, limit)
local seen, last, start = 0, false, '-'
while seen < excess do
  local want = math.min(chunk, excess - seen)
  local rows = redis.call('XRANGE', key, start, bound, 'COUNT', want)
  if #rows == 0 then break end
  seen = seen + #rows
  last = rows[#rows][1]
  if #rows < want then break end
  start = '(' .. last
end
if not last then return removed end
local after = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)
if #after == 0 then
  return removed + redis.call('XTRIM', key, 'MAXLEN', 0)
end
return removed + redis.call('XTRIM', key, 'MINID', after[1][1])
"""


def parse_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What one pass removed from one stream: entries every group had read (or, for a stream
    without groups, what the policy dropped) and entries some group had not read."""

    read: int = 0
    unread: int = 0


class TrimMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.trimmed = Counter(
            "its_stream_trimmed_entries",
            "Entries trimmed, by outcome: read (every group had read and acked them, or the "
            "stream has no group), unread (over the memory high-water mark, before some group "
            "read them: the consumers report them as gap windows)",
            ["stream", "outcome"],
            registry=registry,
        )
        self.backlog = Gauge(
            "its_stream_trim_retained_entries",
            "Entries kept beyond the policy's MAXLEN because a group has not read them",
            ["stream"],
            registry=registry,
        )
        self.over_high_water = Gauge(
            "its_stream_trim_over_high_water",
            "1 while Redis used_memory is at or above the trimmer's high-water mark",
            registry=registry,
        )
        self.errors = Counter(
            "its_stream_trim_errors", "Trim passes that failed on Redis", registry=registry
        )


async def read_bound(redis: aioredis.Redis, stream: str) -> StreamId | None:
    """The exclusive id below which every group of ``stream`` has read and acked every entry;
    None when the stream has no consumer group."""
    groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    if not groups:
        return None
    bound: StreamId | None = None
    for group in groups:
        last_ms, last_seq = parse_id(group["last-delivered-id"])
        group_bound = (last_ms, last_seq + 1)
        if int(group.get("pending") or 0) > 0:
            summary = await redis.xpending(stream, group["name"])
            oldest = summary.get("min")
            if oldest is not None:
                group_bound = min(group_bound, parse_id(oldest))
        bound = group_bound if bound is None else min(bound, group_bound)
    return bound


class StreamTrimmer:
    """Trims every stream of ``policies`` every ``interval_s`` (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        registry: CollectorRegistry,
        *,
        policies: Mapping[str, TrimPolicy] | None = None,
        high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
        interval_s: float = 1.0,
        pass_bytes: int = DEFAULT_PASS_BYTES,
        backoff: Backoff | None = None,
    ) -> None:
        if high_water_bytes <= 0 or interval_s <= 0 or pass_bytes <= 0:
            raise ValueError("high_water_bytes, interval_s and pass_bytes must be positive")
        self.redis = redis
        self.policies: Mapping[str, TrimPolicy] = (
            policies if policies is not None else {str(s): p for s, p in DEFAULT_TRIM.items()}
        )
        self.high_water_bytes = high_water_bytes
        self.interval_s = interval_s
        self.pass_bytes = pass_bytes
        self._written = 0
        self._wake = asyncio.Event()
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.metrics = TrimMetrics(registry)
        self._script = redis.register_script(_TRIM_SCRIPT)
        self._newest_size = redis.register_script(_NEWEST_SIZE_SCRIPT)

    async def run(self, stopping: asyncio.Event) -> None:
        """Trim until ``stopping`` is set; Redis errors are retried with backoff, never fatal."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                await self.trim_once()
            except (RedisError, OSError) as exc:
                self.metrics.errors.inc()
                log.warning("stream trimming failed (%s); retrying with backoff", exc)
                await self.backoff.sleep(stopping)
                continue
            self.backoff.reset()
            await self._until_next_pass(stopping)

    def note_written(self, nbytes: int) -> None:
        """A writer added ``nbytes`` to the streams: after ``pass_bytes``, trim without waiting."""
        self._written += nbytes
        if self._written >= self.pass_bytes:
            self._written = 0
            self._wake.set()

    async def _until_next_pass(self, stopping: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=self.interval_s, return_when="FIRST_COMPLETED")
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def trim_once(self) -> dict[str, TrimResult]:
        """One pass over every stream; returns what was removed, per stream."""
        info = await memory_info(self.redis)
        over = int(info["used_memory"]) >= self.high_water_bytes
        self.metrics.over_high_water.set(1 if over else 0)
        results: dict[str, TrimResult] = {}
        for stream, policy in self.policies.items():
            result = await self.trim_stream(stream, policy, over_high_water=over)
            if result.read or result.unread:
                results[stream] = result
        return results

    async def trim_stream(
        self, stream: str, policy: TrimPolicy, *, over_high_water: bool
    ) -> TrimResult:
        length = int(await self.redis.xlen(stream))
        if length == 0:
            return TrimResult()
        maxlen = await self._maxlen(stream, policy, length)
        age_minid = (now_ms() - int(policy.max_age_s * 1000), 0) if policy.max_age_s else None
        bound = await read_bound(self.redis, stream)
        if bound is None:
            removed = await self._trim(stream, age_minid, None, maxlen)
            self._count(stream, "read", removed)
            return TrimResult(read=removed)
        safe_age = min(age_minid, bound) if age_minid is not None else None
        read = await self._trim(stream, safe_age, bound, maxlen)
        self._count(stream, "read", read)
        unread = 0
        if over_high_water:
            unread = await self._trim(stream, age_minid, None, maxlen)
            if unread:
                self._count(stream, "unread", unread)
                log.error(
                    "Redis memory over the high-water mark (%d bytes): trimmed %d entries of %s "
                    "that a consumer group had not read; the consumers report them as gap windows",
                    self.high_water_bytes,
                    unread,
                    stream,
                    extra={"alert": "stream_trimmed_unread", "stream": stream, "entries": unread},
                )
        self.metrics.backlog.labels(stream).set(max(0, length - read - unread - maxlen))
        return TrimResult(read=read, unread=unread)

    async def _maxlen(self, stream: str, policy: TrimPolicy, length: int) -> int:
        if policy.budget_bytes is None:
            return policy.maxlen
        usage = await self.redis.memory_usage(stream, samples=5)
        newest_bytes, newest_count = await self._newest_size(keys=[stream], args=[NEWEST_SAMPLE])
        # the larger of the two: the budget holds whether entries grow or shrink over time
        observed = max(int(usage or 0) / length, int(newest_bytes) / max(int(newest_count), 1))
        return policy.maxlen_for(observed)

    async def _trim(
        self, stream: str, age_minid: StreamId | None, bound: StreamId | None, maxlen: int
    ) -> int:
        args: list[str | int] = [
            format_id(age_minid) if age_minid is not None else "",
            f"({format_id(bound)}" if bound is not None else "+",
            maxlen,
            SCAN_CHUNK,
            WALK_LIMIT,
        ]
        removed = 0
        while True:  # in slices of WALK_LIMIT, so other clients are served in between
            step = int(await self._script(keys=[stream], args=args))
            removed += step
            if step < WALK_LIMIT:
                return removed

    def _count(self, stream: str, outcome: str, removed: int) -> None:
        if removed:
            self.metrics.trimmed.labels(stream, outcome).inc(removed)
