"""The signals table keeps every decision, also those made while PostgreSQL was restarting."""

from __future__ import annotations

from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry

from its_common.actions import ACTION_NAMES
from its_common.db.migrate import apply_migrations
from its_common.decisions import Decision
from its_common.featureset import FeatureSet, SymbolVector
from its_common.localstack.servers import PostgresServer
from its_inference.app import InferenceMetrics, InferenceProcessor
from its_inference.bundles import load
from its_inference.policy import LivePolicy
from tests.inference.helpers import DEMO

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
