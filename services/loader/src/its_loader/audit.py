"""The gap audit: stored minute bars of one trading day against the calendar and REST history.

For each symbol and regular-session minute of the day (``its_common.calendar``):

* ``missing``: REST has a bar, the database does not;
* ``mismatch``: both have it but OHLC differ by more than the relative price tolerance or the
  volume by more than the volume tolerance, or the stored row is still provisional (a REST bar
  read before its minute was final; ``detail.provisional``);
* ``extra``: the database has a bar REST does not have.

A minute with no trades (REST has no bar either) is not a gap; it is counted as ``empty``.
Findings replace the day's earlier ``gap_audit`` rows for the symbol; a summary is published on
``its:stream:alert-events`` (``type=gap_audit``) for the alerter's nightly report. With
``repair=True`` the REST bars of missing and mismatched minutes are upserted first, and the
findings say so (``detail.repaired``). Only minutes final on the market clock are audited, and
only final REST bars are ever stored (:mod:`its_loader.finality`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import redis.asyncio as aioredis

from its_common import calendar
from its_common.alert_events import AlertEvent, publish_alert_event
from its_common.db.sources import SOURCE_REST, SOURCE_REST_PROVISIONAL
from its_common.streams import now_ms
from its_loader.backfill import rest_rows, store_rest_rows
from its_loader.finality import SETTLE_MS, final_until_ms, is_final, iso_utc
from its_loader.rest import PolygonRest
from its_loader.store import BarRow

PRICE_FIELDS = ("open", "high", "low", "close")


@dataclass
class Finding:
    minute_ms: int
    kind: str  # missing | mismatch | extra
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SymbolAudit:
    symbol: str
    session_minutes: int
    stored: int = 0
    rest: int = 0
    empty: int = 0
    findings: list[Finding] = field(default_factory=list)
    repaired: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    @property
    def unrepaired_missing(self) -> int:
        return sum(1 for f in self.findings if f.kind == "missing" and not f.detail.get("repaired"))


@dataclass
class AuditReport:
    day: date
    trading_day: bool
    session_open: datetime | None = None
    session_close: datetime | None = None
    symbols: list[SymbolAudit] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(s.count("missing") for s in self.symbols)

    @property
    def mismatches(self) -> int:
        return sum(s.count("mismatch") for s in self.symbols)

    @property
    def extra(self) -> int:
        return sum(s.count("extra") for s in self.symbols)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.mismatches == 0

    def summary(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "trading_day": self.trading_day,
            "session_open": self.session_open.isoformat() if self.session_open else None,
            "session_close": self.session_close.isoformat() if self.session_close else None,
            "ok": self.ok,
            "missing": self.missing,
            "mismatch": self.mismatches,
            "extra": self.extra,
            "symbols": {
                s.symbol: {
                    "session_minutes": s.session_minutes,
                    "stored": s.stored,
                    "rest": s.rest,
                    "empty": s.empty,
                    "missing": s.count("missing"),
                    "mismatch": s.count("mismatch"),
                    "extra": s.count("extra"),
                    "repaired": s.repaired,
                    "missing_minutes": [
                        iso_utc(f.minute_ms, "minutes") for f in s.findings if f.kind == "missing"
                    ][:50],
                }
                for s in self.symbols
            },
        }


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _differs(a: float, b: float, tolerance: float) -> bool:
    """Relative difference over ``tolerance`` (two zeros are equal)."""
    return abs(a - b) > tolerance * max(abs(a), abs(b))


def compare(
    symbol: str,
    minutes: Sequence[int],
    stored: dict[int, tuple[float, ...]],
    rest: dict[int, BarRow],
    price_tolerance: float,
    volume_tolerance: float,
    provisional: frozenset[int] = frozenset(),
) -> SymbolAudit:
    """Pure comparison of one symbol's day (minute starts in ms); ``provisional``: minutes whose
    stored row is provisional (a mismatch even with equal values: it is not final)."""
    result = SymbolAudit(symbol, len(minutes), stored=len(stored), rest=len(rest))
    for minute in minutes:
        db_bar = stored.get(minute)
        rest_bar = rest.get(minute)
        if db_bar is None and rest_bar is None:
            result.empty += 1
        elif db_bar is None:
            result.findings.append(Finding(minute, "missing", {"rest": _rest_values(rest_bar)}))
        elif rest_bar is None:
            result.findings.append(Finding(minute, "extra", {"stored": _values(db_bar)}))
        else:
            diffs = _diffs(db_bar, rest_bar, price_tolerance, volume_tolerance)
            if minute in provisional:
                result.findings.append(
                    Finding(minute, "mismatch", {"fields": diffs, "provisional": True})
                )
            elif diffs:
                result.findings.append(Finding(minute, "mismatch", {"fields": diffs}))
    return result


def _values(bar: tuple[float, ...]) -> dict[str, float]:
    return dict(zip((*PRICE_FIELDS, "volume"), bar, strict=False))


def _rest_values(bar: BarRow | None) -> dict[str, float]:
    if bar is None:
        return {}
    return {
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
    }


def _diffs(
    db_bar: tuple[float, ...], rest_bar: BarRow, price_tol: float, volume_tol: float
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    rest_values = _rest_values(rest_bar)
    for name, stored_value in _values(db_bar).items():
        tol = volume_tol if name == "volume" else price_tol
        if _differs(stored_value, rest_values[name], tol):
            out[name] = [stored_value, rest_values[name]]
    return out


async def stored_bars(
    conn: psycopg.AsyncConnection[Any], symbol: str, start: datetime, end: datetime
) -> tuple[dict[int, tuple[float, ...]], frozenset[int]]:
    """The stored bars (minute start -> OHLCV) and the minutes whose row is provisional."""
    cur = await conn.execute(
        """SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume, source
           FROM market_data WHERE symbol = %s AND ts >= %s AND ts < %s""",
        (symbol, start, end),
    )
    rows = await cur.fetchall()
    bars = {int(row[0]): tuple(row[1:6]) for row in rows}
    provisional = frozenset(int(row[0]) for row in rows if row[6] == SOURCE_REST_PROVISIONAL)
    return bars, provisional


# A minute is audited once it is final: closed, and its final bar has had time to arrive.
AUDIT_SETTLE_MS = SETTLE_MS


async def audit_day(
    conn: psycopg.AsyncConnection[Any],
    rest: PolygonRest,
    day: date,
    symbols: Sequence[str],
    price_tolerance: float = 1e-6,
    volume_tolerance: float = 1e-6,
    repair: bool = False,
    market_now: datetime | None = None,
) -> AuditReport:
    """Audit ``day``'s minutes that are final by ``market_now`` (the market clock, default the
    wall clock; all of a past session): the minute in progress, and those after it, are not
    missing yet, and REST's bars of them are not final (never stored, never compared)."""
    session = calendar.session(day)
    if session is None:
        return AuditReport(day, trading_day=False)
    report = AuditReport(day, True, session.open, session.close)
    final_until = final_until_ms(_ms(market_now) if market_now is not None else now_ms())
    minutes = [_ms(m) for m in session.minute_starts() if is_final(_ms(m), final_until)]
    for symbol in symbols:
        fetched = now_ms()
        bars = await rest.minute_bars(symbol, _ms(session.open), _ms(session.close))
        rows = {
            row.ts_ms: row
            for row in rest_rows(symbol, bars, fetched, final_until)
            if row.source == SOURCE_REST
        }
        stored, provisional = await stored_bars(conn, symbol, session.open, session.close)
        result = compare(
            symbol, minutes, stored, rows, price_tolerance, volume_tolerance, provisional
        )
        if repair:
            fix = [rows[f.minute_ms] for f in result.findings if f.kind in ("missing", "mismatch")]
            if fix:
                await store_rest_rows(conn, fix)
                for finding in result.findings:
                    if finding.kind in ("missing", "mismatch"):
                        finding.detail["repaired"] = True
                result.repaired = len(fix)
        report.symbols.append(result)
    return report


