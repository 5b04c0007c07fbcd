"""The router's writes never trim what a consumer group has not read (the zero-loss issue:
entries past MAXLEN used to be trimmed by XADD MAXLEN under a lagging loader, unread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from its_common import streams
from its_common.streams import Stream, TrimPolicy, ensure_group
from its_common.trimming import StreamTrimmer
from its_router.metrics import RouterMetrics
from its_router.writer import StreamWriter
from tests.router.harness import router, simulator, wait_until
from tests.router.test_writer import frame

MAXLEN = 1_000
WRITTEN = 1_500


@pytest.fixture
def small_trades_policy(monkeypatch: pytest.MonkeyPatch) -> TrimPolicy:
    policy = TrimPolicy(maxlen=MAXLEN)
    monkeypatch.setitem(streams.DEFAULT_TRIM, Stream.TRADES, policy)
    return policy


async def write_trades(redis: aioredis.Redis, count: int) -> None:
    writer = StreamWriter(
        redis,
        RouterMetrics.create(CollectorRegistry()),
        batch_max_events=count,
        hold_max_events=count,
        max_events_per_entry=1,
    )
    writer.hold_frames([frame(start, 1) for start in range(count)])  # an entry per frame
    assert await writer.flush()


async def test_a_lagging_group_keeps_every_unread_entry_the_router_writes(
    redis_client: aioredis.Redis, small_trades_policy: TrimPolicy
) -> None:
    await ensure_group(redis_client, Stream.TRADES, "loader")
    await write_trades(redis_client, WRITTEN)
    assert await redis_client.xlen(Stream.TRADES) == WRITTEN  # no MAXLEN on the write path

    trimmer = StreamTrimmer(
        redis_client, CollectorRegistry(), policies={Stream.TRADES: small_trades_policy}
    )
    await trimmer.trim_once()
    assert await redis_client.xlen(Stream.TRADES) == WRITTEN  # memory is fine: nothing unread goes

    reply: Any = await redis_client.xreadgroup("loader", "c", {Stream.TRADES: ">"}, count=WRITTEN)
    read_ids = [entry_id for entry_id, _ in reply[0][1]]
    assert len(read_ids) == WRITTEN
    await redis_client.xack(Stream.TRADES, "loader", *read_ids)
    await trimmer.trim_once()
    assert await redis_client.xlen(Stream.TRADES) == MAXLEN  # read by everyone: the policy applies


def test_the_router_process_runs_the_trimmer_with_the_age_bound(tmp_path: Path, redis_server):
    client: Any = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    try:
        # Decisions keep 7 days (DEFAULT_TRIM): an entry from 1970 goes, a fresh one stays.
        client.xadd(Stream.DECISIONS, {"v": "1"}, id="1000-0")
        fresh = client.xadd(Stream.DECISIONS, {"v": "1"})
        with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim) as rt:
            wait_until(lambda: client.xlen(Stream.DECISIONS) == 1, 30, "age trimming")
            assert [entry_id for entry_id, _ in client.xrange(Stream.DECISIONS)] == [fresh]
            assert rt.metric("its_stream_trimmed_entries_total", outcome="read") >= 1
            assert rt.metric("its_stream_trim_over_high_water") == 0
    finally:
        client.close()


async def test_the_byte_budget_holds_when_entries_grow_from_small_to_large(
    redis_client: aioredis.Redis,
) -> None:
    """A quiet feed writes small entries, then a busy one large batches (the whole market at
    its peak): the observed entry size must be the stream's, not its oldest entries' (Redis'
    MEMORY USAGE with a few samples reads only the first nodes), or MAXLEN comes out huge and
    nothing is trimmed until Redis is full."""
    await redis_client.delete(Stream.TRADES)
    await ensure_group(redis_client, Stream.TRADES, "loader")
    for i in range(300):
        await redis_client.xadd(Stream.TRADES, {"n": "1", "data": b"x" * 100, "i": str(i)})
    for i in range(300):
        await redis_client.xadd(Stream.TRADES, {"n": "450", "data": b"y" * 60_000, "i": str(i)})
    reply: Any = await redis_client.xreadgroup("loader", "c", {Stream.TRADES: ">"}, count=1_000)
    await redis_client.xack(Stream.TRADES, "loader", *[entry_id for entry_id, _ in reply[0][1]])
    budget = 8 * 1024 * 1024  # 139 of the large entries
    policy = TrimPolicy.for_budget(budget, 100)
    trimmer = StreamTrimmer(redis_client, CollectorRegistry(), policies={Stream.TRADES: policy})
    await trimmer.trim_once()
    usage = await redis_client.memory_usage(Stream.TRADES, samples=0)
    assert usage is not None and usage <= budget + 2 * 61_000
