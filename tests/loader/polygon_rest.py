"""A small, protocol-faithful Polygon REST server for the loader tests (real HTTP on loopback).

``GET /v2/aggs/ticker/{T}/range/1/minute/{from}/{to}``: ``from``/``to`` as ms (inclusive) or
``YYYY-MM-DD``; ``apiKey`` query parameter or ``Authorization: Bearer``; ``sort``, ``limit``;
pages of at most ``page_size`` results with a ``next_url`` carrying a ``cursor`` and no API key;
the first ``rate_limited`` requests get HTTP 429 with Polygon's body.

``GET /v3/trades/{T}``: ``timestamp`` (a date) and ``timestamp.gte/.gt/.lte/.lt`` (ns or
``YYYY-MM-DD``), ``order`` (default desc, as Polygon), ``sort=timestamp``, ``limit`` (default
1000, max 50000); results in Polygon's v3 shape (``sip_timestamp``, ``participant_timestamp``,
``exchange``, ``id``, ``price``, ``size``, ``conditions`` when any, ``sequence_number``,
``tape``); ``next_url`` is ``/v3/trades/{T}?cursor=...`` (the cursor alone carries the query; no
API key), as Polygon and the ITS simulator answer.
"""

from __future__ import annotations

import base64
import json
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


def synthetic_trade(symbol: str, sip_ns: int, i: int) -> dict[str, Any]:
    """One v3 trade (the shape ``GET /v3/trades/{T}`` returns)."""
    row: dict[str, Any] = {
        "exchange": 4 + i % 3,
        "id": str(i),
        "participant_timestamp": sip_ns - 1_000 - i % 7,
        "price": round(100.0 + (i % 11) * 0.01, 2),
        "sequence_number": i,
        "sip_timestamp": sip_ns,
        "size": 100 + i % 9,
        "tape": 3,
    }
    if i % 3 == 0:
        row["conditions"] = [12, 37]
    return row


@dataclass
class PolygonRestServer:
    bars: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
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

    def add_trades(self, symbol: str, trades: list[dict[str, Any]]) -> None:
        rows = self.trades.setdefault(symbol, [])
        rows.extend(trades)
        rows.sort(key=lambda t: (int(t["sip_timestamp"]), int(t["sequence_number"])))

    async def start(self) -> PolygonRestServer:
        app = web.Application()
        app.router.add_get("/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{start}/{end}", self.aggs)
        app.router.add_get("/v3/trades/{ticker}", self.trades_v3)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _refuse(self, request: web.Request) -> web.Response | None:
        """Auth and the rate limit, shared by every endpoint."""
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
        return None

    async def trades_v3(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        ticker = request.match_info["ticker"]
        query = request.query
        if "cursor" in query:
            state = json.loads(base64.urlsafe_b64decode(query["cursor"].encode()))
            lo, hi, order = int(state["lo"]), int(state["hi"]), str(state["order"])
            limit, offset = int(state["limit"]), int(state["offset"])
        else:
            lo, hi = 0, 2**62
            if "timestamp" in query:
                lo = _ns_bound(query["timestamp"], end=False)
                hi = _ns_bound(query["timestamp"], end=True)
            if "timestamp.gte" in query:
                lo = max(lo, _ns_bound(query["timestamp.gte"], end=False))
            if "timestamp.gt" in query:
                lo = max(lo, _ns_bound(query["timestamp.gt"], end=True) + 1)
            if "timestamp.lte" in query:
                hi = min(hi, _ns_bound(query["timestamp.lte"], end=True))
            if "timestamp.lt" in query:
                hi = min(hi, _ns_bound(query["timestamp.lt"], end=False) - 1)
            order = query.get("order", "desc")
            if order not in ("asc", "desc") or query.get("sort", "timestamp") != "timestamp":
                return web.json_response({"status": "ERROR", "error": "bad order"}, status=400)
            limit = min(int(query.get("limit", "1000")), 50_000)
            offset = 0
        rows = [t for t in self.trades.get(ticker, []) if lo <= int(t["sip_timestamp"]) <= hi]
        if order == "desc":
            rows.reverse()
        size = min(limit, self.page_size)
        page = rows[offset : offset + size]
        body: dict[str, Any] = {"results": page, "status": "OK", "request_id": "t"}
        if offset + size < len(rows):
            state = {"lo": lo, "hi": hi, "order": order, "limit": limit, "offset": offset + size}
            cursor = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            body["next_url"] = f"{self.url}/v3/trades/{ticker}?cursor={cursor}"
        return web.json_response(body)

    async def aggs(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
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


def _ns_bound(value: str, end: bool) -> int:
    """Nanoseconds, or a ``YYYY-MM-DD`` date (UTC day here; the first or last nanosecond)."""
    if value.isdigit():
        return int(value)
    return _bound(value, end) * 1_000_000 + (999_999 if end else 0)
