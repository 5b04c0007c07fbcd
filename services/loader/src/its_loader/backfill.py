"""REST backfill: Polygon minute aggregates into ``market_data`` with ``source = 'polygon_rest'``.

* REST pages, 429/5xx retries: :mod:`its_loader.rest`;
* only **final** minutes are stored as ``polygon_rest`` (closed on the market clock plus the
  settle delay, :mod:`its_loader.finality`): a REST row is authoritative and a WebSocket bar can
  never replace it. Bars of minutes not final yet (the minute in progress, a minute just closed)
  are stored as ``polygon_rest_provisional``, which WebSocket bars and later REST reads replace.
  "Now" is always the market clock (the feed's time), never the machine's: a replayed day's
  REST answers end at the simulator's clock, long before the wall clock;
* windows come from gap entries (router), from the start-up check (last non-provisional bar to
  now, within the exchange calendar's regular sessions) and from ``its-loader backfill``; gap
  windows (and ``backfill --trades``) also backfill trades (:mod:`its_loader.trades_backfill`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from its_common import calendar
from its_common.db.sources import SOURCE_REST, SOURCE_REST_PROVISIONAL
from its_common.streams import now_ms
from its_loader.finality import MINUTE_MS, is_final, iso_utc
from its_loader.metrics import LoaderMetrics
from its_loader.rest import PolygonRest
from its_loader.store import (
    BarRow,
    bar_payload_rows,
    store_bars,
)
from its_loader.trades_backfill import backfill_trades_window

log = logging.getLogger("its.loader.backfill")


def rest_rows(
    symbol: str, bars: Sequence[dict[str, Any]], fetched_ms: int, final_until: int
) -> list[BarRow]:
    """REST bars as rows: ``polygon_rest`` for final minutes (``finality.is_final`` against
    ``final_until``, from the market clock), ``polygon_rest_provisional`` for the others."""
    rows = []
    for bar in bars:
        t = int(bar["t"])
        source = SOURCE_REST if is_final(t, final_until) else SOURCE_REST_PROVISIONAL
        vw = bar.get("vw")
        n = bar.get("n")
        rows.append(
            BarRow(
                symbol=symbol,
                ts_ms=t,
                open=float(bar["o"]),
                high=float(bar["h"]),
                low=float(bar["l"]),
                close=float(bar["c"]),
                volume=float(bar["v"]),
                vwap=float(vw) if vw is not None else None,
                trade_count=int(n) if n is not None else None,
                source=source,
                received_ms=fetched_ms,
            )
        )
    return rows


async def store_rest_rows(conn: psycopg.AsyncConnection[Any], rows: Sequence[BarRow]) -> int:
    if not rows:
        return 0
    stored, _ = await store_bars(conn, bar_payload_rows(rows))
    return stored


async def backfill_window(
    rest: PolygonRest,
    conn: psycopg.AsyncConnection[Any],
    symbol: str,
    start_ms: int,
    end_ms: int,
    final_until: int,
    metrics: LoaderMetrics | None = None,
) -> int:
    """Fetch one symbol's window from REST and upsert it; returns rows inserted or changed.

    Every minute the window touches is read, also the one it starts in: a window opens at the
    newest event seen, inside a minute whose bar is sent when it ends (inside the window).
    ``final_until`` (``finality.final_until_ms`` of the market clock's now) decides which bars
    are final; the others are stored provisional."""
    fetched = now_ms()
    bars = await rest.minute_bars(symbol, start_ms // MINUTE_MS * MINUTE_MS, end_ms)
    rows = rest_rows(symbol, bars, fetched, final_until)
    stored = await store_rest_rows(conn, rows)
    provisional = sum(1 for row in rows if row.source == SOURCE_REST_PROVISIONAL)
    if metrics is not None:
        metrics.backfill_rows.inc(stored)
        metrics.backfill_provisional.inc(provisional)
    log.info(
        "backfilled %s %s..%s: %d REST bars (%d provisional: not final before %s), %d rows written",
        symbol,
        iso_utc(start_ms, "minutes"),
        iso_utc(end_ms, "minutes"),
        len(rows),
        provisional,
        iso_utc(final_until, "minutes"),
        stored,
    )
    return stored


def session_windows(start: datetime, end: datetime) -> list[tuple[date, int, int]]:
    """``[start, end)`` cut to the regular sessions of the exchange calendar, per session."""
    if end <= start:
        return []
    windows = []
    for session in calendar.sessions_between(
        calendar.new_york_date(start), calendar.new_york_date(end)
    ):
        lo = max(start, session.open)
        hi = min(end, session.close)
        if lo < hi:
            windows.append((session.day, _ms(lo), _ms(hi)))
    return windows


def day_windows(first: date, last: date) -> list[tuple[date, int, int]]:
    """Whole regular sessions from ``first`` to ``last`` inclusive (New York dates)."""
    return [(s.day, _ms(s.open), _ms(s.close)) for s in calendar.sessions_between(first, last)]


async def startup_windows(
    conn: psycopg.AsyncConnection[Any],
    symbols: Sequence[str],
    initial_sessions: int,
    now: datetime | None = None,
) -> list[tuple[str, int, int]]:
    """Per symbol: from the last stored bar that is not provisional (a provisional one is read
    again) or the last ``initial_sessions`` sessions, to now (the market clock)."""
    now = now or datetime.now(UTC)
    windows: list[tuple[str, int, int]] = []
    for symbol in symbols:
        cur = await conn.execute(
            "SELECT max(ts) FROM market_data WHERE symbol = %s AND source <> %s",
            (symbol, SOURCE_REST_PROVISIONAL),
        )
        row = await cur.fetchone()
        last = row[0] if row else None
        if last is not None:
            start = last + timedelta(minutes=1)
        elif initial_sessions > 0:
            first_day = calendar.new_york_date(now) - timedelta(days=initial_sessions * 2 + 7)
            sessions = [
                s
                for s in calendar.sessions_between(first_day, calendar.new_york_date(now))
                if s.open <= now
            ]
            if not sessions:
                continue
            start = sessions[-min(initial_sessions, len(sessions))].open
        else:
            continue
        for _, lo, hi in session_windows(start, now):
            windows.append((symbol, lo, hi))
    return windows


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


ProgressFn = Callable[[int, int, str], None]


async def backfill_range(
    rest: PolygonRest,
    conn: psycopg.AsyncConnection[Any],
    symbols: Sequence[str],
    first: date,
    last: date,
    final_until: int,
    progress: ProgressFn | None = None,
    trades: bool = False,
) -> int:
    """The ``its-loader backfill`` command's work: every session, every symbol (minutes not
    final before ``final_until`` are stored provisional); with ``trades`` the sessions' trades
    of final minutes too. Returns rows written (bars, plus new trades)."""
    windows = day_windows(first, last)
    steps = len(windows) * len(symbols)
    done = 0
    total = 0
    started = time.monotonic()
    for day, lo, hi in windows:
        for symbol in symbols:
            total += await backfill_window(rest, conn, symbol, lo, hi, final_until)
            if trades:
                total += await backfill_trades_window(rest, conn, symbol, lo, hi, final_until)
            done += 1
            if progress is not None:
                progress(done, steps, f"{symbol} {day.isoformat()}")
    log.info("backfill done: %d rows in %.1fs", total, time.monotonic() - started)
    return total
