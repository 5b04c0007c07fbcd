"""The alerter service: a rule round every ``ITS_ALERTER_INTERVAL_S``, events in between."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from its_alerter.config import AlerterSettings
from its_alerter.engine import AlertEngine, AlerterMetrics
from its_alerter.events import EventReader
from its_alerter.model import ENGINE_GROUP, Condition
from its_alerter.notifiers import build_notifiers
from its_alerter.rules import RULES, DatabaseNotReadyError, RuleContext
from its_common.backoff import Backoff
from its_common.db.connect import async_pool
from its_common.heartbeat import instance_name
from its_common.redaction import redact
from its_common.runtime import ServiceContext
from its_common.streams import now_ms

log = logging.getLogger("its.alerter")
RULE_TIMEOUT_S = 10.0
STORE_RULES = frozenset({"redis", "database"})


class Alerter:
    def __init__(self, ctx: ServiceContext[AlerterSettings]) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.redis = ctx.require_redis()
        self.metrics = AlerterMetrics(ctx.registry)
        self.engine = AlertEngine(
            build_notifiers(self.settings),
            self.metrics,
            environment=self.settings.environment,
            cooldown_s=self.settings.cooldown_s,
            repeat_s=self.settings.repeat_s,
        )
        self.events = EventReader(
            self.redis, self.engine, self.settings.events_group, instance_name()
        )
        self.pool: AsyncConnectionPool | None = None
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, str] = {}

    async def connect_database(self) -> None:
        """Restore the firing alerts (main starts once the schema is current: run_service)."""
        pool = async_pool(self.settings, min_size=1, max_size=3)
        await pool.open(wait=False)
        backoff = Backoff(1.0, 10.0)
        while not self.ctx.stopping.is_set():
            try:
                restored = await self.engine.restore(pool)
                break
            except Exception as exc:
                log.warning("alerts not restored yet: %s; retrying", redact(str(exc)))
                await backoff.sleep(self.ctx.stopping)
        else:
            await pool.close()
            return
        self.pool = pool
        log.info("database ready; %d firing alert(s) restored", restored)

    async def round(self) -> None:
        """Evaluate every enabled rule once and apply the results."""
        now = datetime.now(UTC)
        rule_ctx = RuleContext(self.settings, self.redis, self.pool, now)
        names = [name for name in self.settings.rules if name in RULES]
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(RULES[name](rule_ctx), RULE_TIMEOUT_S) for name in names),
            return_exceptions=True,
        )
        results: dict[str, list[Condition]] = {}
        # While Redis or PostgreSQL does not answer, the rules reading it fail: that is one
        # problem (redis_unreachable / database_unreachable), not a rule_failing per rule.
        store_down = any(
            isinstance(outcome, list) and outcome and name in STORE_RULES
            for name, outcome in zip(names, outcomes, strict=True)
        )
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, DatabaseNotReadyError):
                continue
            if isinstance(outcome, BaseException):
                if not store_down:
                    self.failures[name] = self.failures.get(name, 0) + 1
                self.last_error[name] = redact(f"{type(outcome).__name__}: {outcome}")[:300]
                self.metrics.rule_errors.labels(name).inc()
                log.warning("rule %s failed: %s", name, self.last_error[name])
                continue
            self.failures[name] = 0
            results[name] = outcome
        results[ENGINE_GROUP] = [
            Condition(
                "rule_failing",
                "warning",
                f"rule {name} failed {count} times in a row: {self.last_error.get(name, '')}",
                key=name,
                labels={"rule": name, "failures": count},
            )
            for name, count in self.failures.items()
            if count >= self.settings.rule_failures_alert
        ]
        await self.engine.evaluate(results, now_ms())
        await self.engine.record_pending()
        self.metrics.evaluations.inc()
        self.ctx.counters["firing"] = float(len(self.engine.active))

    async def read_events(self) -> None:
        """The event streams' consumers (they retry Redis errors themselves)."""
        while not self.ctx.stopping.is_set():
            try:
                await self.events.setup()
                break
            except Exception as exc:
                log.warning(
                    "event groups not created yet: %s", redact(f"{type(exc).__name__}: {exc}")
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.stopping.wait(), 1.0)
        consumers = self.events.consumers(self.ctx.stopping, self.ctx.registry)
        await asyncio.gather(*(consumer.run() for consumer in consumers))

    async def flush_events(self) -> None:
        try:
            await self.events.flush_gaps()
        except Exception as exc:
            log.warning("gap summary not sent: %s", redact(f"{type(exc).__name__}: {exc}"))

    async def run(self) -> None:
        db_task = asyncio.create_task(self.connect_database(), name="alerter-db")
        tasks = [db_task]
        if "gaps" in self.settings.rules:
            tasks.append(asyncio.create_task(self.read_events(), name="alerter-events"))
        event_every = min(1.0, self.settings.interval_s)
        next_round = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self.ctx.stopping.is_set():
                if loop.time() >= next_round:
                    next_round = loop.time() + self.settings.interval_s
                    try:
                        await self.round()
                    except Exception:
                        log.exception("alert round failed")
                await self.flush_events()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.stopping.wait(), event_every)
        finally:
            db_task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.engine.close()
            if self.pool is not None:
                await self.pool.close()


async def main(ctx: ServiceContext[AlerterSettings]) -> None:
    alerter = Alerter(ctx)
    await alerter.run()
