"""REST input that is bad or excessive: Polygon's 400 body, bounded pages, a feed that flows."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import date
from typing import Any

import aiohttp
import pytest

from its_common.simmarket import sessions
from its_marketsim.app import Simulator
from tests.marketsim.support import KEY, config, open_client

AGGS = "/v2/aggs/ticker/NVDA/range"
FIRST, LAST = "2025-10-01", "2025-11-07"  # 28 sessions before the clock (2025-11-10)
PER_REQUEST = 2


async def get_url(url: str, **params: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        return response.status, await response.json()


async def get(sim: Simulator, path: str, **params: Any) -> tuple[int, dict[str, Any]]:
    return await get_url(f"http://127.0.0.1:{sim.rest_port}{path}", apiKey=KEY, **params)


async def pages(sim: Simulator, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a request, following next_url."""
    status, page = await get(sim, path, **params)
    assert status == 200, page
    out = [page]
    while "next_url" in page:
        status, page = await get_url(page["next_url"], apiKey=KEY)
        assert status == 200, page
        out.append(page)
    return out


def assert_polygon_error(status: int, body: dict[str, Any]) -> None:
    assert status == 400, body
    assert body["status"] == "ERROR" and isinstance(body["request_id"], str) and body["error"]


def ny_days(times_ms: list[int]) -> set[date]:
    return {sessions.ny_date(t) for t in times_ms}


