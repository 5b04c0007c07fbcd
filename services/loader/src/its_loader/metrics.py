"""The loader's Prometheus metrics (registered on the service's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class LoaderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "its_loader_rows", "Rows inserted or changed", ["table"], registry=registry
        )
        self.events = Counter(
            "its_loader_events", "Events read from the streams", ["stream"], registry=registry
        )
        self.entries = Counter(
            "its_loader_entries",
            "Stream entries, by outcome: loaded (stored and committed), retry (store failed for a "
            "data reason); dead letters and claims are its_consumer_entries_total's",
            ["stream", "outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "its_loader_batch_seconds",
            "COPY + upsert + commit time of one batch",
            ["stream"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.db_errors = Counter(
            "its_loader_db_errors", "Database errors, by kind", ["kind"], registry=registry
        )
        self.db_up = Gauge("its_loader_db_up", "1 while the database answers", registry=registry)
        self.rows_per_second = Gauge(
            "its_loader_rows_per_second",
            "Rows stored per second over the last metrics interval",
            ["stream"],
            registry=registry,
        )
        self.redis_used_memory = Gauge(
            "its_loader_redis_used_memory_bytes", "Redis used_memory", registry=registry
        )
        self.redis_memory_high = Gauge(
            "its_loader_redis_memory_high",
            "1 while Redis used_memory is over the warning threshold",
            registry=registry,
        )
        self.rest_requests = Counter(
            "its_loader_rest_requests",
            "Polygon REST requests, by HTTP status",
            ["status"],
            registry=registry,
        )
        self.backfill_rows = Counter(
            "its_loader_backfill_rows", "Bars stored by REST backfill", registry=registry
        )
        self.backfill_provisional = Counter(
            "its_loader_backfill_provisional_rows",
            "REST bars of minutes not final on the market clock, stored provisional",
            registry=registry,
        )
        self.backfill_trades = Counter(
            "its_loader_backfill_trades",
            "Trades stored by REST backfill (new rows; already stored ones not counted)",
            registry=registry,
        )
        self.gap_windows = Counter(
            "its_loader_gap_windows",
            "Gap windows handled, by outcome",
            ["outcome"],
            registry=registry,
        )
