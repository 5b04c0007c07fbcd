"""The dashboard's JSON API, live updates and kill switch against a running stack."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import aiohttp
import psycopg
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from its_dashboard.market import replay_state
from its_dashboard.scrape import parse, quantile, quantiles_ms

from .conftest import TOKEN, Stack, seed

DB_PANELS = ("candles", "decisions", "portfolio", "orders", "fills", "prices", "alerts")


async def test_empty_system_shows_no_data_not_errors(stack: Stack):
    await stack.reset()
    snap = await stack.snapshot_where(
        lambda s: (
            s["health"]["status"] == "ok"  # the dashboard's own heartbeat, after the flush
            and "not ready" not in s["decisions"].get("detail", "")
        )
    )
    for name in (*DB_PANELS, "feed", "loader", "features"):
        assert snap[name]["status"] == "no_data", (name, snap[name])
    assert [b["service"] for b in snap["health"]["data"]] == ["dashboard"]
    assert {c["status"] for c in snap["acceptance"]["data"][1:]} == {"no_data"}
    assert snap["trader"]["data"] == {"halted": False, "halt": {}, "kill": None}


async def test_panels_show_live_data_and_acceptance(stack: Stack):
    await stack.reset()
    await seed(stack)
    snap = await stack.snapshot_where(  # the seed observes the router's latencies last
        lambda s: (
            all(s[p]["status"] == "ok" for p in (*DB_PANELS, "router", "loader"))
            and s["router"]["data"]["receive_to_stored"].get("p95_ms") is not None
        )
    )
    candles = snap["candles"]["data"]
    assert set(candles) == {"NVDA", "MSFT"}
    assert len(candles["NVDA"]["bars"]) == 60 and len(candles["NVDA"]["fills"]) == 2
    assert candles["NVDA"]["fills"][0]["side"] == "BUY"
    assert {b["service"] for b in snap["health"]["data"]} >= {"router", "loader", "dashboard"}
    assert snap["feed"]["data"]["state"] == "subscribed"
    assert snap["decisions"]["data"][0]["confidence"] == 0.73
    # The demo flag comes from the signals row's features document (written by inference).
    assert [
        (d["model_version"], d["demo"], d["demo_market"]) for d in snap["decisions"]["data"]
    ] == [
        ("m-2026-11-20", False, ""),
        ("demo", True, "demo market with a planted pattern"),
    ]
    assert snap["portfolio"]["data"]["accounts"][0]["equity"] == 100_110
    assert len(snap["portfolio"]["data"]["equity_curve"]) == 12
    assert snap["alerts"]["data"]["firing"][0]["rule"] == "redis_memory"
    assert snap["loader"]["data"]["its:stream:bars:1m"]["backlog_s"] >= 0
    assert snap["features"]["data"]["MSFT"]["values"]
    router = snap["router"]["data"]
    assert router["source"] == "scrape"
    assert 5 < router["receive_to_stored"]["p95_ms"] <= 100, router
    acceptance = {c["name"]: c for c in snap["acceptance"]["data"]}
    assert acceptance["Tick latency p95"]["status"] == "pass"
    assert acceptance["No missing minutes vs REST"]["status"] == "pass"
    assert acceptance["Cross-source price difference"]["status"] == "pass"
    assert acceptance["Cross-source price difference"]["value"] == 0.02
    assert acceptance["Redis hit ratio (trading hours)"]["status"] in ("pass", "fail")

    for _ in range(3000):  # slow ticks push p95 over 150 ms: the check fails
        stack.metrics.receive_to_stored.observe(0.4)
    snap = await stack.snapshot_where(
        lambda s: (
            {c["name"]: c for c in s["acceptance"]["data"]}["Tick latency p95"]["status"] == "fail"
        )
    )


async def test_server_sent_events_push_changes_within_seconds(stack: Stack):
    await stack.reset()
    await seed(stack)
    async with aiohttp.ClientSession() as session, session.get(stack.url + "/api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")

        async def next_snapshot() -> dict[str, Any]:
            data = b""
            while True:
                line = await r.content.readline()
                if line.startswith(b"data: "):
                    data = line[6:]
                elif line == b"\n" and data:
                    snapshot: dict[str, Any] = json.loads(data)
                    return snapshot

        first = await next_snapshot()
        await stack.redis.hset("its:feed:state", mapping={"state": "stale", "detail": "quiet"})
        changed_at = time.monotonic()
        while True:
            snap = await next_snapshot()
            if snap["feed"]["status"] == "ok" and snap["feed"]["data"]["state"] == "stale":
                break
            assert time.monotonic() - changed_at < 5, "no live update within 5 s"
        assert snap["meta"]["ts_ms"] > first["meta"]["ts_ms"]


async def test_kill_switch_needs_the_token_and_resume_clears_it(stack: Stack):
    await stack.reset()
    assert (await stack.post("/api/kill"))[0] == 401
    assert (await stack.post("/api/kill", token="wrong-token"))[0] == 401
    assert await stack.redis.get("its:trader:kill") is None
    status, body = await stack.post("/api/kill", token=TOKEN, body={"flatten": True})
    assert status == 200 and body["halt_recorded"] is True
    flag = json.loads(await stack.redis.get("its:trader:kill") or b"null")
    assert flag["flatten"] is True and flag["id"]
    with psycopg.connect(stack.db_url) as conn:
        [(value,)] = conn.execute(
            "SELECT value FROM service_state WHERE service = 'trader' AND key = 'halt'"
        ).fetchall()
    assert value["halted"] is True and value["reason"] == "kill_switch"
    snap = await stack.snapshot_where(lambda s: s["trader"]["data"]["halted"])
    assert snap["trader"]["data"]["kill"]["flatten"] is True
    assert (await stack.post("/api/resume", token="nope"))[0] == 401
    status, body = await stack.post("/api/resume", token=TOKEN)
    assert status == 200 and await stack.redis.get("its:trader:kill") is None
    await stack.snapshot_where(lambda s: not s["trader"]["data"]["halted"])
    assert TOKEN not in stack.log_file.read_text()


async def test_page_and_assets_are_local(stack: Stack):
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.url + "/") as r:
            assert r.status == 200
            html = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with session.get(stack.url + "/static/vendor/lightweight-charts.js") as r:
            assert r.status == 200 and len(await r.read()) > 100_000
        async with session.get(stack.url + "/static/app.js") as r:
            script = await r.text()
        async with session.get(stack.url + "/metrics") as r:
            assert "its_dashboard_sse_clients" in await r.text()
    for text in (html, script):
        assert "https://" not in text and "http://" not in text  # no CDN
    assert "/static/vendor/lightweight-charts.js" in html


def test_histogram_quantiles_match_the_buckets():
    registry = CollectorRegistry()
    hist = Histogram("router_receive_to_stored_seconds", "x", registry=registry,
                     buckets=(0.01, 0.05, 0.1, 0.15, 0.25))  # fmt: skip
    for value in [0.005] * 50 + [0.07] * 45 + [0.2] * 5:
        hist.observe(value)
    sample = parse(generate_latest(registry).decode(), 0.0)
    buckets = sample.buckets["router_receive_to_stored_seconds"]
    assert quantile(0.5, buckets) == 0.01
    p95, p99 = quantile(0.95, buckets), quantile(0.99, buckets)
    assert p95 is not None and abs(p95 - 0.1) < 1e-9
    assert p99 is not None and 0.15 < p99 < 0.25
    assert quantile(0.5, []) is None


def test_a_quantile_in_the_overflow_bucket_is_above_the_top_bound_not_the_bound():
    registry = CollectorRegistry()
    hist = Histogram("router_exchange_to_stored_seconds", "x", registry=registry,
                     buckets=(0.1, 1.0, 5.0))  # fmt: skip
    for value in [0.05] * 60 + [9.0] * 40:
        hist.observe(value)
    buckets = parse(generate_latest(registry).decode(), 0.0).buckets[
        "router_exchange_to_stored_seconds"
    ]
    assert quantile(0.95, buckets) == math.inf
    shown = quantiles_ms(buckets)
    assert shown["p50_ms"] is not None and shown["p50_ms"] <= 100
    assert shown["p95_ms"] is None and shown["p95_above_ms"] == 5000
    assert shown["p99_ms"] is None and shown["p99_above_ms"] == 5000


def test_a_replay_is_told_from_a_live_or_delayed_or_quiet_feed():
    wall = 1_795_400_000_000  # Sun 2026-11-22
    friday = 1_795_197_900_000  # Fri 2026-11-20 13:05 New York
    state = replay_state(friday, wall - 1_000, wall)
    assert state is not None and state["label"] == "replaying Fri 2026-11-20, 13:05 ET"
    assert state["session"] == "2026-11-20" and state["market_open"] is True
    assert replay_state(wall - 15 * 60_000, wall - 1_000, wall) is None  # 15-min delayed data
    assert replay_state(friday, friday + 2_000, wall) is None  # no events since Friday
    monday = 1_795_444_200_000  # Mon 2026-11-23 09:30 New York: the simulator ran past Friday
    ahead = replay_state(monday, wall - 1_000, wall)
    assert ahead is not None and ahead["ahead"] is True
    assert ahead["label"] == "simulating Mon 2026-11-23, 09:30 ET"
