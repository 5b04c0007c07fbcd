"""One trace per minute bar across the real processes: simulator -> router -> Redis Streams ->
features -> inference -> trader, and router -> loader, exported over OTLP/HTTP to a local
receiver. The trace context crosses each stream as the entry's ``tp`` (W3C traceparent)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import psycopg
import redis

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import RedisServer
from its_common.streams import latest_trade_key
from tests.processes import service
from tests.router.harness import SIM_KEY, Sim, router, simulator, wait_until
from tests.telemetry.receiver import ReceivedSpan, Receiver, otlp_receiver

REPO = Path(__file__).resolve().parents[2]
DEMO_BUNDLE = REPO / "models" / "demo"
CHAIN = (
    "trader.handle_decision",
    "inference.decide",
    "features.publish_minute",
    "router.write_batch",
)


def otel_env(receiver: Receiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }


def chain_from(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """``span`` and its ancestors as far as they were received."""
    chain = [span]
    while chain[-1].parent_span_id and chain[-1].parent_span_id in by_id:
        chain.append(by_id[chain[-1].parent_span_id])
    return chain


def full_chain(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.name == CHAIN[0]:
            chain = chain_from(span, by_id)
            if tuple(s.name for s in chain[: len(CHAIN)]) == CHAIN:
                return chain[: len(CHAIN)]
    return None


def loader_chain(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.name == "loader.store_batch":
            chain = chain_from(span, by_id)
            if len(chain) >= 2 and chain[1].name == "router.write_batch":
                return chain[:2]
    return None


def test_one_trace_follows_a_minute_bar_across_the_services(
    tmp_path: Path, redis_server: RedisServer, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    redis.Redis.from_url(redis_server.url).flushdb()
    common = {"REDIS_URL": redis_server.url, "DATABASE_URL": database_url}
    with otlp_receiver() as receiver, ExitStack() as stack:
        traced = {**common, **otel_env(receiver)}
        # Inference and the trader read their streams from "$": they start first.
        stack.enter_context(service("trader", tmp_path, {**traced, "ITS_TRADER_BLOCK_MS": "100"}))
        stack.enter_context(
            service(
                "inference",
                tmp_path,
                {
                    **traced,
                    "ITS_INFERENCE_BUNDLE_DIR": str(DEMO_BUNDLE),
                    "ITS_INFERENCE_BLOCK_MS": "100",
                },
            )
        )
        sim: Sim = stack.enter_context(
            simulator(
                tmp_path,
                "--speed", "120",
                "--trades-per-day", "NVDA=20000,MSFT=10000",
                "--quotes-per-trade", "0",
            )
        )  # fmt: skip
        stack.enter_context(
            service(
                "loader",
                tmp_path,
                {
                    **traced,
                    "ITS_POLYGON_REST_URL": sim.rest_url,
                    "POLYGON_API_KEY": SIM_KEY,
                    "ITS_LOADER_BACKFILL_ON_START": "false",
                },
            )
        )
        stack.enter_context(router(tmp_path, redis_server.url, sim, **otel_env(receiver)))
        # The features service takes its clock (and so the session) from the feed's trades.
        client = redis.Redis.from_url(redis_server.url)
        wait_until(lambda: client.exists(latest_trade_key("MSFT")), 30, "the feed's first trades")
        stack.enter_context(
            service("features", tmp_path, {**traced, "ITS_FEATURES_BLOCK_MS": "100"})
        )

        def found() -> tuple[list[ReceivedSpan], list[ReceivedSpan]] | None:
            spans = receiver.snapshot()
            chain, loaded = full_chain(spans), loader_chain(spans)
            return (chain, loaded) if chain and loaded else None

        try:
            chain, loaded = wait_until(found, 45, "traces across the services")
        except AssertionError:
            names = sorted({(s.service, s.name) for s in receiver.snapshot()})
            raise AssertionError(f"spans received: {names}; logs in {tmp_path}") from None

    # router -> features -> inference -> trader: one trace id, four processes, parent links.
    trader_span, inference_span, features_span, router_span = chain
    assert len({s.trace_id for s in chain}) == 1
    assert [s.service for s in chain] == ["trader", "inference", "features", "router"]
    assert router_span.attributes["its.events"] and "AM" in router_span.attributes["its.types"]
    minute = features_span.attributes["its.minute_ms"]
    assert inference_span.attributes["its.minute_ms"] == minute
    assert trader_span.attributes["its.minute_ms"] == minute
    assert features_span.attributes["its.symbols"] == ["NVDA", "MSFT"]
    assert inference_span.attributes["its.outcome"] == "decision"
    assert trader_span.attributes["its.outcome"] in {"orders", "denied", "hold", "no_order"}
    # router -> loader
    store, write = loaded
    assert store.trace_id == write.trace_id and store.service == "loader"
    assert store.attributes["its.rows"] >= 1 and store.attributes["its.entries"] >= 1
