"""Wires the simulator: price source, the TWS API server and the admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from aiohttp import web

from its_common.runtime import ServiceContext
from its_ibsim.admin import AdminApi
from its_ibsim.config import IbSimSettings
from its_ibsim.prices import PriceSource, RedisPrices, StaticPrices, parse_prices
from its_ibsim.server import IbSimServer

log = logging.getLogger("its.ibsim")


class IbSimApp:
    """The server and its admin API, built from settings (the CLI and tests use it)."""

    def __init__(self, settings: IbSimSettings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.static = StaticPrices(parse_prices(settings.static_prices), settings.static_price)
        prices: PriceSource = self.static
        if settings.feed == "redis" and redis is not None:
            prices = RedisPrices(redis, self.static)
        self.server = IbSimServer(settings.options(), prices)
        self.admin = AdminApi(self.server, self.static)

    def routes(self, app: web.Application) -> None:
        if self.settings.admin_enabled:
            self.admin.routes(app)

    async def ready(self) -> None:
        if self.server.refusing_until > time.monotonic():
            raise RuntimeError("refusing connections (fault)")


_APPS: dict[int, IbSimApp] = {}


def http_routes(app: web.Application, ctx: ServiceContext[IbSimSettings]) -> None:
    """Called by run_service before main: the admin routes share the health port."""
    sim = IbSimApp(ctx.settings, ctx.redis)
    _APPS[id(ctx)] = sim
    sim.routes(app)


async def main(ctx: ServiceContext[IbSimSettings]) -> None:
    sim = _APPS.pop(id(ctx), None) or IbSimApp(ctx.settings, ctx.redis)
    port = await sim.server.start()
    ctx.add_readiness_check("api", sim.ready)
    log.info("ibsim ready", extra={"port": port, "account": ctx.settings.account})
    try:
        while not ctx.stopping.is_set():
            ctx.counters.update(
                {
                    "clients": float(len(sim.server.sessions)),
                    "executions": float(len(sim.server.book.executions)),
                    "drops": float(sim.server.drops),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), 5.0)
    finally:
        await sim.server.close()
