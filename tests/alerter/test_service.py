"""The alerter service end to end: real Redis and PostgreSQL, a local Slack webhook receiver and a
local SMTP server (STARTTLS + AUTH); dedupe, cooldown, resolve, restart, events, no secret leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb

from its_alerter.app import main as alerter_main
from its_alerter.config import AlerterSettings
from its_alerter.engine import AlertEngine, AlerterMetrics
from its_alerter.model import Condition, Notification
from its_alerter.notifiers import EmailNotifier, LogNotifier, NotifyError, SlackNotifier
from its_common.db.connect import async_pool
from its_common.gaps import GapWindow, encode_gap
from its_common.health import HealthState
from its_common.runtime import ServiceContext
from its_common.settings import load_settings
from its_common.streams import Stream, now_ms
from tests.alerter.recorder import Recorder

from .conftest import SMTP_PASSWORD, SMTP_USER, WEBHOOK_TOKEN, SlackReceiver, SmtpServer


def alerter_settings(redis_url: str, db_url: str, slack: SlackReceiver, smtp: SmtpServer, **kw):
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": db_url,
        "http_port": 0,
        "interval_s": 0.2,
        "rules": "trading_halted,gaps",
        "cooldown_s": 0,
        "repeat_s": 0,
        "slack_webhook_url": slack.url,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_username": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "smtp_ca_file": str(smtp.ca_file),
        "smtp_to": "ops@its.test,quant@its.test",
        "environment": "test",
        **kw,
    }
    return load_settings(AlerterSettings, **values)


def context(settings: AlerterSettings, redis_client: Any) -> ServiceContext[AlerterSettings]:
    registry = CollectorRegistry()
    return ServiceContext(
        settings=settings, version="t", registry=registry,
        health=HealthState("alerter", "t", registry), redis=redis_client,
    )  # fmt: skip


def alerts(db_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT rule, fingerprint, severity, state, notified, labels FROM alerts ORDER BY id"
        ).fetchall()


async def wait_rows(db_url: str, predicate: Any, within: float = 10.0) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + within
    while True:
        rows = alerts(db_url)
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts rows never matched: {rows}")
        await asyncio.sleep(0.1)


def set_halt(db_url: str, halted: bool) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO service_state (service, key, value) VALUES ('trader', 'halt', %s)"
            " ON CONFLICT (service, key) DO UPDATE SET value = EXCLUDED.value",
            (Jsonb({"halted": halted, "reason": "daily_loss_limit", "detail": "-2.5%"}),),
        )


async def test_halt_fires_once_then_resolves_on_slack_email_and_table(
    redis_server, redis_client, db_url, slack, smtp, caplog
):
    caplog.set_level(logging.DEBUG)
    settings = alerter_settings(redis_server.url, db_url, slack, smtp)
    ctx = context(settings, redis_client)
    task = asyncio.create_task(alerter_main(ctx))
    try:
        await wait_rows(db_url, lambda rows: True)  # schema seen, restore done soon after
        await asyncio.sleep(0.5)
        set_halt(db_url, True)
        [post] = await slack.wait_for(1)
        assert "FIRING critical trading_halted" in post["text"]
        assert "daily_loss_limit" in post["text"]
        [mail] = await smtp.inbox.wait_for(1)
        assert mail["Subject"].startswith("[ITS test] FIRING critical trading_halted")
        assert mail["To"] == "ops@its.test, quant@its.test"
        assert smtp.inbox.tls == [True] and smtp.inbox.logins == [SMTP_USER]
        assert smtp.inbox.envelopes[0][1] == ["ops@its.test", "quant@its.test"]

        await asyncio.sleep(1.0)  # several rounds: still firing, deduped
        assert len(slack.received) == 1 and len(smtp.inbox.messages) == 1

        set_halt(db_url, False)
        posts = await slack.wait_for(2)
        assert "RESOLVED" in posts[1]["text"]
        assert posts[1]["attachments"][0]["color"] == "#2e7d32"
        mails = await smtp.inbox.wait_for(2)
        assert "RESOLVED" in mails[1]["Subject"]
        rows = await wait_rows(db_url, lambda rows: len(rows) >= 2)
        assert [(r[0], r[3], sorted(r[4])) for r in rows] == [
            ("trading_halted", "firing", ["email", "log", "slack"]),
            ("trading_halted", "resolved", ["email", "log", "slack"]),
        ]
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
    logged = caplog.text
    assert "alert firing trading_halted" in logged
    assert WEBHOOK_TOKEN not in logged and SMTP_PASSWORD not in logged


async def test_gap_windows_and_nightly_report(redis_server, redis_client, db_url, slack, smtp):
    settings = alerter_settings(redis_server.url, db_url, slack, smtp, cooldown_s=3600)
    ctx = context(settings, redis_client)
    task = asyncio.create_task(alerter_main(ctx))
    try:
        await wait_rows(db_url, lambda rows: True)
        deadline = time.monotonic() + 10
        while not await redis_client.exists(Stream.GAPS):  # group created at the stream's end
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        start = now_ms() - 120_000
        for i in range(3):
            window = GapWindow(
                ("NVDA", "MSFT"), start + i * 1000, start + i * 1000 + 30_000, "reconnect"
            )
            await redis_client.xadd(Stream.GAPS, encode_gap(window))
        [post] = await slack.wait_for(1)
        assert "EVENT warning data_gap" in post["text"] and "3 data gap window(s)" in post["text"]
        # a further gap inside the cooldown is held back (summarized later), not sent at once
        window = GapWindow(("NVDA",), start, start + 1000, "buffer_overflow")
        await redis_client.xadd(Stream.GAPS, encode_gap(window))
        report = {
            "date": "2026-11-24", "ok": False, "missing": 2, "mismatch": 0, "extra": 0,
            "symbols": {"NVDA": {"missing": 2, "mismatch": 0, "extra": 0, "stored": 388,
                                 "session_minutes": 390}},
        }  # fmt: skip
        fields = {b"v": b"1", b"type": b"gap_audit", b"source": b"loader",
                  b"severity": b"warning", b"data": msgspec.json.encode(report)}  # fmt: skip
        await redis_client.xadd(Stream.ALERT_EVENTS, fields)
        await redis_client.xadd(Stream.ALERT_EVENTS, fields)
        posts = await slack.wait_for(2)
        assert "gap report 2026-11-24: GAPS FOUND" in posts[1]["text"]
        assert "NVDA missing 2" in posts[1]["text"]
        await asyncio.sleep(1.0)
        assert len(slack.received) == 2  # same day's report once; the held-back gap not yet
        rows = alerts(db_url)
        assert [r[1] for r in rows] == ["data_gap", "gap_audit:2026-11-24"]
        assert all(r[5].get("_event") for r in rows)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)


async def test_cooldown_flapping_repeat_and_restart(redis_server, db_url):
    settings = load_settings(AlerterSettings, database_url=db_url)
    recorder = Recorder()
    cond = Condition("redis_memory", "critical", "Redis uses 190 MiB")

    def engine() -> AlertEngine:
        metrics = AlerterMetrics(CollectorRegistry())
        return AlertEngine([recorder], metrics, environment="t", cooldown_s=60, repeat_s=600)

    async with async_pool(settings) as pool:
        first = engine()
        await first.restore(pool)
        t = now_ms() - 1_000_000  # rows are recorded at these times; a restart reads them
        await first.evaluate({"redis_memory": [cond]}, t)
        await first.evaluate({"redis_memory": [cond]}, t + 10_000)
        await first.evaluate({"redis_memory": []}, t + 20_000)  # resolved
        await first.evaluate({"redis_memory": [cond]}, t + 30_000)  # flaps back within cooldown
        assert [n.state for n in recorder.sent] == ["firing", "resolved"]
        await first.evaluate({}, t + 40_000)  # rule failed this round: nothing changes
        await first.evaluate({"redis_memory": [cond]}, t + 80_000)  # cooldown over, still firing
        assert [n.state for n in recorder.sent] == ["firing", "resolved", "firing"]
        await first.evaluate({"redis_memory": [cond]}, t + 80_000 + 600_000)  # reminder
        assert recorder.sent[-1].message.startswith("still firing")
        assert len(recorder.sent) == 4

        second = engine()  # a restart: the firing alert is restored, not notified again
        assert await second.restore(pool) == 1
        await second.evaluate({"redis_memory": [cond]}, now_ms())
        assert len(recorder.sent) == 4
        await second.evaluate({"redis_memory": []}, now_ms())
        assert [n.state for n in recorder.sent[-1:]] == ["resolved"]
    states = [(r[3], r[4]) for r in alerts(db_url)]
    assert states[:3] == [("firing", ["recorder"]), ("resolved", ["recorder"]), ("firing", [])]
    assert states[-1] == ("resolved", ["recorder"])


async def test_notifier_failures_are_reported_without_secrets(slack, smtp, caplog):
    notification = Notification(
        "redis_memory", "redis_memory", "critical", "firing", "m", {"a": 1}, now_ms(), "t"
    )
    slack.fail_next = 5
    notifier = SlackNotifier(slack.url, timeout_s=2, retries=1)
    with pytest.raises(NotifyError) as err:
        await notifier.send(notification)
    assert "500" in str(err.value) and WEBHOOK_TOKEN not in str(err.value)
    slack.fail_next = 1  # one failure, then the retry goes through
    await notifier.send(notification)
    assert len(slack.received) == 1 and slack.received[0]["attachments"][0]["color"] == "#d32f2f"
    await notifier.close()
    gone = SlackNotifier(f"http://127.0.0.1:9/hooks/{WEBHOOK_TOKEN}", timeout_s=1, retries=0)
    with pytest.raises(NotifyError) as err:
        await gone.send(notification)
    assert WEBHOOK_TOKEN not in str(err.value) and WEBHOOK_TOKEN not in repr(gone)
    await gone.close()

    wrong = load_settings(
        AlerterSettings,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_username=SMTP_USER,
        smtp_password="wrong-password-123", smtp_ca_file=str(smtp.ca_file), smtp_to="a@b.c",
    )  # fmt: skip
    with pytest.raises(NotifyError) as err:
        await EmailNotifier(wrong).send(notification)
    assert "wrong-password-123" not in str(err.value) and "535" in str(err.value)
    untrusted = wrong.model_copy(update={"smtp_ca_file": ""})
    with pytest.raises(NotifyError):  # the self-signed certificate is not trusted by default
        await EmailNotifier(untrusted).send(notification)
    assert smtp.inbox.messages == []
    await LogNotifier().send(notification)
    assert "alert firing redis_memory" in caplog.text
    assert json.dumps(notification.labels) == '{"a": 1}'


async def test_alerts_that_could_not_be_recorded_are_recorded_later_with_their_time(db_url):
    """An alert that fires and resolves while PostgreSQL does not take the rows (restarting:
    here the table is away) is recorded once it does, in order, at the time it happened."""
    settings = load_settings(AlerterSettings, database_url=db_url)
    recorder = Recorder()
    engine = AlertEngine(
        [recorder], AlerterMetrics(CollectorRegistry()), environment="t", cooldown_s=0, repeat_s=0
    )
    cond = Condition("database_unreachable", "critical", "PostgreSQL does not answer")
    async with async_pool(settings) as pool:
        await engine.restore(pool)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE alerts RENAME TO alerts_away")
        t = now_ms() - 60_000
        await engine.evaluate({"database": [cond]}, t)
        await engine.evaluate({"database": []}, t + 5_000)
        assert [n.state for n in recorder.sent] == ["firing", "resolved"]  # notified at once
        assert await engine.record_pending() == 2
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE alerts_away RENAME TO alerts")
        assert await engine.record_pending() == 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT state, (extract(epoch FROM ts) * 1000)::bigint FROM alerts"
            " WHERE fingerprint = 'database_unreachable' ORDER BY id"
        ).fetchall()
    assert rows == [("firing", t), ("resolved", t + 5_000)]
