"""The end-of-run checks against the simulator's REST truth and the stack's own records.

Each check returns a :class:`Check`: rows compared, differences (must be zero) and the first few
differences spelled out. The compared window is regular-session minutes from shortly after the
feed began to the last minute that can no longer change (final on the feed clock, and past the
simulator's latest late report, 15 minutes).
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from its_common import calendar
from tests.chaos.faults import ALERT_TIMEOUT_S, FaultResult, _poll, alert_in
from tests.chaos.stack import SYMBOLS, ChaosStack, start_time
from tests.router.harness import SIM_KEY, http

MINUTE_MS = 60_000
LATE_REPORT_MS = 16 * MINUTE_MS  # the simulator reports late trades up to 15 minutes late
SETTLE_MS = MINUTE_MS  # its_loader.finality.SETTLE_MS
NS_PER_MS = 1_000_000
SHOWN = 5
DOWNSTREAM_OF_DECISIONS = frozenset({"kill_trader", "kill_alerter"})
DECISION_LAG_MIN = 3  # how far the decision stage may trail the feed clock at a fault


@dataclass
class Check:
    name: str
    compared: int = 0
    differences: int = 0
    notes: list[str] = field(default_factory=list)

    def differ(self, note: str) -> None:
        self.differences += 1
        if len(self.notes) < SHOWN:
            self.notes.append(note)

    @property
    def ok(self) -> bool:
        return self.differences == 0


def session_ranges(lo_ms: int, hi_ms: int) -> list[tuple[int, int]]:
    """The regular-session parts of ``[lo_ms, hi_ms)`` (minute aligned)."""
    out: list[tuple[int, int]] = []
    day = _dt(lo_ms).astimezone(calendar.NEW_YORK).date()
    last = _dt(hi_ms).astimezone(calendar.NEW_YORK).date()
    while day <= last:
        session = calendar.session(day)
        if session is not None:
            start = max(lo_ms, _ms(session.open))
            end = min(hi_ms, _ms(session.close))
            if start < end:
                out.append((start, end))
        day = day.fromordinal(day.toordinal() + 1)
    return out


def window(first_feed_ms: int, last_feed_ms: int) -> tuple[int, int]:
    """Whole minutes from two minutes after the first feed event to the last settled minute."""
    lo = (first_feed_ms // MINUTE_MS + 2) * MINUTE_MS
    hi = ((last_feed_ms - SETTLE_MS - LATE_REPORT_MS) // MINUTE_MS) * MINUTE_MS
    return lo, max(lo, hi)


def _rest_pages(stack: ChaosStack, url: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    while url:
        status, body = http("GET", f"{url}&apiKey={SIM_KEY}", timeout=120)
        if status != 200:
            raise RuntimeError(f"REST {url}: {status} {body}")
        results += body.get("results", [])
        url = body.get("next_url", "")
        if url and "?" not in url:
            url += "?"
    return results


def check_bars(stack: ChaosStack, ranges: list[tuple[int, int]]) -> Check:
    """Every session minute bar equals REST's (OHLCV), none missing, none extra."""
    assert stack.sim is not None
    check = Check("minute bars = REST")
    for symbol in SYMBOLS:
        for lo, hi in ranges:
            rest = {
                int(bar["t"]): (bar["o"], bar["h"], bar["l"], bar["c"], bar["v"])
                for bar in _rest_pages(
                    stack,
                    f"{stack.sim.rest_url}/v2/aggs/ticker/{symbol}/range/1/minute/{lo}/{hi - 1}"
                    "?limit=50000&sort=asc",
                )
            }
            stored = {
                int(ts.timestamp() * 1000): ((o, h, low, c, v), source)
                for ts, o, h, low, c, v, source in stack.sql(
                    "SELECT ts, open, high, low, close, volume, source FROM market_data"
                    " WHERE symbol = %s AND ts >= %s AND ts < %s",
                    symbol,
                    _dt(lo),
                    _dt(hi),
                )
            }
            for minute in sorted(set(rest) | set(stored)):
                check.compared += 1
                when = f"{symbol} {_hhmm(minute)}"
                if minute not in stored:
                    check.differ(f"{when} missing (REST {rest[minute]})")
                elif minute not in rest:
                    check.differ(f"{when} extra {stored[minute]}")
                elif not _same(stored[minute][0], rest[minute]):
                    check.differ(f"{when} stored {stored[minute]} REST {rest[minute]}")
                elif stored[minute][1].endswith("provisional"):
                    check.differ(f"{when} still provisional")
    return check


