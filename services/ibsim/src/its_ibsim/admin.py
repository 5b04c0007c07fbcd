"""Admin HTTP routes (on the health port, under ``/admin``): faults and state at run time.

``POST /admin/drop`` (optional JSON ``{"refuse_s": 5}``) closes every client connection and
refuses new ones for that long; ``POST /admin/faults`` with ``{"ignore_orders": N}`` (the next N
orders are never acknowledged), ``{"ignore_symbols": ["NVDA"]}``, ``{"prices": {"NVDA": 180}}``
(static prices: each is a new print), ``{"sizes": {"NVDA": 30}}`` (shares of the static prints:
the liquidity a resting limit order can take per print); ``GET /admin/status``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from its_ibsim.prices import StaticPrices
from its_ibsim.server import IbSimServer


class AdminApi:
    def __init__(self, server: IbSimServer, static: StaticPrices | None) -> None:
        self.server = server
        self.static = static

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/drop", self.drop)
        app.router.add_post("/admin/faults", self.faults)
        app.router.add_get("/admin/status", self.status)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    async def drop(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            refuse_s = float(body.get("refuse_s", 0) or 0)
            if refuse_s < 0:
                raise ValueError("refuse_s must not be negative")
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        dropped = await self.server.drop_all(refuse_s)
        return web.json_response({"dropped": dropped, "refuse_s": refuse_s})

    async def faults(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            if "ignore_orders" in body:
                self.server.ignore_next_orders(int(body["ignore_orders"]))
            if "ignore_symbols" in body:
                symbols = body["ignore_symbols"]
                if not isinstance(symbols, list):
                    raise ValueError("ignore_symbols must be a list")
                self.server.ignore_symbols = {str(s).upper() for s in symbols}
            if "sizes" in body:
                sizes = body["sizes"]
                if self.static is None or not isinstance(sizes, dict):
                    raise ValueError("sizes must be an object (static prices available)")
                for symbol, size in sizes.items():
                    if float(size) <= 0:
                        raise ValueError("sizes must be positive")
                    self.static.sizes[str(symbol).upper()] = float(size)
            if "prices" in body:
                prices = body["prices"]
                if self.static is None or not isinstance(prices, dict):
                    raise ValueError("prices must be an object (static prices available)")
                for symbol, price in prices.items():
                    if float(price) <= 0:
                        raise ValueError("prices must be positive")
                    self.static.set(str(symbol).upper(), float(price))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.server.status())

    async def status(self, _: web.Request) -> web.Response:
        return web.json_response(self.server.status())
