"""The loader service: one consumer loop per stream, lag sampling, start-up backfill."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import redis.asyncio as aioredis

from its_common.backoff import Backoff
from its_common.db.connect import connection_kwargs
from its_common.db.schema import wait_for_schema
from its_common.gaps import GapWindow, encode_gap
from its_common.heartbeat import instance_name
from its_common.runtime import ServiceContext
from its_common.streams import DEFAULT_TRIM, Stream
from its_loader.backfill import GapsHandler, PolygonRest, RestConfig, startup_windows
from its_loader.config import LoaderSettings
from its_loader.consumer import ConsumerConfig, Handler, StreamConsumer
from its_loader.database import TRANSIENT_ERRORS, Database
from its_loader.handlers import BarsHandler, TradesHandler
from its_loader.lag import lag_loop
from its_loader.metrics import LoaderMetrics

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


def consumer_config(settings: LoaderSettings) -> ConsumerConfig:
    return ConsumerConfig(
        group=settings.group,
        consumer=settings.consumer or instance_name(),
        batch_entries=settings.batch_entries,
        block_ms=settings.block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        claim_interval_s=settings.claim_interval_s,
        max_deliveries=settings.max_deliveries,
        db_retry_max_s=settings.db_retry_max_s,
    )


async def publish_startup_gaps(
    redis: aioredis.Redis, settings: LoaderSettings, stopping: asyncio.Event
) -> int:
    """Publish gap windows from each symbol's last stored bar to now (one replica does it)."""
    acquired = await redis.set(STARTUP_LOCK_KEY, instance_name(), nx=True, ex=STARTUP_LOCK_TTL_S)
    if not acquired:
        log.info("another loader replica runs the start-up backfill check")
        return 0
    backoff = Backoff(0.5, settings.db_retry_max_s)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                **connection_kwargs(settings), autocommit=True
            ) as conn:
                windows = await startup_windows(
                    conn, settings.symbols, settings.backfill_initial_sessions
                )
            break
        except TRANSIENT_ERRORS as exc:
            log.warning("start-up backfill check waits for the database: %s", exc)
            await backoff.sleep(stopping)
            if stopping.is_set():
                return 0
    policy = DEFAULT_TRIM[Stream.GAPS]
    for symbol, start_ms, end_ms in windows:
        window = GapWindow((symbol,), start_ms, end_ms, reason="startup", source="loader")
        payload: dict[Any, Any] = encode_gap(window)
        await redis.xadd(Stream.GAPS, payload, maxlen=policy.maxlen, approximate=True)
    log.info("start-up backfill: %d gap windows published", len(windows))
    return len(windows)


async def main(ctx: ServiceContext[LoaderSettings]) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    metrics = LoaderMetrics(ctx.registry)
    config = consumer_config(settings)
    rest = PolygonRest(rest_config(settings), metrics)
    handlers: dict[str, Handler[Any]] = {
        "bars": BarsHandler(),
        "trades": TradesHandler(),
        "gaps": GapsHandler(rest, metrics),
    }
    consumers = [
        StreamConsumer(
            handlers[kind],
            redis,
            Database(settings),
            config,
            metrics,
            ctx.stopping,
            ctx.counters,
        )
        for kind in settings.stream_kinds()
    ]
    metrics.db_up.set(1)

    async def database_ready() -> None:
        kwargs = connection_kwargs(settings)
        kwargs["connect_timeout"] = 2
        async with await psycopg.AsyncConnection.connect(**kwargs) as conn:
            await conn.execute("SELECT 1")

    ctx.add_readiness_check("database", database_ready)
    if not await wait_for_schema(settings, ctx.stopping):
        return
    log.info(
        "loader starting",
        extra={"consumer": config.consumer, "group": config.group, "streams": settings.streams},
    )
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(c.run(), name=f"consume-{c.label}") for c in consumers
    ]
    tasks.append(
        asyncio.create_task(
            lag_loop(
                redis,
                [c.stream for c in consumers],
                config.group,
                metrics,
                ctx.counters,
                settings.redis_memory_warn_bytes,
                settings.metrics_interval_s,
                ctx.stopping,
            ),
            name="lag",
        )
    )
    if settings.backfill_on_start and "gaps" in settings.stream_kinds():
        tasks.append(
            asyncio.create_task(publish_startup_gaps(redis, settings, ctx.stopping), name="startup")
        )
    try:
        done, _ = await asyncio.wait(
            [*tasks, asyncio.create_task(ctx.stopping.wait())],
            return_when=asyncio.FIRST_EXCEPTION,
        )
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        await asyncio.gather(*tasks)
    finally:
        ctx.stopping.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await rest.close()
