"""The trades audit: per symbol and minute, stored trades (count, volume) against REST.

For one trading day and each symbol, every regular-session minute final on the market clock
(:mod:`its_loader.finality`) is compared: REST's ``/v3/trades`` are read page by page and
counted per minute (trade count and share volume, never all held at once), the stored ``trades``
rows are counted the same way (minute = ``ts`` floored; REST's ``sip_timestamp`` floored to ms,
as stored). A minute whose count or volume differ is a finding: ``missing`` when REST has more
trades than storage, ``extra`` when storage has more, ``mismatch`` when the counts agree but the
volumes do not. With ``repair=True`` the REST trades of the
``missing`` minutes (consecutive minutes as one window) are stored through the backfill's trades
path (:func:`its_loader.trades_backfill.backfill_trades_window`; duplicates are ignored by the
primary key), and the findings say so (``repaired``). ``extra`` and ``mismatch`` minutes are
reported only: REST is the reference, but the audit never deletes or rewrites stored trades.

Findings are printed (or returned as JSON) and, like the bars audit's, replace the day's earlier
``gap_audit`` rows of the symbol, with ``subject = 'trades'`` (the bars audit's rows are
``subject = 'bars'``; one minute can have both). No alert event of its own is published.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from its_common import calendar
from its_common.streams import now_ms
from its_loader.audit import replace_audit_rows
from its_loader.finality import MINUTE_MS, final_until_ms, is_final
from its_loader.rest import PolygonRest
from its_loader.trades_backfill import NS_PER_MS, backfill_trades_window

MinuteStats = dict[int, tuple[int, float]]  # minute start ms -> (trades, volume)


@dataclass
class TradeFinding:
    minute_ms: int
    kind: str  # missing | extra | mismatch
    stored: tuple[int, float]
    rest: tuple[int, float]
    repaired: int = 0


@dataclass
class SymbolTrades:
    symbol: str
    minutes: int
    stored_trades: int = 0
    rest_trades: int = 0
    findings: list[TradeFinding] = field(default_factory=list)
    repaired: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


@dataclass
class TradesAuditReport:
    day: date
    trading_day: bool
    symbols: list[SymbolTrades] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(s.count("missing") for s in self.symbols)

    @property
    def extra(self) -> int:
        return sum(s.count("extra") for s in self.symbols)

    @property
    def mismatches(self) -> int:
        return sum(s.count("mismatch") for s in self.symbols)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.mismatches == 0


def compare_trades(
    symbol: str, minutes: Sequence[int], stored: MinuteStats, rest: MinuteStats
) -> SymbolTrades:
    """Pure comparison of one symbol's day (minute starts in ms)."""
    result = SymbolTrades(symbol, len(minutes))
    for minute in minutes:
        db = stored.get(minute, (0, 0.0))
        ref = rest.get(minute, (0, 0.0))
        result.stored_trades += db[0]
        result.rest_trades += ref[0]
        if db == ref:
            continue
        if ref[0] > db[0]:
            kind = "missing"
        elif ref[0] < db[0]:
            kind = "extra"
        else:
            kind = "mismatch"  # the same number of trades, another volume
        result.findings.append(TradeFinding(minute, kind, db, ref))
    return result


async def rest_minute_stats(
    rest: PolygonRest, symbol: str, start_ms: int, end_ms: int
) -> MinuteStats:
    counts: dict[int, int] = defaultdict(int)
    volumes: dict[int, float] = defaultdict(float)
    async for page in rest.trade_pages(symbol, start_ms * NS_PER_MS, end_ms * NS_PER_MS):
        for item in page:
            minute = int(item["sip_timestamp"]) // NS_PER_MS // MINUTE_MS * MINUTE_MS
            counts[minute] += 1
            volumes[minute] += float(int(item["size"]))
    return {minute: (counts[minute], volumes[minute]) for minute in counts}


async def stored_minute_stats(
    conn: psycopg.AsyncConnection[Any], symbol: str, start_ms: int, end_ms: int
) -> MinuteStats:
    cur = await conn.execute(
        """SELECT (floor(extract(epoch FROM ts) * 1000 / 60000) * 60000)::bigint AS minute,
                  count(*), coalesce(sum(size), 0)::double precision
           FROM trades
           WHERE symbol = %s AND ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)
           GROUP BY minute""",
        (symbol, start_ms, end_ms),
    )
    return {int(row[0]): (int(row[1]), float(row[2])) for row in await cur.fetchall()}


