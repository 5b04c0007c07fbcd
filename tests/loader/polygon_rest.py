"""A small, protocol-faithful Polygon REST server for the loader tests (real HTTP on loopback).

``GET /v2/aggs/ticker/{T}/range/1/minute/{from}/{to}``: ``from``/``to`` as ms (inclusive) or
``YYYY-MM-DD``; ``apiKey`` query parameter or ``Authorization: Bearer``; ``sort``, ``limit``;
pages of at most ``page_size`` results with a ``next_url`` carrying a ``cursor`` and no API key;
the first ``rate_limited`` requests get HTTP 429 with Polygon's body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiohttp import web

API_KEY = "test-key"
RATE_LIMIT_BODY = {
    "status": "ERROR",
    "request_id": "rl",
    "error": "You've exceeded the maximum requests per minute, please wait or upgrade your "
    "subscription to continue.",
}


def synthetic_bar(symbol: str, t_ms: int, bump: float = 0.0) -> dict[str, Any]:
    base = 100.0 + (sum(map(ord, symbol)) % 50) + 5 * math.sin(t_ms / 3.6e6) + bump
    return {
        "o": round(base, 4),
        "h": round(base + 0.5, 4),
        "l": round(base - 0.5, 4),
        "c": round(base + 0.1, 4),
        "v": float(1000 + (t_ms // 60_000) % 97),
        "vw": round(base + 0.05, 4),
        "t": t_ms,
        "n": 10 + (t_ms // 60_000) % 13,
    }


@dataclass
class PolygonRestServer:
    bars: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 50_000
    rate_limited: int = 0
    requests: list[str] = field(default_factory=list)
    unauthorized: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, symbol: str, bar: dict[str, Any]) -> None:
        self.bars.setdefault(symbol, {})[int(bar["t"])] = bar

    async def start(self) -> PolygonRestServer:
        app = web.Application()
        app.router.add_get("/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{start}/{end}", self.aggs)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def aggs(self, request: web.Request) -> web.Response:
        self.requests.append(str(request.rel_url))
        key = request.query.get("apiKey")
        auth = request.headers.get("Authorization", "")
        if key != API_KEY and auth != f"Bearer {API_KEY}":
            self.unauthorized += 1
            return web.json_response(
                {"status": "ERROR", "request_id": "x", "error": "Unknown API Key"}, status=401
            )
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response(RATE_LIMIT_BODY, status=429)
        ticker = request.match_info["ticker"]
        if request.match_info["mult"] != "1" or request.match_info["span"] != "minute":
            return web.json_response({"status": "ERROR", "error": "only 1/minute"}, status=400)
        start = _bound(request.match_info["start"], end=False)
        end = _bound(request.match_info["end"], end=True)
        limit = min(int(request.query.get("limit", "5000")), 50_000, self.page_size)
        cursor = int(request.query.get("cursor", "0"))
        rows = sorted(
            (b for t, b in self.bars.get(ticker, {}).items() if start <= t <= end),
            key=lambda b: int(b["t"]),
            reverse=request.query.get("sort", "asc") == "desc",
        )
        page = rows[cursor : cursor + limit]
        body: dict[str, Any] = {
            "ticker": ticker,
            "adjusted": True,
            "queryCount": len(page),
            "resultsCount": len(page),
            "request_id": f"r{len(self.requests)}",
            "status": "OK",
        }
        if page:
            body["results"] = page
        if cursor + limit < len(rows):
            query = {k: v for k, v in request.query.items() if k != "apiKey"}
            query["cursor"] = str(cursor + limit)
            next_url = request.url.with_query(query)
            body["next_url"] = str(next_url.with_scheme("http"))
        return web.json_response(body)


def _bound(value: str, end: bool) -> int:
    if value.isdigit():
        return int(value)
    day = date.fromisoformat(value)
    edge = datetime.combine(day, time(0), tzinfo=UTC)
    if end:
        edge += timedelta(days=1) - timedelta(milliseconds=1)
    return int(edge.timestamp() * 1000)
