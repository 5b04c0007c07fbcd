"""The validator service: every interval, one check per symbol; rows, metrics, alert events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from its_common.alert_events import AlertEvent, AlertState, publish_alert_event
from its_common.clock import MarketClock
from its_common.db.connect import connection_kwargs
from its_common.runtime import ServiceContext
from its_common.streams import now_ms
from its_common.symbols import LiveSymbols
from its_validator.check import PriceSource, Result, broker_prices, compare, feed_prices
from its_validator.config import ValidatorSettings

log = logging.getLogger("its.validator")


class ValidatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.diff = Gauge(
            "its_validator_price_diff_pct",
            "Feed vs broker price difference (%)",
            ["symbol"],
            registry=registry,
        )
        self.checks = Counter(
            "its_validator_checks",
            "Price checks by outcome (ok, divergence)",
            ["symbol", "outcome"],
            registry=registry,
        )
        self.skipped = Counter(
            "its_validator_skipped",
            "Checks skipped, by reason (no price, stale, skew)",
            ["symbol", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "its_validator_check_failures",
            "Check rounds that failed (Redis or database error), by error type",
            ["error"],
            registry=registry,
        )
        self.divergent = Gauge(
            "its_validator_divergent", "1 while a symbol diverges", ["symbol"], registry=registry
        )


class Validator:
    def __init__(
        self,
        settings: ValidatorSettings,
        feed: PriceSource,
        broker: PriceSource,
        redis: Any,
        metrics: ValidatorMetrics,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.broker = broker
        self.redis = redis
        self.clock = MarketClock(redis)  # price_checks rows are stamped in market time
        self.symbols = LiveSymbols(redis, settings.symbols)  # its_common.symbols: the live list
        self.metrics = metrics
        self.divergent: dict[str, bool] = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _db(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                **connection_kwargs(self.settings), autocommit=True
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def check_once(self) -> list[Result]:
        s = self.settings
        results = []
        for symbol in await self.symbols.refresh():
            result = compare(
                symbol,
                await self.feed.price(symbol),
                await self.broker.price(symbol),
                now_ms=now_ms(),
                threshold_pct=s.threshold_pct,
                max_age_s=s.max_age_s,
                max_skew_ms=s.max_skew_ms,
            )
            results.append(result)
            await self._record(result)
        return results

    async def _record(self, result: Result) -> None:
        m, symbol = self.metrics, result.symbol
        if result.skipped is not None:
            m.skipped.labels(symbol, result.skipped.value).inc()
            return
        assert result.feed is not None and result.broker is not None
        m.diff.labels(symbol).set(result.diff_pct)
        m.checks.labels(symbol, "ok" if result.ok else "divergence").inc()
        m.divergent.labels(symbol).set(0 if result.ok else 1)
        conn = await self._db()
        await conn.execute(
            "INSERT INTO price_checks (ts, symbol, feed_price, broker_price, diff_pct, ok, detail)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (symbol, ts) DO NOTHING",
            (
                await self.clock.now(), symbol, result.feed.price, result.broker.price,
                result.diff_pct, result.ok, result.detail,
            ),
        )  # fmt: skip
        was = self.divergent.get(symbol, False)
        self.divergent[symbol] = not result.ok
        if was != (not result.ok):
            await self._alert(result)

    async def _alert(self, result: Result) -> None:
        """An alert event on each change (divergence starts or ends) for the alerter."""
        assert result.feed is not None and result.broker is not None
        state: AlertState = "resolved" if result.ok else "firing"
        if not result.ok:
            log.warning(
                "price divergence",
                extra={"symbol": result.symbol, "diff_pct": result.diff_pct},
            )
        data = {
            "rule": "price_divergence",
            "state": state,
            "severity": "warning",
            "symbol": result.symbol,
            "feed_price": result.feed.price,
            "broker_price": result.broker.price,
            "broker_source": result.broker.source,
            "diff_pct": result.diff_pct,
            "threshold_pct": self.settings.threshold_pct,
        }
        change = "diverges" if not result.ok else "agrees again"
        event = AlertEvent(
            type="price_divergence",
            source="validator",
            severity="warning",
            state=state,
            message=(
                f"{result.symbol}: broker price {result.broker.price} {change} with the feed's "
                f"{result.feed.price} ({result.diff_pct:.3f} %)"
            ),
            data=data,
        )
        await publish_alert_event(self.redis, event)


async def run_validator(validator: Validator, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        try:
            await validator.check_once()
        except (RedisError, psycopg.Error, OSError) as exc:
            # Any database error (a missing table too) is one failed round, not a crash.
            validator.metrics.failures.labels(type(exc).__name__).inc()
            log.warning("price check failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), validator.settings.interval_s)


async def main(ctx: ServiceContext[ValidatorSettings]) -> None:
    redis = ctx.require_redis()
    validator = Validator(
        ctx.settings, feed_prices(redis), broker_prices(redis), redis,
        ValidatorMetrics(ctx.registry),
    )  # fmt: skip

    async def database_ready() -> None:
        await (await validator._db()).execute("SELECT 1")

    ctx.add_readiness_check("database", database_ready)
    try:
        await run_validator(validator, ctx.stopping)
    finally:
        await validator.close()