def minute_runs(minutes: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive minutes as ``[start, end)`` windows."""
    windows: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if windows and windows[-1][1] == minute:
            windows[-1] = (windows[-1][0], minute + MINUTE_MS)
        else:
            windows.append((minute, minute + MINUTE_MS))
    return windows


async def audit_trades_day(
    conn: psycopg.AsyncConnection[Any],
    rest: PolygonRest,
    day: date,
    symbols: Sequence[str],
    repair: bool = False,
    market_now: datetime | None = None,
) -> TradesAuditReport:
    """Audit ``day``'s trades of the minutes final by ``market_now`` (default the wall clock)."""
    session = calendar.session(day)
    if session is None:
        return TradesAuditReport(day, trading_day=False)
    report = TradesAuditReport(day, True)
    final_until = final_until_ms(_ms(market_now) if market_now is not None else now_ms())
    minutes = [_ms(m) for m in session.minute_starts() if is_final(_ms(m), final_until)]
    if not minutes:
        report.symbols = [SymbolTrades(symbol, 0) for symbol in symbols]
        return report
    lo, hi = minutes[0], minutes[-1] + MINUTE_MS
    for symbol in symbols:
        rest_stats = await rest_minute_stats(rest, symbol, lo, hi)
        stored = await stored_minute_stats(conn, symbol, lo, hi)
        result = compare_trades(symbol, minutes, stored, rest_stats)
        if repair:
            missing = {f.minute_ms: f for f in result.findings if f.kind == "missing"}
            for start, end in minute_runs(list(missing)):
                rows = await backfill_trades_window(rest, conn, symbol, start, end, final_until)
                result.repaired += rows
                for minute in range(start, end, MINUTE_MS):
                    missing[minute].repaired = 1
        report.symbols.append(result)
    return report


def format_trades_report(report: TradesAuditReport) -> str:
    if not report.trading_day:
        return f"trades audit {report.day.isoformat()}: not a trading day, nothing to audit"
    lines = [
        f"trades audit {report.day.isoformat()}",
        f"{'symbol':<8} {'minutes':>7} {'stored':>9} {'rest':>9} {'missing':>8} {'mismatch':>9} "
        f"{'extra':>6} {'repaired':>9}",
    ]
    for s in report.symbols:
        lines.append(
            f"{s.symbol:<8} {s.minutes:>7} {s.stored_trades:>9} {s.rest_trades:>9} "
            f"{s.count('missing'):>8} {s.count('mismatch'):>9} {s.count('extra'):>6} "
            f"{s.repaired:>9}"
        )
        for finding in s.findings[:20]:
            when = datetime.fromtimestamp(finding.minute_ms / 1000, UTC).astimezone(
                calendar.NEW_YORK
            )
            lines.append(
                f"    {finding.kind:<8} {when:%H:%M} stored {finding.stored[0]} trades "
                f"{finding.stored[1]:g} shares, REST {finding.rest[0]} trades "
                f"{finding.rest[1]:g} shares{' (repaired)' if finding.repaired else ''}"
            )
        if len(s.findings) > 20:
            lines.append(f"    ... {len(s.findings) - 20} more")
    verdict = "OK: no missing trades" if report.ok else "TRADES MISSING"
    lines.append(
        f"{verdict} (minutes missing {report.missing}, mismatch {report.mismatches}, "
        f"extra {report.extra})"
    )
    return "\n".join(lines)


def trades_as_dict(report: TradesAuditReport) -> dict[str, Any]:
    return {
        "date": report.day.isoformat(),
        "trading_day": report.trading_day,
        "ok": report.ok,
        "missing": report.missing,
        "mismatch": report.mismatches,
        "extra": report.extra,
        "symbols": {
            s.symbol: {
                "minutes": s.minutes,
                "stored_trades": s.stored_trades,
                "rest_trades": s.rest_trades,
                "missing": s.count("missing"),
                "mismatch": s.count("mismatch"),
                "extra": s.count("extra"),
                "repaired": s.repaired,
                "findings": [asdict(f) for f in s.findings],
            }
            for s in report.symbols
        },
    }


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


async def write_trades_audit(conn: psycopg.AsyncConnection[Any], report: TradesAuditReport) -> int:
    """Replace the day's ``subject = 'trades'`` gap_audit rows of the audited symbols."""
    if not report.trading_day:
        return 0
    findings = {
        result.symbol: [
            (
                f.minute_ms,
                f.kind,
                {
                    "stored_trades": f.stored[0],
                    "stored_volume": f.stored[1],
                    "rest_trades": f.rest[0],
                    "rest_volume": f.rest[1],
                    "repaired": bool(f.repaired),
                },
            )
            for f in result.findings
        ]
        for result in report.symbols
    }
    return await replace_audit_rows(conn, report.day, "trades", findings)
