"""The validator checks the IB adapter's price (``src=ib``) like the SimBroker's: a real its-ibsim,
the real IbBroker (ib_async) publishing its market-data ticks to ``its:broker:price:<SYM>``, the
feed's last trade in ``its:last:trade:<SYM>``; an injected divergence on the IB side is flagged."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.settings import load_settings
from its_common.streams import Stream, latest_trade_key, now_ms
from its_ibsim.prices import StaticPrices
from its_ibsim.server import SimOptions
from its_trader.ibbroker import IbBroker, IbConfig
from its_validator.app import Validator, ValidatorMetrics
from its_validator.check import broker_prices, feed_prices
from its_validator.config import ValidatorSettings
from tests.ibsim.support import running_sim

FAST_IB: dict[str, Any] = {
    "reconnect_initial_s": 0.1,
    "reconnect_max_s": 0.5,
    "connect_attempts": 1,
}


async def feed_trade(redis: aioredis.Redis, symbol: str, price: float) -> None:
    stamp = str(now_ms())
    await redis.hset(latest_trade_key(symbol), mapping={"p": repr(price), "t": stamp, "rt": stamp})


async def ib_price_is(broker: IbBroker, symbol: str, price: float) -> None:
    deadline = time.monotonic() + 5
    while (broker.price(symbol) or (0.0, 0))[0] != price:
        assert time.monotonic() < deadline, broker.price(symbol)
        await asyncio.sleep(0.02)


async def test_an_ib_price_is_checked_and_a_divergence_flagged(
    redis_client: aioredis.Redis, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    settings = load_settings(
        ValidatorSettings,
        redis_url="redis://unused:6379/0",
        database_url=database_url,
        symbols=["NVDA"],
        max_age_s=10,
        max_skew_ms=5_000,
    )
    registry = CollectorRegistry()
    validator = Validator(
        settings, feed_prices(redis_client), broker_prices(redis_client), redis_client,
        ValidatorMetrics(registry),
    )  # fmt: skip
    static = StaticPrices({"NVDA": 180.0})  # IB's market data, independent of ITS's feed
    async with running_sim(SimOptions(tick_interval_s=0.05), prices=static) as sim:
        broker = IbBroker(IbConfig(port=sim.port, client_id=41, **FAST_IB), redis=redis_client)
        await broker.connect()
        try:
            await broker.subscribe(["NVDA"])
            await ib_price_is(broker, "NVDA", 180.0)
            await asyncio.sleep(0.1)  # the published hash follows the tick
            published = await redis_client.hgetall("its:broker:price:NVDA")
            assert published[b"src"] == b"ib" and float(published[b"p"]) == 180.0

            await feed_trade(redis_client, "NVDA", 180.09)  # 0.05 %: within 0.1 %
            [result] = await validator.check_once()
            assert result.skipped is None, result.detail
            assert result.broker is not None and result.broker.source == "ib"
            assert result.ok and 0.04 < result.diff_pct < 0.06

            static.set("NVDA", 181.0)  # IB now 0.5 % away from the feed
            await ib_price_is(broker, "NVDA", 181.0)
            await asyncio.sleep(0.1)
            await feed_trade(redis_client, "NVDA", 180.09)
            [flagged] = await validator.check_once()
            assert flagged.skipped is None and not flagged.ok
            assert 0.45 < flagged.diff_pct < 0.55
        finally:
            await broker.close()
            await validator.close()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT ok, broker_price FROM price_checks WHERE symbol = 'NVDA' ORDER BY ts"
        ).fetchall()
    assert rows[-2:] == [(True, 180.0), (False, 181.0)]
    assert (
        registry.get_sample_value(
            "its_validator_checks_total", {"symbol": "NVDA", "outcome": "divergence"}
        )
        == 1
    )
    entries: Any = await redis_client.xrange(Stream.ALERT_EVENTS)
    events = [json.loads(f[b"data"]) for _, f in entries]
    firing = [e for e in events if e["state"] == "firing" and e["symbol"] == "NVDA"]
    assert firing and firing[-1]["broker_source"] == "ib" and firing[-1]["broker_price"] == 181.0
