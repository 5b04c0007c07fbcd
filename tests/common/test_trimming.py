"""The lag-aware trimmer against a real Redis: lagging groups keep their backlog while memory
allows, read entries go, the high-water mark trims anyway (counted, logged, reported by the
consumers as a gap window), the age bound applies, streams without groups follow the policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from its_common import trimming
from its_common.consumer import ConsumerConfig, Delivery, EntryHandler, StreamConsumer
from its_common.gaps import decode_gap
from its_common.streams import Stream, TrimPolicy, ensure_group, now_ms
from its_common.trimming import StreamTrimmer, TrimResult, format_id, parse_id
from tests.conditions import wait_until

STREAM = "its:stream:test-trim"
POLICY = TrimPolicy(maxlen=10)
ROOMY = 1 << 40  # a high-water mark memory never reaches
TIGHT = 1  # a high-water mark memory is always over


def trimmer(
    redis: aioredis.Redis, high_water: int = ROOMY, policy: TrimPolicy = POLICY
) -> StreamTrimmer:
    return StreamTrimmer(
        redis,
        CollectorRegistry(),
        policies={STREAM: policy},
        high_water_bytes=high_water,
        interval_s=0.05,
    )


def trimmed(trim: StreamTrimmer, outcome: str, stream: str = STREAM) -> float:
    value = trim.metrics.trimmed.labels(stream, outcome)._value.get()
    return float(value)


async def add(redis: Any, count: int, start_ms: int = 1000) -> list[str]:
    ids = []
    for i in range(count):
        new_id = await redis.xadd(STREAM, {b"i": str(i).encode()}, id=f"{start_ms + i}-0")
        ids.append(new_id.decode())
    return ids


async def ids(redis: Any) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await redis.xrange(STREAM)]


async def read(redis: Any, group: str, count: int, ack: bool = True) -> list[str]:
    reply = await redis.xreadgroup(group, "c", {STREAM: ">"}, count=count)
    got = [entry_id.decode() for entry_id, _ in reply[0][1]] if reply else []
    if ack and got:
        await redis.xack(STREAM, group, *got)
    return got


def test_stream_ids_round_trip() -> None:
    assert parse_id(b"1700000000000-3") == (1_700_000_000_000, 3)
    assert parse_id("5") == (5, 0)
    assert format_id((5, 0)) == "5-0"


async def test_a_lagging_group_keeps_its_unread_entries_past_maxlen(redis_client):
    await ensure_group(redis_client, STREAM, "loader")
    written = await add(redis_client, 30)
    assert await read(redis_client, "loader", 5) == written[:5]
    trim = trimmer(redis_client)
    assert await trim.trim_once() == {STREAM: TrimResult(read=5)}
    assert await ids(redis_client) == written[5:]  # 25 > MAXLEN 10: the backlog stays
    assert trim.metrics.backlog.labels(STREAM)._value.get() == 15
    assert await trim.trim_once() == {}


async def test_entries_every_group_read_and_acked_are_trimmed_to_maxlen(redis_client):
    await ensure_group(redis_client, STREAM, "loader")
    await ensure_group(redis_client, STREAM, "features")
    written = await add(redis_client, 30)
    await read(redis_client, "loader", 30)
    await read(redis_client, "features", 12)  # the slowest group sets the bound
    trim = trimmer(redis_client)
    await trim.trim_once()
    assert await ids(redis_client) == written[12:]
    await read(redis_client, "features", 18)
    await trim.trim_once()
    assert await ids(redis_client) == written[20:]  # everyone read everything: MAXLEN 10
    assert trimmed(trim, "read") == 20
    assert trimmed(trim, "unread") == 0


async def test_delivered_but_unacked_entries_are_kept(redis_client):
    await ensure_group(redis_client, STREAM, "loader")
    written = await add(redis_client, 30)
    await read(redis_client, "loader", 20, ack=False)  # a crashed consumer's pending entries
    await read(redis_client, "loader", 10)
    await trimmer(redis_client).trim_once()
    assert await ids(redis_client) == written  # the oldest pending entry is the bound
    await redis_client.xack(STREAM, "loader", *written[:15])
    await trimmer(redis_client).trim_once()
    assert await ids(redis_client) == written[15:]


async def test_a_stream_without_groups_is_trimmed_by_the_policy(redis_client):
    written = await add(redis_client, 30)
    trim = trimmer(redis_client)
    assert await trim.trim_once() == {STREAM: TrimResult(read=20)}
    assert await ids(redis_client) == written[20:]


async def test_age_trimming_removes_read_entries_older_than_the_policy_age(redis_client):
    await ensure_group(redis_client, STREAM, "loader")
    now = now_ms()
    old = await add(redis_client, 3, start_ms=now - 120_000)
    unread_old = await add(redis_client, 2, start_ms=now - 100_000)
    fresh = await add(redis_client, 2, start_ms=now - 1_000)
    await read(redis_client, "loader", 3)
    aged = TrimPolicy(maxlen=1_000, max_age_s=60)
    trim = trimmer(redis_client, policy=aged)
    await trim.trim_once()
    assert await ids(redis_client) == unread_old + fresh  # old and read: gone; unread: kept
    await read(redis_client, "loader", 10)
    await trim.trim_once()
    assert await ids(redis_client) == fresh
    assert old  # (the three oldest were the ones read first)


async def test_age_trimming_of_a_stream_without_groups(redis_client):
    now = now_ms()
    await add(redis_client, 3, start_ms=now - 120_000)
    fresh = await add(redis_client, 2, start_ms=now - 1_000)
    await trimmer(redis_client, policy=TrimPolicy(maxlen=1_000, max_age_s=60)).trim_once()
    assert await ids(redis_client) == fresh


async def test_over_the_high_water_mark_unread_entries_are_trimmed_counted_logged_and_reported(
    redis_client, caplog
):
    await ensure_group(redis_client, STREAM, "loader")
    written = await add(redis_client, 30)
    await read(redis_client, "loader", 5)
    trim = trimmer(redis_client, high_water=TIGHT)
    with caplog.at_level(logging.ERROR, logger="its.trimming"):
        assert await trim.trim_once() == {STREAM: TrimResult(read=5, unread=15)}
    assert await ids(redis_client) == written[20:]
    assert trimmed(trim, "unread") == 15
    assert trim.metrics.over_high_water._value.get() == 1
    alerts = [r for r in caplog.records if getattr(r, "alert", None) == "stream_trimmed_unread"]
    assert len(alerts) == 1 and getattr(alerts[0], "entries", None) == 15

    # The consumer framework sees the hole and publishes it as a gap window.
    handled: list[str] = []

    async def handle(batch: Sequence[Delivery[dict[bytes, bytes]]]) -> None:
        handled.extend(d.entry_id for d in batch)

    stopping = asyncio.Event()
    registry = CollectorRegistry()
    config = ConsumerConfig(
        stream=STREAM, group="loader", consumer="c", block_ms=100, gap_symbols=("NVDA",)
    )
    consumer = StreamConsumer(
        redis_client, EntryHandler(handle), config, stopping, registry=registry
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: handled == written[20:])
        gaps = await wait_until(lambda: redis_client.xrange(Stream.GAPS))
        window = decode_gap(gaps[0][1])
        assert window.reason == "trimmed_unread"
        assert (window.start_ms, window.end_ms) == (parse_id(written[4])[0], 1020)
        labels = {"stream": STREAM, "group": "loader", "outcome": "trimmed_unread"}
        assert (registry.get_sample_value("its_consumer_entries_total", labels) or 0) >= 1
    finally:
        stopping.set()
        await asyncio.wait_for(task, 20)


async def test_the_trimmer_runs_periodically_until_stopped(redis_client):
    await add(redis_client, 30)
    trim = trimmer(redis_client)
    stopping = asyncio.Event()
    task = asyncio.create_task(trim.run(stopping))

    async def trimmed_to_maxlen() -> bool:
        return int(await redis_client.xlen(STREAM)) == POLICY.maxlen

    await wait_until(trimmed_to_maxlen)
    await add(redis_client, 5, start_ms=5000)
    await wait_until(trimmed_to_maxlen)
    stopping.set()
    await asyncio.wait_for(task, 5)


def test_the_trimmer_refuses_nonsense_settings(redis_client) -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamTrimmer(redis_client, CollectorRegistry(), high_water_bytes=0)


async def test_a_writer_report_of_pass_bytes_starts_a_pass_before_the_interval(redis_client):
    trim = StreamTrimmer(
        redis_client,
        CollectorRegistry(),
        policies={STREAM: POLICY},
        high_water_bytes=ROOMY,
        interval_s=3600,
        pass_bytes=1_000,
    )

    async def trimmed_to_maxlen() -> bool:
        return int(await redis_client.xlen(STREAM)) == POLICY.maxlen

    await add(redis_client, 30)
    stopping = asyncio.Event()
    task = asyncio.create_task(trim.run(stopping))
    try:
        await wait_until(trimmed_to_maxlen)  # the first pass
        await add(redis_client, 30, start_ms=5000)
        trim.note_written(999)
        await asyncio.sleep(0.2)
        assert await redis_client.xlen(STREAM) == 40  # under pass_bytes: waits for the interval
        trim.note_written(1)
        await wait_until(trimmed_to_maxlen)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


def test_the_observed_maxlen_keeps_the_byte_budget_for_large_entries() -> None:
    policy = TrimPolicy.for_budget(60 * 1024 * 1024, 2_000)
    assert policy.maxlen_for(180_000) == 349  # ~60 MiB of 2,000-event entries
    assert policy.maxlen_for(10**9) == 100  # the floor


async def test_a_long_walk_below_the_read_point_runs_in_slices(redis_client, monkeypatch):
    monkeypatch.setattr(trimming, "WALK_LIMIT", 7)  # one script call walks at most 7 entries
    await ensure_group(redis_client, STREAM, "loader")
    written = await add(redis_client, 30)
    await read(redis_client, "loader", 25)
    assert await trimmer(redis_client).trim_once() == {STREAM: TrimResult(read=20)}
    assert await ids(redis_client) == written[20:]
