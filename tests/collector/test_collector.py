"""The collector against real Redis, PostgreSQL and an HTTP /metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from its_collector.app import main as collector_main
from its_collector.config import CollectorSettings
from its_common.db.migrate import apply_migrations
from its_common.health import HealthState
from its_common.runtime import ServiceContext
from its_common.settings import SettingsError, load_settings
from its_common.streams import Stream


async def metrics_server() -> tuple[web.AppRunner, str]:
    registry = CollectorRegistry()
    Counter("its_router_events", "events", ["type"], registry=registry).labels("T").inc(42)
    Histogram("its_router_latency_seconds", "latency", registry=registry).observe(0.01)
    Counter("other_thing", "filtered out", registry=registry).inc()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"


async def test_collector_writes_service_redis_and_heartbeat_rows(
    redis_server, redis_client, database_url
):
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    runner, url = await metrics_server()
    await redis_client.xadd(Stream.TRADES, {b"v": b"1"})
    await redis_client.hset(
        "its:heartbeat:loader:pod-1",
        mapping={
            "service": "loader",
            "instance": "pod-1",
            "counters": json.dumps({"rows_trades": 7}),
        },
    )
    settings = load_settings(
        CollectorSettings,
        redis_url=redis_server.url,
        database_url=database_url,
        http_port=0,
        interval_s=0.2,
        targets=f"router={url},gone=http://127.0.0.1:9/metrics",
        scrape_timeout_s=1.0,
    )
    registry = CollectorRegistry()
    ctx = ServiceContext(
        settings=settings, version="t", registry=registry,
        health=HealthState("collector", "t", registry), redis=redis_client,
    )  # fmt: skip
    task = asyncio.create_task(collector_main(ctx))
    try:
        deadline = time.monotonic() + 15
        rows: list[Any] = []
        while time.monotonic() < deadline:
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(
                    "SELECT service, metric_name, metric_value, tags FROM sys_metrics"
                ).fetchall()
            if len({r[0] for r in rows if r[1] == "up"}) >= 2 and any(
                r[0] == "redis" for r in rows
            ):
                break
            await asyncio.sleep(0.1)
        by_name = {(r[0], r[1], json.dumps(r[3], sort_keys=True)): r[2] for r in rows}
        assert by_name[("router", "its_router_events_total", '{"type": "T"}')] == 42
        assert ("router", "its_router_latency_seconds_count", "{}") in by_name
        assert not any(r[1].startswith("other_thing") or r[1].endswith("_bucket") for r in rows)
        assert by_name[("router", "up", json.dumps({"target": url}))] == 1
        assert by_name[("gone", "up", '{"target": "http://127.0.0.1:9/metrics"}')] == 0
        assert (
            by_name[("redis", "redis_stream_length", json.dumps({"stream": Stream.TRADES.value}))]
            == 1
        )
        assert by_name[("redis", "redis_used_memory_bytes", "{}")] > 0
        assert 0 <= by_name[("redis", "redis_keyspace_hit_ratio", "{}")] <= 1
        assert by_name[("loader", "heartbeat_rows_trades", '{"instance": "pod-1"}')] == 7
        # Rounds keep coming every interval.
        with psycopg.connect(database_url) as conn:
            rounds = conn.execute("SELECT count(DISTINCT ts) FROM sys_metrics").fetchone()
        assert rounds is not None and rounds[0] >= 1
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await runner.cleanup()


async def test_collector_retention_fits_the_server(redis_server, redis_client, database_url):
    """Plain PostgreSQL: the collector deletes rows past the retention. TimescaleDB: the
    hypertable's retention policy does, and the collector leaves the rows alone."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        timescale = bool(row and row[0])
        if timescale:
            policy = conn.execute(
                "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
                "WHERE hypertable_name = 'sys_metrics' AND proc_name = 'policy_retention'"
            ).fetchone()
            assert policy is not None and policy[0] == "30 days"
        conn.execute(
            "INSERT INTO sys_metrics (ts, service, metric_name, metric_value) VALUES "
            "(now() - interval '40 days', 'x', 'old', 1), (now(), 'x', 'new', 1)"
        )
    settings = load_settings(
        CollectorSettings, redis_url=redis_server.url, database_url=database_url, http_port=0,
        interval_s=0.2, retention_days=30,
    )  # fmt: skip
    registry = CollectorRegistry()
    ctx = ServiceContext(
        settings=settings, version="t", registry=registry,
        health=HealthState("collector", "t", registry), redis=redis_client,
    )  # fmt: skip
    task = asyncio.create_task(collector_main(ctx))
    try:
        deadline = time.monotonic() + 10
        names: set[str] = set()
        while time.monotonic() < deadline:
            with psycopg.connect(database_url) as conn:
                names = {r[0] for r in conn.execute("SELECT metric_name FROM sys_metrics")}
            done = timescale or "old" not in names
            if done and "redis_used_memory_bytes" in names:
                break
            await asyncio.sleep(0.1)
        assert "redis_used_memory_bytes" in names and "new" in names
        assert ("old" in names) is timescale
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)


def test_bad_targets_are_rejected():
    try:
        load_settings(CollectorSettings, targets="router")
    except SettingsError as exc:
        assert "ITS_COLLECTOR_TARGETS" in str(exc)
    else:
        raise AssertionError("expected a SettingsError")
