"""Crash-only, not crash-prone: features started while Redis is frozen waits for it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis

from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import RedisServer
from tests.processes import service
from tests.router.harness import wait_until


@pytest.mark.slow
def test_features_started_while_redis_is_frozen_waits_for_it(tmp_path: Path, database_url):
    """The chaos soak found features ended with exit 1 when started while Redis was still
    loading its data after a kill (BusyLoadingError on the feed clock read at start-up)."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    frozen = RedisServer(tmp_path / "redis").start()
    assert frozen.process is not None
    client = redis.Redis.from_url(frozen.url)
    client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(1_762_180_200_000))
    try:
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            env = {"REDIS_URL": frozen.url, "DATABASE_URL": database_url}
            with service("features", tmp_path, env) as process:
                time.sleep(8)  # the outage lasts this long; nothing is awaited
                assert process.poll() is None, (tmp_path / "features.log").read_text()[-3000:]
                os.kill(frozen.process.pid, signal.SIGCONT)
                wait_until(lambda: client.keys("its:heartbeat:features:*"), 60, "heartbeat")
                assert process.poll() is None
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
    finally:
        client.close()
        frozen.stop()


@pytest.mark.slow
def test_features_survives_redis_killed_and_restarted(tmp_path: Path, database_url):
    """Crash-only is for crashes: a Redis that dies and comes back on its data (AOF) is an
    outage to wait through. The chaos suite saw features end with exit 1 during a Redis kill;
    kill -9 at a few moments (running, just started again, loading), each time down a while."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(1_762_180_200_000))
    log = tmp_path / "features.log"
    try:
        env = {"REDIS_URL": server.url, "DATABASE_URL": database_url}
        with service("features", tmp_path, env) as process:
            wait_until(lambda: client.keys("its:heartbeat:features:*"), 60, "heartbeat")
            for down_s in (3.0, 0.0, 1.0):
                assert server.process is not None
                server.process.kill()
                server.process.wait(10)
                time.sleep(down_s)  # the outage lasts this long; nothing is awaited
                server.start()
                client.delete(*client.keys("its:heartbeat:features:*") or ["none"])
                wait_until(lambda: client.keys("its:heartbeat:features:*"), 60, "heartbeat")
                assert process.poll() is None, log.read_text()[-3000:]
            assert "main failed" not in log.read_text()
    finally:
        client.close()
        server.stop()
