"""The loader's side of the stream consumer: decode, build the COPY payload, store in one
transaction. Reading, acking, claiming, poison and trimming are :mod:`its_common.consumer`'s.

Guarantees (at-least-once delivery plus idempotent writes = exactly-once effect): the framework
acks a batch only after :meth:`StoreHandler.handle` returned, i.e. after the transaction that
stored it committed. A database outage raises a transient error: the framework keeps the batch
in hand and retries it with backoff (the entries stay pending in Redis, nothing is acked, and the
consumer's liveness key keeps other replicas from claiming them). A data error fails the batch:
the framework re-reads its entries one by one, so only the bad entry is retried and, after
``max_deliveries``, dead-lettered with reason ``store_failed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from its_common.consumer import (
    DEFAULT_TRANSIENT_ERRORS,
    ConsumerConfig,
    Delivery,
    PoisonError,
    StreamConsumer,
)
from its_common.telemetry import parent_and_links
from its_loader.database import TRANSIENT_ERRORS, Database
from its_loader.metrics import LoaderMetrics

__all__ = [
    "ConsumerSettings",
    "Handler",
    "LoaderConsumer",
    "PoisonError",
    "StoreHandler",
    "loader_consumer",
]

log = logging.getLogger("its.loader.consumer")
tracer = trace.get_tracer("its.loader")

ItemT = TypeVar("ItemT")


class Handler(Protocol[ItemT]):
    """How one stream's entries are decoded and stored."""

    stream: str
    table: str

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> ItemT:
        """The entry as a storable item; raises PoisonError (or a codec error) when it is bad."""
        ...

    def prepare(self, items: Sequence[ItemT]) -> Any:
        """CPU work before the database (the COPY payload); runs while the previous batch
        is being written."""
        ...

    async def write(self, conn: psycopg.AsyncConnection[Any], prepared: Any) -> int:
        """Store a prepared batch in one transaction; returns rows written."""
        ...

    def event_count(self, item: ItemT) -> int: ...


@dataclass
class Prepared(Generic[ItemT]):
    batch: Sequence[Delivery[ItemT]]
    payload: Any


@dataclass
class ConsumerSettings:
    """The loader's consumer settings (from ``ITS_LOADER_*``)."""

    group: str
    consumer: str
    batch_entries: int = 200
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    max_deliveries: int = 5
    db_retry_max_s: float = 10.0
    metrics_interval_s: float = 5.0
    symbols: tuple[str, ...] = ()


class StoreHandler(Generic[ItemT]):
    """A framework handler around one table handler and its own database connection."""

    def __init__(
        self, table: Handler[ItemT], database: Database, metrics: LoaderMetrics, label: str
    ) -> None:
        self.table = table
        self.db = database
        self.metrics = metrics
        self.label = label
        self.counters: dict[str, float] = {}
        self._db_down_since: float | None = None

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> ItemT:
        return self.table.decode(entry_id, fields)

    def prepare(self, batch: Sequence[Delivery[ItemT]]) -> Prepared[ItemT]:
        return Prepared(batch, self.table.prepare([d.item for d in batch]))

    async def handle(self, prepared: Prepared[ItemT]) -> int:
        """Store the batch in one transaction (one ``loader.store_batch`` span, continuing the
        trace of its first entry and linking the others')."""
        parent, links = parent_and_links(d.fields.get(b"tp") for d in prepared.batch)
        with tracer.start_as_current_span(
            "loader.store_batch", context=parent, links=links
        ) as span:
            if span.is_recording():
                span.set_attribute("its.stream", self.table.stream)
                span.set_attribute("its.entries", len(prepared.batch))
            rows = await self._write(prepared)
            events = sum(self.table.event_count(d.item) for d in prepared.batch)
            if span.is_recording():
                span.set_attribute("its.events", events)
                span.set_attribute("its.rows", rows)
        self.metrics.rows.labels(self.table.table).inc(rows)
        self.metrics.events.labels(self.label).inc(events)
        self.metrics.entries.labels(self.label, "loaded").inc(len(prepared.batch))
        key = f"rows_{self.label}"
        self.counters[key] = self.counters.get(key, 0) + rows
        return events

    async def _write(self, prepared: Prepared[ItemT]) -> int:
        try:
            conn = await self.db.connection()
            started = time.perf_counter()
            rows = await self.table.write(conn, prepared.payload)
        except TRANSIENT_ERRORS as exc:
            self.metrics.db_up.set(0)
            self.metrics.db_errors.labels("unavailable").inc()
            if self._db_down_since is None:
                self._db_down_since = time.monotonic()
                log.warning(
                    "database unavailable (%s); %d entries of %s stay pending in Redis",
                    type(exc).__name__,
                    len(prepared.batch),
                    self.table.stream,
                )
            await self.db.reset()
            raise
        except (psycopg.Error, RuntimeError):
            self.metrics.db_errors.labels("data").inc()
            self.metrics.entries.labels(self.label, "retry").inc(len(prepared.batch))
            raise
        self.metrics.batch_seconds.labels(self.label).observe(time.perf_counter() - started)
        if self._db_down_since is not None:
            log.info(
                "database back after %.1fs; %s resumes",
                time.monotonic() - self._db_down_since,
                self.table.stream,
            )
            self._db_down_since = None
        self.metrics.db_up.set(1)
        return rows


LoaderConsumer = StreamConsumer[Any, Prepared[Any]]


def loader_consumer(
    table: Handler[Any],
    redis: Redis,
    database: Database,
    settings: ConsumerSettings,
    metrics: LoaderMetrics,
    stopping: Any,
    registry: CollectorRegistry,
    counters: dict[str, float] | None = None,
) -> tuple[LoaderConsumer, StoreHandler[Any]]:
    """One framework consumer storing ``table``'s stream (overlapped: batch N+1 is read and its
    COPY payload built while batch N is written)."""
    label = table.stream.rsplit(":", 1)[-1]
    handler: StoreHandler[Any] = StoreHandler(table, database, metrics, label)
    if counters is not None:
        handler.counters = counters
    config = ConsumerConfig(
        stream=table.stream,
        group=settings.group,
        consumer=settings.consumer,
        batch_entries=settings.batch_entries,
        block_ms=settings.block_ms,
        overlap=True,
        claim_idle_ms=settings.claim_idle_ms,
        claim_interval_s=settings.claim_interval_s,
        max_deliveries=settings.max_deliveries,
        failure_reason="store_failed",
        retry_max_s=settings.db_retry_max_s,
        metrics_interval_s=settings.metrics_interval_s,
        service="loader",
        gap_symbols=settings.symbols,
        transient_errors=(*DEFAULT_TRANSIENT_ERRORS, *TRANSIENT_ERRORS),
    )
    return StreamConsumer(redis, handler, config, stopping, registry=registry), handler
