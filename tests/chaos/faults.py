"""Applying one fault to the running stack and measuring how long the affected stage took to
produce again.

Every fault ends with an explicit action (a restart, SIGCONT, the fault control cleared); its
recovery time runs from that moment until the affected stage's progress (:mod:`.progress`)
passes the value it had when the fault began. Trigger moments are conditions on the stack: a
minute boundary on the feed clock, entries pending in the loader's group, a decision just read by
the trader. A fault's hold time (a pause, a stall) is the fault itself, not a wait.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from websockets.sync.client import connect

from its_common.streams import Stream
from tests.chaos.progress import probe, wait_progress
from tests.chaos.schedule import PlannedFault
from tests.chaos.stack import ChaosStack
from tests.router.harness import SIM_KEY, http

TRIGGER_TIMEOUT_S = 60.0
ALERT_TIMEOUT_S = 60.0
MINUTE_MS = 60_000


@dataclass(frozen=True)
class ExpectedAlert:
    rule: str
    key: str = ""

    @property
    def fingerprint(self) -> str:
        return f"{self.rule}:{self.key}" if self.key else self.rule


@dataclass
class FaultResult:
    kind: str
    round: int
    stage: str
    trigger: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    hold_s: float = 0.0
    feed_at: str = ""  # the feed clock (New York) when the fault was applied
    feed_start_ms: int = 0
    ended: datetime | None = None  # when the affected stage produced again (or gave up)
    recovery_s: float | None = None
    alert: ExpectedAlert | None = None
    alert_fired: bool = False  # seen firing while the fault was held
    problems: list[str] = field(default_factory=list)
    # Services that ended on their own during the fault and were restarted, as the local
    # supervisor and Kubernetes would (crash-only): shown with their last log lines, counted in
    # the outcome, not a data loss by themselves (the data checks say whether anything was lost).
    crashes: list[str] = field(default_factory=list)


def _poll(check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    return None


def alert_in(stack: ChaosStack, alert: ExpectedAlert, state: str, since: datetime) -> bool:
    """Whether the alerter recorded ``alert`` in ``state`` (firing/resolved) since ``since``."""
    try:
        return bool(
            stack.scalar(
                "SELECT count(*) FROM alerts WHERE fingerprint = %s AND state = %s AND ts >= %s",
                alert.fingerprint,
                state,
                since,
            )
        )
    except Exception:  # PostgreSQL restarting: not recorded as far as we can see yet
        return False


EXPECTED_ALERTS: dict[str, ExpectedAlert] = {
    "kill_router": ExpectedAlert("heartbeat_missing", "router"),
    "kill_loader": ExpectedAlert("heartbeat_missing", "loader"),
    "kill_features": ExpectedAlert("heartbeat_missing", "features"),
    "kill_inference": ExpectedAlert("heartbeat_missing", "inference"),
    "kill_trader": ExpectedAlert("heartbeat_missing", "trader"),
    "feed_drop": ExpectedAlert("feed_disconnected"),
    "feed_stall": ExpectedAlert("feed_stale"),
    "max_connections": ExpectedAlert("feed_disconnected"),
    "redis_pause": ExpectedAlert("redis_unreachable"),
    "redis_kill": ExpectedAlert("redis_unreachable"),
    "postgres_restart": ExpectedAlert("database_unreachable"),
    "malformed": ExpectedAlert("dead_letters"),
    "slow_reader": ExpectedAlert("feed_overflow"),
}
# Faults that raise no alert, and why (shown in the table instead of the alert).
NO_ALERT: dict[str, str] = {
    "duplicates": "none: stored once by key",
    "kill_alerter": "none: watched by its platform",
}


def alert_firing_now(stack: ChaosStack, alert: ExpectedAlert) -> bool:
    try:
        state = stack.scalar(
            "SELECT state FROM alerts WHERE fingerprint = %s ORDER BY id DESC LIMIT 1",
            alert.fingerprint,
        )
    except Exception:
        return True  # cannot tell yet
    return bool(state == "firing")


class FaultRunner:
    """Applies planned faults one after another to ``stack``."""

    def __init__(self, stack: ChaosStack, recovery_timeout_s: float = 120.0) -> None:
        self.stack = stack
        self.recovery_timeout_s = recovery_timeout_s

    def apply(self, fault: PlannedFault) -> FaultResult:
        handler: Callable[[FaultResult, PlannedFault], None] = getattr(self, f"_{fault.kind}")
        result = FaultResult(fault.kind, fault.round, stage="", hold_s=fault.hold_s)
        self._quiet(fault.kind)
        result.feed_start_ms = self.stack.feed_clock_ms()
        result.feed_at = _hhmm(result.feed_start_ms)
        handler(result, fault)
        result.ended = datetime.now(UTC)
        dead = self.stack.dead_services()
        if dead:
            # Reported with the end of its log, then restarted as the local supervisor would.
            for name, code in dead.items():
                tail = self.stack.services[name].log_tail(600).strip().splitlines()[-3:]
                result.crashes.append(f"{name} exited {code}: " + " / ".join(tail))
                self._start(result, name)
        return result

    def _start(self, result: FaultResult, name: str, attempts: int = 3) -> None:
        """(Re)start ``name`` as a supervisor would: a start that fails is a problem of this
        fault and is tried again (bounded), so the run goes on to its checks."""
        for _ in range(attempts):
            try:
                self.stack.start_service(name)
                return
            except AssertionError as exc:
                result.problems.append(f"{name} failed to start: {str(exc)[-200:]}")
        raise RuntimeError(f"{name} did not start in {attempts} attempts")

    # -- helpers ----------------------------------------------------------------------------

    def _feed_up(self) -> None:
        """Before a fault on the router's connection: wait (bounded) until it is subscribed
        (after an earlier fault it may still be reconnecting, and a second client would then
        take a free key instead of the router's connection)."""
        client, sim = self.stack.client, self.stack.sim
        assert client is not None and sim is not None

        def subscribed() -> bool:
            status, body = http("GET", f"{sim.rest_url}/admin/status")
            state = client.hget("its:feed:state", "state")
            return status == 200 and body["subscribed"] >= 1 and state == b"subscribed"

        _poll(subscribed, ALERT_TIMEOUT_S)

    def _quiet(self, kind: str) -> None:
        """Before a fault with an alert: wait (bounded) until that alert is not firing (an
        earlier fault's may still be), so the firing this fault causes is its own."""
        alert = EXPECTED_ALERTS.get(kind)
        if alert is not None:
            _poll(lambda: not alert_firing_now(self.stack, alert), ALERT_TIMEOUT_S)

    def _recover(
        self, result: FaultResult, stage: str, before: int, ended: float | None = None
    ) -> None:
        """Wait (bounded) until ``stage`` passes ``before``; record the time since the fault
        ended (``ended``, monotonic: default now) or a problem."""
        result.stage = stage
        reading = probe(self.stack, stage)
        result.recovery_s = wait_progress(reading, before, self.recovery_timeout_s, ended)
        if result.recovery_s is None:
            result.problems.append(f"{stage} did not produce again in {self.recovery_timeout_s}s")

    def _expect_alert(self, result: FaultResult, alert: ExpectedAlert) -> None:
        """Hold the fault until its alert fires (bounded): the alert is part of what is tested."""
        result.alert = alert

        def firing() -> bool:  # recorded since the fault began, or (a busy service that
            # missed a beat just before) firing now
            return alert_in(self.stack, alert, "firing", result.started) or alert_firing_now(
                self.stack, alert
            )

        result.alert_fired = _poll(firing, ALERT_TIMEOUT_S) is not None
        if not result.alert_fired:
            result.problems.append(f"alert {alert.fingerprint} did not fire")

    def _kill(
        self, result: FaultResult, service: str, stage: str, alert: ExpectedAlert | None
    ) -> None:
        before = probe(self.stack, stage)()
        result.started = datetime.now(UTC)
        self.stack.kill(service)
        if alert is not None:
            self._expect_alert(result, alert)
        restarted = time.monotonic()
        self._start(result, service)
        self._recover(result, stage, before, restarted)

    def _sim_fault(
        self, result: FaultResult, changes: dict[str, Any], clear: dict[str, Any]
    ) -> None:
        assert self.stack.sim is not None
        before = probe(self.stack, "feed")()
        result.started = datetime.now(UTC)
        self.stack.sim.faults(**changes)
        time.sleep(result.hold_s)  # the fault lasts this long; nothing is awaited
        if result.alert is not None:
            self._expect_alert(result, result.alert)
        self.stack.sim.faults(**clear)
        self._recover(result, "feed", before)

    # -- kill -9 of each service ------------------------------------------------------------

    def _kill_router(self, result: FaultResult, _: PlannedFault) -> None:
        minute = self.stack.feed_clock_ms() // MINUTE_MS
        crossed = _poll(lambda: self.stack.feed_clock_ms() // MINUTE_MS > minute, TRIGGER_TIMEOUT_S)
        result.trigger = (
            f"feed clock crossed {_hhmm(self.stack.feed_clock_ms())}"
            if crossed
            else "minute boundary not seen"
        )
        if not crossed:
            result.problems.append("trigger: no minute boundary on the feed clock")
        self._kill(result, "router", "feed", EXPECTED_ALERTS["kill_router"])

    def _kill_loader(self, result: FaultResult, _: PlannedFault) -> None:
        client = self.stack.client
        assert client is not None

        def pending() -> int:
            summary: Any = client.xpending(Stream.TRADES, "loader")
            return int(summary["pending"])

        count = _poll(pending, TRIGGER_TIMEOUT_S)
        result.trigger = f"{count} entries read, not acknowledged" if count else "no batch seen"
        if not count:
            result.problems.append("trigger: no loader batch in flight seen")
        self._kill(result, "loader", "stored", EXPECTED_ALERTS["kill_loader"])

    def _kill_features(self, result: FaultResult, _: PlannedFault) -> None:
        self._kill(result, "features", "features", EXPECTED_ALERTS["kill_features"])

    def _kill_inference(self, result: FaultResult, _: PlannedFault) -> None:
        self._kill(result, "inference", "decisions", EXPECTED_ALERTS["kill_inference"])

    def _kill_trader(self, result: FaultResult, _: PlannedFault) -> None:
        read = probe(self.stack, "trader")
        seen = read()
        decided = _poll(lambda: read() > seen, TRIGGER_TIMEOUT_S)
        result.trigger = "a decision just read" if decided else "no decision seen"
        if not decided:
            result.problems.append("trigger: the trader read no decision")
        self._kill(result, "trader", "trader", EXPECTED_ALERTS["kill_trader"])

    def _kill_alerter(self, result: FaultResult, _: PlannedFault) -> None:
        result.trigger = "no rule watches the alerter"
        self._kill(result, "alerter", "alerter", None)

    # -- Redis and PostgreSQL ---------------------------------------------------------------

    def _redis_pause(self, result: FaultResult, _: PlannedFault) -> None:
        before = probe(self.stack, "stored")()
        result.started = datetime.now(UTC)
        self.stack.redis_signal(signal.SIGSTOP)
        try:
            time.sleep(result.hold_s)  # the fault lasts this long; nothing is awaited
            self._expect_alert(result, EXPECTED_ALERTS["redis_pause"])
        finally:
            self.stack.redis_signal(signal.SIGCONT)
        self._recover(result, "stored", before)

    def _redis_kill(self, result: FaultResult, _: PlannedFault) -> None:
        """kill -9; down for the hold time (and until its alert fired), then started again on
        its data (AOF)."""
        before = probe(self.stack, "stored")()
        result.started = datetime.now(UTC)
        self.stack.redis_kill()
        try:
            time.sleep(result.hold_s)  # the fault lasts this long; nothing is awaited
            self._expect_alert(result, EXPECTED_ALERTS["redis_kill"])
        finally:
            restarted = time.monotonic()
            self.stack.redis_start()
        self._recover(result, "stored", before, restarted)

    def _postgres_restart(self, result: FaultResult, _: PlannedFault) -> None:
        """Stopped for the hold time (and until the alerter sees it: its firing gauge, as the
        alert cannot be recorded yet), then started. The alert row is looked for once the
        database is back: the alerter keeps the rows it could not write and writes them then,
        with their own time."""
        before = probe(self.stack, "stored")()
        result.started = datetime.now(UTC)
        alert = EXPECTED_ALERTS["postgres_restart"]
        self.stack.postgres_stop()
        try:
            time.sleep(result.hold_s)  # the fault lasts this long; nothing is awaited
            _poll(lambda: self._alerter_firing(alert.rule), ALERT_TIMEOUT_S)
        finally:
            restarted = time.monotonic()
            self.stack.postgres_start()
        self._recover(result, "stored", before, restarted)
        self._expect_alert(result, alert)

    def _alerter_firing(self, rule: str) -> bool:
        """Whether the alerter reports ``rule`` firing now (its_alerter_firing{rule})."""
        handle = self.stack.services.get("alerter")
        if handle is None:
            return False
        try:
            status, text = http("GET", f"http://127.0.0.1:{handle.port}/metrics")
        except OSError:
            return False
        wanted = f'its_alerter_firing{{rule="{rule}"}} '
        return status == 200 and any(
            line.startswith(wanted) and float(line.split()[-1]) > 0
            for line in str(text).splitlines()
        )

    # -- the feed ---------------------------------------------------------------------------

    def _feed_drop(self, result: FaultResult, _: PlannedFault) -> None:
        """Every connection aborted; new ones refused for the hold time."""
        assert self.stack.sim is not None
        self._feed_up()
        before = probe(self.stack, "feed")()
        result.started = datetime.now(UTC)
        self.stack.sim.faults(refuse_connections_s=result.hold_s)
        self.stack.sim.drop()
        self._expect_alert(result, EXPECTED_ALERTS["feed_drop"])
        self._recover(result, "feed", before)

    def _feed_stall(self, result: FaultResult, _: PlannedFault) -> None:
        result.alert = EXPECTED_ALERTS["feed_stall"]
        self._sim_fault(result, {"stall": True}, {"stall": False})

    def _malformed(self, result: FaultResult, _: PlannedFault) -> None:
        result.alert = EXPECTED_ALERTS["malformed"]
        self._sim_fault(result, {"malformed_rate": 0.05}, {"malformed_rate": 0.0})

    def _duplicates(self, result: FaultResult, _: PlannedFault) -> None:
        self._sim_fault(result, {"duplicate_rate": 0.2}, {"duplicate_rate": 0.0})

    def _max_connections(self, result: FaultResult, _: PlannedFault) -> None:
        """A second client with the router's key: the simulator closes the older connection."""
        assert self.stack.sim is not None
        self._feed_up()
        before = probe(self.stack, "feed")()
        result.started = datetime.now(UTC)
        with connect(self.stack.sim.ws_url, open_timeout=30) as intruder:
            intruder.recv(timeout=30)  # connected
            intruder.send(f'{{"action":"auth","params":"{SIM_KEY}"}}')
            intruder.recv(timeout=30)  # auth_success: the router's connection is being closed
        self._expect_alert(result, EXPECTED_ALERTS["max_connections"])
        self._recover(result, "feed", before)

    def _slow_reader(self, result: FaultResult, _: PlannedFault) -> None:
        """The router stops reading (SIGSTOP); the simulator gives up on it as on a reader whose
        buffer overflowed (close 1011), then the router continues and reconnects."""
        assert self.stack.sim is not None
        self._feed_up()
        before = probe(self.stack, "feed")()
        result.started = datetime.now(UTC)
        self.stack.signal_service("router", signal.SIGSTOP)
        try:
            time.sleep(result.hold_s)  # the fault lasts this long; nothing is awaited
            self.stack.sim.drop(1011)
        finally:
            self.stack.signal_service("router", signal.SIGCONT)
            resumed = time.monotonic()
        # The router reads the close once it runs again and reports it (slow_consumer).
        self._expect_alert(result, EXPECTED_ALERTS["slow_reader"])
        self._recover(result, "feed", before, resumed)


def _hhmm(ms: int) -> str:
    from its_common import calendar

    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(calendar.NEW_YORK).strftime("%H:%M")
