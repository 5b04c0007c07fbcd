"""Contract tests: each producer's real output, through a real Redis, decoded by each real
consumer. The contracts themselves live once in libs (its_common.featureset, .decisions,
.alert_events); these tests hold the services to them end to end.

- features -> inference -> trader: the features processor writes features entries, the inference
  processor reads them and writes decisions, the trader's own stream handler decodes them and
  finds the decision's pair its own;
- loader (gap audit), validator (divergence) and trader (refused pair) -> alert events -> the
  alerter's event reader (notifies or leaves to its rule) and the dashboard's gap report.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from its_alerter.engine import AlertEngine, AlerterMetrics
from its_alerter.events import EventReader
from its_common import calendar
from its_common.alert_events import decode_alert_event
from its_common.db.migrate import apply_migrations
from its_common.decisions import Decision
from its_common.settings import load_settings
from its_common.streams import Stream
from its_dashboard.config import DashboardSettings
from its_dashboard.data import Sources
from its_inference.bundles import load
from its_loader.audit import AuditReport, publish_audit_event
from its_trader.app import DecisionHandler, build_trader
from its_trader.config import TraderSettings
from its_trader.metrics import TraderMetrics
from its_trainer.simdata import simulator_bars
from its_validator.app import Validator, ValidatorMetrics
from its_validator.check import PricePoint, Result, broker_prices, feed_prices
from its_validator.config import ValidatorSettings
from tests.alerter.recorder import Recorder
from tests.inference.helpers import DEMO, PAIR, run_live


async def test_features_to_inference_to_the_traders_handler(redis_client, redis_server):
    day = date(2025, 3, 20)
    frame = simulator_bars(PAIR, day, day, seed=11, trades_per_day=8_000)
    frame = frame[frame["ts"] < frame["ts"].min() + 40 * 60_000]  # the first 40 minutes
    live = await run_live(redis_client, frame, load(DEMO))
    assert live.features and live.decisions

    entries: Any = await redis_client.xrange(Stream.DECISIONS)
    settings = load_settings(
        TraderSettings, redis_url=redis_server.url, database_url="postgresql://unused/x"
    )
    trader = build_trader(settings, redis_client, TraderMetrics(CollectorRegistry()))
    handler = DecisionHandler(trader)
    decoded: list[Decision] = [handler.decode(i.decode(), f) for i, f in entries]
    assert decoded == live.decisions  # what inference wrote is what the trader reads
    for decision in decoded:
        assert decision.symbols == PAIR and decision.model_version == "demo"
        assert trader.foreign_symbols(decision) is None  # traded on the legs it names


async def test_alert_events_of_every_producer_reach_the_alerter_and_dashboard(
    redis_client, redis_server, database_url
):
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    session = calendar.session(date(2025, 3, 20))
    assert session is not None
    # loader: the gap audit's report
    report = AuditReport(session.day, True, session.open, session.close)
    await publish_audit_event(redis_client, report)
    # validator: a divergence starts
    vsettings = load_settings(
        ValidatorSettings, redis_url=redis_server.url, database_url=database_url
    )
    validator = Validator(
        vsettings, feed_prices(redis_client), broker_prices(redis_client), redis_client,
        ValidatorMetrics(CollectorRegistry()),
    )  # fmt: skip
    feed, broker = PricePoint(100.0, 1, 1, "feed"), PricePoint(101.0, 1, 1, "sim")
    await validator._alert(Result("NVDA", feed, broker, None, 1.0, False))
    # trader: a decision about another pair
    tsettings = load_settings(TraderSettings, redis_url=redis_server.url, database_url=database_url)
    trader = build_trader(tsettings, redis_client, TraderMetrics(CollectorRegistry()))
    await trader.start()
    try:
        foreign = Decision(
            ts_ms=int(session.open.timestamp() * 1000), action=8, action_name="BUY_BOTH",
            confidence=0.9, model_version="other", features_hash="x", symbols=("AAPL", "TSLA"),
        )  # fmt: skip
        assert await trader.handle_decision(foreign) == "denied"
    finally:
        await trader.broker.close()
        await trader.store.close()

    raw: Any = await redis_client.xrange(Stream.ALERT_EVENTS)
    events = [decode_alert_event(i, f) for i, f in raw]
    assert [(e.type, e.source) for e in events] == [
        ("gap_audit", "loader"),
        ("price_divergence", "validator"),
        ("foreign_symbols", "trader"),
    ]

    recorder = Recorder()
    engine = AlertEngine(
        [recorder],
        AlerterMetrics(CollectorRegistry()),
        environment="t",
        cooldown_s=60,
        repeat_s=600,
    )
    reader = EventReader(redis_client, engine, "contract", "c1")
    for _, fields in raw:
        await reader._handle(Stream.ALERT_EVENTS.value, fields)
    notified = [(n.rule, n.severity) for n in recorder.sent]
    # the audit report and the refusal are notified; divergences are the price rule's job
    assert notified == [("gap_audit", "info"), ("foreign_symbols", "critical")]
    assert "AAPL,TSLA" in recorder.sent[1].message

    dashboard = Sources(
        load_settings(DashboardSettings, redis_url=redis_server.url, database_url=database_url),
        redis_client,
    )
    shown = await dashboard.gap_report()
    assert shown is not None and shown["date"] == session.day.isoformat() and shown["ok"]
