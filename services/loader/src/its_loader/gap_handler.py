"""The handler of ``its:stream:gaps``: every gap window is backfilled from REST, then acked.

A window (router reconnects and dropped batches, the consumers' ``trimmed_unread`` losses, the
start-up check) is filled for each of its symbols with minute bars from the aggregates endpoint
(:func:`its_loader.backfill.backfill_window`) and, unless ``trades=False``, with trades from
``/v3/trades`` (:func:`its_loader.trades_backfill.backfill_trades_window`). Finality is judged on
the market clock (:mod:`its_loader.finality`).

A window usually ends near "now" (a reconnect's window closes at the first event after it), so
its last minutes are not final yet when the entry arrives, and their trades, which are fetched
for final minutes only, would never be read. So the handler first waits, on the market clock,
until the window's last minute is final (polling it every ``poll_s``), for at most
``settle_wait_s`` of wall time (a stalled feed never settles anything) or until the service
stops. A window ending within :data:`WAIT_HORIZON_MS` of what is final waits. One further
ahead waits only while the clock, as observed over the first polls, moves fast enough to settle
it within the wait: after a long outage of an accelerated replay (30 s at 60x is 30 market
minutes) the stored clock is still near the window's start when the entry arrives, and catches
up in seconds; a window in the clock's future (wall-clock bounds during a replay, a window left
from a later replayed day) would never settle, and a still or slow clock says so. What is
still not final then is filled as far as the rule allows (bars provisional, no trades), logged
as a warning and counted as ``its_loader_gap_windows_total{outcome="unsettled"}``; the gap audit
repairs those minutes later. When the wait ended because the
service stops, the part not final yet is published again as a gap window (same symbols and
reason, ``source=loader``) before the entry is acked, so the next loader reads it once final.
Each window is read from ``late_reports_ms`` before its start: trades reported late during the
gap (and the corrected bars re-sent for them) belong to minutes before it.
A REST failure (after the client's retries) raises: the entry is not acked and is retried, then
dead-lettered by the consumer framework's rules, and ``its_loader_gap_windows_total{outcome=
"failed"}`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from its_common.clock import MarketClock
from its_common.gaps import GapWindow, decode_gap, encode_gap
from its_common.streams import DEFAULT_TRIM, Stream
from its_loader.backfill import backfill_window
from its_loader.consumer import PoisonError
from its_loader.finality import MINUTE_MS, final_until_ms, iso_utc
from its_loader.metrics import LoaderMetrics
from its_loader.rest import BackfillError, PolygonRest
from its_loader.trades_backfill import backfill_trades_window

log = logging.getLogger("its.loader.backfill")
# The longest a window reaching "now" is ahead of the final minutes: the minute in progress, the
# settle delay, and a minute of slack.
WAIT_HORIZON_MS = 4 * MINUTE_MS
# Polls of the market clock before a window further ahead than the horizon is judged by the
# clock's speed (a still clock gives up after this many polls).
RATE_POLLS = 2


class GapsHandler:
    """Entries of ``its:stream:gaps``: each window is backfilled from REST, then acked."""

    stream: str = Stream.GAPS.value
    table = "market_data"

    def __init__(
        self,
        rest: PolygonRest,
        clock: MarketClock,
        metrics: LoaderMetrics | None = None,
        trades: bool = True,
        settle_wait_s: float = 150.0,
        stopping: asyncio.Event | None = None,
        poll_s: float = 1.0,
        late_reports_ms: int = 0,
    ) -> None:
        if clock.redis is None:
            raise ValueError("the gaps handler needs a market clock on Redis")
        self.rest = rest
        self.clock = clock
        self.redis = clock.redis
        self.metrics = metrics
        self.trades = trades
        self.settle_wait_s = settle_wait_s
        self.stopping = stopping
        self.poll_s = poll_s
        self.late_reports_ms = late_reports_ms

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> GapWindow:
        try:
            window = decode_gap(fields)
        except Exception as exc:
            raise PoisonError("bad_gap_entry", f"entry {entry_id}: {exc}") from exc
        if window.end_ms < window.start_ms:
            raise PoisonError("bad_gap_entry", f"entry {entry_id}: window ends before start")
        return window

    def prepare(self, items: Sequence[GapWindow]) -> Sequence[GapWindow]:
        return items

    async def write(self, conn: psycopg.AsyncConnection[Any], items: Sequence[GapWindow]) -> int:
        total = 0
        for window in items:
            final_until = await self._settled(window)
            try:
                for symbol in window.symbols:
                    total += await self._fill(conn, window, symbol, final_until)
            except BackfillError:
                if self.metrics is not None:
                    self.metrics.gap_windows.labels("failed").inc()
                raise
            if self.metrics is not None:
                self.metrics.gap_windows.labels("filled").inc()
        return total

    async def _settled(self, window: GapWindow) -> int:
        """Wait until the window's last minute is final on the market clock (bounded: see the
        module docstring); returns ``final_until`` as it then is."""
        needed = -(-window.end_ms // MINUTE_MS) * MINUTE_MS  # the end of the window's last minute
        started = time.monotonic()
        deadline = started + self.settle_wait_s
        first_clock: int | None = None
        polls = 0
        while True:
            clock_ms = await self.clock.now_ms()
            first_clock = clock_ms if first_clock is None else first_clock
            final_until = final_until_ms(clock_ms)
            now = time.monotonic()
            remaining = deadline - now
            stopping = self.stopping is not None and self.stopping.is_set()
            if final_until >= needed:
                return final_until
            if remaining <= 0 or stopping:
                break
            if needed - final_until > WAIT_HORIZON_MS and polls >= RATE_POLLS:
                # market ms per wall second, as observed since the first poll
                speed = (clock_ms - first_clock) / max(now - started, 1e-3)
                if speed <= 0 or (needed - final_until) / speed > remaining:
                    break
            polls += 1
            if self.stopping is None:
                await asyncio.sleep(min(self.poll_s, remaining))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), min(self.poll_s, remaining))
        log.warning(
            "gap window %s (%s) not final on the market clock (%s): %s..%s filled as far "
            "as it is final (bars provisional, no trades); the gap audit repairs the rest",
            ",".join(window.symbols),
            window.reason,
            "ahead of it" if needed - final_until > WAIT_HORIZON_MS else "waited",
            iso_utc(max(final_until, window.start_ms)),
            iso_utc(window.end_ms),
        )
        if self.metrics is not None:
            self.metrics.gap_windows.labels("unsettled").inc()
        if self.stopping is not None and self.stopping.is_set():
            await self._publish_again(window, final_until)
        return final_until

    async def _publish_again(self, window: GapWindow, final_until: int) -> None:
        tail = GapWindow(
            window.symbols,
            max(window.start_ms, final_until),
            window.end_ms,
            reason=window.reason,
            source="loader",
        )
        policy = DEFAULT_TRIM[Stream.GAPS]
        fields: dict[Any, Any] = encode_gap(tail)
        await self.redis.xadd(Stream.GAPS, fields, maxlen=policy.maxlen, approximate=True)
        log.info("stopping: the part of the window not final yet is published again: %s", tail)

    async def _fill(
        self, conn: psycopg.AsyncConnection[Any], window: GapWindow, symbol: str, final_until: int
    ) -> int:
        # Late reports sent during the gap belong to minutes before it: read those too (stored
        # trades are not duplicated; a final REST bar replaces the bar sent before the report).
        start = window.start_ms - self.late_reports_ms
        rows = await backfill_window(
            self.rest, conn, symbol, start, window.end_ms, final_until, self.metrics
        )
        if self.trades:
            trades = await backfill_trades_window(
                self.rest, conn, symbol, start, window.end_ms, final_until, self.metrics
            )
            # The consumer counts what write() returns under this handler's table (market_data).
            if self.metrics is not None:
                self.metrics.rows.labels("trades").inc(trades)
        return rows

    def event_count(self, item: GapWindow) -> int:
        return 1
