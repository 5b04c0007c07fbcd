"""Heartbeats: each instance keeps a hash in Redis with a TTL; a missing key means it is gone.

Key ``its:heartbeat:<service>:<instance>`` holds service, instance, version, status, started_at,
ts (Unix ms) and ``counters`` (JSON of the service's key counters). TTL is three intervals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.streams import HEARTBEAT_PATTERN, heartbeat_key, now_ms

log = logging.getLogger("its.heartbeat")


def instance_name() -> str:
    """Pod name in Kubernetes (HOSTNAME), else host and pid."""
    import os

    return os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"


async def beat(
    client: aioredis.Redis,
    service: str,
    instance: str,
    version: str,
    status: str,
    counters: Mapping[str, float],
    ttl_s: float,
    started_ms: int,
) -> None:
    key = heartbeat_key(service, instance)
    mapping: dict[Any, Any] = {
        "service": service,
        "instance": instance,
        "version": version,
        "status": status,
        "started_at": str(started_ms),
        "ts": str(now_ms()),
        "counters": json.dumps(dict(counters)),
    }
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=mapping)
        pipe.pexpire(key, int(ttl_s * 1000))
        await pipe.execute()


async def heartbeat_loop(
    client: aioredis.Redis,
    service: str,
    version: str,
    interval_s: float,
    status: Callable[[], str],
    counters: Callable[[], Mapping[str, float]],
    on_failure: Callable[[Exception], None],
) -> None:
    """Beat every ``interval_s`` until cancelled; a failed beat is reported, never fatal."""
    instance = instance_name()
    started = now_ms()
    while True:
        try:
            await beat(
                client, service, instance, version, status(), counters(), 3 * interval_s, started
            )
        except (RedisError, OSError) as exc:
            on_failure(exc)
        await asyncio.sleep(interval_s)


async def read_heartbeats(client: aioredis.Redis) -> list[dict[str, Any]]:
    """Every live heartbeat, with ``age_s`` added (for the dashboard and the alerter)."""
    beats: list[dict[str, Any]] = []
    async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=200):
        raw: dict[Any, Any] = await client.hgetall(key)
        if not raw:
            continue
        beat_: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
        beat_["counters"] = json.loads(beat_.get("counters", "{}"))
        beat_["age_s"] = (now_ms() - int(beat_.get("ts", "0"))) / 1000
        beats.append(beat_)
    return sorted(beats, key=lambda b: (b.get("service", ""), b.get("instance", "")))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
