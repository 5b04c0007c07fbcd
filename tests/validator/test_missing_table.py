"""A database error other than a lost connection (here: the price_checks table missing) is one
failed round, counted and logged, not the end of the validator."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from its_common.settings import load_settings
from its_common.streams import now_ms
from its_validator.app import Validator, ValidatorMetrics, run_validator
from its_validator.check import PricePoint
from its_validator.config import ValidatorSettings
from tests.conditions import wait_until


class FixedPrice:
    async def price(self, symbol: str) -> PricePoint | None:
        now = now_ms()
        return PricePoint(price=100.0, ts_ms=now, received_ms=now, source="test")


async def test_a_missing_table_fails_rounds_without_ending_the_validator(
    redis_server, redis_client, database_url
):
    settings = load_settings(
        ValidatorSettings,
        redis_url=redis_server.url,
        database_url=database_url,  # empty: no migrations
        symbols=["NVDA"],
        interval_s=0.05,
    )
    registry = CollectorRegistry()
    validator = Validator(
        settings, FixedPrice(), FixedPrice(), redis_client, ValidatorMetrics(registry)
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(run_validator(validator, stopping))

    def failures() -> float:
        value = registry.get_sample_value(
            "its_validator_check_failures_total", {"error": "UndefinedTable"}
        )
        return value or 0.0

    try:
        await wait_until(lambda: failures() >= 2 or task.done(), 30)
        assert not task.done(), task.exception()
        assert failures() >= 2  # it went on to the next round
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)
        await validator.close()
