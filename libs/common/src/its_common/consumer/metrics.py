"""Prometheus metrics of the stream consumers, one set per service registry.

Every consumer of a process shares the families (labels ``stream`` and ``group``), so a service
with several consumers (the loader, the alerter) registers them once.
"""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConsumerMetrics:
    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, ConsumerMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls(registry)
            cls._by_registry[registry] = metrics
        return metrics

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream", "group"]
        self.entries = Counter(
            "its_consumer_entries",
            "Stream entries by outcome: consumed (delivered to the handler), acked, claimed "
            "(taken over from a dead consumer), dead_lettered, failed (handler error), "
            "trimmed_unread (deleted by trimming before they were handled)",
            [*labels, "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "its_consumer_events",
            "Events handled (as the handler counts them; entries when it does not)",
            labels,
            registry=registry,
        )
        self.errors = Counter(
            "its_consumer_errors",
            "Errors by kind: redis (a Redis call failed), transient (the handler's dependency "
            "was down), handler (the handler failed), nogroup (group recreated)",
            [*labels, "kind"],
            registry=registry,
        )
        self.handle_seconds = Histogram(
            "its_consumer_handle_seconds",
            "Time the handler took per call (prepare excluded)",
            labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag = Gauge(
            "its_consumer_lag_entries",
            "Entries not yet delivered to the group (XINFO GROUPS lag; -1 when Redis cannot say)",
            labels,
            registry=registry,
        )
        self.pending = Gauge(
            "its_consumer_pending_entries",
            "Entries delivered to the group and not yet acked",
            labels,
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "its_consumer_oldest_pending_age_seconds",
            "Age (from its id) of the oldest pending entry; 0 when none",
            labels,
            registry=registry,
        )
        self.backlog_age = Gauge(
            "its_consumer_backlog_age_seconds",
            "Age of the oldest entry not yet delivered to the group; 0 when caught up",
            labels,
            registry=registry,
        )
        self.redis_up = Gauge(
            "its_consumer_redis_up",
            "1 while this consumer's Redis calls succeed",
            labels,
            registry=registry,
        )
