"""The small HTTP endpoint every service runs: /healthz, /readyz, /metrics.

``/healthz`` answers 200 while the process is alive and its main task runs; ``/readyz`` runs
every registered readiness check (with a timeout) and answers 503 naming the failing ones;
``/metrics`` is the Prometheus text exposition of the service's registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from its_common.redaction import redact

log = logging.getLogger("its.health")
ReadinessCheck = Callable[[], Awaitable[None]]
HttpConfigure = Callable[[web.Application], None]
"""Adds a service's own routes (e.g. the dashboard's UI) to the health app before it starts."""
CHECK_TIMEOUT_S = 2.0


@dataclass
class HealthState:
    service: str
    version: str
    registry: CollectorRegistry
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    alive: bool = True
    detail: str = "running"
    role: str | None = None
    """``leader`` or ``standby`` for a service under leader election (its_common.leader)."""

    async def readiness(self) -> dict[str, str]:
        """``{check: "ok" | error}`` for every registered check, run concurrently."""

        async def run(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except TimeoutError:
                return f"timed out after {CHECK_TIMEOUT_S:.0f}s"
            except Exception as exc:
                return redact(f"{type(exc).__name__}: {exc}")
            return "ok"

        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[name]) for name in names))
        return dict(zip(names, results, strict=True))


def build_app(state: HealthState, configure: HttpConfigure | None = None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        body = {
            "status": "ok" if state.alive else "failed",
            "service": state.service,
            "version": state.version,
            "detail": state.detail,
        }
        return web.json_response(body, status=200 if state.alive else 500)

    async def readyz(_: web.Request) -> web.Response:
        checks = await state.readiness()
        ready = state.alive and all(result == "ok" for result in checks.values())
        body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
        if state.role is not None:
            body["role"] = state.role
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        payload = generate_latest(state.registry)
        response = web.Response(body=payload)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if configure is not None:
        configure(app)
    return app


async def start_health_server(
    state: HealthState, host: str, port: int, configure: HttpConfigure | None = None
) -> web.AppRunner:
    """Start serving; the bound port is ``runner.addresses[0][1]`` (port 0 picks a free one)."""
    runner = web.AppRunner(build_app(state, configure), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("health endpoint listening", extra={"host": host, "port": bound_port(runner)})
    return runner


def bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])
