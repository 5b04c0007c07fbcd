"""The handler of ``its:stream:gaps``: every gap window is backfilled from REST, then acked.

A window (router reconnects and dropped batches, the consumers' ``trimmed_unread`` losses, the
start-up check) is filled for each of its symbols with minute bars from the aggregates endpoint
(:func:`its_loader.backfill.backfill_window`) and, unless ``trades=False``, with trades from
``/v3/trades`` (:func:`its_loader.trades_backfill.backfill_trades_window`). Finality is judged on
the market clock, read once per window before its REST reads (:mod:`its_loader.finality`).
A REST failure (after the client's retries) raises: the entry is not acked and is retried, then
dead-lettered by the consumer framework's rules, and ``its_loader_gap_windows_total{outcome=
"failed"}`` counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from its_common.clock import MarketClock
from its_common.gaps import GapWindow, decode_gap
from its_common.streams import Stream
from its_loader.backfill import BackfillError, PolygonRest, backfill_window
from its_loader.consumer import PoisonError
from its_loader.finality import final_until_ms
from its_loader.metrics import LoaderMetrics
from its_loader.trades_backfill import backfill_trades_window


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
    ) -> None:
        self.rest = rest
        self.clock = clock
        self.metrics = metrics
        self.trades = trades

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
            final_until = final_until_ms(await self.clock.now_ms())
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

    async def _fill(
        self, conn: psycopg.AsyncConnection[Any], window: GapWindow, symbol: str, final_until: int
    ) -> int:
        rows = await backfill_window(
            self.rest, conn, symbol, window.start_ms, window.end_ms, final_until, self.metrics
        )
        if self.trades:
            rows += await backfill_trades_window(
                self.rest, conn, symbol, window.start_ms, window.end_ms, final_until, self.metrics
            )
        return rows

    def event_count(self, item: GapWindow) -> int:
        return 1
