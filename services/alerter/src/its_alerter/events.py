"""Event-driven alerts: gap windows (``its:stream:gaps``) and the nightly gap report
(``type=gap_audit`` entries on ``its:stream:alert-events``, written by ``its-loader audit``).

The alerter reads both streams as its own consumer group (``ITS_ALERTER_EVENTS_GROUP``, created at
the stream's end on first start, so old history is not re-reported; after a restart it resumes
where the group stopped), through the shared consumer framework (:mod:`its_common.consumer`).
Entries are acked once handled: gap windows are summarized into one
``data_gap`` notification per cooldown period (a flapping feed does not send one message per
reconnect); each day's gap report is sent once. The validator's ``price_divergence`` events are
covered by the price_checks rule; any other type a service raises (the trader's
``foreign_symbols``...) is notified as it is, once per cooldown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from its_alerter.engine import AlertEngine
from its_alerter.model import Severity
from its_common.alert_events import AlertEvent, decode_alert_event
from its_common.consumer import ConsumerConfig, Delivery, EntryHandler, StreamConsumer
from its_common.gaps import decode_gap
from its_common.streams import Stream, ensure_group, now_ms

log = logging.getLogger("its.alerter.events")
GAP_FINGERPRINT = "data_gap"
# Alert-event types a rule of the alerter already judges (from its table or state).
RULE_COVERED = frozenset({"price_divergence"})


@dataclass
class PendingGaps:
    windows: int = 0
    symbols: set[str] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=dict)
    missed_s: float = 0.0
    first_ms: int | None = None
    last_ms: int | None = None


class EventReader:
    def __init__(self, redis: aioredis.Redis, engine: AlertEngine, group: str, consumer: str):
        self.redis = redis
        self.engine = engine
        self.group = group
        self.consumer = consumer
        self.gaps = PendingGaps()

    async def setup(self) -> None:
        """Both groups at the streams' end, before either consumer runs (history is not
        re-reported; entries written from now on are)."""
        for stream in (Stream.GAPS, Stream.ALERT_EVENTS):
            await ensure_group(self.redis, stream, self.group, start="$")

    def consumers(
        self, stopping: asyncio.Event, registry: CollectorRegistry | None = None
    ) -> list[StreamConsumer[dict[bytes, bytes], Sequence[Delivery[dict[bytes, bytes]]]]]:
        """One framework consumer per stream (acked once handled: gap windows are summarized
        in memory, a day's gap report is sent before its entry is acked)."""
        return [
            StreamConsumer(
                self.redis,
                EntryHandler(self._handle_batch),
                ConsumerConfig(
                    stream=stream.value,
                    group=self.group,
                    consumer=self.consumer,
                    start_id="$",
                    batch_entries=500,
                    service="alerter",
                ),
                stopping,
                registry=registry,
            )
            for stream in (Stream.GAPS, Stream.ALERT_EVENTS)
        ]

    async def _handle_batch(self, batch: Sequence[Delivery[dict[bytes, bytes]]]) -> int | None:
        for delivery in batch:
            await self._handle(delivery.stream, delivery.fields)
        return None

    async def _handle(self, stream: str, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"type", b"").decode(errors="replace")
        self.engine.metrics.events.labels(kind or "unknown").inc()
        try:
            if stream == Stream.GAPS:
                self._add_gap(fields)
            elif kind == "gap_audit":
                await self._gap_report(fields)
            elif kind not in RULE_COVERED:
                await self._service_event(decode_alert_event("-", fields))
        except (ValueError, KeyError) as exc:
            log.warning("unreadable %s entry on %s: %s", kind, stream, exc)

    async def _service_event(self, event: AlertEvent) -> None:
        """Any other alert event a service raised (its_common.alert_events), e.g. the trader
        refusing decisions about another symbol pair: notified once per cooldown."""
        if event.state == "resolved":
            return
        fingerprint = f"{event.type}:{event.source}"
        now = now_ms()
        if not self.engine.cooled(fingerprint, now):
            return
        labels = {"source": event.source, **event.data}
        message = event.message or f"{event.type} from {event.source}"
        await self.engine.event(event.type, fingerprint, event.severity, message, labels, now)

    def _add_gap(self, fields: dict[bytes, bytes]) -> None:
        window = decode_gap(fields)
        gaps = self.gaps
        gaps.windows += 1
        gaps.symbols.update(window.symbols)
        gaps.reasons[window.reason] = gaps.reasons.get(window.reason, 0) + 1
        gaps.missed_s += max(0, window.end_ms - window.start_ms) / 1000
        gaps.first_ms = min(gaps.first_ms or window.start_ms, window.start_ms)
        gaps.last_ms = max(gaps.last_ms or window.end_ms, window.end_ms)

    async def flush_gaps(self) -> None:
        gaps = self.gaps
        now = now_ms()
        if not gaps.windows or not self.engine.cooled(GAP_FINGERPRINT, now):
            return
        reasons = ", ".join(f"{r} x{n}" for r, n in sorted(gaps.reasons.items()))
        message = (
            f"{gaps.windows} data gap window(s) for {','.join(sorted(gaps.symbols))}: "
            f"{gaps.missed_s:.0f}s in total ({reasons}); the loader backfills them from REST"
        )
        labels = {
            "windows": gaps.windows,
            "symbols": sorted(gaps.symbols),
            "missed_s": round(gaps.missed_s, 1),
            "first_ms": gaps.first_ms,
            "last_ms": gaps.last_ms,
        }
        self.gaps = PendingGaps()
        await self.engine.event("data_gap", GAP_FINGERPRINT, "warning", message, labels, now)

    async def _gap_report(self, fields: dict[bytes, bytes]) -> None:
        summary = json.loads(fields[b"data"])
        day = str(summary.get("date", "?"))
        fingerprint = f"gap_audit:{day}"
        if fingerprint in self.engine.last_sent_ms:
            return  # this day's report was sent already (re-run or re-delivery)
        severity: Severity = "info" if summary.get("ok") else "warning"
        per_symbol = summary.get("symbols") or {}
        parts = [
            f"{symbol} missing {s.get('missing', 0)} mismatch {s.get('mismatch', 0)} "
            f"extra {s.get('extra', 0)} (stored {s.get('stored', 0)}/{s.get('session_minutes', 0)})"
            for symbol, s in sorted(per_symbol.items())
        ]
        verdict = "no missing minutes" if summary.get("ok") else "GAPS FOUND"
        message = f"gap report {day}: {verdict}; " + "; ".join(parts)
        labels = {
            "date": day,
            "ok": bool(summary.get("ok")),
            "missing": summary.get("missing", 0),
            "mismatch": summary.get("mismatch", 0),
            "extra": summary.get("extra", 0),
        }
        await self.engine.event("gap_audit", fingerprint, severity, message, labels, now_ms())
