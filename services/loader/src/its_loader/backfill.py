"""REST backfill: Polygon minute aggregates into ``market_data`` with ``source = 'polygon_rest'``.

* ``GET /v2/aggs/ticker/{T}/range/1/minute/{from_ms}/{to_ms}?adjusted=true&sort=asc&limit=N``;
  pages follow ``next_url`` (which carries no API key: it is added again);
* HTTP 429 and 5xx are retried with exponential backoff (``Retry-After`` when the server sends
  it), up to ``rest_max_retries`` times; 401/403/404 fail at once;
* only **final** minutes are stored as ``polygon_rest`` (closed on the market clock plus the
  settle delay, :mod:`its_loader.finality`): a REST row is authoritative and a WebSocket bar can
  never replace it. Bars of minutes not final yet (the minute in progress, a minute just closed)
  are stored as ``polygon_rest_provisional``, which WebSocket bars and later REST reads replace.
  "Now" is always the market clock (the feed's time), never the machine's: a replayed day's
  REST answers end at the simulator's clock, long before the wall clock;
* windows come from gap entries (router), from the start-up check (last non-provisional bar to
  now, within the exchange calendar's regular sessions) and from ``its-loader backfill``; gap
  windows also backfill trades (:mod:`its_loader.trades_backfill`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
from yarl import URL

from its_common import calendar
from its_common.backoff import Backoff
from its_common.streams import now_ms
from its_loader.finality import is_final
from its_loader.metrics import LoaderMetrics
from its_loader.store import (
    SOURCE_REST,
    SOURCE_REST_PROVISIONAL,
    BarRow,
    bar_payload_rows,
    store_bars,
)

log = logging.getLogger("its.loader.backfill")
TRADES_MAX_LIMIT = 50_000  # Polygon's largest /v3/trades page


class BackfillError(RuntimeError):
    """REST history could not be fetched (after retries) or was refused."""


@dataclass(frozen=True)
class RestConfig:
    base_url: str
    api_key: str
    page_limit: int = 50_000
    max_retries: int = 8
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 30.0


class PolygonRest:
    """A small Polygon REST client for minute aggregates."""

    def __init__(self, config: RestConfig, metrics: LoaderMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PolygonRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def aggs_url(self, symbol: str, from_ms: int, to_ms: int) -> URL:
        base = URL(self.config.base_url.rstrip("/"))
        path = f"v2/aggs/ticker/{symbol}/range/1/minute/{from_ms}/{to_ms}"
        return (base / path).with_query(
            adjusted="true", sort="asc", limit=str(self.config.page_limit)
        )

    async def minute_bars(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Every REST minute bar of ``symbol`` starting in ``[start_ms, end_ms)``, all pages."""
        if end_ms <= start_ms:
            return []
        url: URL | None = self.aggs_url(symbol, start_ms, end_ms - 1)
        seen: set[str] = set()
        results: list[dict[str, Any]] = []
        while url is not None:
            body = await self._get(url)
            for bar in body.get("results") or []:
                t = int(bar["t"])
                if start_ms <= t < end_ms:
                    results.append(bar)
            next_url = body.get("next_url")
            if not next_url or next_url in seen:
                break
            seen.add(next_url)
            url = URL(next_url)
        return results

    def trades_url(self, symbol: str, start_ns: int, end_ns: int) -> URL:
        base = URL(self.config.base_url.rstrip("/"))
        return (base / f"v3/trades/{symbol}").with_query(
            {
                "timestamp.gte": str(start_ns),
                "timestamp.lt": str(end_ns),
                "order": "asc",
                "sort": "timestamp",
                "limit": str(min(self.config.page_limit, TRADES_MAX_LIMIT)),
            }
        )

    async def trade_pages(
        self, symbol: str, start_ns: int, end_ns: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``symbol``'s REST trades with ``start_ns <= sip_timestamp < end_ns``, oldest first, one
        page at a time (a session of a busy ticker is over a million trades: never all at once).
        Pages follow ``next_url`` (the cursor carries the query; the API key is added again)."""
        if end_ns <= start_ns:
            return
        url: URL | None = self.trades_url(symbol, start_ns, end_ns)
        seen: set[str] = set()
        while url is not None:
            body = await self._get(url)
            yield [
                trade
                for trade in body.get("results") or []
                if start_ns <= int(trade["sip_timestamp"]) < end_ns
            ]
            next_url = body.get("next_url")
            if not next_url or next_url in seen:
                break
            seen.add(next_url)
            url = URL(next_url)

    async def _get(self, url: URL) -> dict[str, Any]:
        authed = url.update_query(apiKey=self.config.api_key)
        backoff = Backoff(self.config.backoff_s, self.config.backoff_max_s)
        attempt = 0
        while True:
            attempt += 1
            status = 0
            retry_after: float | None = None
            try:
                async with self._client().get(authed) as response:
                    status = response.status
                    self._count(str(status))
                    if status == 200:
                        body: dict[str, Any] = await response.json(content_type=None)
                        if body.get("status") == "ERROR":
                            raise BackfillError(f"REST error for {url.path}: {body.get('error')}")
                        return body
                    text = await response.text()
                    if status in (429, 500, 502, 503, 504):
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                    else:
                        raise BackfillError(f"REST {status} for {url.path}: {text[:200]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._count("error")
                if attempt > self.config.max_retries:
                    raise BackfillError(f"REST unreachable for {url.path}: {exc}") from exc
                delay = backoff.next_delay()
                log.warning("REST request failed (%s); retry %d in %.1fs", exc, attempt, delay)
            else:
                if attempt > self.config.max_retries:
                    raise BackfillError(f"REST {status} for {url.path} after {attempt} tries")
                delay = backoff.next_delay()
                if retry_after is not None:
                    delay = max(delay, retry_after)
                log.warning("REST %d for %s; retry %d in %.1fs", status, url.path, attempt, delay)
            await asyncio.sleep(delay)

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.rest_requests.labels(status).inc()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


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

    ``final_until`` (``finality.final_until_ms`` of the market clock's now) decides which bars
    are final; the others are stored provisional."""
    fetched = now_ms()
    bars = await rest.minute_bars(symbol, start_ms, end_ms)
    rows = rest_rows(symbol, bars, fetched, final_until)
    stored = await store_rest_rows(conn, rows)
    provisional = sum(1 for row in rows if row.source == SOURCE_REST_PROVISIONAL)
    if metrics is not None:
        metrics.backfill_rows.inc(stored)
        metrics.backfill_provisional.inc(provisional)
    log.info(
        "backfilled %s %s..%s: %d REST bars (%d provisional: not final before %s), %d rows written",
        symbol,
        _iso(start_ms),
        _iso(end_ms),
        len(rows),
        provisional,
        _iso(final_until),
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


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="minutes")


ProgressFn = Callable[[int, int, str], None]


async def backfill_range(
    rest: PolygonRest,
    conn: psycopg.AsyncConnection[Any],
    symbols: Sequence[str],
    first: date,
    last: date,
    final_until: int,
    progress: ProgressFn | None = None,
) -> int:
    """The ``its-loader backfill`` command's work: every session, every symbol (minutes not
    final before ``final_until`` are stored provisional)."""
    windows = day_windows(first, last)
    steps = len(windows) * len(symbols)
    done = 0
    total = 0
    started = time.monotonic()
    for day, lo, hi in windows:
        for symbol in symbols:
            total += await backfill_window(rest, conn, symbol, lo, hi, final_until)
            done += 1
            if progress is not None:
                progress(done, steps, f"{symbol} {day.isoformat()}")
    log.info("backfill done: %d rows in %.1fs", total, time.monotonic() - started)
    return total
