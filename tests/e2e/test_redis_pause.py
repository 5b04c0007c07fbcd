"""Crash-only under a paused Redis: every service rides through a 30 s SIGSTOP, resumes, and
nothing is lost.

The whole stack runs as real processes (simulator, router, loader, features, inference, trader,
validator, alerter, collector, dashboard) against a Redis server of this test's own. Redis is
frozen with SIGSTOP for 30 s (connections stay open and hang, as with a stalled server or a
network partition) and continued. Afterwards every process is still running, each stage
produces again, and the trades stored over a window spanning the pause equal the simulator's
REST history of that window (the router held what it received; nothing was dropped).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from its_common.clock import FEED_CLOCK_KEY
from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import RedisServer, free_port
from its_common.streams import Stream
from tests.processes import REPO, service
from tests.router.harness import SIM_KEY, Sim, rest_trade_count, router, simulator, wait_until

PAUSE_S = 30
MINUTE_MS = 60_000


def stored_trades(database_url: str, lo_ms: int, hi_ms: int) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT symbol, count(*) FROM trades WHERE ts >= %s AND ts < %s GROUP BY symbol",
            (_dt(lo_ms), _dt(hi_ms)),
        ).fetchall()
    return {str(symbol): int(count) for symbol, count in rows}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _scalar(database_url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    return None if row is None else row[0]


@pytest.mark.slow
def test_every_service_rides_through_a_paused_redis(tmp_path: Path, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    paused_redis = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(paused_redis.url)
    assert paused_redis.process is not None
    pid = paused_redis.process.pid
    common = {"REDIS_URL": paused_redis.url, "DATABASE_URL": database_url}
    processes: dict[str, Any] = {}
    try:
        with ExitStack() as stack:

            def start(name: str, **env: str) -> None:
                processes[name] = stack.enter_context(service(name, tmp_path, {**common, **env}))

            start("trader", ITS_TRADER_BLOCK_MS="100", ITS_TRADER_MIN_CONFIDENCE="0.2")
            start(
                "inference",
                ITS_INFERENCE_BUNDLE_DIR=str(REPO / "models" / "demo"),
                ITS_INFERENCE_BLOCK_MS="100",
            )
            start("features")
            sim: Sim = stack.enter_context(
                simulator(
                    tmp_path,
                    "--speed", "60",
                    "--trades-per-day", "NVDA=20000,MSFT=10000",
                    "--quotes-per-trade", "0",
                )
            )  # fmt: skip
            feed = {"ITS_POLYGON_REST_URL": sim.rest_url, "POLYGON_API_KEY": SIM_KEY}
            start("loader", **feed, ITS_LOADER_BACKFILL_ON_START="false")
            start("validator")
            start("alerter", ITS_ALERTER_EXPECTED_SERVICES="router,loader")
            start("collector", ITS_COLLECTOR_TARGETS=f"none=http://127.0.0.1:{free_port()}/m")
            start("dashboard")
            processes["router"] = stack.enter_context(
                router(tmp_path, paused_redis.url, sim)
            ).process

            wait_until(lambda: _scalar(database_url, "SELECT count(*) FROM trades"), 60, "trades")
            wait_until(lambda: client.xlen(Stream.FEATURES) > 0, 120, "first features")
            features_before = client.xlen(Stream.FEATURES)
            first_ms = int(_scalar(database_url, "SELECT min(ts) FROM trades").timestamp() * 1000)

            lo = first_ms - first_ms % MINUTE_MS + 2 * MINUTE_MS  # the first full minutes
            wait_until(
                lambda: int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0) > lo + 5 * MINUTE_MS,
                60,
                "a few stored minutes before the pause",
            )
            paused_ms = int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0)
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(PAUSE_S)  # the fault itself lasts this long; nothing is awaited
                dead = {n: p.poll() for n, p in processes.items() if p.poll() is not None}
            finally:
                os.kill(pid, signal.SIGCONT)
            assert dead == {}, f"services ended while Redis was paused: {dead}"
            # The simulator kept its 60x pace: what the router held is written as it resumes.
            span_ms = PAUSE_S * 60 * 1000
            wait_until(
                lambda: int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0) > paused_ms + span_ms,
                120,
                "the feed clock past the pause",
            )
            resumed_ms = int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0)

            # Every stage produces again after the pause.
            wait_until(
                lambda: client.xlen(Stream.FEATURES) > features_before + 2, 120, "features again"
            )
            wait_until(
                lambda: (
                    int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0) > resumed_ms + 10 * MINUTE_MS
                ),
                120,
                "the feed clock moving on",
            )
            wait_until(
                lambda: _scalar(
                    database_url, "SELECT count(*) FROM signals WHERE ts >= %s", _dt(resumed_ms)
                ),
                120,
                "decisions after the pause",
            )
            dead = {n: p.poll() for n, p in processes.items() if p.poll() is not None}
            assert dead == {}, f"services ended after the pause: {dead}"

            # Nothing lost: a window from after the first stored minute to well before the
            # newest event (late prints settle) holds exactly the simulator's trades.
            hi = resumed_ms
            wait_until(
                lambda: int(client.hget(FEED_CLOCK_KEY, "event_ms") or 0) > hi + 5 * MINUTE_MS,
                120,
                "the feed past the window",
            )

            window = f"timestamp.gte={lo * 1_000_000}&timestamp.lt={hi * 1_000_000}"

            def complete() -> bool:
                stored = stored_trades(database_url, lo, hi)
                return all(
                    stored.get(s, 0) == rest_trade_count(sim, s, window) for s in ("NVDA", "MSFT")
                )

            wait_until(complete, 120, "every trade of the window stored")
            assert lo < paused_ms and hi > paused_ms + span_ms  # the window spans the pause
            assert processes["router"].poll() is None
    finally:
        client.close()
        paused_redis.stop()
