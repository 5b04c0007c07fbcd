"""The stream writer against a real Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from its_common import streams
from its_common.backoff import Backoff
from its_common.clock import FEED_CLOCK_KEY, WORKER_CLOCK_KEY
from its_common.events import MinuteAgg, Trade, encode_frame
from its_common.gaps import decode_gap
from its_common.localstack.servers import RedisServer
from its_common.streams import Stream
from its_router.batching import Frame
from its_router.metrics import RouterMetrics
from its_router.status import StatusPublisher, decode_status
from its_router.writer import StreamWriter

HOUR_MS = 3_600_000


def frame(start: int, count: int = 10, symbol: str = "NVDA") -> Frame:
    trades = [
        Trade(symbol, 4, str(i), 3, 100.0 + i / 100, 100, 1_764_081_000_000 + i, i)
        for i in range(start, start + count)
    ]
    return Frame(streams.now_ms(), encode_frame(trades))


async def stored_trades(client: Any) -> list[int]:
    sequences: list[int] = []
    for entry_id, fields in await client.xrange(Stream.TRADES):
        entry = streams.decode_entry(entry_id, fields)
        sequences += [event.sequence for event in entry.events]  # type: ignore[union-attr]
    return sequences


def nvda_writer(
    redis_client: Any,
    registry: CollectorRegistry | None = None,
    hold_max_events: int = 1_000,
    **options: Any,
) -> StreamWriter:
    """A writer for NVDA that publishes its gaps, in batches of at most 1,000 events."""
    return StreamWriter(
        redis_client,
        RouterMetrics.create(registry or CollectorRegistry()),
        batch_max_events=1_000,
        hold_max_events=hold_max_events,
        symbols=lambda: ["NVDA"],
        publish_gap=StatusPublisher(redis_client).publish_gap,
        **options,
    )


def settling_writer(redis_client: Any, now: list[float]) -> StreamWriter:
    """A writer for NVDA whose gaps settle for 1 s on the clock ``now[0]`` (moved by the test)."""
    return nvda_writer(redis_client, gap_settle_s=1.0, monotonic=lambda: now[0])


async def eventually(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_events_are_held_while_redis_is_down_and_overflow_becomes_a_gap(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    client = streams.connect(server.url, health_check_interval=0)
    registry = CollectorRegistry()
    metrics = RouterMetrics.create(registry)
    writer = StreamWriter(
        client,
        metrics,
        batch_max_events=1_000,
        hold_max_events=55,
        publish_gap=StatusPublisher(client).publish_gap,
        backoff=Backoff(0.05, 0.2),
    )
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(queue, stop))
    try:
        queue.put_nowait(frame(0))
        queue.put_nowait(frame(10))

        async def first_written() -> bool:
            return len(await stored_trades(client)) == 20

        await eventually(first_written)
        latest = await client.hgetall(streams.latest_trade_key("NVDA"))
        assert latest[b"q"] == b"19"

        await asyncio.to_thread(server.stop)
        for start in range(20, 100, 10):  # 80 events while down; the hold keeps at most 55
            queue.put_nowait(frame(start))
            await asyncio.sleep(0.05)
        await eventually(
            lambda: _true(writer.held_events <= 55 and queue.empty() and not writer.redis_ok)
        )
        dropped = registry.get_sample_value("router_dropped_events_total")
        assert dropped is not None and dropped >= 30
        assert registry.get_sample_value("router_redis_write_errors_total")

        await asyncio.to_thread(server.start)

        async def drained() -> bool:
            return writer.held_events == 0 and writer.redis_ok

        await eventually(drained)
        sequences = await stored_trades(client)
        kept = 20 + 80 - int(dropped)
        assert len(sequences) == kept == len(set(sequences))  # no loss beyond the counted drop
        assert sequences == sorted(sequences)  # order kept across the outage
        gap_entries: Any = await client.xrange(Stream.GAPS)
        gaps = [decode_gap(fields) for _, fields in gap_entries]
        assert gaps and all(g.reason == "buffer_overflow" for g in gaps)
        missing = set(range(100)) - set(sequences)
        covered = {
            s for s in missing for g in gaps if g.start_ms <= 1_764_081_000_000 + s < g.end_ms
        }
        assert covered == missing  # every dropped event lies in a published gap window
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await client.aclose()
        server.stop()


async def _true(value: bool) -> bool:
    return value


async def test_a_restart_gap_is_published_only_when_the_first_event_is_newer(redis_client: Any):
    """A router restarting behind the stored feed clock (the feed replays older events) has
    missed nothing between the two: no empty ``restart`` window (the alerter would report a 0 s
    data gap). A first event newer than the stored clock still closes a real window."""
    publisher = StatusPublisher(redis_client)
    writer = StreamWriter(
        redis_client,
        RouterMetrics.create(CollectorRegistry()),
        batch_max_events=1_000,
        hold_max_events=1_000,
        publish_gap=publisher.publish_gap,
    )
    stored_clock = 1_764_081_000_050 + HOUR_MS
    writer.open_gap(("NVDA",), "restart", since_ms=stored_clock)
    writer.hold_frames([frame(0)])  # events an hour behind the clock: the replay restarted
    assert await writer.flush()
    assert await redis_client.xlen(Stream.GAPS) == 0
    assert writer.open_gaps == []

    stored_clock = 1_764_081_000_050
    writer.open_gap(("NVDA",), "restart", since_ms=stored_clock)
    writer.hold_frames([frame(100)])  # events at ...100 to ...109: after the clock
    assert await writer.flush()
    gaps = [decode_gap(fields) for _, fields in await redis_client.xrange(Stream.GAPS)]
    assert [(g.start_ms, g.end_ms, g.reason) for g in gaps] == [
        (stored_clock, 1_764_081_000_109, "restart")
    ]


async def test_a_late_report_first_after_a_reconnect_does_not_close_its_gap_empty(
    redis_client: Any,
):
    """The first frame after a reconnect may hold nothing but a trade reported late (sent now,
    stamped up to 15 minutes earlier) or a corrected bar. The chaos soak lost such a trade: it
    closed the reconnect's window as empty, so the window (and the trades sent while the feed
    was down) was never backfilled. The window must wait for the first current event."""
    writer = nvda_writer(redis_client)
    writer.hold_frames([frame(0)])  # events at ...000 to ...009: the newest before the drop
    late = Trade("NVDA", 4, "late", 3, 100.0, 10, 1_764_081_000_000 - 5 * 60_000, 7, (12,))
    writer.hold_frames([Frame(streams.now_ms(), encode_frame([late]), "ws", "reconnect")])
    assert await writer.flush()
    assert await redis_client.xlen(Stream.GAPS) == 0  # not known yet how far the feed is
    writer.hold_frames([frame(60_000)])  # the first current events, a minute on
    assert await writer.flush()
    gaps = [decode_gap(fields) for _, fields in await redis_client.xrange(Stream.GAPS)]
    assert [(g.start_ms, g.end_ms, g.reason) for g in gaps] == [
        (1_764_081_000_009, 1_764_081_060_009, "reconnect")
    ]


async def test_an_invalid_event_becomes_a_gap_window_around_it(redis_client: Any):
    """A malformed frame's events go to the dead-letter stream; the trades in it are still the
    exchange's trades, so the window they lie in (from the newest event before the bad frame to
    the first event after it) is published as a gap for the loader to backfill."""
    writer = nvda_writer(redis_client)
    writer.hold_frames([frame(0)])  # events at ...000 to ...009
    writer.hold_frames([Frame(streams.now_ms(), b'[{"ev":"T","sym":"NVDA","p":')])
    writer.hold_frames([frame(20)])  # the next events: ...020 to ...029
    assert await writer.flush()
    gaps = [decode_gap(fields) for _, fields in await redis_client.xrange(Stream.GAPS)]
    assert [(g.symbols, g.start_ms, g.end_ms, g.reason) for g in gaps] == [
        (("NVDA",), 1_764_081_000_009, 1_764_081_000_029, "invalid_event")
    ]
    assert await redis_client.xlen(Stream.DEAD_LETTER) == 1


async def test_a_gap_closed_by_a_minute_bar_reaches_the_end_of_that_minute(redis_client: Any):
    """After a reconnect the first event may be the bar of a minute whose trades were not
    received (the bar comes at the minute's end; its ``s`` is the minute's start). The window
    must reach the bar's end, or that minute's trades are never backfilled (the chaos suite
    found 13:09:00-13:10:00 missing after a router restart closed at a 13:09 bar)."""
    writer = StreamWriter(
        redis_client,
        RouterMetrics.create(CollectorRegistry()),
        batch_max_events=1_000,
        hold_max_events=1_000,
        publish_gap=StatusPublisher(redis_client).publish_gap,
    )
    minute = 1_764_081_060_000
    writer.open_gap(("NVDA",), "restart", since_ms=minute - 30_000)
    bar = MinuteAgg(
        symbol="NVDA", volume=100, open=1.0, close=1.0, high=1.0, low=1.0,
        start=minute, end=minute + 60_000,
    )  # fmt: skip
    writer.hold_frames([Frame(streams.now_ms(), encode_frame([bar]))])
    assert await writer.flush()
    gaps = [decode_gap(fields) for _, fields in await redis_client.xrange(Stream.GAPS)]
    assert [(g.start_ms, g.end_ms) for g in gaps] == [(minute - 30_000, minute + 60_000)]


async def test_a_feed_state_not_published_while_redis_was_down_is_published_again(
    tmp_path: Path,
):
    """A state change that could not be written (Redis paused or down) must not leave the old
    state standing: the alerter kept firing feed_disconnected for minutes after the feed was
    subscribed again (the chaos suite's max_connections fault followed by a Redis pause)."""
    server = RedisServer(tmp_path / "redis").start()
    client = streams.connect(server.url, health_check_interval=0)
    publisher = StatusPublisher(client)
    try:
        await publisher.publish("max_connections", "another client")
        await asyncio.to_thread(server.stop)
        # Not written while Redis is down; every one is kept, in order, with its own time (a
        # slow_consumer close between two others is what the feed_overflow alert looks for).
        await publisher.publish("slow_consumer", "received 1011")
        await publisher.publish("subscribed", "NVDA")
        restarted_ms = streams.now_ms()
        await asyncio.to_thread(server.start)
        await publisher.retry()
        assert (await client.hget("its:feed:state", "state")) == b"subscribed"
        await publisher.retry()  # nothing pending: no second entry
        entries: Any = await client.xrange(Stream.FEED_STATUS)
        statuses = [decode_status(fields) for _, fields in entries]
        assert [s.state for s in statuses] == ["max_connections", "slow_consumer", "subscribed"]
        assert statuses[1].ts_ms <= statuses[2].ts_ms <= restarted_ms
    finally:
        await client.aclose()
        server.stop()


async def test_sharded_streams_get_each_symbols_events_in_its_own_shard(redis_client: Any):
    layout = streams.StreamLayout(3)
    symbols = ["NVDA", "MSFT", "AAPL", "AMZN", "TSLA", "META"]
    assert len({layout.shard_of(s) for s in symbols}) > 1  # the test spreads over shards
    bar = MinuteAgg("NVDA", 10.0, 1.0, 1.0, 1.0, 1.0, 60_000, 120_000)
    mixed = [
        Trade(symbol, 4, str(i), 3, 100.0, 100, 1_764_081_000_000 + i, i)
        for i, symbol in enumerate(symbols * 5)
    ]
    writer = StreamWriter(
        redis_client,
        RouterMetrics.create(CollectorRegistry()),
        batch_max_events=1_000,
        hold_max_events=10_000,
        layout=layout,
    )
    writer.hold_frames(
        [
            Frame(streams.now_ms(), encode_frame([*mixed, bar])),
            frame(100, symbol="MSFT"),  # one symbol: kept raw, in MSFT's shard
        ]
    )
    assert await writer.flush()
    assert await redis_client.xlen(Stream.TRADES) == 0  # the unsharded name is not used
    seen: dict[str, list[int]] = {}
    for shard in range(3):
        name = layout.name(Stream.TRADES, shard)
        assert name == f"its:stream:{{g{shard}}}:trades"
        for entry_id, fields in await redis_client.xrange(name):
            for event in streams.decode_entry(entry_id, fields).events:
                assert layout.shard_of(event.symbol) == shard  # type: ignore[union-attr]
                seen.setdefault(event.symbol, []).append(event.sequence)  # type: ignore[union-attr]
    assert sum(map(len, seen.values())) == 40
    assert seen["MSFT"][:5] == [1, 7, 13, 19, 25]  # each symbol's events in frame order
    bars = await redis_client.xrange(layout.for_symbol(Stream.BARS_1M, "NVDA"))
    assert len(bars) == 1


async def test_a_gap_ends_where_the_events_of_its_settle_time_reach(redis_client: Any):
    """A late report newer than the gap's start, alone in the first frame after a reconnect,
    must not end the window at its own (older) time: the current events that follow within
    the settle time decide where the window ends (a longer outage lost the trades between the
    late report's time and the feed's clock otherwise)."""
    now = [100.0]
    writer = settling_writer(redis_client, now)
    writer.hold_frames([frame(0)])  # the newest event before the drop: ...009
    late = Trade("NVDA", 4, "late", 3, 100.0, 10, 1_764_081_030_000, 7, (12,))
    writer.hold_frames([Frame(streams.now_ms(), encode_frame([late]), "ws", "reconnect")])
    now[0] += 0.5
    writer.hold_frames([frame(300_000)])  # the current events, five minutes on
    assert await writer.flush()
    assert await redis_client.xlen(Stream.GAPS) == 0  # still settling
    now[0] += 0.6
    writer.settle_open_gaps()
    assert await writer.flush()
    gaps = [decode_gap(fields) for _, fields in await redis_client.xrange(Stream.GAPS)]
    assert [(g.start_ms, g.end_ms, g.reason) for g in gaps] == [
        (1_764_081_000_009, 1_764_081_300_009, "reconnect")
    ]


async def test_a_gap_not_yet_published_is_kept_for_the_next_router_process(redis_client: Any):
    """The chaos soak lost trades of a feed drop: the router was killed while the reconnect
    window was still settling, after events past it had moved the feed clock; the next
    process's restart gap began at that clock. The unpublished gap's start is stored beside
    the worker clocks (where the restart gap starts at the oldest value) until it is published."""
    now = [100.0]
    writer = settling_writer(redis_client, now)
    writer.hold_frames([frame(0)])  # the newest event before the drop: ...009
    assert await writer.flush()
    assert await redis_client.hget(WORKER_CLOCK_KEY, "gap") is None
    writer.open_gap(("NVDA",), "reconnect")
    writer.hold_frames([frame(300_000)])  # the events after the drop; the gap settles on
    assert await writer.flush()
    assert await redis_client.xlen(Stream.GAPS) == 0
    # Killed here, the next process would open its restart gap at this mark, not the feed clock.
    mark = int(await redis_client.hget(WORKER_CLOCK_KEY, "gap"))
    assert mark == 1_764_081_000_009
    assert mark < int(await redis_client.hget(FEED_CLOCK_KEY, "event_ms"))
    now[0] += 1.1
    writer.settle_open_gaps()
    assert await writer.flush()
    assert await redis_client.xlen(Stream.GAPS) == 1  # published: the mark is no longer needed
    writer.hold_frames([frame(360_000)])
    assert await writer.flush()
    assert await redis_client.hget(WORKER_CLOCK_KEY, "gap") is None


async def test_a_backlog_is_written_in_batches_of_at_most_the_event_bound(redis_client: Any):
    """``batch_max_events`` bounds events: it was compared with the number of frames, so a
    backlog of frames (each of up to a thousand events) became one batch of up to a million
    events, written in one pipeline while the read loop waited."""
    registry = CollectorRegistry()
    writer = nvda_writer(redis_client, registry, hold_max_events=100_000)
    queue: asyncio.Queue[Frame] = asyncio.Queue()
    for k in range(30):  # 30 frames of 100 trades waiting: 3,000 events
        queue.put_nowait(frame(k * 100, count=100))
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(queue, stop))

    async def all_stored() -> bool:
        return len(await stored_trades(redis_client)) == 3_000

    await eventually(all_stored)
    stop.set()
    await task
    batches = registry.get_sample_value("router_batch_events_count")
    within_bound = registry.get_sample_value("router_batch_events_bucket", {"le": "1000.0"})
    assert batches is not None and batches >= 3
    assert within_bound == batches
