"""Router writers -> four stream shards spread over the cluster's nodes -> two loaders ->
PostgreSQL, through the cluster client: nothing lost, nothing stored twice, everything acked."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from its_common import streams
from its_common.clock import FEED_CLOCK_KEY, WORKER_CLOCK_KEY
from its_common.events import Trade, encode_frame
from its_common.streams import Stream, StreamLayout
from its_router.batching import Frame
from its_router.metrics import RouterMetrics
from its_router.writer import StreamWriter, WorkerIdentity
from tests.conditions import wait_until
from tests.loader.conftest import (
    _restore_logging,
    db_url,
    make_settings,
    query,
    scalar,
    start_loader,
)

from .test_cluster_client import node_of

__all__ = ["_restore_logging", "db_url", "start_loader"]

SYMBOLS = ("NVDA", "MSFT", "AAPL", "AMZN", "TSLA", "GOOG", "INTC", "IBM")
T0 = 1_795_000_000_000
SHARDS = 4


def mixed_frame(round_: int, per_symbol: int) -> Frame:
    """A frame of every symbol interleaved (the router splits it per shard)."""
    trades = []
    for k in range(per_symbol):
        for n, symbol in enumerate(SYMBOLS):
            seq = round_ * 1_000 + k * len(SYMBOLS) + n
            trades.append(Trade(symbol, 4, f"{symbol}-{seq}", 3, 100.0, 10, T0 + seq, seq))
    return Frame(streams.now_ms(), encode_frame(trades))


async def test_sharded_streams_over_the_cluster_reach_the_database_exactly_once(
    redis_cluster, redis_client: Any, db_url: str, start_loader
) -> None:
    layout = StreamLayout(SHARDS)
    names = layout.names(Stream.TRADES)
    nodes = {node_of(redis_client, name) for name in names}
    assert len(nodes) >= 2, "the shards must spread over several nodes"

    writers = [
        StreamWriter(
            redis_client,
            RouterMetrics.create(CollectorRegistry()),
            batch_max_events=1_000,
            hold_max_events=100_000,
            layout=layout,
            worker=WorkerIdentity(index, "run-1"),  # the workers' clock script runs too
        )
        for index in range(2)
    ]
    rounds, per_symbol = 10, 25
    for round_ in range(rounds):
        writer = writers[round_ % 2]
        writer.hold_frames([mixed_frame(round_, per_symbol)])
        assert await writer.flush()
    total = rounds * per_symbol * len(SYMBOLS)
    for shard, name in enumerate(names):
        for entry_id, fields in await redis_client.xrange(name):
            for event in streams.decode_entry(entry_id, fields).events:
                assert layout.shard_of(event.symbol) == shard  # type: ignore[union-attr]
    assert await redis_client.hget(FEED_CLOCK_KEY, "run") == b"run-1"  # set by the script
    assert set(await redis_client.hkeys(WORKER_CLOCK_KEY)) == {b"w0", b"w1"}

    replicas = [
        start_loader(
            make_settings(
                redis_cluster.url,
                db_url,
                streams="trades",
                consumer=name,
                stream_shards=SHARDS,
                redis_cluster=True,
            )
        )
        for name in ("l1", "l2")
    ]
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == total, 60)
    stored = query(db_url, "SELECT symbol, count(DISTINCT sequence) FROM trades GROUP BY 1")
    assert sorted(stored) == sorted((s, rounds * per_symbol) for s in SYMBOLS)

    async def all_acked() -> bool:
        for name in names:
            if (await redis_client.xpending(name, "loader"))["pending"]:
                return False
        return True

    await wait_until(all_acked)
    for replica in replicas:
        await replica.stop()
    assert scalar(db_url, "SELECT count(*) FROM trades") == total