async def write_audit(conn: psycopg.AsyncConnection[Any], report: AuditReport) -> int:
    """Replace the day's ``subject = 'bars'`` gap_audit rows of the audited symbols with this
    report's findings (the trades audit keeps its own, ``subject = 'trades'``)."""
    if not report.trading_day:
        return 0
    findings = {
        result.symbol: [(f.minute_ms, f.kind, f.detail) for f in result.findings]
        for result in report.symbols
    }
    return await replace_audit_rows(conn, report.day, "bars", findings)


async def replace_audit_rows(
    conn: psycopg.AsyncConnection[Any],
    day: date,
    subject: str,
    findings: dict[str, list[tuple[int, str, dict[str, Any]]]],
) -> int:
    """Replace ``day``'s gap_audit rows of ``subject`` (bars, trades) for each symbol with its
    findings (minute start ms, kind, detail), in one transaction; returns rows written."""
    written = 0
    async with conn.transaction(), conn.cursor() as cur:
        for symbol, rows in findings.items():
            await cur.execute(
                "DELETE FROM gap_audit WHERE audit_date = %s AND symbol = %s AND subject = %s",
                (day, symbol, subject),
            )
            if rows:
                await cur.executemany(
                    """INSERT INTO gap_audit (audit_date, symbol, subject, minute_ts, kind, detail)
                       VALUES (%s, %s, %s, %s, %s, %s::jsonb)""",
                    [
                        (day, symbol, subject, datetime.fromtimestamp(ms / 1000, UTC), kind,
                         json.dumps(detail))
                        for ms, kind, detail in rows
                    ],
                )  # fmt: skip
                written += len(rows)
    return written


