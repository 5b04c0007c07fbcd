"""Service runtime: logging, telemetry, health endpoint, heartbeat and graceful shutdown.

A service provides ``async def main(ctx: ServiceContext)`` that runs until ``ctx.stopping`` is
set, and calls :func:`run_service` from its CLI. SIGTERM and SIGINT set ``ctx.stopping``; main
gets ``shutdown_grace_s`` to finish (flush, ack) before it is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from its_common.db.schema import SchemaGate
from its_common.health import HealthState, ReadinessCheck, bound_port, start_health_server
from its_common.heartbeat import heartbeat_loop
from its_common.logs import setup_logging
from its_common.rediscluster import connect_redis
from its_common.settings import BaseServiceSettings
from its_common.telemetry import setup_telemetry

log = logging.getLogger("its.runtime")
SettingsT = TypeVar("SettingsT", bound=BaseServiceSettings)


@dataclass
class ServiceContext(Generic[SettingsT]):
    """What a service's main gets: its settings, a stop signal, metrics and shared clients."""

    settings: SettingsT
    version: str
    registry: CollectorRegistry
    health: HealthState
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    counters: dict[str, float] = field(default_factory=dict)
    status: str = "starting"
    redis: aioredis.Redis | None = None
    http_port: int = 0

    @property
    def service(self) -> str:
        return self.settings.effective_service_name()

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self.health.checks[name] = check

    def require_redis(self) -> aioredis.Redis:
        if self.redis is None:
            raise RuntimeError(f"{self.service} was started without Redis")
        return self.redis


MainFn = Callable[[ServiceContext[SettingsT]], Coroutine[Any, Any, None]]
HttpRoutesFn = Callable[[web.Application, ServiceContext[SettingsT]], None]
"""Optional: adds a service's own routes to the health app (same port as /healthz)."""
NeedsSchema = bool | Callable[[SettingsT], bool]
"""Whether main waits for the schema: a flag, or decided from the settings."""


def run_service(
    settings: SettingsT,
    main: MainFn[SettingsT],
    *,
    version: str,
    uses_redis: bool = True,
    shutdown_grace_s: float = 10.0,
    http_routes: HttpRoutesFn[SettingsT] | None = None,
    needs_schema: NeedsSchema[SettingsT] = False,
) -> int:
    """Run a service to completion; returns the process exit code.

    ``http_routes(app, ctx)``, when given, adds routes to the HTTP app that serves ``/healthz``,
    ``/readyz`` and ``/metrics`` on ``ITS_HTTP_PORT`` (called once, before it starts serving).
    ``needs_schema`` (a flag, or a function of the settings): main starts only once the database
    schema is current (:mod:`its_common.db.schema`); until then the service is alive and not
    ready.
    """
    service = settings.effective_service_name()
    setup_logging(service, settings.log_level)
    telemetry = setup_telemetry(service, version)
    try:
        return asyncio.run(
            _serve(
                settings,
                main,
                version,
                uses_redis,
                shutdown_grace_s,
                http_routes,
                needs_schema(settings) if callable(needs_schema) else needs_schema,
            )
        )
    finally:
        telemetry.shutdown()


async def _serve(
    settings: SettingsT,
    main: MainFn[SettingsT],
    version: str,
    uses_redis: bool,
    shutdown_grace_s: float,
    http_routes: HttpRoutesFn[SettingsT] | None = None,
    needs_schema: bool = False,
) -> int:
    registry = CollectorRegistry()
    service = settings.effective_service_name()
    health = HealthState(service=service, version=version, registry=registry)
    ctx = ServiceContext(settings=settings, version=version, registry=registry, health=health)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, ctx, sig)

    info = Gauge("its_service_info", "Service version", ["service", "version"], registry=registry)
    info.labels(service, version).set(1)
    started = Gauge("its_service_start_time_seconds", "Start time", registry=registry)
    started.set(time.time())
    heartbeat_failures = Counter(
        "its_heartbeat_failures", "Heartbeats that could not be written", registry=registry
    )

    tasks: list[asyncio.Task[None]] = []
    if uses_redis:
        ctx.redis = connect_redis(settings)
        redis_client = ctx.redis

        async def redis_ready() -> None:
            await redis_client.ping()

        ctx.add_readiness_check("redis", redis_ready)

        def heartbeat_failed(exc: Exception) -> None:
            heartbeat_failures.inc()
            log.warning("heartbeat not written: %s", exc)

        tasks.append(
            asyncio.create_task(
                heartbeat_loop(
                    redis_client,
                    service,
                    version,
                    settings.heartbeat_interval_s,
                    lambda: ctx.status,
                    lambda: ctx.counters,
                    heartbeat_failed,
                ),
                name="heartbeat",
            )
        )

    configure = None
    if http_routes is not None:
        routes = http_routes

        def configure(app: web.Application) -> None:
            routes(app, ctx)

    runner = await start_health_server(health, settings.http_host, settings.http_port, configure)
    ctx.http_port = bound_port(runner)
    if needs_schema:
        gate = SchemaGate(settings)
        ctx.add_readiness_check("schema", gate.check)
        main_task = asyncio.create_task(_after_schema(gate, main, ctx), name=f"{service}-main")
    else:
        ctx.status = "running"
        main_task = asyncio.create_task(main(ctx), name=f"{service}-main")
    stop_task = asyncio.create_task(ctx.stopping.wait(), name="stop-signal")
    exit_code = 0
    try:
        await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if main_task.done():
            exit_code = _main_outcome(main_task, ctx)
        else:
            ctx.status = "stopping"
            done, _ = await asyncio.wait({main_task}, timeout=shutdown_grace_s)
            if not done:
                log.warning("main did not stop within %.0fs; cancelling", shutdown_grace_s)
                main_task.cancel()
                await asyncio.gather(main_task, return_exceptions=True)
            else:
                exit_code = _main_outcome(main_task, ctx)
    finally:
        stop_task.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(stop_task, *tasks, return_exceptions=True)
        await runner.cleanup()
        if ctx.redis is not None:
            await ctx.redis.aclose()
        log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


async def _after_schema(
    gate: SchemaGate, main: MainFn[SettingsT], ctx: ServiceContext[SettingsT]
) -> None:
    """Run main once the schema is current (not at all when stopped while waiting)."""
    ctx.status = "waiting_for_schema"
    if await gate.wait(ctx.stopping):
        ctx.status = "running"
        await main(ctx)


def _request_stop(ctx: ServiceContext[SettingsT], sig: signal.Signals) -> None:
    log.info("received %s, stopping", sig.name)
    ctx.stopping.set()


def _main_outcome(task: asyncio.Task[None], ctx: ServiceContext[SettingsT]) -> int:
    if task.cancelled():
        return 1
    exc = task.exception()
    if exc is not None:
        ctx.health.alive = False
        ctx.health.detail = f"main failed: {type(exc).__name__}"
        log.error("main failed", exc_info=exc)
        return 1
    return 0


def service_cli(
    prog: str,
    description: str,
    settings_cls: type[SettingsT],
    main: MainFn[SettingsT],
    *,
    version: str,
    argv: list[str] | None = None,
    uses_redis: bool = True,
    needs_schema: NeedsSchema[SettingsT] = False,
) -> int:
    """The whole CLI of a service without subcommands: --version, settings, run_service.

    A configuration error prints the message naming each bad variable and exits with 2.
    """
    import argparse
    import sys

    from its_common.settings import SettingsError, load_settings

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=version)
    parser.parse_args(argv)
    try:
        settings = load_settings(settings_cls)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(
        settings, main, version=version, uses_redis=uses_redis, needs_schema=needs_schema
    )
