"""The validator against the real simulator and router, with the SimBroker's reference price;
an injected divergence (a bias on the broker's published price) is flagged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from its_common.clock import MarketClock
from its_common.db.connect import connection_kwargs
from its_common.db.migrate import apply_migrations
from its_common.settings import load_settings
from its_common.streams import Stream
from its_trader.simbroker import SimBroker, SimConfig
from its_validator.app import Validator, ValidatorMetrics
from its_validator.check import PricePoint, Skip, broker_prices, compare, feed_prices
from its_validator.config import ValidatorSettings
from tests.router.harness import router, simulator, wait_until

SYMBOLS = ["NVDA", "MSFT"]


def test_compare_flags_over_the_threshold_and_skips_stale_prices() -> None:
    now = 1_000_000
    feed = PricePoint(100.0, now - 500, now - 100)
    kw: dict[str, Any] = {"now_ms": now, "threshold_pct": 0.1, "max_age_s": 5, "max_skew_ms": 2000}
    assert compare("X", feed, PricePoint(100.05, now, now), **kw).ok
    flagged = compare("X", feed, PricePoint(100.2, now, now), **kw)
    assert not flagged.ok and abs(flagged.diff_pct - 0.2) < 1e-9
    stale = PricePoint(100.0, now, now - 6000)
    assert compare("X", feed, stale, **kw).skipped is Skip.STALE_BROKER
    assert compare("X", stale, feed, **kw).skipped is Skip.STALE_FEED
    assert compare("X", None, feed, **kw).skipped is Skip.NO_FEED_PRICE
    assert compare("X", feed, None, **kw).skipped is Skip.NO_BROKER_PRICE
    skewed = PricePoint(100.0, now - 5000, now)
    assert compare("X", feed, skewed, **kw).skipped is Skip.SKEW


def rows(db_url: str, since: int = 0) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT symbol, ok, diff_pct FROM price_checks WHERE ts >= to_timestamp(%s / 1000.0)"
            " ORDER BY ts",
            (since,),
        ).fetchall()


async def test_flags_an_injected_divergence_against_the_simulator(
    redis_server, redis_client, database_url, tmp_path: Path
):
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    settings = load_settings(
        ValidatorSettings,
        redis_url=redis_server.url,
        database_url=database_url,
        symbols=SYMBOLS,
        interval_s=0.2,
        max_age_s=10,
        max_skew_ms=120_000,  # the simulator runs 60x: a wall second is a market minute
    )
    sim_config = SimConfig(block_ms=50)
    broker = SimBroker(connection_kwargs(settings), redis_client, sim_config)
    registry = CollectorRegistry()
    validator = Validator(
        settings, feed_prices(redis_client), broker_prices(redis_client), redis_client,
        ValidatorMetrics(registry),
    )  # fmt: skip
    with simulator(tmp_path) as sim, router(tmp_path, redis_server.url, sim):
        await broker.connect()
        try:
            await asyncio.to_thread(
                wait_until,
                lambda: all(broker.mark(s) is not None for s in SYMBOLS),
                30,
                "trades from the router",
            )
            for _ in range(15):
                await validator.check_once()
                await asyncio.sleep(0.1)
            clean = rows(database_url)
            assert {r[0] for r in clean} == set(SYMBOLS)
            ok_share = sum(1 for r in clean if r[1]) / len(clean)
            assert ok_share >= 0.8, clean

            broker.config = dataclasses.replace(sim_config, mark_bias_bps=50.0)  # +0.5 %
            # price_checks rows are stamped with the market clock (the simulator's, 60x)
            injected = await MarketClock(redis_client).now_ms()
            await asyncio.sleep(0.5)
            for _ in range(10):
                results = await validator.check_once()
                await asyncio.sleep(0.1)
            assert all(r.skipped is None for r in results)
            flagged = [r for r in rows(database_url, injected + 18_000) if not r[1]]
            assert {r[0] for r in flagged} == set(SYMBOLS)
            assert all(0.3 < r[2] < 0.7 for r in flagged), flagged
        finally:
            await broker.close()
            await validator.close()
    divergence = registry.get_sample_value(
        "its_validator_checks_total", {"symbol": "NVDA", "outcome": "divergence"}
    )
    assert divergence is not None and divergence >= 1
    alerts = await redis_client.xrange(Stream.ALERT_EVENTS)
    firing = [
        json.loads(f[b"data"]) for _, f in alerts if json.loads(f[b"data"])["state"] == "firing"
    ]
    assert {a["symbol"] for a in firing} == set(SYMBOLS)
