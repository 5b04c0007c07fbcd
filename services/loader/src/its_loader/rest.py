"""The Polygon REST client of the loader: minute aggregates and trades, pages and retries.

* ``GET /v2/aggs/ticker/{T}/range/1/minute/{from_ms}/{to_ms}?adjusted=true&sort=asc&limit=N``
  and ``GET /v3/trades/{T}?timestamp.gte=<ns>&timestamp.lt=<ns>&order=asc&sort=timestamp``;
  pages follow ``next_url`` (which carries no API key: it is added again);
* HTTP 429 and 5xx are retried with :class:`its_common.backoff.Backoff` (``Retry-After`` when
  the server sends it, if longer), up to ``max_retries`` times; 401/403/404 fail at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from its_common.backoff import Backoff, retry_after_s
from its_loader.metrics import LoaderMetrics

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
                        retry_after = retry_after_s(response.headers.get("Retry-After"))
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
