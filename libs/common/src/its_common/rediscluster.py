"""One place for Redis Cluster: which client a process gets, and the slot rule for keys.

**The client.** ``ITS_REDIS_CLUSTER=true`` (``REDIS_CLUSTER``; the chart's
``redis.external.cluster``) makes :func:`connect_redis` return a
:class:`redis.asyncio.cluster.RedisCluster` seeded from ``REDIS_URL`` (any node); otherwise the
plain single-node client, as before. Every service gets its client here (or from
:func:`its_common.streams.connect` with the same flag).

**The slot rule.** Redis Cluster runs a Lua script or a MULTI/EXEC only when every key it names
hashes to the same slot; otherwise it answers CROSSSLOT. So keys used together in one script or
transaction must share a hash tag (the part of the name between the first ``{`` and the next
``}``). In ITS:

- a stream and its consumer liveness keys (:func:`its_common.consumer.liveness_key`): the
  dead-consumer script checks the liveness key and deletes the consumer atomically. The liveness
  key carries the stream's own slot tag (:func:`slot_tag`);
- a lease and its fencing-token counter (:mod:`its_common.leader.redis_lease`):
  ``its:leader:{<name>}`` and ``its:leader:{<name>}:token``;
- a market-data shard's streams: ``its:stream:{g<k>}:...``
  (:class:`its_common.streams.StreamLayout`);
- single-key scripts and transactions (trimming, the router's clock hash, heartbeats, a
  consumer's checked read) are safe by construction.

Operations that may touch keys of different slots are either non-transactional pipelines (the
cluster client splits them per node) or written to need no atomicity across slots: the
dead-letter hand-off adds the record before it acks (:meth:`ConsumerOps.dead_letter`), and a
consumer reads one stream per XREADGROUP. Node-wide commands (INFO, SCAN) go to every primary:
:func:`memory_info` answers for the fullest node, and ``scan_iter`` of the cluster client walks
every primary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from its_common.settings import BaseServiceSettings
from its_common.streams import connect


def connect_redis(settings: BaseServiceSettings) -> aioredis.Redis:
    """The process's Redis client: a cluster client when ``ITS_REDIS_CLUSTER`` is set."""
    return connect(settings.redis_url_with_password(), cluster=settings.redis_cluster)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def slot_tag(key: str) -> str:
    """A hash tag that puts another key in ``key``'s slot: ``{g3}`` for ``its:stream:{g3}:trades``
    (its own tag), ``{its:stream:trades}`` for a key without one (the whole name is hashed)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start : end + 1]
    if "{" in key or "}" in key:
        raise ValueError(f"no hash tag reproduces the slot of {key!r}")
    return "{" + key + "}"


async def memory_info(client: aioredis.Redis) -> dict[str, Any]:
    """``INFO memory`` of the one Redis, or of the cluster's fullest primary (each node has its
    own ``maxmemory``: the first to fill refuses writes)."""
    if not is_cluster(client):
        info: dict[str, Any] = await client.info("memory")
        return info
    cluster: Any = client
    replies: dict[str, dict[str, Any]] = await cluster.info(
        "memory", target_nodes=RedisCluster.PRIMARIES
    )
    return max(replies.values(), key=lambda info: int(info.get("used_memory", 0)))


async def server_info(client: aioredis.Redis, section: str | None = None) -> dict[str, Any]:
    """``INFO [section]`` of the one Redis; for a cluster, the counters summed over the primaries
    (non-numeric fields from the first)."""
    if not is_cluster(client):
        info: dict[str, Any] = await client.info(section)
        return info
    cluster: Any = client
    replies: dict[str, dict[str, Any]] = await cluster.info(
        section, target_nodes=RedisCluster.PRIMARIES
    )
    merged: dict[str, Any] = {}
    for info in replies.values():
        for name, value in info.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[name] = merged.get(name, 0) + value
            else:
                merged.setdefault(name, value)
    return merged


# A read over streams on different slots polls each slot with this block at most: the cluster
# cannot block one XREAD across nodes, and a reply waits for every slot's read.
CLUSTER_POLL_MS: Final = 50


async def xread_streams(
    client: aioredis.Redis, cursors: Mapping[str, str], count: int, block_ms: int | None
) -> list[Any]:
    """XREAD of several streams (``[[stream, entries], ...]``). On a cluster, streams of
    different slots are read by one XREAD per slot, concurrently, each blocking at most
    :data:`CLUSTER_POLL_MS` (one XREAD naming keys of several slots is refused: CROSSSLOT)."""
    if not is_cluster(client):
        plain: Any = await client.xread(dict(cursors), count=count, block=block_ms)  # type: ignore[arg-type]
        return list(plain or [])
    by_slot: dict[int, dict[str, str]] = {}
    for stream, cursor in cursors.items():
        by_slot.setdefault(key_slot(stream.encode()), {})[stream] = cursor
    block = block_ms if len(by_slot) == 1 or block_ms is None else min(block_ms, CLUSTER_POLL_MS)
    replies: list[Any] = await asyncio.gather(
        *(client.xread(group, count=count, block=block) for group in by_slot.values())  # type: ignore[arg-type]
    )
    merged: list[Any] = []
    for reply in replies:
        merged.extend(reply or [])
    return merged
