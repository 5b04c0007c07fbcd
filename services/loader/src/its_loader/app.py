"""The loader service: one consumer loop per stream, lag sampling, start-up backfill."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import psycopg
import redis.asyncio as aioredis

from its_common.backoff import Backoff
from its_common.clock import MarketClock
from its_common.db.connect import connection_kwargs
from its_common.gaps import GapWindow, encode_gap
from its_common.heartbeat import instance_name
from its_common.runtime import ServiceContext
from its_common.streams import Stream, StreamLayout
from its_common.symbols import read_symbols
from its_common.tasks import run_essential
from its_loader.backfill import startup_windows
from its_loader.config import LoaderSettings
from its_loader.consumer import (
    ConsumerSettings,
    Handler,
    LoaderConsumer,
    loader_consumer,
)
from its_loader.database import TRANSIENT_ERRORS, Database
from its_loader.gap_handler import GapsHandler
from its_loader.handlers import BarsHandler, TradesHandler
from its_loader.lag import lag_loop
from its_loader.metrics import LoaderMetrics
from its_loader.rest import PolygonRest, RestConfig

log = logging.getLogger("its.loader")
STARTUP_LOCK_KEY = "its:loader:startup-backfill"
STARTUP_LOCK_TTL_S = 300


def rest_config(settings: LoaderSettings) -> RestConfig:
    key = settings.polygon_api_key.get_secret_value() if settings.polygon_api_key else ""
    return RestConfig(
        base_url=settings.polygon_rest_url,
        api_key=key,
        page_limit=settings.rest_page_limit,
        max_retries=settings.rest_max_retries,
        backoff_s=settings.rest_backoff_s,
        backoff_max_s=settings.rest_backoff_max_s,
        timeout_s=settings.rest_timeout_s,
    )


def consumer_config(settings: LoaderSettings) -> ConsumerSettings:
    return ConsumerSettings(
        group=settings.group,
        consumer=settings.consumer or instance_name(),
        batch_entries=settings.batch_entries,
        block_ms=settings.block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        claim_interval_s=settings.claim_interval_s,
        max_deliveries=settings.max_deliveries,
        db_retry_max_s=settings.db_retry_max_s,
        metrics_interval_s=settings.metrics_interval_s,
        symbols=tuple(settings.symbols),
    )


async def consume(consumer: LoaderConsumer, database: Database) -> None:
    """Run one stream's consumer; its database connection closes with it."""
    try:
        await consumer.run()
    finally:
        await database.close()


async def publish_startup_gaps(
    redis: aioredis.Redis, settings: LoaderSettings, stopping: asyncio.Event
) -> int:
    """Publish gap windows from each symbol's last stored bar to now (one replica does it)."""
    acquired = await redis.set(STARTUP_LOCK_KEY, instance_name(), nx=True, ex=STARTUP_LOCK_TTL_S)
    if not acquired:
        log.info("another loader replica runs the start-up backfill check")
        return 0
    backoff = Backoff(0.5, settings.db_retry_max_s)
    # The live symbol list and the market clock (a replayed day's "now" is the feed's).
    symbols = await read_symbols(redis, default=settings.symbols)
    now = await MarketClock(redis).now()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                **connection_kwargs(settings), autocommit=True
            ) as conn:
                windows = await startup_windows(
                    conn, symbols, settings.backfill_initial_sessions, now=now
                )
            break
        except TRANSIENT_ERRORS as exc:
            log.warning("start-up backfill check waits for the database: %s", exc)
            await backoff.sleep(stopping)
            if stopping.is_set():
                return 0
    for symbol, start_ms, end_ms in windows:
        window = GapWindow((symbol,), start_ms, end_ms, reason="startup", source="loader")
        payload: dict[Any, Any] = encode_gap(window)
        await redis.xadd(Stream.GAPS, payload)  # read by groups: the router's trimmer bounds it
    log.info("start-up backfill: %d gap windows published", len(windows))
    return len(windows)


def stream_handlers(kind: str, layout: StreamLayout, gaps: GapsHandler) -> list[Handler[Any]]:
    """The handlers of one kind of stream: one per stream shard for bars and trades."""
    if kind == "gaps":
        return [gaps]
    made: list[Handler[Any]] = []
    for name in layout.names(Stream.BARS_1M if kind == "bars" else Stream.TRADES):
        handler = BarsHandler() if kind == "bars" else TradesHandler()
        handler.stream = name
        made.append(handler)
    return made


async def main(ctx: ServiceContext[LoaderSettings]) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    metrics = LoaderMetrics(ctx.registry)
    config = consumer_config(settings)
    rest = PolygonRest(rest_config(settings), metrics)
    gaps = GapsHandler(
        rest,
        MarketClock(redis),
        metrics,
        trades=settings.backfill_trades,
        settle_wait_s=settings.settle_wait_s,
        late_reports_ms=int(settings.late_reports_s * 1000),
        stopping=ctx.stopping,
    )
    # One consumer (and database connection) per stream: with stream shards, one per shard of
    # the bars and trades streams (its_common.streams.StreamLayout), each handler its own.
    handlers = [
        handler
        for kind in settings.stream_kinds()
        for handler in stream_handlers(kind, settings.stream_layout(), gaps)
    ]
    databases = {handler.stream: Database(settings) for handler in handlers}
    consumers = {
        handler.stream: loader_consumer(
            handler,
            redis,
            databases[handler.stream],
            config,
            metrics,
            ctx.stopping,
            ctx.registry,
            ctx.counters,
        )[0]
        for handler in handlers
    }
    metrics.db_up.set(1)

    async def database_ready() -> None:
        kwargs = connection_kwargs(settings)
        kwargs["connect_timeout"] = 2
        async with await psycopg.AsyncConnection.connect(**kwargs) as conn:
            await conn.execute("SELECT 1")

    ctx.add_readiness_check("database", database_ready)
    log.info(
        "loader starting",
        extra={"consumer": config.consumer, "group": config.group, "streams": settings.streams},
    )
    essential: dict[str, Coroutine[Any, Any, Any]] = {
        f"consume-{stream}": consume(c, databases[stream]) for stream, c in consumers.items()
    }
    essential["lag"] = lag_loop(
        redis,
        list(consumers.values()),
        metrics,
        ctx.counters,
        settings.redis_memory_warn_bytes,
        settings.metrics_interval_s,
        ctx.stopping,
    )
    if settings.backfill_on_start and "gaps" in settings.stream_kinds():
        essential["startup"] = publish_startup_gaps(redis, settings, ctx.stopping)
    try:
        # Crash-only: a consumer or the lag loop ending on its own ends the service (non-zero).
        await run_essential(ctx.stopping, essential, finite=frozenset({"startup"}))
    finally:
        await rest.close()
