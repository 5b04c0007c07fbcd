"""The trader service: decisions consumer, fill handler, control loop (kill switch) and
periodic checks (snapshots, loss limits, flatten before the close) around one :class:`Trader`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import psycopg
import redis.asyncio as aioredis
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from its_common.backoff import Backoff, until_stores_answer
from its_common.consumer import ConsumerConfig, Delivery, StreamConsumer
from its_common.db.connect import connection_kwargs
from its_common.decisions import Decision, decode_decision
from its_common.leader.gate import Leadership, lead
from its_common.runtime import ServiceContext
from its_common.streams import EntryFormatError, Stream
from its_common.tasks import run_essential
from its_common.telemetry import context_from_traceparent
from its_trader.broker import Broker
from its_trader.config import TraderSettings
from its_trader.engine import Trader, TraderConfig
from its_trader.ibbroker import IbBroker, IbConfig
from its_trader.metrics import TraderMetrics
from its_trader.simbroker import SimBroker
from its_trader.store import TraderStore

log = logging.getLogger("its.trader")
tracer = trace.get_tracer("its.trader")


def trader_config(settings: TraderSettings) -> TraderConfig:
    return TraderConfig(
        symbols=tuple(settings.symbols),
        limits=settings.risk_limits(),
        buy_fraction=settings.buy_fraction,
        order_type=settings.order_type,
        limit_slippage_bps=settings.limit_slippage_bps,
        limit_timeout_s=settings.limit_timeout_s,
        clock=settings.clock,
        max_price_age_s=settings.max_price_age_s,
        stale_order_s=settings.stale_order_s,
    )


def build_trader(
    settings: TraderSettings,
    redis: aioredis.Redis,
    metrics: TraderMetrics,
    registry: CollectorRegistry | None = None,
) -> Trader:
    kwargs = connection_kwargs(settings)
    broker: Broker
    if settings.broker == "ib":
        config = IbConfig(
            host=settings.ib_host,
            port=settings.ib_port,
            client_id=settings.ib_client_id,
            account=settings.ib_account,
            allow_live=settings.allow_live_trading,
            ack_timeout_s=settings.ib_ack_timeout_s,
            market_data_type=settings.ib_market_data_type,
        )
        broker = IbBroker(config, redis=redis, registry=registry)
    else:
        broker = SimBroker(dict(kwargs), redis, settings.sim_config(), settings.stream_layout())
    trader = Trader(trader_config(settings), redis, broker, TraderStore(dict(kwargs)), metrics)

    async def reconcile_after_reconnect() -> None:
        async with trader.lock:
            await trader.reconcile()

    broker.on_reconnect(reconcile_after_reconnect)
    return trader


def decisions_consumer(
    trader: Trader,
    redis: aioredis.Redis,
    settings: TraderSettings,
    stopping: asyncio.Event,
    registry: CollectorRegistry | None = None,
) -> StreamConsumer[Decision, Sequence[Delivery[Decision]]]:
    """The decisions stream's consumer: one decision per handler call, acked once its effects
    (orders, risk events, the signal row) are durable. A new group starts at the end: decisions
    made before the trader ever ran are not traded. The consumer name is fixed (``trader``), so a
    restarted trader first re-reads the decisions it had not finished."""
    return StreamConsumer(
        redis,
        DecisionHandler(trader),
        ConsumerConfig(
            stream=Stream.DECISIONS.value,
            group=settings.group,
            consumer=settings.consumer or "trader",
            start_id="$",
            batch_entries=100,
            block_ms=settings.block_ms,
            handle_size=1,
            service="trader",
            gap_symbols=tuple(settings.symbols),
        ),
        stopping,
        registry=registry,
    )


async def consume_decisions(
    trader: Trader,
    redis: aioredis.Redis,
    settings: TraderSettings,
    stopping: asyncio.Event,
    registry: CollectorRegistry | None = None,
) -> None:
    await decisions_consumer(trader, redis, settings, stopping, registry).run()


class DecisionHandler:
    """Decodes decision entries and hands each to the trader inside its own span."""

    def __init__(self, trader: Trader) -> None:
        self.trader = trader

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> Decision:
        try:
            return decode_decision(entry_id, fields)
        except EntryFormatError:
            self.trader.metrics.decisions.labels("invalid").inc()
            raise  # dead-lettered by the consumer with its reason

    def prepare(self, batch: Sequence[Delivery[Decision]]) -> Sequence[Delivery[Decision]]:
        return batch

    async def handle(self, batch: Sequence[Delivery[Decision]]) -> int | None:
        for delivery in batch:
            decision = delivery.item
            # One span per decision, a child of the inference span that wrote the entry (tp).
            with tracer.start_as_current_span(
                "trader.handle_decision",
                context=context_from_traceparent(delivery.fields.get(b"tp")),
            ) as span:
                outcome = await self.trader.handle_decision(decision)
                if span.is_recording():
                    span.set_attribute("its.minute_ms", decision.ts_ms)
                    span.set_attribute("its.action", decision.action)
                    span.set_attribute("its.confidence", decision.confidence)
                    span.set_attribute("its.model_version", decision.model_version)
                    span.set_attribute("its.outcome", outcome)
        return None


TRANSIENT = (RedisError, OSError, psycopg.OperationalError)
"""Errors of an unreachable, paused or restarting Redis or PostgreSQL: retried, never fatal."""


async def handle_fills(trader: Trader, stopping: asyncio.Event) -> None:
    queue = trader.broker.fills()
    while not stopping.is_set():
        try:
            execution = await asyncio.wait_for(queue.get(), 0.5)
        except TimeoutError:
            continue
        backoff = Backoff(0.2, 10.0)
        while True:
            try:
                await trader.handle_fill(execution)
                break
            except TRANSIENT as exc:
                # The fill is kept and stored once the database or Redis is back (it is keyed
                # by execution id, so a retry never stores it twice).
                log.warning("fill %s not stored yet: %s", execution.execution_id, exc)
                if stopping.is_set():
                    raise
                await backoff.sleep(stopping)


async def every(
    interval_s: float, stopping: asyncio.Event, step: Callable[[], Awaitable[None]], name: str
) -> None:
    while not stopping.is_set():
        try:
            await step()
        except TRANSIENT as exc:
            # Transient (Redis or PostgreSQL unreachable, paused, restarting): the next round
            # retries; the service keeps running.
            log.warning("%s failed: %s", name, exc)
        if await _sleep(stopping, interval_s):
            return


async def _sleep(stopping: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def main(ctx: ServiceContext[TraderSettings]) -> None:
    """One trader leads (its_common.leader); a standby waits hot and starts once it leads."""
    await lead(ctx, lambda leadership: run_trader(ctx, leadership))


async def run_trader(ctx: ServiceContext[TraderSettings], leadership: Leadership) -> None:
    settings = ctx.settings
    redis = ctx.require_redis()
    metrics = TraderMetrics(ctx.registry)
    trader = build_trader(settings, redis, metrics, ctx.registry)
    trader.fence = leadership.fence
    token = leadership.fence()
    if token is not None:  # a new leader raises the fence first: an old one is refused from now
        await trader.store.claim_fence(token)

    async def start_up() -> None:
        await trader.start()
        await trader.broker.subscribe(list(trader.symbols.current))  # prices for the validator

    # Redis down or still loading its data at start is an outage to wait through, not a crash
    # (the chaos soak: a trader restarted while Redis was killed ended with exit 1).
    if not await until_stores_answer(start_up, "start-up", ctx.stopping):
        return

    async def database_ready() -> None:
        await trader.store.get_state("halt")

    ctx.add_readiness_check("database", database_ready)

    async def control_step() -> None:
        await trader.control_tick()
        for incident in trader.broker.drain_incidents():
            log.error("broker order incident: %s", incident, extra={"alert": "order_incident"})
        ctx.counters.update({"halted": 1.0 if trader.risk.halt.halted else 0.0})

    def counters() -> None:
        ctx.counters.update({"halted": 1.0 if trader.risk.halt.halted else 0.0})

    try:
        await run_essential(
            ctx.stopping,
            {
                "decisions": consume_decisions(trader, redis, settings, ctx.stopping, ctx.registry),
                "fills": handle_fills(trader, ctx.stopping),
                "control": every(
                    settings.control_interval_s, ctx.stopping, control_step, "control"
                ),
                "periodic": every(
                    settings.snapshot_interval_s, ctx.stopping, trader.periodic, "periodic"
                ),
            },
            tick=counters,
        )
    finally:
        await trader.broker.close()
        await trader.store.close()
