"""REST fallback (`USE_POLYGON_WS=false`): poll minute aggregates and last trades.

Polled data is encoded as ordinary Polygon frames and put on the same queue as WebSocket frames
(with source ``rest``), so it is validated, written and consumed exactly like live data.
Requests are spaced by a token bucket under ``ITS_REST_REQUESTS_PER_MINUTE``; HTTP 429 is
answered with backoff (``Retry-After`` when given).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from its_common.backoff import Backoff, retry_after_s
from its_common.events import MinuteAgg, Trade, encode_frame
from its_common.streams import now_ms
from its_router.batching import Frame
from its_router.config import RouterSettings
from its_router.metrics import RouterMetrics

log = logging.getLogger("its.router.rest")
MINUTE_MS = 60_000


class RateLimitedError(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("HTTP 429")
        self.retry_after = retry_after


class RestError(Exception):
    pass


class TokenBucket:
    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute
        self.next_at = 0.0

    async def take(self) -> None:
        now = time.monotonic()
        wait = self.next_at - now
        self.next_at = max(now, self.next_at) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class RestPoller:
    def __init__(
        self,
        settings: RouterSettings,
        api_key: str,
        queue: asyncio.Queue[Frame],
        metrics: RouterMetrics,
        symbols: list[str],
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self.queue = queue
        self.metrics = metrics
        self.symbols = symbols
        self.bucket = TokenBucket(settings.rest_requests_per_minute)
        self.backoff = Backoff(1.0, 120.0)
        self.next_bar_ms: dict[str, int] = {}
        self.last_trade_ns: dict[str, int] = {}
        self.last_trade_ms: dict[str, int] = {}
        self.healthy = False

    async def run(self, stopping: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while not stopping.is_set():
                wait = self.settings.rest_poll_interval_s
                try:
                    await self.poll_once(session)
                    self.healthy = True
                    self.backoff.reset()
                except RateLimitedError as exc:
                    wait = exc.retry_after or self.backoff.next_delay()
                    log.warning("REST rate limited (429); waiting %.1fs", wait)
                except (aiohttp.ClientError, TimeoutError, RestError) as exc:
                    self.healthy = False
                    wait = self.backoff.next_delay()
                    log.warning("REST poll failed (%s); retrying in %.1fs", exc, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        for symbol in list(self.symbols):
            trade = await self._last_trade(session, symbol)
            # The market's own clock: the last trade's time (the simulator may replay a past or
            # accelerated day); wall-clock time when the symbol has not traded yet.
            market_now = self.last_trade_ms.get(symbol) or now_ms()
            bars = await self._minute_bars(session, symbol, market_now)
            if bars:
                self._enqueue(bars)
            if trade is not None:
                self._enqueue([trade])

    def _enqueue(self, events: list[MinuteAgg] | list[Trade]) -> None:
        frame = Frame(now_ms(), encode_frame(events), "rest")
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.metrics.queue_dropped_frames.inc()
            log.error("read queue full: REST poll result dropped (it is polled again)")

    async def _minute_bars(
        self, session: aiohttp.ClientSession, symbol: str, now: int
    ) -> list[MinuteAgg]:
        start = self.next_bar_ms.get(symbol, (now // MINUTE_MS - 30) * MINUTE_MS)
        complete_before = (now // MINUTE_MS) * MINUTE_MS  # the current minute is not done yet
        if complete_before <= start:
            return []
        url = (
            f"{self.settings.polygon_rest_url}/v2/aggs/ticker/{symbol}/range/1/minute/"
            f"{start}/{complete_before - 1}"
        )
        params: dict[str, str] | None = {"adjusted": "true", "sort": "asc", "limit": "50000"}
        bars: list[MinuteAgg] = []
        while url:
            body = await self._get(session, url, params)
            for row in body.get("results") or []:
                t = int(row["t"])
                if start <= t < complete_before:
                    bars.append(_bar(symbol, row))
            url, params = body.get("next_url") or "", None
        if bars:
            self.next_bar_ms[symbol] = bars[-1].start + MINUTE_MS
        return bars

    async def _last_trade(self, session: aiohttp.ClientSession, symbol: str) -> Trade | None:
        body = await self._get(session, f"{self.settings.polygon_rest_url}/v2/last/trade/{symbol}")
        result = body.get("results")
        if not result:
            return None
        ts_ns = int(result["t"])
        self.last_trade_ms[symbol] = ts_ns // 1_000_000
        if self.last_trade_ns.get(symbol) == ts_ns:
            return None
        self.last_trade_ns[symbol] = ts_ns
        return Trade(
            symbol=symbol,
            exchange=int(result.get("x", 0)),
            trade_id=str(result.get("i", "")),
            tape=int(result.get("z", 0)),
            price=float(result["p"]),
            size=int(result["s"]),
            timestamp=ts_ns // 1_000_000,
            sequence=int(result.get("q", 0)),
            conditions=tuple(result.get("c") or ()),
        )

    async def _get(
        self, session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        await self.bucket.take()
        async with session.get(url, params=params) as response:
            if response.status == 429:
                self.metrics.rest_requests.labels("rate_limited").inc()
                raise RateLimitedError(retry_after_s(response.headers.get("Retry-After")))
            body: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                self.metrics.rest_requests.labels("error").inc()
                message = body.get("error") or body.get("message") or response.reason
                raise RestError(f"HTTP {response.status} from {response.url.path}: {message}")
            self.metrics.rest_requests.labels("ok").inc()
            return body

    async def ready(self) -> None:
        if not self.healthy:
            raise RuntimeError("REST polling has not succeeded yet")


def _bar(symbol: str, row: dict[str, Any]) -> MinuteAgg:
    start = int(row["t"])
    return MinuteAgg(
        symbol=symbol,
        volume=float(row["v"]),
        open=float(row["o"]),
        close=float(row["c"]),
        high=float(row["h"]),
        low=float(row["l"]),
        start=start,
        end=start + MINUTE_MS,
        vwap=float(row.get("vw") or 0.0),
    )
