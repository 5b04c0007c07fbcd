"""The client factory and the slot rule against a real three-primary Redis Cluster."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError

from its_common.consumer import liveness_key
from its_common.leader.redis_lease import lease_key, token_key
from its_common.rediscluster import (
    connect_redis,
    is_cluster,
    memory_info,
    server_info,
    slot_tag,
    xread_streams,
)
from its_common.settings import BaseServiceSettings
from its_common.streams import Stream, StreamLayout

from .cluster import RedisClusterServers


def slot(key: str) -> int:
    return key_slot(key.encode())


def node_of(cluster: RedisCluster, key: str) -> str:
    node = cluster.get_node_from_key(key)
    assert node is not None
    return str(node.name)


def test_the_setting_chooses_the_cluster_client_and_the_default_stays_single_node(
    redis_cluster: RedisClusterServers,
) -> None:
    plain = connect_redis(BaseServiceSettings(redis_url=redis_cluster.url))
    assert not is_cluster(plain)
    clustered = connect_redis(BaseServiceSettings(redis_url=redis_cluster.url, redis_cluster=True))
    assert is_cluster(clustered)


def test_the_env_variable_turns_cluster_mode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_REDIS_CLUSTER", "true")
    assert BaseServiceSettings().redis_cluster
    monkeypatch.delenv("ITS_REDIS_CLUSTER")
    assert not BaseServiceSettings().redis_cluster


async def test_the_plain_client_is_refused_a_key_of_another_node(redis_cluster, cluster_client):
    """Why the setting exists: a single-node client against a cluster gets MOVED."""
    plain = connect_redis(BaseServiceSettings(redis_url=redis_cluster.url))
    moved = 0
    try:
        for shard in range(4):
            try:
                await plain.xlen(StreamLayout(4).name(Stream.TRADES, shard))
            except MovedError:
                moved += 1
    finally:
        await plain.aclose()
    assert moved > 0


def test_keys_touched_together_share_a_slot() -> None:
    for stream in (Stream.TRADES.value, StreamLayout(4).name(Stream.TRADES, 3), "x{a}b"):
        assert slot(liveness_key(stream, "loader", "c1")) == slot(stream)
    assert slot(lease_key("router")) == slot(token_key("router"))
    assert slot_tag("its:stream:{g3}:trades") == "{g3}"
    assert slot_tag("its:stream:trades") == "{its:stream:trades}"
    with pytest.raises(ValueError):
        slot_tag("odd{}key{")


def test_the_shards_spread_over_the_nodes(redis_cluster: RedisClusterServers) -> None:
    layout = StreamLayout(4)
    per_node = 16384 // 3
    nodes = {min(slot(layout.name(Stream.TRADES, k)) // per_node, 2) for k in range(4)}
    assert len(nodes) >= 2


async def test_node_wide_commands_answer_for_the_whole_cluster(cluster_client) -> None:
    memory = await memory_info(cluster_client)
    assert int(memory["used_memory"]) > 0
    stats = await server_info(cluster_client, "stats")
    assert "keyspace_hits" in stats
    everything = await server_info(cluster_client)
    assert int(everything["connected_clients"]) >= 3
    assert await cluster_client.ping()


async def test_one_read_over_streams_of_several_nodes(cluster_client) -> None:
    layout = StreamLayout(4)
    names = layout.names(Stream.TRADES)
    assert len({slot(n) for n in names}) == 4
    with pytest.raises(Exception, match=r"(?i)slot"):
        await cluster_client.xread(dict.fromkeys(names, "0"))
    for k, name in enumerate(names):
        await cluster_client.xadd(name, {b"k": str(k).encode()})
    reply: list[Any] = await xread_streams(cluster_client, dict.fromkeys(names, "0"), 10, 100)
    got = {(s.decode() if isinstance(s, bytes) else s) for s, _ in reply}
    assert got == set(names)
    assert await xread_streams(cluster_client, dict.fromkeys(names, "$"), 10, 20) == []


async def test_heartbeats_are_written_and_found_on_every_node(cluster_client) -> None:
    from its_common.heartbeat import beat, read_heartbeats

    instances = [f"i{k}" for k in range(12)]
    for instance in instances:
        await beat(cluster_client, "loader", instance, "1", "ok", {"rows": 1.0}, 30, 0)
    nodes_used = {
        node_of(cluster_client, f"its:heartbeat:loader:{instance}") for instance in instances
    }
    assert len(nodes_used) >= 2
    beats = await read_heartbeats(cluster_client)
    assert sorted(b["instance"] for b in beats) == sorted(instances)
    assert all(b["counters"] == {"rows": 1.0} for b in beats)
