"""The router's Prometheus metrics (registered in the service's own registry)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)


@dataclass
class RouterMetrics:
    events: Counter
    frames: Counter
    parse_errors: Counter
    reconnects: Counter
    last_message_ts: Gauge
    queue_depth: Gauge
    queue_dropped_frames: Counter
    held_events: Gauge
    dropped_events: Counter
    redis_write_errors: Counter
    receive_to_stored: Histogram
    exchange_to_stored: Histogram
    batch_size: Histogram
    connected: Gauge
    feed_status: Counter
    rest_requests: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        return cls(
            events=Counter(
                "router_events", "Events written to streams, by type", ["type"], registry=registry
            ),
            frames=Counter("router_frames", "Frames received from the feed", registry=registry),
            parse_errors=Counter(
                "router_parse_errors", "Invalid events, by reason", ["reason"], registry=registry
            ),
            reconnects=Counter(
                "router_reconnects", "Feed reconnects, by cause", ["cause"], registry=registry
            ),
            last_message_ts=Gauge(
                "router_last_message_timestamp_seconds",
                "Unix time of the last frame (age = now - this)",
                registry=registry,
            ),
            queue_depth=Gauge(
                "router_queue_depth", "Frames waiting to be written", registry=registry
            ),
            queue_dropped_frames=Counter(
                "router_queue_dropped_frames",
                "Frames dropped because the read queue was full (recorded as gaps)",
                registry=registry,
            ),
            held_events=Gauge(
                "router_held_events", "Events held while Redis is unreachable", registry=registry
            ),
            dropped_events=Counter(
                "router_dropped_events",
                "Events dropped because the hold buffer was full (recorded as gaps)",
                registry=registry,
            ),
            redis_write_errors=Counter(
                "router_redis_write_errors", "Failed Redis batch writes", registry=registry
            ),
            receive_to_stored=Histogram(
                "router_receive_to_stored_seconds",
                "From frame receipt to its XADD acknowledged",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            exchange_to_stored=Histogram(
                "router_exchange_to_stored_seconds",
                "From exchange (SIP) timestamp of a frame's newest trade to stored",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            batch_size=Histogram(
                "router_batch_events",
                "Events per write batch",
                buckets=(1, 10, 100, 1_000, 5_000, 20_000, 100_000),
                registry=registry,
            ),
            connected=Gauge(
                "router_feed_connected", "1 while authenticated and subscribed", registry=registry
            ),
            feed_status=Counter(
                "router_feed_status",
                "Feed status messages, by status",
                ["status"],
                registry=registry,
            ),
            rest_requests=Counter(
                "router_rest_requests", "REST requests, by outcome", ["outcome"], registry=registry
            ),
        )
