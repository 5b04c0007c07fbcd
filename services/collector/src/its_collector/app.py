"""The collector: every ``interval_s`` sample targets, Redis and heartbeats into sys_metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from prometheus_client import Counter, Gauge

from its_collector.config import CollectorSettings
from its_collector.sampling import Sample, heartbeat_samples, redis_samples, scrape
from its_collector.storage import apply_retention, has_timescale_retention, insert_samples
from its_common.db.connect import connection_kwargs
from its_common.runtime import ServiceContext

log = logging.getLogger("its.collector")
RETENTION_EVERY_S = 3600.0


async def collect_once(
    settings: CollectorSettings,
    redis: Any,
    session: aiohttp.ClientSession,
) -> list[Sample]:
    prefixes = settings.prefixes()
    jobs = [scrape(session, name, url, prefixes) for name, url in settings.target_map().items()]
    results = await asyncio.gather(*jobs)
    samples = [s for batch in results for s in batch]
    try:
        samples += await redis_samples(redis)
        if settings.heartbeats:
            samples += await heartbeat_samples(redis)
    except Exception as exc:  # Redis down: still store what was scraped
        log.warning("redis sampling failed: %s", exc)
        samples.append(Sample("redis", "up", 0.0))
    return samples


async def main(ctx: ServiceContext[CollectorSettings]) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    rows_total = Counter("its_collector_rows", "sys_metrics rows written", registry=ctx.registry)
    failures = Counter(
        "its_collector_write_failures", "Sampling rounds not written", registry=ctx.registry
    )
    last_round = Gauge(
        "its_collector_last_round_timestamp_seconds", "Last written round", registry=ctx.registry
    )
    timeout = aiohttp.ClientTimeout(total=settings.scrape_timeout_s)
    conn: psycopg.AsyncConnection[Any] | None = None
    next_retention = 0.0

    async def database_ready() -> None:
        kwargs = connection_kwargs(settings)
        kwargs["connect_timeout"] = 2
        async with await psycopg.AsyncConnection.connect(**kwargs) as check:
            await check.execute("SELECT 1")

    ctx.add_readiness_check("database", database_ready)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not ctx.stopping.is_set():
            started = time.monotonic()
            ts = datetime.now(UTC)
            samples = await collect_once(settings, redis, session)
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await psycopg.AsyncConnection.connect(
                        **connection_kwargs(settings), autocommit=True
                    )
                written = await insert_samples(conn, ts, samples)
                rows_total.inc(written)
                last_round.set(time.time())
                ctx.counters["rows"] = ctx.counters.get("rows", 0) + written
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                    if not await has_timescale_retention(conn):
                        deleted = await apply_retention(conn, settings.retention_days)
                        if deleted:
                            log.info("retention: %d old sys_metrics rows deleted", deleted)
            except (psycopg.Error, OSError) as exc:
                failures.inc()
                log.warning("sys_metrics round not written (%d samples): %s", len(samples), exc)
                if conn is not None:
                    await conn.close()
                conn = None
            wait = max(0.0, settings.interval_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), wait)
    if conn is not None:
        await conn.close()
