"""The router as a real process (2 write workers, 4 stream shards) against the real simulator and
the three-primary cluster: its events land in the shards of several nodes, it is ready (PING),
beats (heartbeat found by a SCAN of every node), trims without error and dead-letters nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from its_common import streams
from its_common.clock import FEED_CLOCK_KEY
from its_common.streams import Stream, StreamLayout
from tests.router.harness import Router, http, router, simulator, wait_until

from .cluster import RedisClusterServers

SYMBOLS = ("NVDA", "MSFT", "AAPL")


@pytest.fixture
def rc(redis_cluster: RedisClusterServers) -> Iterator[Any]:
    client = RedisCluster.from_url(redis_cluster.url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


def metrics_text(rt: Router) -> str:
    status, text = http("GET", f"http://127.0.0.1:{rt.http_port}/metrics")
    assert status == 200
    return str(text)


def shard_events(rc: Any, layout: StreamLayout) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for shard in range(layout.shards):
        for entry_id, fields in rc.xrange(layout.name(Stream.TRADES, shard)):
            out.setdefault(shard, []).extend(streams.decode_entry(entry_id, fields).events)
    return out


def test_the_router_writes_sharded_streams_over_the_cluster(
    tmp_path: Path, redis_cluster: RedisClusterServers, rc: Any
) -> None:
    layout = StreamLayout(4)
    env = {
        "ITS_REDIS_CLUSTER": "true",
        "ITS_STREAM_SHARDS": "4",
        "ITS_ROUTER_WORKERS": "2",
        "ITS_SYMBOLS": ",".join(SYMBOLS),
    }
    for shard in range(4):  # a group, as the loader's: the trimmer then keeps what it reads
        rc.xgroup_create(layout.name(Stream.TRADES, shard), "loader", id="0", mkstream=True)
    with (
        simulator(tmp_path, "--symbols", ",".join(SYMBOLS)) as sim,
        router(tmp_path, redis_cluster.url, sim, **env) as rt,
    ):
        wait_until(
            lambda: (
                {e.symbol for es in shard_events(rc, layout).values() for e in es} == set(SYMBOLS)
            ),
            60,
            "trades of every symbol",
        )
        by_shard = shard_events(rc, layout)
        for shard, events in by_shard.items():
            assert {layout.shard_of(e.symbol) for e in events} == {shard}
        nodes = {rc.get_node_from_key(layout.name(Stream.TRADES, s)).name for s in by_shard}
        assert len(nodes) == 2  # NVDA and MSFT in g3, AAPL in g0: two primaries
        assert rc.xlen(Stream.TRADES) == 0
        assert int(rc.hget(FEED_CLOCK_KEY, "event_ms")) > 0  # the workers' clock script
        assert wait_until(lambda: rt.readyz()[0] == 200, 20, "ready")
        assert wait_until(lambda: list(rc.scan_iter(match="its:heartbeat:router:*")), 20)
        trimmed = f'its_stream_trim_retained_entries{{stream="{layout.name(Stream.TRADES, 3)}"}}'
        assert wait_until(lambda: trimmed in metrics_text(rt), 20, "a trim pass over a shard")
        assert rt.metric("its_stream_trim_errors_total") == 0, rt.log()
        assert rc.xlen(Stream.DEAD_LETTER) == 0
        assert "CROSSSLOT" not in rt.log() and "MOVED" not in rt.log()
