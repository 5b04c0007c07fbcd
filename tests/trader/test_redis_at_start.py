"""Crash-only, not crash-prone: a trader started while Redis is down waits for it."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
import redis

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import RedisServer
from tests.processes import service
from tests.router.harness import wait_until


@pytest.mark.slow
def test_a_trader_started_while_redis_is_down_waits_for_it(tmp_path: Path, database_url):
    """The chaos soak found the trader ended with exit 1 when restarted while Redis was killed
    (the simulated broker's start-up read of the trades stream)."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    server = RedisServer(tmp_path / "redis").start()
    server.stop()  # down when the trader starts; the same port and data come back
    env = {"REDIS_URL": server.url, "DATABASE_URL": database_url, "ITS_SYMBOLS": "NVDA,MSFT"}
    log = tmp_path / "trader.log"
    try:
        with service("trader", tmp_path, env) as process:
            time.sleep(4)  # the outage lasts this long; nothing is awaited
            assert process.poll() is None, log.read_text()[-3000:]
            server.start()
            client = redis.Redis.from_url(server.url)
            try:
                wait_until(lambda: client.keys("its:heartbeat:trader:*"), 60, "heartbeat")
                wait_until(lambda: "trader started" in log.read_text(), 60, "the trader started")
            finally:
                client.close()
            assert process.poll() is None
            assert "main failed" not in log.read_text()
    finally:
        server.stop()
