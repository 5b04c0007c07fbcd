"""Helpers for the simulator tests: a config for fast runs and a thin real-client wrapper."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from its_common.events import Event, Status, decode_frame
from its_common.simmarket.config import SimConfig

KEY = "test-key"
DAY = "2025-11-03"  # a Monday; 2025-11-27 is Thanksgiving, 2025-11-28 closes at 13:00

BASE = SimConfig(
    port=0,
    rest_port=0,
    api_keys=(KEY, "other-key"),
    speed=math.inf,
    start=DAY,
    trades_per_day={"NVDA": 20_000, "MSFT": 10_000},
    quotes_per_trade=1.0,
    batch_size=200,
    auth_timeout_s=5.0,
)


def config(**changes: Any) -> SimConfig:
    return replace(BASE, **changes)


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/stocks"


async def recv_frame(ws: ClientConnection, within_s: float = 5.0) -> bytes:
    raw = await asyncio.wait_for(ws.recv(decode=False), within_s)
    assert isinstance(raw, bytes)
    return raw


async def recv_events(ws: ClientConnection, within_s: float = 5.0) -> list[Event]:
    return decode_frame(await recv_frame(ws, within_s))


async def recv_status(ws: ClientConnection, within_s: float = 5.0) -> Status:
    events = await recv_events(ws, within_s)
    assert len(events) == 1, events
    event = events[0]
    assert isinstance(event, Status), event
    return event


async def open_client(port: int, key: str = KEY, topics: str | None = None) -> ClientConnection:
    """Connect, check ``connected``, authenticate, optionally subscribe (consuming the replies)."""
    ws = await connect(ws_url(port), compression=None, max_size=None, max_queue=None)
    assert (await recv_status(ws)).status == "connected"
    await ws.send(json.dumps({"action": "auth", "params": key}))
    reply = await recv_status(ws)
    assert reply.status == "auth_success", reply
    if topics:
        await ws.send(json.dumps({"action": "subscribe", "params": topics}))
        for _ in [t for t in topics.split(",") if t.strip()]:
            assert (await recv_status(ws)).status == "success"
    return ws


async def collect(ws: ClientConnection, count: int, within_s: float = 10.0) -> list[Event]:
    """At least ``count`` market events (status messages excluded)."""
    out: list[Event] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while len(out) < count:
        remaining = deadline - loop.time()
        assert remaining > 0, f"only {len(out)} of {count} events arrived"
        out.extend(e for e in await recv_events(ws, remaining) if not isinstance(e, Status))
    return out
