"""The dashboard service: panels refreshed every ``ITS_DASHBOARD_REFRESH_S`` into one snapshot,
served as JSON (``/api/snapshot``) and pushed as server-sent events (``/api/events``); the page
(``/``) and its vendored assets (``/static/``); the token-protected kill switch and resume.

Routes live on ``ITS_HTTP_PORT`` next to ``/healthz``, ``/readyz`` and ``/metrics`` (the runtime's
``http_routes`` hook), so one port serves everything the ``kubectl port-forward`` target needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram
from psycopg.types.json import Jsonb

from its_common import calendar
from its_common.clock import read_feed_clock_written
from its_common.db.connect import async_pool
from its_common.redaction import redact
from its_common.runtime import ServiceContext
from its_common.streams import now_ms
from its_dashboard import __version__
from its_dashboard.cluster import ClusterPanel
from its_dashboard.config import DashboardSettings
from its_dashboard.data import NoData, Panel, Sources, guard, ok
from its_dashboard.market import market_open_now, replay_state
from its_dashboard.scrape import RouterScraper

log = logging.getLogger("its.dashboard")
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SSE_KEEPALIVE_S = 15.0


class Dashboard:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.ctx: ServiceContext[DashboardSettings] | None = None
        self.sources: Sources | None = None
        self.snapshot: dict[str, Any] | None = None
        self.version = 0
        self.updated = asyncio.Condition()
        self.scraper = (
            RouterScraper(
                settings.router_metrics_url, settings.scrape_timeout_s, settings.latency_window_s
            )
            if settings.router_metrics_url
            else None
        )
        self.clients: Gauge | None = None
        self.refresh_seconds: Histogram | None = None
        self.control_requests: Counter | None = None
        self.cluster = ClusterPanel(settings)  # its own route and page module (cluster.js)

    # --- wiring --------------------------------------------------------------------------------
    def add_routes(self, app: web.Application, ctx: ServiceContext[DashboardSettings]) -> None:
        self.ctx = ctx
        self.sources = Sources(self.settings, ctx.require_redis())
        r = ctx.registry
        self.clients = Gauge("its_dashboard_sse_clients", "Live-update clients", registry=r)
        self.refresh_seconds = Histogram(
            "its_dashboard_refresh_seconds", "Time to build one snapshot", registry=r
        )
        self.control_requests = Counter(
            "its_dashboard_control_requests", "Kill/resume requests", ["action", "outcome"],
            registry=r,
        )  # fmt: skip
        app.router.add_get("/", self.index)
        app.router.add_get("/api/snapshot", self.api_snapshot)
        app.router.add_get("/api/events", self.api_events)
        app.router.add_post("/api/kill", self.api_kill)
        app.router.add_post("/api/resume", self.api_resume)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        self.cluster.add_routes(app)

    async def main(self, ctx: ServiceContext[DashboardSettings]) -> None:
        assert self.sources is not None, "add_routes runs before main"
        db_task = asyncio.create_task(self._connect_database(ctx), name="dashboard-db")
        cluster_task = asyncio.create_task(self.cluster.run(ctx.stopping), name="cluster")
        try:
            async with aiohttp.ClientSession() as session:
                while not ctx.stopping.is_set():
                    started = time.monotonic()
                    if self.scraper is not None:
                        await self.scraper.scrape(session)
                    await self.refresh()
                    elapsed = time.monotonic() - started
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            ctx.stopping.wait(), max(0.1, self.settings.refresh_s - elapsed)
                        )
        finally:
            async with self.updated:
                self.updated.notify_all()  # live-update streams see `stopping` and end
            db_task.cancel()
            cluster_task.cancel()
            await asyncio.gather(db_task, cluster_task, return_exceptions=True)
            if self.sources.pool is not None:
                await self.sources.pool.close()

    async def _connect_database(self, ctx: ServiceContext[DashboardSettings]) -> None:
        pool = async_pool(self.settings, min_size=1, max_size=4)
        await pool.open(wait=False)
        assert self.sources is not None
        self.sources.pool = pool
        log.info("database ready")

    # --- snapshot ------------------------------------------------------------------------------
    async def refresh(self) -> dict[str, Any]:
        started = time.monotonic()
        snapshot = await self.build()
        if self.refresh_seconds is not None:
            self.refresh_seconds.observe(time.monotonic() - started)
        async with self.updated:
            self.snapshot = snapshot
            self.version += 1
            self.updated.notify_all()
        return snapshot

    async def build(self) -> dict[str, Any]:
        s = self.sources
        assert s is not None
        names = [
            "health", "feed", "redis", "loader", "candles", "features", "decisions",
            "portfolio", "orders", "fills", "prices", "alerts", "trader",
        ]  # fmt: skip
        producers = [
            s.health, s.feed, s.redis_info, s.loader, s.candles, s.features, s.decisions,
            s.portfolio, s.orders, s.fills, s.prices, s.alerts, s.trader,
        ]  # fmt: skip
        panels = await asyncio.gather(*(guard(n, p) for n, p in zip(names, producers, strict=True)))
        out: dict[str, Any] = dict(zip(names, panels, strict=True))
        out["router"] = await guard("router", self.router_stats)
        out["acceptance"] = ok(await self.acceptance(out))
        wall = now_ms()
        feed: tuple[int, int] | None = None
        try:
            feed = await read_feed_clock_written(s.redis)
        except Exception as exc:  # the header falls back to the calendar; the panels say why
            log.debug("feed clock unreadable: %s", redact(f"{type(exc).__name__}: {exc}"))
        out["meta"] = {
            "ts_ms": wall,
            "market_open": market_open_now(wall),
            "replay": None if feed is None else replay_state(feed[0], feed[1], wall),
            "version": __version__,
            "environment": self.settings.environment,
            "symbols": self.settings.symbols,
            "kill_enabled": self.settings.token is not None,
            "refresh_s": self.settings.refresh_s,
        }
        return out

    async def router_stats(self) -> dict[str, Any]:
        if self.scraper is not None:
            summary = self.scraper.summary()
            if summary is not None and not self.scraper.last_error:
                return {"source": "scrape", **summary}
        assert self.sources is not None
        rows = await self.sources.query(
            "SELECT metric_name, ts, sum(metric_value) FROM sys_metrics WHERE service = 'router'"
            " AND metric_name IN ('router_events_total', 'router_receive_to_stored_seconds_sum',"
            " 'router_receive_to_stored_seconds_count') AND ts > now() - interval '10 minutes'"
            " GROUP BY metric_name, ts ORDER BY ts"
        )
        series: dict[str, list[tuple[datetime, float]]] = {}
        for name, ts, value in rows:
            series.setdefault(name, []).append((ts, value))
        events = series.get("router_events_total", [])
        if len(events) < 2:
            detail = self.scraper.last_error if self.scraper else ""
            raise NoData(detail or "no router metrics yet")
        span = (events[-1][0] - events[0][0]).total_seconds()
        rate = (events[-1][1] - events[0][1]) / span if span > 0 else None
        sums = series.get("router_receive_to_stored_seconds_sum", [])
        counts = series.get("router_receive_to_stored_seconds_count", [])
        mean = None
        if len(sums) >= 2 and len(counts) >= 2 and counts[-1][1] > counts[0][1]:
            mean = (sums[-1][1] - sums[0][1]) / (counts[-1][1] - counts[0][1]) * 1000
        return {
            "source": "sys_metrics",
            "events_per_s": rate,
            "events_total": events[-1][1],
            "window_s": span,
            "receive_to_stored": {"mean_ms": mean, "scope": "sys_metrics (no quantiles)"},
        }

    async def acceptance(self, panels: dict[str, Panel]) -> list[dict[str, Any]]:
        st = self.settings
        checks: list[dict[str, Any]] = []

        def check(
            name: str, value: Any, target: str, passed: bool | None, detail: str = ""
        ) -> None:
            status = "no_data" if passed is None else ("pass" if passed else "fail")
            checks.append(
                {"name": name, "value": value, "target": target, "status": status,
                 "detail": detail}
            )  # fmt: skip

        redis_panel = panels["redis"].get("data") or {}
        ratio = redis_panel.get("hit_ratio")
        market = "market open" if calendar.is_open(datetime.now(UTC)) else "market closed"
        check(
            "Redis hit ratio (trading hours)",
            None if ratio is None else round(ratio, 4),
            f">= {st.accept_hit_ratio}",
            None if ratio is None else ratio >= st.accept_hit_ratio,
            f"keyspace hits/(hits+misses) since Redis start; {market}",
        )
        router = panels["router"].get("data") or {}
        latency = router.get("receive_to_stored") or {}
        p95, above = latency.get("p95_ms"), latency.get("p95_above_ms")
        if above is not None:  # in the overflow bucket: more than the largest bound
            check(
                "Tick latency p95",
                f"> {above:g}",
                f"<= {st.accept_latency_p95_ms:g} ms",
                False if above >= st.accept_latency_p95_ms else None,
                "router receive -> stored in Redis",
            )
        else:
            check(
                "Tick latency p95",
                None if p95 is None else round(p95, 2),
                f"<= {st.accept_latency_p95_ms:g} ms",
                None if p95 is None else p95 <= st.accept_latency_p95_ms,
                "router receive -> stored in Redis",
            )
        assert self.sources is not None
        report: dict[str, Any] | None = None
        with contextlib.suppress(Exception):
            report = await self.sources.gap_report()
        if report is not None:
            gaps = int(report.get("missing", 0)) + int(report.get("mismatch", 0))
            check(
                "No missing minutes vs REST",
                gaps,
                "0 missing or mismatched",
                bool(report.get("ok")),
                f"gap audit of {report.get('date')}",
            )
        else:
            rows: dict[str, Any] | None = None
            with contextlib.suppress(Exception):
                rows = await self.sources.gap_audit_rows()
            check(
                "No missing minutes vs REST",
                None if rows is None else rows["gaps"],
                "0 missing or mismatched",
                None if rows is None else rows["gaps"] == 0,
                "no gap audit yet" if rows is None else f"gap_audit rows of {rows['date']}",
            )
        prices = panels["prices"].get("data") or []
        worst = max((float(p["diff_pct"]) for p in prices if p.get("diff_pct") is not None),
                    default=None)  # fmt: skip
        check(
            "Cross-source price difference",
            None if worst is None else round(worst, 4),
            f"< {st.accept_price_diff_pct} %",
            None if worst is None else worst < st.accept_price_diff_pct,
            "largest of the latest feed-vs-broker check per symbol",
        )
        return checks

    # --- HTTP ----------------------------------------------------------------------------------
    async def index(self, _: web.Request) -> web.Response:
        response = web.FileResponse(STATIC / "index.html")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response  # type: ignore[return-value]

    async def current(self) -> dict[str, Any]:
        return self.snapshot if self.snapshot is not None else await self.refresh()

    async def api_snapshot(self, _: web.Request) -> web.Response:
        return web.json_response(await self.current(), dumps=_dumps)

    async def api_events(self, request: web.Request) -> web.StreamResponse:
        assert self.ctx is not None and self.clients is not None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.clients.inc()
        try:
            snapshot, seen = await self.current(), self.version
            await response.write(_event(snapshot))
            stopping = self.ctx.stopping
            while not stopping.is_set():
                async with self.updated:
                    last = seen
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self.updated.wait_for(
                                lambda last=last: self.version != last or stopping.is_set()  # type: ignore[misc]
                            ),
                            SSE_KEEPALIVE_S,
                        )
                    changed = self.version != seen
                    seen, snapshot = self.version, self.snapshot or snapshot
                if stopping.is_set():
                    break
                await response.write(_event(snapshot) if changed else b": keepalive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.dec()
        return response

    def _authorized(self, request: web.Request) -> web.Response | None:
        token = self.settings.token
        if token is None or not token.get_secret_value():
            return web.json_response(
                {"error": "kill switch disabled: ITS_DASHBOARD_TOKEN is not set"}, status=403
            )
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return web.json_response(
                {"error": "a valid token is required (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def api_kill(self, request: web.Request) -> web.Response:
        assert self.control_requests is not None and self.sources is not None
        denied = self._authorized(request)
        if denied is not None:
            self.control_requests.labels("kill", "denied").inc()
            return denied
        body = await self._body(request)
        flatten = bool(body.get("flatten", False))
        reason = str(body.get("reason") or "dashboard")[:200]
        ts = now_ms()
        flag = {"id": uuid.uuid4().hex, "flatten": flatten, "reason": reason, "ts_ms": ts}
        halt = {"halted": True, "reason": "kill_switch", "detail": reason, "since_ms": ts}
        recorded = await self._write_halt(halt)
        await self.sources.redis.set(self.settings.kill_key, json.dumps(flag))
        self.control_requests.labels("kill", "ok").inc()
        log.warning("kill switch engaged from the dashboard", extra={"flatten": flatten})
        await self.refresh()
        return web.json_response({"engaged": True, "flag": flag, "halt_recorded": recorded})

    async def api_resume(self, request: web.Request) -> web.Response:
        assert self.control_requests is not None and self.sources is not None
        denied = self._authorized(request)
        if denied is not None:
            self.control_requests.labels("resume", "denied").inc()
            return denied
        await self.sources.redis.delete(self.settings.kill_key)
        recorded = await self._write_halt(
            {"halted": False, "reason": "", "detail": "", "since_ms": 0}
        )
        self.control_requests.labels("resume", "ok").inc()
        log.warning("trading resumed from the dashboard")
        await self.refresh()
        return web.json_response({"resumed": True, "halt_recorded": recorded})

    async def _write_halt(self, value: dict[str, Any]) -> bool:
        """The trader's durable HALT state (``service_state``); False when not written."""
        assert self.sources is not None
        pool = self.sources.pool
        if pool is None:
            return False
        try:
            async with pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO service_state (service, key, value, updated_at)"
                    " VALUES (%s, 'halt', %s, now()) ON CONFLICT (service, key)"
                    " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    (self.settings.trader_service, Jsonb(value)),
                )
        except Exception as exc:
            log.error("halt state not written: %s", redact(f"{type(exc).__name__}: {exc}"))
            return False
        return True


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False)


def _event(snapshot: dict[str, Any]) -> bytes:
    return f"event: snapshot\ndata: {_dumps(snapshot)}\n\n".encode()
