"""Consumer liveness: who may be claimed from.

A consumer is dead only when both hold:

* its liveness key ``its:consumer:<tag>:<stream>|<group>|<consumer>`` is gone: every framework
  consumer refreshes it from its own task (independent of how long a handler runs) with a TTL of the
  death threshold, so a consumer busy with a slow batch or waiting out a database outage stays
  alive;
* Redis has not seen it for the threshold (XINFO CONSUMERS ``idle``: since its last attempted
  read or claim; on 7.2+ ``inactive`` is the time since its last successful one, which is never
  shorter), so a consumer that does not use this framework but still reads is never robbed.

A consumer never judges its peers right after its own Redis trouble: when Redis itself stalled
(paused, loading, a network cut), every peer looks idle and every key may have expired. See
:class:`StallGuard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.backoff import Backoff
from its_common.rediscluster import slot_tag
from its_common.streams import KEY_PREFIX

log = logging.getLogger("its.consumer.liveness")


def liveness_key(stream: str, group: str, consumer: str) -> str:
    """``its:consumer:<slot tag of the stream>:<stream>|<group>|<consumer>``: in the stream's
    Redis Cluster slot (the dead-consumer script reads both; its_common.rediscluster)."""
    return f"{KEY_PREFIX}:consumer:{slot_tag(stream)}:{stream}|{group}|{consumer}"


@dataclass(frozen=True, slots=True)
class PeerState:
    name: str
    pending: int
    idle_ms: int


def silent_peers(rows: list[dict[str, Any]], me: str, threshold_ms: int) -> list[PeerState]:
    """Peers Redis has not seen for ``threshold_ms`` (XINFO CONSUMERS rows)."""
    peers = []
    for row in rows:
        name = row["name"].decode() if isinstance(row["name"], bytes) else str(row["name"])
        if name == me:
            continue
        idle = int(row.get("idle", 0) or 0)
        if idle >= threshold_ms:
            peers.append(PeerState(name, int(row.get("pending", 0) or 0), idle))
    return peers


async def without_liveness(
    redis: aioredis.Redis, stream: str, group: str, peers: list[PeerState]
) -> list[PeerState]:
    """The peers whose liveness key is gone (dead)."""
    if not peers:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for peer in peers:
            pipe.exists(liveness_key(stream, group, peer.name))
        alive = await pipe.execute()
    return [peer for peer, exists in zip(peers, alive, strict=True) if not exists]


async def keep_alive(
    redis: aioredis.Redis,
    key: str,
    ttl_ms: int,
    stopping: asyncio.Event,
    guard: StallGuard | None = None,
) -> None:
    """Refresh ``key`` every ``ttl_ms / 4`` until ``stopping``; then delete it (a clean stop).

    A failed or slow refresh is reported to ``guard``: this consumer's key may have lapsed, and
    so may its peers' (a paused server), so nobody is judged for a while.
    """
    interval_s = max(ttl_ms / 4000, 0.05)
    retry = Backoff(initial_s=min(interval_s, 0.2), max_s=interval_s)
    while not stopping.is_set():
        started = time.monotonic()
        try:
            await redis.set(key, str(int(time.time() * 1000)), px=ttl_ms)
            retry.reset()
            wait_s = interval_s
            if guard is not None:
                guard.observe(started)
        except RedisError as exc:
            if guard is not None:
                guard.trouble()
            log.warning("liveness key %s not refreshed: %s", key, exc)
            wait_s = retry.next_delay()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), wait_s)
    try:
        await redis.delete(key)
    except RedisError as exc:
        log.info("liveness key %s left to expire: %s", key, exc)


class StallGuard:
    """Claims wait a full threshold after this consumer saw Redis fail or stall.

    A stall is a call that took longer than ``expected_ms + threshold_ms / 2``: after a paused or
    overloaded server every peer looks idle, so nobody may be judged until they had a chance to
    come back.
    """

    def __init__(self, threshold_ms: int, expected_ms: int) -> None:
        self.threshold_s = threshold_ms / 1000
        self.slow_s = (expected_ms + threshold_ms / 2) / 1000
        self._quiet_until = 0.0

    def trouble(self) -> None:
        self._quiet_until = time.monotonic() + self.threshold_s

    def observe(self, started: float) -> None:
        """Call after a Redis call that began at ``started`` (monotonic)."""
        if time.monotonic() - started > self.slow_s:
            self.trouble()

    def may_claim(self) -> bool:
        return time.monotonic() >= self._quiet_until
