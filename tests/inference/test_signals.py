"""Inference under database and Redis outages: every signals row kept, start-up waits for Redis."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis
from prometheus_client import CollectorRegistry

from its_common.actions import ACTION_NAMES
from its_common.db.migrate import apply_migrations
from its_common.decisions import Decision
from its_common.featureset import FeatureSet, SymbolVector
from its_common.localstack.servers import PostgresServer, RedisServer
from its_inference.app import InferenceMetrics, InferenceProcessor
from its_inference.bundles import load
from its_inference.policy import LivePolicy
from tests.inference.helpers import DEMO
from tests.processes import service
from tests.router.harness import wait_until

MINUTE = 1_762_180_200_000


def made(minute: int) -> tuple[Decision, FeatureSet]:
    decision = Decision(
        ts_ms=minute, action=0, action_name=ACTION_NAMES[0], confidence=0.5,
        model_version="demo", features_hash="h", symbols=("NVDA", "MSFT"),
    )  # fmt: skip
    features = FeatureSet(
        ts_ms=minute, spec_hash="h", order=("NVDA", "MSFT"), session_open_ms=minute,
        symbols={s: SymbolVector((1.0,), 1.0, 1.0) for s in ("NVDA", "MSFT")},
        session_last=False, received_ms=minute, emitted_ms=minute,
    )  # fmt: skip
    return decision, features


async def test_signals_not_written_during_a_database_restart_are_written_after_it(
    tmp_path: Path, redis_client
) -> None:
    """The chaos suite found a minute without a signals row: inference decided while PostgreSQL
    restarted, logged "signals not written" and dropped the row (the decision itself went to the
    stream)."""
    server = PostgresServer(tmp_path / "pg", fast_unsafe=True).start()
    try:
        with psycopg.connect(server.url) as sync:
            apply_migrations(sync)
        conn = await psycopg.AsyncConnection.connect(server.url, autocommit=True)
        metrics = InferenceMetrics(CollectorRegistry())
        processor = InferenceProcessor(redis_client, LivePolicy(load(DEMO)), metrics, conn)
        await processor.write_signals([made(MINUTE)])
        server.stop()
        await processor.write_signals([made(MINUTE + 60_000)])  # lost with the connection
        server.start()
        processor.conn = await psycopg.AsyncConnection.connect(server.url, autocommit=True)
        await processor.write_signals([made(MINUTE + 120_000)])
        with psycopg.connect(server.url) as check:
            rows = check.execute("SELECT ts FROM signals ORDER BY ts").fetchall()
        assert [int(ts.timestamp() * 1000) for (ts,) in rows] == [
            MINUTE,
            MINUTE + 60_000,
            MINUTE + 120_000,
        ]
        await processor.conn.close()
    finally:
        server.discard()


@pytest.mark.slow
def test_inference_started_while_redis_is_frozen_waits_for_it(tmp_path: Path, database_url):
    """Crash-only, not crash-prone: a transient Redis outage at start-up is retried like any
    other (the chaos soak found inference ended with exit 1 when started during a Redis
    pause: its start-up reads of Redis were not retried)."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    frozen = RedisServer(tmp_path / "redis").start()
    assert frozen.process is not None
    try:
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            env = {
                "REDIS_URL": frozen.url,
                "DATABASE_URL": database_url,
                "ITS_INFERENCE_BUNDLE_DIR": str(DEMO.parent),
            }
            with service("inference", tmp_path, env) as process:
                time.sleep(8)  # the outage lasts this long; nothing is awaited
                assert process.poll() is None, (tmp_path / "inference.log").read_text()[-3000:]
                os.kill(frozen.process.pid, signal.SIGCONT)
                client = redis.Redis.from_url(frozen.url)
                wait_until(
                    lambda: client.keys("its:heartbeat:inference:*"), 60, "inference heartbeat"
                )
                wait_until(
                    lambda: any(
                        g["name"] == b"inference"
                        for g in client.xinfo_groups("its:stream:features")
                    ),
                    60,
                    "the inference group",
                )
                client.close()
                assert process.poll() is None
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
    finally:
        frozen.stop()
