"""Samples: Prometheus text from /metrics, Redis INFO and stream lengths, heartbeat counters."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from its_common.rediscluster import server_info
from its_common.streams import HEARTBEAT_PATTERN, Stream


@dataclass(frozen=True, slots=True)
class Sample:
    service: str
    metric_name: str
    metric_value: float
    tags: dict[str, str] = field(default_factory=dict)


def parse_metrics(service: str, text: str, prefixes: Sequence[str]) -> list[Sample]:
    """Prometheus exposition text to samples; histogram buckets and ``_created`` are skipped."""
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith(("_bucket", "_created")):
                continue
            if prefixes and not name.startswith(tuple(prefixes)):
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            samples.append(Sample(service, name, value, dict(sample.labels)))
    return samples


async def scrape(
    session: aiohttp.ClientSession, service: str, url: str, prefixes: Sequence[str]
) -> list[Sample]:
    """One target: its samples plus ``up`` (1 reachable, 0 not)."""
    try:
        async with session.get(url) as response:
            text = await response.text()
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return [Sample(service, "up", 0.0, {"target": url})]
    return [Sample(service, "up", 1.0, {"target": url}), *parse_metrics(service, text, prefixes)]


async def redis_samples(
    client: aioredis.Redis, streams: Iterable[str] = tuple(Stream)
) -> list[Sample]:
    """Used memory, keyspace hit ratio, clients and every stream's length."""
    info = await server_info(client)
    hits = float(info.get("keyspace_hits", 0))
    misses = float(info.get("keyspace_misses", 0))
    ratio = hits / (hits + misses) if hits + misses else 1.0
    samples = [
        Sample("redis", "redis_used_memory_bytes", float(info.get("used_memory", 0))),
        Sample("redis", "redis_used_memory_peak_bytes", float(info.get("used_memory_peak", 0))),
        Sample("redis", "redis_maxmemory_bytes", float(info.get("maxmemory", 0))),
        Sample("redis", "redis_connected_clients", float(info.get("connected_clients", 0))),
        Sample("redis", "redis_keyspace_hits_total", hits),
        Sample("redis", "redis_keyspace_misses_total", misses),
        Sample("redis", "redis_keyspace_hit_ratio", ratio),
    ]
    pipe = client.pipeline(transaction=False)
    names = list(streams)
    for name in names:
        pipe.xlen(name)
    for name, length in zip(names, await pipe.execute(), strict=True):
        samples.append(Sample("redis", "redis_stream_length", float(length), {"stream": name}))
    return samples


async def heartbeat_samples(client: aioredis.Redis) -> list[Sample]:
    """The counters each instance publishes in its heartbeat hash."""
    samples = []
    async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=100):
        data: dict[Any, Any] = await client.hgetall(key)
        service = data.get(b"service", b"").decode()
        instance = data.get(b"instance", b"").decode()
        if not service:
            continue
        samples.append(Sample(service, "heartbeat_alive", 1.0, {"instance": instance}))
        try:
            counters = json.loads(data.get(b"counters", b"{}"))
        except ValueError:
            continue
        for name, value in counters.items():
            if isinstance(value, int | float) and math.isfinite(value):
                samples.append(
                    Sample(service, f"heartbeat_{name}", float(value), {"instance": instance})
                )
    return samples
