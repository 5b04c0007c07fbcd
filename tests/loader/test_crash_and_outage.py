"""Crash safety: kill -9 a loader process mid-batch; PostgreSQL stopped and restarted mid-load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import PostgresServer
from its_common.streams import Stream, ensure_group
from tests.conditions import wait_until

from .conftest import add_bars, add_trades, bar, make_settings, scalar, trade

REPO = Path(__file__).resolve().parents[2]
TRADE_ENTRIES = 1500
TRADES_PER_ENTRY = 40
BAR_ENTRIES = 300


def spawn_loader(redis_url: str, db_url: str, consumer: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": db_url,
        "ITS_HTTP_PORT": "0",
        "ITS_LOADER_CONSUMER": consumer,
        "ITS_LOADER_STREAMS": "bars,trades",
        "ITS_LOADER_BATCH_ENTRIES": "2",
        "ITS_LOADER_BLOCK_MS": "100",
        "ITS_LOADER_CLAIM_IDLE_MS": "500",
        "ITS_LOADER_CLAIM_INTERVAL_S": "0.2",
        "ITS_LOADER_BACKFILL_ON_START": "false",
        "ITS_LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "its_loader"], cwd=REPO, env=env, stdout=out, stderr=out
        )


async def test_kill_9_mid_batch_then_another_loader_stores_every_entry_once(
    redis_server, redis_client, db_url, tmp_path
):
    for stream in (Stream.TRADES, Stream.BARS_1M):
        await ensure_group(redis_client, stream, "loader")
    pipe = redis_client.pipeline(transaction=False)
    for e in range(TRADE_ENTRIES):
        from its_common.streams import encode_entry

        batch = [trade("NVDA", e * TRADES_PER_ENTRY + k) for k in range(TRADES_PER_ENTRY)]
        pipe.xadd(Stream.TRADES, encode_entry("T", batch))
    for e in range(BAR_ENTRIES):
        pipe.xadd(Stream.BARS_1M, encode_entry("AM", [bar(f"S{e % 30}", e // 30)]))
    await pipe.execute()
    total = TRADE_ENTRIES * TRADES_PER_ENTRY

    victim = spawn_loader(redis_server.url, db_url, "victim", tmp_path / "victim.log")
    try:
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") > 2000, 30, 0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    stored_at_kill = scalar(db_url, "SELECT count(*) FROM trades")
    assert 0 < stored_at_kill < total, "the kill must land in the middle of the stream"
    held = await redis_client.xpending_range(
        Stream.TRADES, "loader", min="-", max="+", count=100, consumername="victim"
    )
    assert held, "the killed loader held a batch it had read but not acked"

    survivor = spawn_loader(redis_server.url, db_url, "survivor", tmp_path / "survivor.log")
    try:
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == total, 60, 0.1)
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == BAR_ENTRIES)

        async def nothing_pending():
            trades = await redis_client.xpending(Stream.TRADES, "loader")
            bars = await redis_client.xpending(Stream.BARS_1M, "loader")
            return trades["pending"] == 0 and bars["pending"] == 0

        await wait_until(nothing_pending, 20)
    finally:
        survivor.terminate()
        survivor.wait(20)
    # Exactly once: every trade id once, every bar once and never rewritten.
    assert scalar(db_url, "SELECT count(DISTINCT trade_id) FROM trades") == total
    assert scalar(db_url, "SELECT max(revision) FROM market_data") == 1
    assert survivor.returncode == 0, (tmp_path / "survivor.log").read_text()[-2000:]


async def test_database_outage_loses_nothing(redis_server, redis_client, start_loader, tmp_path):
    server = PostgresServer(tmp_path / "pg", fast_unsafe=True).start()
    try:
        with psycopg.connect(server.url) as conn:
            apply_migrations(conn)
        settings = make_settings(
            redis_server.url, server.url, streams="bars,trades", batch_entries=10,
            db_retry_max_s=0.3, claim_idle_ms=60_000,
        )  # fmt: skip
        loader = start_loader(settings)
        for i in range(50):
            await add_trades(redis_client, [trade("NVDA", i * 10 + k) for k in range(10)])
        await wait_until(lambda: scalar(server.url, "SELECT count(*) FROM trades") == 500)

        await asyncio.to_thread(server.stop)
        for i in range(50, 150):
            await add_trades(redis_client, [trade("NVDA", i * 10 + k) for k in range(10)])
        await add_bars(redis_client, [bar("NVDA", m) for m in range(20)])
        await wait_until(lambda: loader.metric("its_loader_db_up") == 0)
        await asyncio.sleep(1.0)
        backlog = await redis_client.xpending(Stream.TRADES, "loader")
        undelivered = await redis_client.xlen(Stream.TRADES)
        assert backlog["pending"] > 0 and undelivered == 150  # all still in Redis

        started = time.monotonic()
        await asyncio.to_thread(server.start)
        await wait_until(lambda: scalar(server.url, "SELECT count(*) FROM trades") == 1500, 30)
        await wait_until(lambda: scalar(server.url, "SELECT count(*) FROM market_data") == 20)
        assert time.monotonic() - started < 30
        assert loader.metric("its_loader_db_up") == 1
        assert loader.metric("its_loader_db_errors_total", kind="unavailable") > 0
        dead = loader.metric(
            "its_consumer_entries_total",
            stream=Stream.BARS_1M.value,
            group="loader",
            outcome="dead_lettered",
        )
        assert dead == 0

        async def nothing_pending():
            return (await redis_client.xpending(Stream.TRADES, "loader"))["pending"] == 0

        await wait_until(nothing_pending)
        await loader.stop()
    finally:
        server.discard()