async def publish_audit_event(redis: aioredis.Redis, report: AuditReport) -> str:
    """The nightly-report event: ``type=gap_audit`` on the alert-events stream."""
    summary = report.summary()
    verdict = "no missing minutes" if report.ok else f"{report.missing} missing minutes"
    event = AlertEvent(
        type="gap_audit",
        source="loader",
        severity="info" if report.ok else "warning",
        message=f"gap audit {report.day.isoformat()}: {verdict}",
        data=msgspec.to_builtins(summary),
    )
    return await publish_alert_event(redis, event)


def format_report(report: AuditReport) -> str:
    if not report.trading_day:
        return f"gap audit {report.day.isoformat()}: not a trading day, nothing to audit"
    assert report.session_open is not None and report.session_close is not None
    lines = [
        f"gap audit {report.day.isoformat()}  session "
        f"{report.session_open.astimezone(calendar.NEW_YORK):%H:%M}-"
        f"{report.session_close.astimezone(calendar.NEW_YORK):%H:%M} New York",
        f"{'symbol':<8} {'minutes':>7} {'stored':>7} {'rest':>7} {'empty':>6} "
        f"{'missing':>8} {'mismatch':>9} {'extra':>6} {'repaired':>9}",
    ]
    for s in report.symbols:
        lines.append(
            f"{s.symbol:<8} {s.session_minutes:>7} {s.stored:>7} {s.rest:>7} {s.empty:>6} "
            f"{s.count('missing'):>8} {s.count('mismatch'):>9} {s.count('extra'):>6} "
            f"{s.repaired:>9}"
        )
        for finding in s.findings[:20]:
            when = datetime.fromtimestamp(finding.minute_ms / 1000, UTC).astimezone(
                calendar.NEW_YORK
            )
            lines.append(f"    {finding.kind:<8} {when:%H:%M} {json.dumps(finding.detail)}")
        if len(s.findings) > 20:
            lines.append(f"    ... {len(s.findings) - 20} more")
    verdict = "OK: no missing minutes" if report.ok else "GAPS FOUND"
    lines.append(
        f"{verdict} (missing {report.missing}, mismatch {report.mismatches}, extra {report.extra})"
    )
    return "\n".join(lines)


def last_completed_session(now: datetime | None = None) -> date:
    """The most recent session that has closed by ``now`` (the market clock; default the wall
    clock): the nightly audit's default date."""
    now = now or datetime.now(UTC)
    day = calendar.new_york_date(now)
    for offset in range(0, 15):
        session = calendar.session(day - timedelta(days=offset))
        if session is not None and session.close <= now:
            return session.day
    raise LookupError("no completed session in the last 15 days")


def as_dict(report: AuditReport) -> dict[str, Any]:
    data = report.summary()
    data["findings"] = {s.symbol: [asdict(f) for f in s.findings] for s in report.symbols}
    return data
