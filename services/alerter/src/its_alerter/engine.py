"""Alert state: dedupe by fingerprint, cooldown, repeats, resolved notifications, the alerts table.

Per fingerprint (rule + key):

- a condition that appears fires: notified and recorded (``alerts`` row, state ``firing``);
- while it holds nothing is sent, except a reminder every ``repeat_s`` (0 = never);
- when it clears a ``resolved`` notification goes out (only if the firing one did);
- cooldown: two notifications of one fingerprint are at least ``cooldown_s`` apart, so a
  flapping condition that fires again soon after it resolved is recorded but not re-notified
  until the cooldown has passed (and then only if it still holds).

Every state change is a row in ``alerts`` (with the notifiers that delivered it in ``notified``);
at start the firing alerts are restored from the table, so a restart does not notify twice.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from its_alerter.model import RULE_GROUP, Condition, Notification, Severity, State
from its_alerter.notifiers import Notifier, NotifyError, wants
from its_common.redaction import redact

log = logging.getLogger("its.alerter.engine")
UNRECORDED_MAX = 10_000
RECORD_TIMEOUT_S = 1.0  # a database that does not answer must not hold the rounds up


@dataclass
class Active:
    rule: str
    severity: Severity
    message: str
    labels: dict[str, Any]
    since_ms: int
    notified: bool = False  # the firing notification went out
    last_notified_ms: int | None = None


@dataclass
class AlerterMetrics:
    registry: CollectorRegistry
    notifications: Counter = field(init=False)
    firing: Gauge = field(init=False)
    rule_errors: Counter = field(init=False)
    evaluations: Counter = field(init=False)
    events: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.notifications = Counter(
            "its_alerter_notifications", "Notifications", ["notifier", "outcome"], registry=r
        )
        self.firing = Gauge("its_alerter_firing", "Alerts firing", ["rule"], registry=r)
        self.rule_errors = Counter(
            "its_alerter_rule_errors", "Failed rule evaluations", ["rule"], registry=r
        )
        self.evaluations = Counter("its_alerter_evaluations", "Rule rounds", registry=r)
        self.events = Counter("its_alerter_events", "Events read", ["type"], registry=r)


class AlertEngine:
    def __init__(
        self,
        notifiers: list[Notifier],
        metrics: AlerterMetrics,
        *,
        environment: str,
        cooldown_s: float,
        repeat_s: float,
    ) -> None:
        self.notifiers = notifiers
        self.metrics = metrics
        self.environment = environment
        self.cooldown_ms = int(cooldown_s * 1000)
        self.repeat_ms = int(repeat_s * 1000)
        self.active: dict[str, Active] = {}
        self.last_sent_ms: dict[str, int] = {}
        self.pool: AsyncConnectionPool | None = None
        self.known_rules: set[str] = set()
        # Alert rows not written yet (the database did not answer): retried every round.
        self.unrecorded: deque[tuple[Notification, list[str]]] = deque(maxlen=UNRECORDED_MAX)

    async def restore(self, pool: AsyncConnectionPool) -> int:
        """Take over the firing alerts recorded by a previous run; returns how many."""
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT DISTINCT ON (fingerprint) fingerprint, rule, severity, state, message,"
                " labels, ts, notified FROM alerts ORDER BY fingerprint, ts DESC"
            )
            rows = await cursor.fetchall()
        restored = 0
        for fingerprint, rule, severity, state, message, labels, ts, notified in rows:
            ts_ms = int(ts.timestamp() * 1000)
            if notified:
                self.last_sent_ms.setdefault(fingerprint, ts_ms)
            if state != "firing" or fingerprint in self.active or "_event" in labels:
                continue
            self.active[fingerprint] = Active(
                rule, severity, message, dict(labels), ts_ms, bool(notified), ts_ms
            )
            restored += 1
        self.pool = pool
        self._gauges()
        return restored

    async def evaluate(
        self, results: Mapping[str, list[Condition]], now_ms: int
    ) -> list[Notification]:
        """Apply one round: ``{configured rule: its conditions}`` for every rule that ran.

        Alerts of rules missing from ``results`` (failed or not run) are left as they are.
        """
        evaluated = set(results)
        seen = {c.fingerprint: c for conditions in results.values() for c in conditions}
        sent: list[Notification] = []
        for fingerprint, cond in seen.items():
            active = self.active.get(fingerprint)
            if active is None:
                active = Active(cond.rule, cond.severity, cond.message, cond.labels, now_ms)
                self.active[fingerprint] = active
                notify = self._cooled(fingerprint, now_ms)
                sent += await self._emit(fingerprint, active, "firing", now_ms, notify)
                continue
            active.severity, active.message, active.labels = (
                cond.severity,
                cond.message,
                cond.labels,
            )
            if not active.notified and self._cooled(fingerprint, now_ms):
                sent += await self._emit(fingerprint, active, "firing", now_ms, True)
            elif (
                active.notified
                and self.repeat_ms > 0
                and active.last_notified_ms is not None
                and now_ms - active.last_notified_ms >= self.repeat_ms
            ):
                sent += await self._emit(fingerprint, active, "firing", now_ms, True, reminder=True)
        for fingerprint in [
            f for f, a in self.active.items() if RULE_GROUP.get(a.rule, a.rule) in evaluated
        ]:
            if fingerprint in seen:
                continue
            active = self.active.pop(fingerprint)
            sent += await self._emit(fingerprint, active, "resolved", now_ms, active.notified)
        self._gauges()
        return sent

    async def event(
        self,
        rule: str,
        fingerprint: str,
        severity: Severity,
        message: str,
        labels: dict[str, Any],
        now_ms: int,
    ) -> Notification:
        """A one-shot notification (gap windows, the nightly gap report): no resolve."""
        active = Active(rule, severity, message, {**labels}, now_ms)
        [notification] = await self._emit(fingerprint, active, "firing", now_ms, True, event=True)
        return notification

    def cooled(self, fingerprint: str, now_ms: int) -> bool:
        return self._cooled(fingerprint, now_ms)

    def _cooled(self, fingerprint: str, now_ms: int) -> bool:
        last = self.last_sent_ms.get(fingerprint)
        return last is None or now_ms - last >= self.cooldown_ms

    async def _emit(
        self,
        fingerprint: str,
        active: Active,
        state: State,
        now_ms: int,
        notify: bool,
        *,
        reminder: bool = False,
        event: bool = False,
    ) -> list[Notification]:
        message = ("still firing: " if reminder else "") + active.message
        if state == "resolved":
            message = f"resolved: {active.message}"
        notification = Notification(
            rule=active.rule,
            fingerprint=fingerprint,
            severity=active.severity,
            state=state,
            message=message,
            labels=active.labels,
            ts_ms=now_ms,
            environment=self.environment,
            event=event,
        )
        delivered: list[str] = []
        if notify:
            delivered = await self.dispatch(notification)
            active.notified = True
            active.last_notified_ms = now_ms
            self.last_sent_ms[fingerprint] = now_ms
        await self._record(notification, delivered)
        return [notification] if notify else []

    async def dispatch(self, notification: Notification) -> list[str]:
        delivered = []
        for notifier in self.notifiers:
            if not wants(notifier, notification):
                continue
            try:
                await notifier.send(notification)
            except NotifyError as exc:
                self.metrics.notifications.labels(notifier.name, "failed").inc()
                log.error("%s notification failed: %s", notifier.name, exc)
                continue
            except Exception as exc:  # a notifier bug must not stop the others
                self.metrics.notifications.labels(notifier.name, "failed").inc()
                log.error("%s notifier error: %s", notifier.name, redact(repr(exc)))
                continue
            self.metrics.notifications.labels(notifier.name, "sent").inc()
            delivered.append(notifier.name)
        return delivered

    async def _record(self, notification: Notification, delivered: list[str]) -> None:
        """Queue the row, then write every queued row in order. A row PostgreSQL did not take
        (restarting, unreachable) stays queued (bounded) and is written with its own time by a
        later round: an alert that fired and resolved during a database outage is kept. While
        rows wait, a new one only joins them: the round is not held up (the chaos soak saw a
        round blocked on writes for a whole PostgreSQL outage, so database_unreachable never
        fired)."""
        if self.pool is None:
            return
        if len(self.unrecorded) == self.unrecorded.maxlen:
            dropped, _ = self.unrecorded[0]
            log.error(
                "alert rows queue full (%d): the oldest is not recorded: %s %s",
                len(self.unrecorded),
                dropped.fingerprint,
                dropped.state,
            )
        known_down = bool(self.unrecorded)
        self.unrecorded.append((notification, delivered))
        if not known_down:  # while rows wait, the round goes on: the next round writes them
            await self.record_pending()

    async def record_pending(self) -> int:
        """Write the queued alert rows (oldest first); returns how many are still queued."""
        if self.pool is None or not self.unrecorded:
            return len(self.unrecorded)
        try:
            async with self.pool.connection(timeout=RECORD_TIMEOUT_S) as conn:
                while self.unrecorded:
                    notification, delivered = self.unrecorded[0]
                    await conn.execute(*_insert(notification, delivered))
                    self.unrecorded.popleft()
        except Exception as exc:
            log.error(
                "alert not recorded yet (%d queued, retried next round): %s",
                len(self.unrecorded),
                redact(f"{type(exc).__name__}: {exc}"),
            )
        return len(self.unrecorded)

    def _gauges(self) -> None:
        counts: dict[str, int] = {}
        for active in self.active.values():
            counts[active.rule] = counts.get(active.rule, 0) + 1
        self.known_rules.update(counts)
        for rule in self.known_rules:
            self.metrics.firing.labels(rule).set(counts.get(rule, 0))

    async def close(self) -> None:
        for notifier in self.notifiers:
            await notifier.close()


def _insert(notification: Notification, delivered: list[str]) -> tuple[str, tuple[Any, ...]]:
    labels = dict(notification.labels)
    if notification.event:
        labels["_event"] = True
    return (
        "INSERT INTO alerts (ts, rule, fingerprint, severity, state, message, labels, notified)"
        " VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, %s)",
        (
            notification.ts_ms,
            notification.rule,
            notification.fingerprint,
            notification.severity,
            notification.state,
            notification.message,
            Jsonb(json.loads(json.dumps(labels, default=str))),
            delivered,
        ),
    )