def check_trades(stack: ChaosStack, ranges: list[tuple[int, int]]) -> Check:
    """Every trade stored exactly once and equal to REST's (time, exchange, id, price, size)."""
    assert stack.sim is not None
    check = Check("trades = REST, once")
    for symbol in SYMBOLS:
        for lo, hi in ranges:
            rest = Counter(
                (int(t["sip_timestamp"]) // NS_PER_MS, int(t["exchange"]), str(t["id"]),
                 float(t["price"]), int(t["size"]))
                for t in _rest_pages(
                    stack,
                    f"{stack.sim.rest_url}/v3/trades/{symbol}?timestamp.gte={lo * NS_PER_MS}"
                    f"&timestamp.lt={hi * NS_PER_MS}&order=asc&limit=50000",
                )
            )  # fmt: skip
            stored = Counter(
                (int(ts.timestamp() * 1000), int(exchange), str(trade_id), float(price), int(size))
                for ts, exchange, trade_id, price, size in stack.sql(
                    "SELECT ts, exchange, trade_id, price, size FROM trades"
                    " WHERE symbol = %s AND ts >= %s AND ts < %s",
                    symbol,
                    _dt(lo),
                    _dt(hi),
                )
            )
            check.compared += sum(rest.values())
            by_minute: Counter[tuple[int, str]] = Counter()
            for trade in set(rest) | set(stored):
                difference = stored[trade] - rest[trade]
                if difference:
                    kind = "extra" if difference > 0 else "missing"
                    by_minute[(trade[0] // MINUTE_MS * MINUTE_MS, kind)] += abs(difference)
            for (minute, kind), count in sorted(by_minute.items()):
                check.differences += count - 1
                check.differ(f"{symbol} {_hhmm(minute)} {count} {kind}")
    return check


class Database(Protocol):
    """What the order checks read (the stack's PostgreSQL; a test database in their tests)."""

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]: ...

    def scalar(self, query: str, *params: Any) -> Any: ...


def check_orders(stack: Database, settled_s: float = 30.0) -> Check:
    """No decision ordered twice, no order filled beyond its quantity, every fill one the broker
    made (a fill recorded twice under two ids, or one the broker never made, is not in its
    executions), and every execution of the simulated broker older than ``settled_s`` recorded
    as a fill (none lost). Partial fills that look alike are legitimate: the broker's execution
    ids tell them apart."""
    check = Check("no duplicate orders/fills")
    check.compared = int(stack.scalar("SELECT count(*) FROM orders") or 0) + int(
        stack.scalar("SELECT count(*) FROM fills") or 0
    )
    for decision_ts, symbol, count in stack.sql(
        "SELECT decision_ts, symbol, count(*) FROM orders WHERE decision_ts IS NOT NULL"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    ):
        check.differ(f"{symbol} decision {decision_ts}: {count} orders")
    for order_id, filled, quantity in stack.sql(
        "SELECT f.client_order_id, sum(f.quantity), o.quantity FROM fills f"
        " JOIN orders o USING (client_order_id) GROUP BY 1, 3 HAVING sum(f.quantity) > o.quantity"
    ):
        check.differ(f"order {order_id}: filled {filled} of {quantity}")
    for execution_id, order_id in stack.sql(
        "SELECT f.execution_id, f.client_order_id FROM fills f JOIN orders o USING"
        " (client_order_id) WHERE o.broker = 'sim' AND NOT EXISTS (SELECT 1 FROM"
        " sim_executions e WHERE e.execution_id = f.execution_id)"
    ):
        check.differ(f"order {order_id}: fill {execution_id} the broker never made")
    for execution_id, order_id in stack.sql(
        "SELECT e.execution_id, e.client_order_id FROM sim_executions e WHERE e.recorded_at <"
        " now() - make_interval(secs => %s) AND NOT EXISTS (SELECT 1 FROM fills f WHERE"
        " f.execution_id = e.execution_id)",
        settled_s,
    ):
        check.differ(f"order {order_id}: execution {execution_id} never recorded as a fill")
    return check


def outage_windows(stack: ChaosStack, results: list[FaultResult]) -> list[tuple[int, int, str]]:
    """Per fault, the bars the decision stage may have passed over: from the first bar not
    decided when the fault began (the decision stage trails the feed clock: at 60x a bar
    announced a few seconds before a kill is still undecided; at most ``DECISION_LAG_MIN``
    minutes back) to the first bar decided after the fault ended. A restarted inference replays
    the bars it missed as warm-up (state only, no decisions on stale bars), by design."""
    windows = []
    for result in results:
        if result.ended is None or result.kind in DOWNSTREAM_OF_DECISIONS:
            continue
        resumed = stack.scalar("SELECT min(ts) FROM signals WHERE created_at > %s", result.ended)
        end = _ms(resumed) if resumed is not None else 2**62
        start = result.feed_start_ms // MINUTE_MS * MINUTE_MS
        decided = stack.scalar("SELECT max(ts) FROM signals WHERE created_at <= %s", result.started)
        if decided is not None:
            start = min(start, max(_ms(decided) + MINUTE_MS, start - DECISION_LAG_MIN * MINUTE_MS))
        windows.append((start, end, result.kind))
    return windows


def check_decisions(
    stack: ChaosStack,
    ranges: list[tuple[int, int]],
    warmup_min: int,
    results: list[FaultResult],
    first_feed_ms: int,
) -> Check:
    """Every session minute has a decision (a ``signals`` row), or a counted reason: the first
    ``warmup_min`` minutes the stack saw of a session (warm-up), or a fault's outage
    (:func:`outage_windows`)."""
    check = Check("a decision every minute")
    outages = outage_windows(stack, results)
    reasons: Counter[str] = Counter()
    decided = {
        int(ts.timestamp() * 1000)
        for (ts,) in stack.sql(
            "SELECT DISTINCT ts FROM signals WHERE ts >= %s AND ts < %s",
            _dt(ranges[0][0]) if ranges else _dt(0),
            _dt(ranges[-1][1]) if ranges else _dt(0),
        )
    }
    warm = 0
    for lo, hi in ranges:
        session = calendar.session(_dt(lo).astimezone(calendar.NEW_YORK).date())
        opened = max(_ms(session.open) if session else lo, first_feed_ms)
        for minute in range(lo, hi, MINUTE_MS):
            check.compared += 1
            if minute in decided:
                continue
            if minute < opened + warmup_min * MINUTE_MS:
                warm += 1
                continue
            outage = next((kind for lo_, hi_, kind in outages if lo_ <= minute < hi_), None)
            if outage is not None:
                reasons[outage] += 1
                continue
            check.differ(f"{_hhmm(minute)} no decision")
    counted = [f"{n} warm-up"] if (n := warm) else []
    counted += [f"{n} {kind}" for kind, n in sorted(reasons.items())]
    if counted:
        check.notes.insert(0, "no decision, counted: " + ", ".join(counted))
    return check


def check_alerts(stack: ChaosStack, results: list[FaultResult]) -> Check:
    """Each fault's alert fired (checked while it was held) and resolved afterwards."""
    check = Check("alerts fired and resolved")
    for result in results:
        if result.alert is None:
            continue
        check.compared += 1
        alert = result.alert

        def resolved(alert: Any = alert, result: FaultResult = result) -> bool:
            return alert_in(stack, alert, "resolved", result.started)

        if not result.alert_fired:
            check.differ(f"{result.kind}: {alert.fingerprint} did not fire")
        elif _poll(resolved, ALERT_TIMEOUT_S) is None:
            check.differ(f"{result.kind}: {alert.fingerprint} fired but never resolved")
    return check


def check_memory(peaks: dict[str, int], bounds_mib: dict[str, int]) -> Check:
    """Resident memory of each service stayed under its stated bound."""
    check = Check("memory under bound")
    for name, peak in sorted(peaks.items()):
        check.compared += 1
        bound = bounds_mib.get(name, bounds_mib["default"])
        mib = peak / 1024 / 1024
        check.notes.append(f"{name} {mib:.0f}/{bound} MiB") if len(check.notes) < 20 else None
        if mib > bound:
            check.differences += 1
    return check


def check_nothing_left(stack: ChaosStack, children_before: set[int]) -> Check:
    """After stop: no process the run started is alive, no new descendant of the runner (a
    pytest session's own servers were there before), every port free."""
    check = Check("nothing left running")
    for pid, started in sorted(stack.pids.items()):
        check.compared += 1
        if _alive(pid) and start_time(pid) == started:  # not a pid reused by another process
            check.differ(f"pid {pid} still running")
    for pid in descendants():
        if pid not in children_before:
            check.differ(f"child pid {pid} still running")
    for port in sorted(stack.ports):
        check.compared += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                check.differ(f"port {port} still in use")
    return check


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants(root: int | None = None) -> list[int]:
    """Every live descendant process of ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _same(stored: tuple[float, ...], rest: tuple[float, ...]) -> bool:
    return all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(stored, rest, strict=True)
    )


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _hhmm(ms: int) -> str:
    return _dt(ms).astimezone(calendar.NEW_YORK).strftime("%m-%d %H:%M")
