"""REST: aggregates, trades, last trade, pagination, auth errors, rate limit; agreement with WS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from its_common.events import Trade, decode_frame
from its_marketsim.app import Simulator
from tests.marketsim.support import KEY, config, open_client, recv_frame

MONDAY_OPEN = 1762180200000
MONDAY_CLOSE = 1762203600000


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(config(start="2025-11-10")) as simulator:
        yield simulator


async def get(sim: Simulator, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sim.rest_port}{path}", params=params) as response,
    ):
        return response.status, await response.json()


async def follow(sim: Simulator, url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url, params={"apiKey": KEY}) as response:
        return response.status, await response.json()


async def test_minute_aggregates_and_pagination(sim: Simulator) -> None:
    path = "/v2/aggs/ticker/NVDA/range/1/minute/2025-11-03/2025-11-03"
    status, whole = await get(sim, path, apiKey=KEY, limit=50000)
    assert status == 200 and whole["status"] == "OK" and whole["ticker"] == "NVDA"
    bars = whole["results"]
    assert whole["resultsCount"] == len(bars) == 390
    assert set(bars[0]) == {"v", "vw", "o", "c", "h", "l", "t", "n"}
    assert bars[0]["t"] == MONDAY_OPEN and bars[-1]["t"] == MONDAY_CLOSE - 60_000
    assert isinstance(bars[0]["v"], float)
    assert "next_url" not in whole
    # pages of 100 through next_url (which carries a cursor and no API key)
    collected: list[dict[str, Any]] = []
    status, page = await get(sim, path, apiKey=KEY, limit=100)
    while True:
        collected.extend(page["results"])
        if "next_url" not in page:
            break
        assert "cursor=" in page["next_url"] and KEY not in page["next_url"]
        status, page = await follow(sim, page["next_url"])
        assert status == 200
    assert collected == bars
    status, desc = await get(sim, path, apiKey=KEY, sort="desc", limit=5)
    assert [b["t"] for b in desc["results"]] == [b["t"] for b in bars[::-1][:5]]


async def test_coarser_timespans_agree_with_minutes(sim: Simulator) -> None:
    base = "/v2/aggs/ticker/MSFT/range"
    _, minutes = await get(sim, f"{base}/1/minute/2025-11-03/2025-11-03", apiKey=KEY, limit=50000)
    _, hours = await get(sim, f"{base}/1/hour/2025-11-03/2025-11-03", apiKey=KEY)
    _, days = await get(sim, f"{base}/1/day/2025-11-03/2025-11-07", apiKey=KEY)
    _, five = await get(sim, f"{base}/5/minute/2025-11-03/2025-11-03", apiKey=KEY)
    _, seconds = await get(sim, f"{base}/1/second/{MONDAY_OPEN}/{MONDAY_OPEN + 59_999}", apiKey=KEY)
    m = minutes["results"]
    h = hours["results"]
    total = sum(b["v"] for b in h)
    # Coarser bars come from the trades: the odd lots of a minute without a price-setting trade
    # count in its hour and day, though no minute bar carries them.
    assert sum(b["v"] for b in m) <= total
    assert len(h) == 7  # 09:00 (half), 10:00 ... 15:00
    assert len(days["results"]) == 5
    monday = days["results"][0]
    assert monday["v"] == total and monday["o"] == m[0]["o"] and monday["c"] == m[-1]["c"]
    assert monday["h"] == max(b["h"] for b in m) and monday["n"] == sum(b["n"] for b in h)
    assert len(five["results"]) == 78
    # A second with only odd lots has no bar (Polygon's rules): its volume counts in the minute.
    secs = seconds["results"]
    assert sum(b["v"] for b in secs) < m[0]["v"]
    assert secs[0]["o"] == m[0]["o"] and secs[-1]["c"] == m[0]["c"]
    assert max(b["h"] for b in secs) == m[0]["h"] and min(b["l"] for b in secs) == m[0]["l"]
    assert all(isinstance(b["v"], float) for b in m)  # REST volumes are floats, as Polygon's


async def test_trades_pagination_filters_and_last_trade(sim: Simulator) -> None:
    lo = MONDAY_OPEN * 1_000_000
    hi = (MONDAY_OPEN + 5 * 60_000) * 1_000_000
    params = {"timestamp.gte": str(lo), "timestamp.lt": str(hi), "order": "asc"}
    status, whole = await get(sim, "/v3/trades/NVDA", apiKey=KEY, limit=50000, **params)
    assert status == 200
    rows = whole["results"]
    assert rows and all(lo <= r["sip_timestamp"] < hi for r in rows)
    assert [r["sip_timestamp"] for r in rows] == sorted(r["sip_timestamp"] for r in rows)
    first = rows[0]
    assert set(first) >= {
        "exchange", "id", "participant_timestamp", "price", "sequence_number",
        "sip_timestamp", "size", "tape",
    }  # fmt: skip
    assert first["sip_timestamp"] > 10**18  # nanoseconds
    assert first["participant_timestamp"] < first["sip_timestamp"]
    paged: list[dict[str, Any]] = []
    _, page = await get(sim, "/v3/trades/NVDA", apiKey=KEY, limit=37, **params)
    while True:
        paged.extend(page["results"])
        if "next_url" not in page:
            break
        _, page = await follow(sim, page["next_url"])
    assert paged == rows
    _, newest = await get(sim, "/v3/trades/NVDA", apiKey=KEY, limit=3, **{
        "timestamp.gte": str(lo), "timestamp.lt": str(hi)})  # fmt: skip
    assert newest["results"] == rows[::-1][:3]  # default order: newest first
    status, last = await get(sim, "/v2/last/trade/NVDA", apiKey=KEY)
    assert status == 200 and last["status"] == "OK"
    result = last["results"]
    assert result["T"] == "NVDA" and result["t"] > 10**18 and result["p"] > 0
    assert result["t"] < 1762785000000 * 1_000_000  # before the clock (2025-11-10 09:30)
    status, missing = await get(sim, "/v2/last/trade/ZZZZ", apiKey=KEY)
    assert status == 404 and missing["status"] == "NOT_FOUND"


async def test_auth_errors_and_bad_requests(sim: Simulator) -> None:
    path = "/v2/aggs/ticker/NVDA/range/1/minute/2025-11-03/2025-11-03"
    status, body = await get(sim, path)
    assert status == 401 and body["status"] == "ERROR" and "request_id" in body
    assert body["error"] == "API Key was not provided"
    status, body = await get(sim, path, apiKey="nope")
    assert status == 401 and body["error"] == "Unknown API Key"
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{sim.rest_port}{path}", headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        assert response.status == 200
    status, body = await get(
        sim, "/v2/aggs/ticker/NVDA/range/1/fortnight/2025-11-03/2025-11-03", apiKey=KEY
    )
    assert status == 400 and body["status"] == "ERROR"
    status, body = await get(
        sim, "/v2/aggs/ticker/NVDA/range/1/minute/yesterday/2025-11-03", apiKey=KEY
    )
    assert status == 400 and "from" in body["error"]


async def test_rate_limit() -> None:
    async with Simulator(config(start="2025-11-10", rest_rate_limit=3)) as sim:
        codes = []
        for _ in range(5):
            status, body = await get(sim, "/v2/last/trade/NVDA", apiKey=KEY)
            codes.append(status)
        assert codes == [200, 200, 200, 429, 429]
        assert body["status"] == "ERROR"
        assert body["error"].startswith("You've exceeded the maximum requests per minute")


async def test_rest_agrees_with_websocket_and_never_shows_the_future() -> None:
    async with Simulator(config()) as sim:
        path = "/v3/trades/NVDA"
        status, before = await get(sim, path, apiKey=KEY, **{"timestamp.gte": "2025-11-03"})
        assert status == 200 and before["results"] == []  # nothing has happened yet
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        streamed: list[Trade] = []
        while len(streamed) < 500:
            streamed.extend(e for e in decode_frame(await recv_frame(ws)) if isinstance(e, Trade))
        await ws.close()
        upto = streamed[499].timestamp
        params = {
            "timestamp.gte": "2025-11-03",
            "timestamp.lte": str(upto * 1_000_000 - 1),
            "order": "asc",
            "limit": "50000",
        }
        _, after = await get(sim, path, apiKey=KEY, **params)
        rest = [
            (r["sip_timestamp"] // 1_000_000, r["price"], r["size"], r["id"])
            for r in after["results"]
        ]
        ws_side = [
            (t.timestamp, t.price, t.size, t.trade_id) for t in streamed if t.timestamp < upto
        ]
        assert rest == ws_side
