"""Wiring: read source (WebSocket or REST fallback) -> bounded queue -> stream writer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from its_common.gaps import GapWindow
from its_common.runtime import ServiceContext
from its_common.streams import now_ms
from its_common.tasks import run_essential
from its_router.batching import Frame
from its_router.config import RouterSettings
from its_router.feed import FeedClient
from its_router.metrics import RouterMetrics
from its_router.rest import RestPoller
from its_router.status import StatusPublisher
from its_router.symbols import read_symbols
from its_router.writer import StreamWriter

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

    source: FeedClient | RestPoller
    writer = writer_cls(
        redis,
        metrics,
        batch_max_events=settings.batch_max_events,
        hold_max_events=settings.hold_max_events,
        symbols=lambda: list(source.symbols),
        publish_gap=status.publish_gap,
    )
    if settings.use_polygon_ws:
        source = FeedClient(settings, api_key, queue, metrics, status, writer.record_gap)
        source.symbols = symbols
    else:
        source = RestPoller(settings, api_key, queue, metrics, symbols)
    await _note_mode_switch(ctx, writer, symbols, "ws" if settings.use_polygon_ws else "rest")
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

    # Crash-only: if either task ends while the service should run (the writer dying, say), the
    # service exits non-zero instead of reading a feed that nothing writes.
    await run_essential(
        ctx.stopping,
        {"source": read_source(), "writer": writer.run(queue, writer_stop)},
        tick=counters,
    )


async def _note_mode_switch(
    ctx: ServiceContext[RouterSettings], writer: StreamWriter, symbols: list[str], mode: str
) -> None:
    """After a switch between WebSocket and REST, publish the window to backfill."""
    redis = ctx.require_redis()
    previous: dict[Any, Any] = await redis.hgetall(MODE_KEY)
    now = now_ms()
    if previous and previous.get(b"mode", b"") != mode.encode():
        since = int(previous.get(b"ts_ms", str(now).encode()))
        writer.record_gap(GapWindow(tuple(symbols), since, now, "fallback_switch"))
        log.warning("feed mode switched to %s; gap since %d recorded", mode, since)
    await redis.hset(MODE_KEY, mapping={"mode": mode, "ts_ms": str(now)})
