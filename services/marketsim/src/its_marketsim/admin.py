"""Admin HTTP endpoint (on the REST port, under ``/admin``): faults and state at run time.

``GET /admin/faults``; ``PUT``/``POST /admin/faults`` with a JSON object of changes;
``DELETE /admin/faults`` resets; ``GET``/``POST /admin/market`` reads or sets the whole
market's rate (``{"rate": 50000}``, ``null`` for the configured shape);
``POST /admin/drop`` (optional ``{"code": 1001}``) drops every
WebSocket connection now; ``GET /admin/status``. When an admin token is configured, requests
must carry it in the ``X-Admin-Token`` header.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from its_marketsim.faults import FaultState
from its_marketsim.stream import Stream
from its_marketsim.wsserver import MarketWebSocketServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    def __init__(
        self,
        faults: FaultState,
        ws: MarketWebSocketServer,
        stream: Stream,
        token: str | None,
    ) -> None:
        self.faults = faults
        self.ws = ws
        self.stream = stream
        self.token = token

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/faults", self.get_faults)
        app.router.add_put("/admin/faults", self.set_faults)
        app.router.add_post("/admin/faults", self.set_faults)
        app.router.add_delete("/admin/faults", self.reset_faults)
        app.router.add_post("/admin/drop", self.drop)
        app.router.add_get("/admin/status", self.status)
        app.router.add_get("/admin/market", self.get_market)
        app.router.add_post("/admin/market", self.set_market)
        app.middlewares.append(self._token_middleware)

    @web.middleware
    async def _token_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/admin") and self.token:
            given = request.headers.get("X-Admin-Token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response({"error": "admin token required"}, status=401)
        return await handler(request)

    async def get_faults(self, _: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.faults.snapshot())

    async def reset_faults(self, _: web.Request) -> web.Response:
        self.faults.reset()
        return web.json_response(self.faults.snapshot())

    async def drop(self, request: web.Request) -> web.Response:
        code: int | None = None
        if request.can_read_body:
            try:
                body: Any = await request.json()
            except ValueError:
                return web.json_response({"error": "expected JSON"}, status=400)
            if isinstance(body, dict) and body.get("code") is not None:
                code = body["code"]
                if not _sendable_close_code(code):
                    return web.json_response(
                        {"error": "code must be a close code: 1000-1003, 1007-1014 or 3000-4999"},
                        status=400,
                    )
        dropped = self.ws.drop_all(code)
        return web.json_response({"dropped": dropped})

    async def get_market(self, _: web.Request) -> web.Response:
        tail = self.stream.tail
        if tail is None:
            return web.json_response({"whole_market": False})
        return web.json_response(
            {
                "whole_market": True,
                "symbols": len(tail.names),
                "rate_override": tail.override,
                "rate_now": tail.rate_at(self.stream.clock.now_ms()),
                "trades_generated": tail.trades_generated,
            }
        )

    async def set_market(self, request: web.Request) -> web.Response:
        """``{"rate": 50000}``: the whole market's tail at a flat rate (trades/s) from now;
        ``{"rate": null}``: back to the configured shape and bursts."""
        tail = self.stream.tail
        if tail is None:
            return web.json_response({"error": "not in whole-market mode"}, status=409)
        try:
            body: Any = await request.json()
            if not isinstance(body, dict) or "rate" not in body:
                raise ValueError('expected {"rate": trades_per_second or null}')
            rate = body["rate"]
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
                raise ValueError("rate must be a number or null")
            tail.set_rate(None if rate is None else float(rate))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self.get_market(request)

    async def status(self, _: web.Request) -> web.Response:
        clock = self.stream.clock
        day = self.stream.current_day
        return web.json_response(
            {
                "clock_ms": clock.now_ms(),
                "speed": "max" if clock.max_speed else clock.speed,
                "day": day.day.isoformat() if day else None,
                "connections": len(self.ws.connections),
                "subscribed": sum(1 for c in self.ws.connections if c.subs),
                "events_sent": self.stream.events_sent,
                "frames_sent": self.stream.frames_sent,
                "slow_reader_drops": self.ws.slow_reader_drops,
                "faults": self.faults.snapshot(),
            }
        )


def _sendable_close_code(code: Any) -> bool:
    """A close code a server may send (RFC 6455 7.4: 1004-1006 and 1015 are never sent)."""
    if isinstance(code, bool) or not isinstance(code, int):
        return False
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
