"""The Redis Streams contract against a real Redis server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis.asyncio as aioredis

from its_common import streams
from its_common.events import MinuteAgg, Trade
from its_common.streams import EntryFormatError, Stream, TrimPolicy

TRADES = [
    Trade("NVDA", 4, str(i), 3, 180.0 + i / 100, 100, 1_764_081_000_000 + i, i) for i in range(5)
]


def test_entry_round_trip_carries_batch_receive_time_and_trace() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    fields = streams.encode_entry("T", TRADES, received_ms=123, traceparent=tp)
    entry = streams.decode_entry(b"1-0", fields)
    assert entry.events == TRADES and entry.received_ms == 123
    assert entry.traceparent == tp and entry.event_type == "T" and entry.entry_id == "1-0"


def test_unknown_entry_version_is_rejected() -> None:
    fields = streams.encode_entry("T", TRADES)
    fields[b"v"] = b"2"
    with pytest.raises(EntryFormatError, match="unsupported format version"):
        streams.decode_entry("5-0", fields)


def test_count_mismatch_is_rejected() -> None:
    fields = streams.encode_entry("T", TRADES)
    fields[b"n"] = b"4"
    with pytest.raises(EntryFormatError, match="n=4"):
        streams.decode_entry("5-0", fields)


def test_every_stream_has_a_trim_policy_within_the_memory_budget() -> None:
    assert set(streams.DEFAULT_TRIM) == set(Stream)
    with pytest.raises(ValueError, match="positive"):
        TrimPolicy.for_budget(0, 10)


async def test_xadd_trims_to_maxlen(redis_client: aioredis.Redis) -> None:
    policy = TrimPolicy(maxlen=1000)
    fields = streams.encode_entry("T", TRADES[:1])
    async with redis_client.pipeline(transaction=False) as pipe:
        for _ in range(5000):
            await streams.add(pipe, Stream.TRADES, fields, policy)
        await pipe.execute()
    length = await redis_client.xlen(Stream.TRADES)
    assert 1000 <= length < 1200  # approximate trimming keeps whole nodes


async def test_trim_by_age_drops_old_entries(redis_client: aioredis.Redis) -> None:
    fields: dict[Any, Any] = streams.encode_entry("AM", [])
    old_id = f"{streams.now_ms() - 3_600_000}-0"
    await redis_client.xadd(Stream.BARS_1M, fields, id=old_id)
    new_id = streams.now_ms()
    await redis_client.xadd(Stream.BARS_1M, fields, id=f"{new_id}-0")
    assert await streams.trim_by_age(redis_client, Stream.BARS_1M, TrimPolicy(10)) == 0
    removed = await streams.trim_by_age(redis_client, Stream.BARS_1M, TrimPolicy(10, 60))
    assert removed == 1
    remaining: Any = await redis_client.xrange(Stream.BARS_1M)
    assert [entry_id for entry_id, _ in remaining] == [f"{new_id}-0".encode()]


async def test_group_read_and_ack(redis_client: aioredis.Redis) -> None:
    assert await streams.ensure_group(redis_client, Stream.BARS_1M, "loader")
    assert not await streams.ensure_group(redis_client, Stream.BARS_1M, "loader")  # idempotent
    bar = MinuteAgg("NVDA", 10.0, 1.0, 1.0, 1.0, 1.0, 0, 60_000)
    await streams.add(
        redis_client, Stream.BARS_1M, streams.encode_entry("AM", [bar]), TrimPolicy(100)
    )
    entries = await streams.read_group(redis_client, "loader", "c1", [Stream.BARS_1M], block_ms=100)
    assert len(entries) == 1
    stream, entry_id, fields = entries[0]
    assert stream == Stream.BARS_1M and streams.decode_entry(entry_id, fields).events == [bar]
    assert await streams.ack(redis_client, stream, "loader", [entry_id]) == 1
    pending = await redis_client.xpending(Stream.BARS_1M, "loader")
    assert pending["pending"] == 0


DEAD_CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from its_common import streams

    async def main():
        client = streams.connect(sys.argv[1])
        entries = await streams.read_group(client, "loader", "doomed", [sys.argv[2]], count=50)
        print(len(entries), flush=True)
        await asyncio.sleep(3600)  # never acks: killed with SIGKILL by the test

    asyncio.run(main())
    """
)


async def test_pending_entries_of_a_killed_consumer_are_claimed(
    redis_server, redis_client: aioredis.Redis
) -> None:
    stream = Stream.TRADES
    await streams.ensure_group(redis_client, stream, "loader")
    for trade in TRADES:
        await streams.add(redis_client, stream, streams.encode_entry("T", [trade]), TrimPolicy(100))
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", DEAD_CONSUMER, redis_server.url, stream],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    assert line.strip() == "5"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)

    pending = await redis_client.xpending(stream, "loader")
    assert pending["pending"] == 5
    # Too recent to claim with a long idle threshold: a live consumer keeps its entries.
    assert await streams.claim_stale(redis_client, stream, "loader", "rescuer", 60_000) == []
    await asyncio.sleep(0.2)
    claimed = await streams.claim_stale(redis_client, stream, "loader", "rescuer", 100)
    assert [streams.decode_entry(i, f).events[0] for _, i, f in claimed] == TRADES
    ids = [entry_id for _, entry_id, _ in claimed]
    counts = await streams.delivery_counts(redis_client, stream, "loader", ids)
    assert set(counts.values()) == {2}  # read once by the dead consumer, once by the rescuer
    assert await streams.ack(redis_client, stream, "loader", ids) == 5
    assert (await redis_client.xpending(stream, "loader"))["pending"] == 0


def test_stream_layout_keeps_todays_names_with_one_shard_and_hash_tags_with_more() -> None:
    from its_common.streams import DEFAULT_TRIM, SHARDED_STREAMS, StreamLayout

    one = StreamLayout()
    assert all(one.names(stream) == [stream.value] for stream in Stream)
    assert one.trim_policies() == {s.value: p for s, p in DEFAULT_TRIM.items()}
    four = StreamLayout(4)
    assert four.names(Stream.BARS_1M)[2] == "its:stream:{g2}:bars:1m"
    assert four.names(Stream.GAPS) == [Stream.GAPS.value]  # only market data is sharded
    assert four.for_symbol(Stream.TRADES, "NVDA") == four.name(Stream.TRADES, four.shard_of("NVDA"))
    assert StreamLayout(4).shard_of("NVDA") == four.shard_of("NVDA")  # stable (CRC-32)
    policies = four.trim_policies()
    trades = DEFAULT_TRIM[Stream.TRADES]
    shard = policies["its:stream:{g0}:trades"]
    assert trades.budget_bytes is not None and shard.budget_bytes == trades.budget_bytes // 4
    assert len(policies) == len(DEFAULT_TRIM) + 3 * len(SHARDED_STREAMS)
    assert four.expand(["its:stream:trades", "its:stream:gaps", "other"]) == [
        *four.names(Stream.TRADES),
        "its:stream:gaps",
        "other",
    ]
    assert one.expand(["its:stream:trades"]) == ["its:stream:trades"]
    with pytest.raises(ValueError):
        StreamLayout(0)
