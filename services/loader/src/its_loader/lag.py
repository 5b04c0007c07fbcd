"""Redis memory and rows/s sampling; lag figures for the heartbeat.

Stream lag gauges (``its_consumer_*``) are the consumer framework's; :func:`sample_lag` stays as
a one-off reader of any group's lag (the tests and operators use it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from its_common.consumer import StreamConsumer, consumer_counters
from its_common.rediscluster import memory_info
from its_loader.database import sleep_or_stop
from its_loader.metrics import LoaderMetrics

log = logging.getLogger("its.loader.lag")


@dataclass(frozen=True, slots=True)
class Lag:
    pending: int
    oldest_pending_age_s: float
    backlog_age_s: float


def _id_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


async def sample_lag(redis: aioredis.Redis, stream: str, group: str) -> Lag:
    now = time.time() * 1000
    try:
        summary: Any = await redis.xpending(stream, group)
    except ResponseError:  # no stream or no group yet
        return Lag(0, 0.0, 0.0)
    pending = int(summary.get("pending", 0) or 0)
    oldest = summary.get("min")
    oldest_age = 0.0
    if pending and oldest is not None:
        oldest_age = max(0.0, (now - _id_ms(oldest)) / 1000)
    backlog_age = 0.0
    groups: Any = await redis.xinfo_groups(stream)
    for info in groups:
        name = info.get("name")
        name = name.decode() if isinstance(name, bytes) else name
        if name != group:
            continue
        last = info.get("last-delivered-id")
        if last is not None:
            last_text = last.decode() if isinstance(last, bytes) else str(last)
            after: Any = await redis.xrange(stream, min=f"({last_text}", max="+", count=1)
            if after:
                backlog_age = max(0.0, (now - _id_ms(after[0][0])) / 1000)
    return Lag(pending, oldest_age, backlog_age)


async def lag_loop(
    redis: aioredis.Redis,
    consumers: Sequence[StreamConsumer[Any, Any]],
    metrics: LoaderMetrics,
    counters: dict[str, float],
    memory_warn_bytes: int,
    interval_s: float,
    stopping: asyncio.Event,
) -> None:
    """Every ``interval_s``: rows/s per stream, Redis memory (warn when high), and the
    consumers' lag (sampled by the consumer framework) in the heartbeat counters."""
    labels = [consumer.config.label for consumer in consumers]
    last_rows = {label: counters.get(f"rows_{label}", 0.0) for label in labels}
    last_t = time.monotonic()
    memory_high = False
    while not await sleep_or_stop(stopping, interval_s):
        counters.update(consumer_counters(consumers))
        try:
            memory = await memory_info(redis)
            used = int(memory.get("used_memory", 0))
            metrics.redis_used_memory.set(used)
            counters["redis_used_memory"] = used
            high = used > memory_warn_bytes
            metrics.redis_memory_high.set(1 if high else 0)
            if high and not memory_high:
                log.warning(
                    "Redis used_memory %.1f MB is over %.1f MB: the loader is falling behind "
                    "(database down?); streams are trimmed by length, entries may be lost",
                    used / 2**20,
                    memory_warn_bytes / 2**20,
                )
            elif memory_high and not high:
                log.info("Redis used_memory back under the threshold (%.1f MB)", used / 2**20)
            memory_high = high
        except RedisError as exc:
            log.warning("Redis memory sampling failed: %s", exc)
        now = time.monotonic()
        elapsed = max(now - last_t, 1e-9)
        for label in labels:
            value = counters.get(f"rows_{label}", 0.0)
            rate = (value - last_rows[label]) / elapsed
            metrics.rows_per_second.labels(label).set(rate)
            counters[f"rows_per_s_{label}"] = round(rate, 1)
            last_rows[label] = value
        last_t = now
