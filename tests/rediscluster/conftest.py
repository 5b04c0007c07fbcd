"""Fixtures of the Redis Cluster suite: one three-primary cluster per session, emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from its_common.streams import connect

from .cluster import RedisClusterServers


@pytest.fixture(scope="session")
def redis_cluster(work_dir: Path) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(work_dir / "redis-cluster")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterServers) -> AsyncIterator[aioredis.Redis]:
    """The client services get with ITS_REDIS_CLUSTER=true, on an empty cluster."""
    client = connect(redis_cluster.url, cluster=True)
    cluster: RedisCluster = client  # type: ignore[assignment]
    await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_client(cluster_client: aioredis.Redis) -> aioredis.Redis:
    """The suites re-run here (test_suites_on_cluster.py) get the cluster client."""
    return cluster_client
