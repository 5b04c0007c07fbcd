"""Each alert rule against real Redis and PostgreSQL state."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.types.json import Jsonb

from its_alerter.config import AlerterSettings
from its_alerter.rules import (
    DatabaseNotReadyError,
    RuleContext,
    database_rule,
    dead_letters_rule,
    feed_overflow_rule,
    feed_rule,
    heartbeat_rule,
    loader_lag_rule,
    model_age_rule,
    price_divergence_rule,
    redis_memory_rule,
    redis_rule,
    trading_halted_rule,
)
from its_common import streams
from its_common.db.connect import async_pool
from its_common.feed_status import SLOW_CONSUMER, FeedStatus
from its_common.heartbeat import beat
from its_common.localstack.servers import RedisServer, free_port
from its_common.settings import SettingsError, load_settings
from its_common.streams import Stream, latest_trade_key, now_ms


def settings(redis_url: str, db_url: str = "postgresql://x@127.0.0.1/x", **kw: Any):
    return load_settings(AlerterSettings, redis_url=redis_url, database_url=db_url, **kw)


async def test_feed_rule_disconnected_stale_and_healthy(redis_server, redis_client):
    s = settings(redis_server.url, feed_always=True, feed_stale_after_s=30, symbols="NVDA,MSFT")
    ctx = RuleContext(s, redis_client, None, datetime.now(UTC))
    found = {c.rule: c for c in await feed_rule(ctx)}
    assert set(found) == {"feed_disconnected", "feed_stale"}  # nothing published at all
    assert found["feed_disconnected"].labels["state"] == "missing"

    await redis_client.hset("its:feed:state", mapping={"state": "stale", "detail": "no frames"})
    await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "1", "rt": now_ms() - 90_000})
    found = {c.rule: c for c in await feed_rule(ctx)}
    assert "stale" in found["feed_disconnected"].message
    assert 85 < found["feed_stale"].labels["last_trade_age_s"] < 120

    await redis_client.hset("its:feed:state", mapping={"state": "subscribed", "detail": ""})
    await redis_client.hset(latest_trade_key("MSFT"), mapping={"p": "1", "rt": now_ms() - 2_000})
    assert await feed_rule(ctx) == []


async def test_feed_rule_quiet_outside_market_hours(redis_server, redis_client):
    s = settings(redis_server.url)  # feed_always false
    sunday = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
    assert await feed_rule(RuleContext(s, redis_client, None, sunday)) == []
    tuesday_open = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # 11:00 New York
    rules = {c.rule for c in await feed_rule(RuleContext(s, redis_client, None, tuesday_open))}
    assert rules == {"feed_disconnected", "feed_stale"}


async def test_price_divergence_from_price_checks(redis_server, redis_client, db_url):
    now = datetime.now(UTC)
    rows = [
        (now - timedelta(seconds=30), "NVDA", 100.0, 100.0, 0.0, True, "ok"),
        (now - timedelta(seconds=5), "NVDA", 100.0, 100.25, 0.25, False, "divergence"),
        (now - timedelta(seconds=5), "MSFT", 400.0, 400.2, 0.05, True, "ok"),
        (now - timedelta(seconds=1), "MSFT", 400.0, None, 0.0, True, "no_broker_price"),
        (now - timedelta(hours=2), "AAPL", 10.0, 11.0, 10.0, False, "divergence"),  # too old
    ]
    with psycopg.connect(db_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO price_checks (ts, symbol, feed_price, broker_price, diff_pct, ok, detail)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s)",
            rows,
        )
    s = settings(redis_server.url, db_url)
    async with async_pool(s) as pool:
        found = await price_divergence_rule(RuleContext(s, redis_client, pool, now))
    assert [(c.fingerprint, c.labels["diff_pct"]) for c in found] == [
        ("price_divergence:NVDA", 0.25)
    ]
    with pytest.raises(DatabaseNotReadyError):
        await price_divergence_rule(RuleContext(s, redis_client, None, now))


async def test_redis_memory_threshold(redis_server, redis_client):
    now = datetime.now(UTC)
    low = settings(redis_server.url, redis_memory_bytes=1024)
    [cond] = await redis_memory_rule(RuleContext(low, redis_client, None, now))
    assert cond.labels["used_memory"] > 1024
    high = settings(redis_server.url, redis_memory_bytes=10 * 2**30)
    assert await redis_memory_rule(RuleContext(high, redis_client, None, now)) == []


async def test_loader_lag_pending_and_backlog(redis_server, redis_client):
    stream = "its:stream:bars:1m"
    s = settings(redis_server.url, loader_streams=stream, loader_lag_s=60)
    now = datetime.now(UTC)
    ctx = RuleContext(s, redis_client, None, now)
    assert await loader_lag_rule(ctx) == []  # no stream, no group: nothing to judge
    old = now_ms() - 300_000
    await redis_client.xadd(stream, {b"v": b"1"}, id=f"{old}-0")
    await redis_client.xadd(stream, {b"v": b"1"}, id=f"{old + 1000}-0")
    await redis_client.xgroup_create(stream, "loader", id="0")
    [cond] = await loader_lag_rule(ctx)
    assert cond.labels["pending"] == 0 and cond.labels["backlog_s"] > 290  # undelivered backlog
    await redis_client.xreadgroup("loader", "c1", {stream: ">"}, count=1)
    [cond] = await loader_lag_rule(ctx)
    assert cond.labels["pending"] == 1 and cond.labels["oldest_pending_s"] > 290
    await redis_client.xreadgroup("loader", "c1", {stream: ">"})
    await redis_client.xack(stream, "loader", f"{old}-0", f"{old + 1000}-0")
    assert await loader_lag_rule(ctx) == []


async def test_trading_halted_and_kill_switch(redis_server, redis_client, db_url):
    s = settings(redis_server.url, db_url)
    async with async_pool(s) as pool:
        ctx = RuleContext(s, redis_client, pool, datetime.now(UTC))
        assert await trading_halted_rule(ctx) == []
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "INSERT INTO service_state (service, key, value) VALUES ('trader', 'halt', %s)",
                (Jsonb({"halted": True, "reason": "max_drawdown", "detail": "-3.1%"}),),
            )
        [cond] = await trading_halted_rule(ctx)
        assert cond.rule == "trading_halted" and "max_drawdown" in cond.message
        await redis_client.set("its:trader:kill", json.dumps({"id": "k1", "flatten": True}))
        assert {c.rule for c in await trading_halted_rule(ctx)} == {"trading_halted", "kill_switch"}
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE service_state SET value = '{\"halted\": false}'")
        await redis_client.delete("its:trader:kill")
        assert await trading_halted_rule(ctx) == []


async def test_heartbeat_missing(redis_server, redis_client):
    s = settings(redis_server.url, expected_services="router,loader", heartbeat_max_age_s=20)
    await beat(redis_client, "router", "pod-1", "1", "running", {}, 15, now_ms())
    old = {"service": "loader", "instance": "pod-2", "ts": str(now_ms() - 60_000)}
    await redis_client.hset("its:heartbeat:loader:pod-2", mapping=old)
    found = await heartbeat_rule(RuleContext(s, redis_client, None, datetime.now(UTC)))
    assert [c.fingerprint for c in found] == ["heartbeat_missing:loader"]
    assert "60s ago" in found[0].message or "59s ago" in found[0].message


async def test_model_age_from_bundle_dir_and_redis_key(redis_server, redis_client, tmp_path):
    now = datetime.now(UTC)
    s = settings(redis_server.url, model_bundle_dir=str(tmp_path), model_max_age_s=86400)
    ctx = RuleContext(s, redis_client, None, now)
    [empty] = await model_age_rule(ctx)
    assert "no model bundle" in empty.message
    for name, age in (("old", timedelta(days=9)), ("older", timedelta(days=20))):
        (tmp_path / name).mkdir()
        created = (now - age).isoformat(timespec="seconds")
        (tmp_path / name / "bundle.json").write_text(json.dumps({"created_at": created}))
    [cond] = await model_age_rule(ctx)
    assert cond.labels["bundle"] == "old" and 8.9 < cond.labels["age_s"] / 86400 < 9.1
    fresh = str(now_ms() - 3_600_000)
    await redis_client.hset("its:model:active", mapping={"name": "live", "created_at": fresh})
    assert await model_age_rule(ctx) == []  # the loaded model (Redis) wins over the directory
    nothing = settings(redis_server.url)
    await redis_client.delete("its:model:active")
    assert await model_age_rule(RuleContext(nothing, redis_client, None, now)) == []


def test_settings_validation():
    with pytest.raises(SettingsError) as err:
        load_settings(AlerterSettings, rules="feed,nonsense", smtp_to="not-an-address")
    text = str(err.value)
    assert "ITS_ALERTER_RULES" in text and "nonsense" in text and "ITS_ALERTER_SMTP_TO" in text


async def test_redis_rule_fires_while_redis_does_not_answer(tmp_path):
    """Frozen (SIGSTOP) or killed: ``redis_unreachable``; answered again: resolved."""
    server = RedisServer(tmp_path / "redis").start()
    assert server.process is not None
    client = streams.connect(server.url, health_check_interval=0, socket_timeout=1)
    s = settings(server.url, redis_timeout_s=0.5)
    try:
        assert await redis_rule(RuleContext(s, client, None, datetime.now(UTC))) == []
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            [frozen] = await redis_rule(RuleContext(s, client, None, datetime.now(UTC)))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert frozen.fingerprint == "redis_unreachable" and frozen.severity == "critical"
        assert "no answer" in frozen.message
        assert await redis_rule(RuleContext(s, client, None, datetime.now(UTC))) == []
        server.stop()
        [down] = await redis_rule(RuleContext(s, client, None, datetime.now(UTC)))
        assert down.rule == "redis_unreachable" and "Error" in down.labels["error"]
    finally:
        await client.aclose()
        server.stop()


async def test_database_rule_fires_while_postgresql_does_not_answer(redis_client, db_url):
    s = settings("redis://127.0.0.1:1/0", db_url, database_timeout_s=1)
    now = datetime.now(UTC)
    async with async_pool(s) as pool:
        assert await database_rule(RuleContext(s, redis_client, pool, now)) == []
    with pytest.raises(DatabaseNotReadyError):  # no pool yet: the schema gate decides
        await database_rule(RuleContext(s, redis_client, None, now))
    nobody = f"postgresql://its@127.0.0.1:{free_port()}/its"
    down = settings("redis://127.0.0.1:1/0", nobody, database_timeout_s=1)
    pool = async_pool(down, min_size=0, max_size=1)
    await pool.open(wait=False)
    try:
        [cond] = await database_rule(RuleContext(down, redis_client, pool, now))
    finally:
        await pool.close()
    assert cond.fingerprint == "database_unreachable" and cond.severity == "critical"


async def test_dead_letters_rule_counts_the_window(redis_server, redis_client):
    s = settings(redis_server.url, dead_letter_window_s=60)
    now = datetime.now(UTC)
    ctx = RuleContext(s, redis_client, None, now)
    old = now_ms() - 120_000
    entry = {"v": "1", "source": "router", "reason": "invalid_json", "detail": "x", "raw": "["}
    await redis_client.xadd(Stream.DEAD_LETTER, entry, id=f"{old}-0")
    assert await dead_letters_rule(ctx) == []  # older than the window: resolved
    await redis_client.xadd(Stream.DEAD_LETTER, entry)
    await redis_client.xadd(Stream.DEAD_LETTER, {**entry, "source": "loader", "reason": "poison"})
    [cond] = await dead_letters_rule(RuleContext(s, redis_client, None, datetime.now(UTC)))
    assert cond.fingerprint == "dead_letters" and cond.labels["count"] == 2
    assert cond.labels["reasons"] == {"router:invalid_json": 1, "loader:poison": 1}


async def test_feed_overflow_rule_reads_slow_consumer_closes(redis_server, redis_client):
    s = settings(redis_server.url, feed_overflow_window_s=60)

    def status(state: str) -> dict[bytes, bytes]:
        data = msgspec.json.encode(FeedStatus(state=state, detail="1011", ts_ms=now_ms()))
        return {b"v": b"1", b"type": b"feed_status", b"data": data}

    old = now_ms() - 120_000
    await redis_client.xadd(Stream.FEED_STATUS, status(SLOW_CONSUMER), id=f"{old}-0")
    await redis_client.xadd(Stream.FEED_STATUS, status("disconnected"))
    await redis_client.xadd(Stream.FEED_STATUS, status("subscribed"))
    ctx = RuleContext(s, redis_client, None, datetime.now(UTC))
    # a plain disconnect is feed_disconnected's; the slow-consumer close is older than the window
    assert await feed_overflow_rule(ctx) == []
    await redis_client.xadd(Stream.FEED_STATUS, status(SLOW_CONSUMER))
    [cond] = await feed_overflow_rule(RuleContext(s, redis_client, None, datetime.now(UTC)))
    assert cond.fingerprint == "feed_overflow" and cond.labels["count"] == 1