def by_day(bars: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Bars (in time order) grouped by New York date, in date order."""
    groups: dict[date, list[dict[str, Any]]] = {}
    for bar in bars:
        groups.setdefault(sessions.ny_date(bar["t"]), []).append(bar)
    return [groups[d] for d in sorted(groups)]


@pytest.fixture
async def sim() -> Any:
    async with Simulator(
        config(start="2025-11-10", rest_sessions_per_request=PER_REQUEST)
    ) as simulator:
        yield simulator


@pytest.mark.parametrize(
    "path",
    [
        f"{AGGS}/99999999999999999999/minute/2025-11-03/2025-11-03",
        f"{AGGS}/0/minute/2025-11-03/2025-11-03",
        f"{AGGS}/100001/minute/2025-11-03/2025-11-03",
        f"{AGGS}/\u00b2/minute/2025-11-03/2025-11-03",
        f"{AGGS}/1/minute/99999999999999999999/99999999999999999999",
        f"{AGGS}/1/minute/2025-11-03/9999-12-31",
        f"{AGGS}/1/minute/\u00b9\u00b2/2025-11-03",
        f"{AGGS}/1/day/0/{'9' * 5000}",
    ],
)
async def test_out_of_range_path_values_get_polygon_400(sim: Simulator, path: str) -> None:
    assert_polygon_error(*await get(sim, path))


async def test_out_of_range_query_values_and_forged_cursors_get_polygon_400(
    sim: Simulator,
) -> None:
    day = f"{AGGS}/1/minute/2025-11-03/2025-11-03"
    assert_polygon_error(*await get(sim, day, limit="9" * 5000))
    for bounds in ({"timestamp.gte": "9" * 30}, {"timestamp.lt": "99999999999999999999"}):
        assert_polygon_error(*await get(sim, "/v3/trades/NVDA", **bounds))
    for state in ({"lo": "x"}, {"lo": 0, "hi": 10**30, "order": "asc", "limit": 5}, [1, 2]):
        cursor = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        assert_polygon_error(*await get(sim, "/v3/trades/NVDA", cursor=cursor))
    # an aggregates cursor carries an origin: a forged one is refused too
    cursor = base64.urlsafe_b64encode(b"origin=0001-01-01").decode()
    assert_polygon_error(*await get(sim, day, cursor=cursor))


async def test_a_long_minute_range_comes_in_pages_of_bounded_sessions(sim: Simulator) -> None:
    expected = {s.day for s in sessions.sessions_between(date.fromisoformat(FIRST),
                                                          date.fromisoformat(LAST))}  # fmt: skip
    assert len(expected) == 28
    got = await pages(sim, f"{AGGS}/1/minute/{FIRST}/{LAST}", limit=50000)
    for page in got:
        assert len(ny_days([b["t"] for b in page.get("results", [])])) <= PER_REQUEST
    bars = [b for page in got for b in page.get("results", [])]
    times = [b["t"] for b in bars]
    assert times == sorted(set(times))  # no bar twice, none out of order
    assert ny_days(times) == expected
    newest_first = await pages(sim, f"{AGGS}/1/minute/{FIRST}/{LAST}", limit=50000, sort="desc")
    assert [b for page in newest_first for b in page.get("results", [])] == bars[::-1]
    # day bars agree with the minute bars, and N-day bars with the day bars, across pages
    days = [b for page in await pages(sim, f"{AGGS}/1/day/{FIRST}/{LAST}") for b in page["results"]]
    assert len(days) == 28
    # prices agree exactly; a day's volume may exceed its minutes' (odd lots of a minute with
    # no price-setting trade count in the day bar but make no minute bar)
    assert [b["h"] for b in days] == [max(m["h"] for m in day) for day in by_day(bars)]
    assert [b["l"] for b in days] == [min(m["l"] for m in day) for day in by_day(bars)]
    assert sum(b["v"] for b in days) >= sum(b["v"] for b in bars)
    two = [b for page in await pages(sim, f"{AGGS}/2/day/{FIRST}/{LAST}") for b in page["results"]]
    assert sum(b["n"] for b in two) == sum(b["n"] for b in days)
    assert len({b["t"] for b in two}) == len(two) < len(days)


async def test_a_bar_wider_than_one_request_may_read_is_refused(sim: Simulator) -> None:
    status, body = await get(sim, f"{AGGS}/7/day/{FIRST}/{LAST}")
    assert_polygon_error(status, body)
    assert f"more than {PER_REQUEST} sessions" in body["error"]


async def test_a_long_trades_range_comes_in_pages_of_bounded_sessions(sim: Simulator) -> None:
    params = {"timestamp.gte": "2025-11-03", "timestamp.lte": "2025-11-07", "limit": "50000"}
    ascending = await pages(sim, "/v3/trades/MSFT", order="asc", **params)
    for page in ascending:
        assert len(ny_days([r["sip_timestamp"] // 10**6 for r in page["results"]])) <= PER_REQUEST
    rows = [r for page in ascending for r in page["results"]]
    keys = [(r["sip_timestamp"], r["sequence_number"]) for r in rows]
    assert keys == sorted(set(keys))
    assert len(ny_days([k[0] // 10**6 for k in keys])) == 5
    descending = await pages(sim, "/v3/trades/MSFT", order="desc", **params)
    assert [r for page in descending for r in page["results"]] == rows[::-1]


async def test_the_feed_keeps_flowing_while_a_large_rest_request_is_served() -> None:
    """A year of minute bars on a busy market: the request is answered with one bounded page,
    and WebSocket frames keep arriving while it is being computed."""
    busy = config(start="2025-11-10", speed=30.0, trades_per_day={"NVDA": 400_000, "MSFT": 100_000})
    async with Simulator(busy) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        try:
            await ws.recv()  # the feed flows
            request = asyncio.create_task(
                get(sim, f"{AGGS}/1/minute/2024-11-01/2025-11-07", limit=50000)
            )
            frames_during = 0
            while not request.done():
                receive = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait(
                    {request, receive}, timeout=120, return_when=asyncio.FIRST_COMPLETED
                )
                assert done, "neither a frame nor the response arrived"
                if receive in done:
                    receive.result()
                    frames_during += 1
                else:
                    receive.cancel()
            status, body = request.result()
            assert status == 200 and "next_url" in body
            assert len(ny_days([b["t"] for b in body["results"]])) <= 5
            assert frames_during >= 3
        finally:
            await ws.close()
