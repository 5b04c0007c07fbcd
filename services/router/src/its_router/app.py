"""Wiring: read source (WebSocket or REST fallback) -> bounded queue -> stream writer; trimmer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from its_common.clock import WORKER_CLOCK_KEY, read_feed_clock
from its_common.runtime import ServiceContext
from its_common.streams import MIB, now_ms
from its_common.symbols import read_symbols
from its_common.tasks import run_essential
from its_common.trimming import StreamTrimmer
from its_router.batching import Frame
from its_router.config import RouterSettings
from its_router.feed import FeedClient
from its_router.metrics import RouterMetrics
from its_router.rest import RestPoller
from its_router.status import StatusPublisher
from its_router.workers import WorkerConfig, WorkerPool
from its_router.writer import GAP_SETTLE_S, StreamWriter

log = logging.getLogger("its.router")
MODE_KEY = "its:router:mode"


async def main(
    ctx: ServiceContext[RouterSettings], writer_cls: type[StreamWriter] = StreamWriter
) -> None:
    """The router; ``writer_cls`` lets a test run the real wiring around a faulty writer."""
    settings = ctx.settings
    redis = ctx.require_redis()
    metrics = RouterMetrics.create(ctx.registry)
    queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=settings.queue_max_frames)
    status = StatusPublisher(redis)
    api_key = settings.polygon_api_key.get_secret_value() if settings.polygon_api_key else ""
    symbols = await read_symbols(redis, settings.symbols_key, list(settings.symbols))

    # The one trimmer of every stream (its_common.trimming): writers XADD without MAXLEN, so
    # nothing a consumer group has not read is trimmed while Redis' memory is under the mark.
    # The writer reports what it writes, so a pass also starts every pass_bytes written.
    layout = settings.stream_layout()
    trimmer = StreamTrimmer(
        redis,
        ctx.registry,
        policies=layout.trim_policies(),
        high_water_bytes=settings.trim_high_water_mib * MIB,
        interval_s=settings.trim_interval_s,
    )
    source: FeedClient | RestPoller
    writer: StreamWriter | WorkerPool
    if settings.workers > 1:
        run = WorkerPool.new_run()
        feed_clock = await read_feed_clock(redis)
        configs = [
            WorkerConfig(
                index,
                run,
                settings.redis_url_with_password(),
                settings.batch_max_events,
                settings.hold_max_events,
                feed_clock,
                settings.stream_shards,
                settings.log_level,
                settings.subscribe_all,
                settings.redis_cluster,
            )
            for index in range(settings.workers)
        ]
        writer = WorkerPool(
            configs,
            metrics,
            symbols=lambda: list(source.symbols),
            on_written=trimmer.note_written,
        )
    else:
        writer = writer_cls(
            redis,
            metrics,
            batch_max_events=settings.batch_max_events,
            hold_max_events=settings.hold_max_events,
            symbols=lambda: list(source.symbols),
            publish_gap=status.publish_gap,
            on_written=trimmer.note_written,
            layout=layout,
            latest_for_listed_only=settings.subscribe_all,
            gap_settle_s=GAP_SETTLE_S,
        )
    if settings.use_polygon_ws:
        source = FeedClient(
            settings,
            api_key,
            queue,
            metrics,
            status,
            writer.record_gap,
            feed_clock=lambda: writer.feed_clock_ms,
        )
        source.symbols = symbols
    else:
        source = RestPoller(settings, api_key, queue, metrics, symbols)
    if isinstance(writer, WorkerPool):
        writer.start()
    mode = "ws" if settings.use_polygon_ws else "rest"
    try:
        await _open_restart_gap(ctx, writer, symbols, mode)
        ctx.add_readiness_check("feed", source.ready)

        def counters() -> None:
            ctx.counters.update(
                events=writer.written_events,
                queue_depth=queue.qsize(),
                held_events=writer.held_events,
            )

        writer_stop = asyncio.Event()

        async def read_source() -> None:
            try:
                await source.run(ctx.stopping)
            finally:
                writer_stop.set()  # the writer drains what was read, flushes, then ends

        # The trimmer runs until the writer has drained what was read: a stop with a full read
        # queue (2,000 frames of up to ~1,000 events) must not fill Redis to its maxmemory.
        written = asyncio.Event()

        async def write() -> None:
            try:
                if isinstance(writer, WorkerPool):
                    await writer.dispatch(queue, writer_stop)
                    await writer.all_stopped.wait()  # each worker drained and flushed
                else:
                    await writer.run(queue, writer_stop)
            finally:
                written.set()

        tasks: dict[str, Coroutine[Any, Any, None]] = {
            "source": read_source(),
            "writer": write(),
            "trimmer": trimmer.run(written),
        }
        if isinstance(writer, WorkerPool):
            for worker in writer.workers:
                tasks[f"worker-{worker.config.index}"] = writer.collect(worker)
        # Crash-only: if any task ends while the service should run (the writer or a write
        # worker dying, say), the service exits non-zero instead of reading a feed that nothing
        # writes (or nothing trims).
        await run_essential(ctx.stopping, tasks, tick=counters)
    finally:
        if isinstance(writer, WorkerPool):
            writer.terminate()  # only workers still running after the drain (a crash)


async def _open_restart_gap(
    ctx: ServiceContext[RouterSettings],
    writer: StreamWriter | WorkerPool,
    symbols: list[str],
    mode: str,
) -> None:
    """A new router process cannot know what the feed sent between the last event the previous
    process wrote (it may have been killed with frames in hand, or the mode switched between
    WebSocket and REST) and the first event this one receives: open a gap from the stored feed
    clock (or the oldest write worker's clock of the previous process, when it had several: a
    worker may have been behind the one that wrote the feed clock); it closes at this process's
    first event."""
    redis = ctx.require_redis()
    previous_mode = await redis.hget(MODE_KEY, "mode")
    switched = previous_mode is not None and previous_mode != mode.encode()
    stored = await read_feed_clock(redis)
    worker_clocks = [int(v) for v in (await redis.hgetall(WORKER_CLOCK_KEY)).values()]
    await redis.delete(WORKER_CLOCK_KEY)
    if stored is not None:
        since = min([stored, *worker_clocks])
        reason = "fallback_switch" if switched else "restart"
        writer.open_gap(tuple(symbols), reason, since_ms=since)
        log.info("gap opened at the stored feed clock %d (%s)", since, reason)
    if switched:
        log.warning("feed mode switched to %s", mode)
    await redis.hset(MODE_KEY, mapping={"mode": mode, "ts_ms": str(now_ms())})
