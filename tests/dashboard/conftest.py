"""A running dashboard stack for the API and browser tests: real Redis and PostgreSQL, the router's
real metric definitions served on a local /metrics, and the ``its-dashboard`` process itself."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from psycopg.types.json import Jsonb

from its_common.db.migrate import apply_migrations
from its_common.heartbeat import beat
from its_common.streams import Stream, now_ms
from its_router.metrics import RouterMetrics

TOKEN = "dash-token-7f3c9a1e"
SYMBOLS = ("NVDA", "MSFT")
TABLES = (
    "fills", "orders", "positions", "portfolio_snapshots", "signals", "price_checks", "alerts",
    "gap_audit", "market_data", "sys_metrics", "service_state",
)  # fmt: skip
PLANTED = "demo market with a planted pattern"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    url: str
    db_url: str
    redis: aioredis.Redis
    metrics: RouterMetrics
    log_file: Path
    process: subprocess.Popen[bytes]
    redis_url: str = ""
    metrics_url: str = ""

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def post(self, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, json=body or {}, headers=headers) as r,
        ):
            return r.status, await r.json()

    async def snapshot_where(self, predicate: Any, within: float = 10.0) -> dict[str, Any]:
        """Poll /api/snapshot until ``predicate(snapshot)`` holds."""
        deadline = time.monotonic() + within
        snapshot: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, snapshot = await self.get("/api/snapshot")
            assert status == 200
            if predicate(snapshot):
                return snapshot
            await asyncio.sleep(0.2)
        raise AssertionError(f"snapshot never matched: {json.dumps(snapshot)[:3000]}")

    async def reset(self) -> None:
        await self.redis.flushdb()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
        deadline = time.monotonic() + 10
        while not [k async for k in self.redis.scan_iter(match="its:heartbeat:dashboard:*")]:
            assert time.monotonic() < deadline, "the dashboard's heartbeat did not come back"
            await asyncio.sleep(0.1)


async def start_dashboard(
    redis_url: str, db_url: str, metrics_url: str, token: str | None, log_file: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """An ``its-dashboard`` process (``token`` None: no kill-switch token), ready over HTTP."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITS_", "OTEL_"))}
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=db_url, ITS_HTTP_HOST="127.0.0.1",
        ITS_HTTP_PORT=str(port), ITS_DASHBOARD_REFRESH_S="0.5",
        ITS_DASHBOARD_ROUTER_METRICS_URL=metrics_url, ITS_SYMBOLS=",".join(SYMBOLS),
        ITS_HEARTBEAT_INTERVAL_S="1", ITS_ENVIRONMENT="test", ITS_LOG_LEVEL="INFO",
    )  # fmt: skip
    if token is not None:
        env["ITS_DASHBOARD_TOKEN"] = token
    exe = shutil.which("its-dashboard", path=str(Path(sys.executable).parent))
    assert exe is not None, "its-dashboard is not installed in the venv"
    with log_file.open("wb") as out:
        # starting a process does not block; the caller's wait is over HTTP below
        process = subprocess.Popen([exe], env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                assert process.poll() is None, _text(log_file)
                try:
                    async with session.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, _text(log_file)
                await asyncio.sleep(0.2)
    except BaseException:
        stop_dashboard(process)
        raise
    return process, url


def _text(path: Path) -> str:
    return path.read_text()


def stop_dashboard(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="package")
async def stack(redis_server, postgres_server, tmp_path_factory) -> AsyncIterator[Stack]:
    name = f"dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{postgres_server.role}"')
    db_url = f"postgresql://{postgres_server.role}@127.0.0.1:{postgres_server.port}/{name}"
    with psycopg.connect(db_url) as conn:
        apply_migrations(conn)
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"  # not db 0: redis_client flushes it
    registry = CollectorRegistry()
    metrics = RouterMetrics.create(registry)

    async def serve_metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    metrics_url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"

    log_file = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    process, url = await start_dashboard(redis_url, db_url, metrics_url, TOKEN, log_file)
    redis = aioredis.Redis.from_url(redis_url)
    stack = Stack(url, db_url, redis, metrics, log_file, process, redis_url, metrics_url)
    try:
        yield stack
    finally:
        stop_dashboard(process)
        await redis.aclose()
        await runner.cleanup()
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def seed(stack: Stack) -> None:
    """One trading session's worth of every panel's source, as the services write them."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=60)
    with psycopg.connect(stack.db_url) as conn:
        cur = conn.cursor()
        for i, symbol in enumerate(SYMBOLS):
            base = 180.0 + 240 * i
            bars = []
            for m in range(60):
                o = base + (m % 7) * 0.1
                c = o + (0.15 if m % 3 else -0.12)
                bars.append((symbol, start + timedelta(minutes=m), o, max(o, c) + 0.05,
                             min(o, c) - 0.05, c, 1000 + m, "polygon_ws"))  # fmt: skip
            cur.executemany(
                "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                bars,
            )
            for k, side in enumerate(("BUY", "SELL")):
                oid = f"o-{symbol}-{k}"
                ts = start + timedelta(minutes=20 + 20 * k, seconds=5)
                cur.execute(
                    "INSERT INTO orders (client_order_id, account, broker, symbol, side, quantity,"
                    " status, filled_quantity, created_at) VALUES (%s,'SIM1','sim',%s,%s,10,"
                    "'filled',10,%s)",
                    (oid, symbol, side, ts),
                )
                cur.execute(
                    "INSERT INTO fills (execution_id, client_order_id, ts, account, symbol, side,"
                    " quantity, price, commission) VALUES (%s,%s,%s,'SIM1',%s,%s,10,%s,0.35)",
                    (f"x-{oid}", oid, ts, symbol, side, base + k),
                )
            cur.execute(
                "INSERT INTO positions (account, symbol, quantity, avg_price, realized_pnl)"
                " VALUES ('SIM1', %s, 0, 0, 10.0)",
                (symbol,),
            )
            cur.execute(
                "INSERT INTO price_checks (ts, symbol, feed_price, broker_price, diff_pct, ok,"
                " detail) VALUES (%s,%s,%s,%s,%s,true,'ok')",
                (now, symbol, base, base * 1.0002, 0.02),
            )
        for m in range(0, 60, 5):
            cur.execute(
                "INSERT INTO portfolio_snapshots (ts, account, cash, equity, gross_exposure,"
                " realized_pnl, unrealized_pnl) VALUES (%s,'SIM1',%s,%s,0,%s,0)",
                (start + timedelta(minutes=m), 100_000 + m, 100_000 + m * 2, m),
            )
        cur.execute(
            "INSERT INTO signals (ts, model_version, action, action_name, confidence,"
            " risk_outcome) VALUES (%s,'m-2026-11-20',4,'HOLD_HOLD',0.73,'allowed')",
            (now - timedelta(minutes=1),),
        )
        # An older decision of the demo bundle, as inference writes it ("demo" in features).
        cur.execute(
            "INSERT INTO signals (ts, model_version, action, action_name, confidence,"
            " features, risk_outcome) VALUES (%s,'demo',8,'BUY_BOTH',0.41,%s,'denied')",
            (
                now - timedelta(minutes=3),
                Jsonb({"demo": True, "filled": [], "demo_market": PLANTED}),
            ),
        )
        cur.execute(
            "INSERT INTO alerts (rule, fingerprint, severity, state, message, labels)"
            " VALUES ('redis_memory','redis_memory','critical','firing','Redis uses 190 MiB',%s)",
            (Jsonb({}),),
        )
    r = stack.redis
    await r.hset("its:feed:state", mapping={"state": "subscribed", "detail": "", "ts_ms": now_ms()})
    for i, symbol in enumerate(SYMBOLS):
        await r.hset(f"its:last:trade:{symbol}", mapping={"p": 180 + 240 * i, "rt": now_ms()})
        cached = {"symbol": symbol, "ts_ms": now_ms() - 60_000, "spec_hash": "x",
                  "values": [0.001 * (i + 1), 0.5], "filled": False}  # fmt: skip
        await r.set(f"its:features:latest:{symbol}", json.dumps(cached))
    await beat(r, "router", "router-0", "0.1.0", "running", {}, 30, now_ms())
    await beat(r, "loader", "loader-0", "0.1.0", "running", {}, 30, now_ms())
    await r.xadd(Stream.BARS_1M, {b"v": b"1"})
    await r.xgroup_create(Stream.BARS_1M, "loader", id="0")
    report = {"date": "2026-11-24", "ok": True, "missing": 0, "mismatch": 0, "extra": 0}
    await r.xadd(Stream.ALERT_EVENTS, {b"type": b"gap_audit", b"data": json.dumps(report)})
    for _ in range(50):
        await r.get("its:features:latest:NVDA")  # hits for the ratio
    for latency in (0.002, 0.004, 0.006, 0.03, 0.08):
        for _ in range(400):
            stack.metrics.receive_to_stored.observe(latency)
    stack.metrics.events.labels("T").inc(5000)
