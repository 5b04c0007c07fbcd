"""An in-process its-ibsim with its admin API, each on a random loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web

from its_ibsim.admin import AdminApi
from its_ibsim.prices import PriceSource, StaticPrices
from its_ibsim.server import IbSimServer, SimOptions

FAST = SimOptions(port=0, tick_interval_s=0.05)


@dataclass
class RunningSim:
    server: IbSimServer
    static: StaticPrices
    admin_url: str

    @property
    def port(self) -> int:
        return self.server.port

    async def admin(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.admin_url}{path}", json=body or {}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            result: dict[str, object] = await resp.json()
            return result


@asynccontextmanager
async def running_sim(
    options: SimOptions = FAST,
    prices: PriceSource | None = None,
    static: StaticPrices | None = None,
) -> AsyncIterator[RunningSim]:
    static = static or StaticPrices({"NVDA": 180.0, "MSFT": 500.0})
    server = IbSimServer(replace(options, port=0), prices or static)
    await server.start()
    app = web.Application()
    AdminApi(server, static).routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningSim(server, static, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        await server.close()
