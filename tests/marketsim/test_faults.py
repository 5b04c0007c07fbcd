"""Every fault mode, switched through the admin endpoint and observed by a real client."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from its_common.events import (
    CodecError,
    MinuteAgg,
    Status,
    Trade,
    decode_frame,
    decode_frame_lenient,
)
from its_marketsim.app import Simulator
from tests.marketsim.support import (
    KEY,
    collect,
    config,
    open_client,
    recv_frame,
    recv_status,
    ws_url,
)

OPEN_MS = 1762180200000


async def admin(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{sim.rest_port}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def closed_code(ws: Any, within_s: float = 15.0) -> int | None:
    """Read until the connection closes; return the close code the client saw."""
    deadline = time.monotonic() + within_s
    with pytest.raises(ConnectionClosed):
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    code: int | None = ws.close_code
    return code


async def test_admin_reads_and_validates_faults() -> None:
    async with Simulator(config(faults={"delay_ms": 5})) as sim:
        state = await admin(sim, "GET", "/admin/faults")
        assert state["delay_ms"] == 5 and state["stall"] is False
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{sim.rest_port}/admin/faults", json={"nope": 1}) as bad,
        ):
            assert bad.status == 400
        state = await admin(sim, "DELETE", "/admin/faults")
        assert state["delay_ms"] == 0
        status = await admin(sim, "GET", "/admin/status")
        assert status["connections"] == 0 and status["speed"] == "max"


async def test_admin_token() -> None:
    async with Simulator(config(admin_token="s3cret")) as sim:
        url = f"http://127.0.0.1:{sim.rest_port}/admin/faults"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 401
            async with http.get(url, headers={"X-Admin-Token": "s3cret"}) as response:
                assert response.status == 200


@pytest.mark.parametrize("code", [None, 1001])
async def test_drop_every_connection(code: int | None) -> None:
    async with Simulator(config()) as sim:
        clients = [await open_client(sim.ws_port, key=k) for k in (KEY, "other-key")]
        result = await admin(sim, "POST", "/admin/drop", {"code": code} if code else None)
        assert result["dropped"] == 2
        for ws in clients:
            assert await closed_code(ws) == (code or 1006)


async def test_stall_keeps_the_socket_open_but_sends_nothing() -> None:
    async with Simulator(config()) as sim:
        ws = await open_client(sim.ws_port)
        await admin(sim, "POST", "/admin/faults", {"stall": True})
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*"}))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 2)  # the connection is alive
        await admin(sim, "POST", "/admin/faults", {"stall": False})
        assert (await recv_status(ws)).message == "subscribed to: T.*"
        assert await collect(ws, 10)
        await ws.close()


async def test_delay_frames() -> None:
    async with Simulator(config(faults={"delay_ms": 400})) as sim:
        ws = await connect(ws_url(sim.ws_port))
        started = time.monotonic()
        await recv_status(ws)
        assert time.monotonic() - started >= 0.35
        await ws.close()


async def test_duplicate_events() -> None:
    async with Simulator(config(faults={"duplicate_rate": 1.0})) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        events = await collect(ws, 200)
        await ws.close()
    assert all(events[i] == events[i + 1] for i in range(0, 200, 2))


async def test_reorder_events() -> None:
    async with Simulator(config(faults={"reorder_rate": 1.0})) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        events = await collect(ws, 400)
        await ws.close()
    trades = [e for e in events if isinstance(e, Trade)]
    backwards = sum(1 for a, b in itertools.pairwise(trades) if b.sequence < a.sequence)
    assert backwards > 50


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("invalid_json", "invalid_json"),
        ("wrong_type", "wrong_type"),
        ("missing_field", "missing_field"),
        ("nan_price", "non_finite"),
        ("negative_price", "out_of_range"),
        ("negative_size", "out_of_range"),
    ],
)
async def test_malformed_frames(kind: str, reason: str) -> None:
    faults = {"malformed_rate": 1.0, "malformed_kinds": [kind]}
    async with Simulator(config(faults=faults)) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        raw = await recv_frame(ws)
        await ws.close()
    with pytest.raises(CodecError):
        decode_frame(raw)
    good, bad = decode_frame_lenient(raw)
    assert [b.reason for b in bad] == [reason]
    if kind != "invalid_json":
        assert len(good) == len(json.loads(raw.replace(b"NaN", b"0"))) - 1


async def test_skip_minute_bars() -> None:
    async def first_bar_starts(faults: dict[str, Any]) -> list[int]:
        async with Simulator(config(faults=faults, symbols=("NVDA",))) as sim:
            ws = await open_client(sim.ws_port, topics="AM.NVDA")
            events = await collect(ws, 5)
            await ws.close()
        return [e.start for e in events if isinstance(e, MinuteAgg)][:3]

    normal = await first_bar_starts({})
    skipped = await first_bar_starts({"skip_next_bars": 2})
    assert normal[0] == OPEN_MS
    assert skipped[0] == normal[2]  # the first two bars never came


async def test_reject_auth() -> None:
    async with Simulator(config()) as sim:
        await admin(sim, "POST", "/admin/faults", {"reject_auth": True})
        ws = await connect(ws_url(sim.ws_port))
        await recv_status(ws)
        await ws.send(json.dumps({"action": "auth", "params": KEY}))
        assert (await recv_status(ws)).status == "auth_failed"
        assert await closed_code(ws) == 1000


async def test_refuse_connections_for_a_while() -> None:
    async with Simulator(config()) as sim:
        await admin(sim, "POST", "/admin/faults", {"refuse_connections_s": 0.5})
        with pytest.raises(InvalidStatus) as info:
            await connect(ws_url(sim.ws_port))
        assert info.value.response.status_code == 503
        await asyncio.sleep(0.6)
        ws = await open_client(sim.ws_port)
        await ws.close()


async def test_slow_reader_is_closed_with_1011() -> None:
    cfg = config(
        speed=3000.0,
        trades_per_day={"NVDA": 1_500_000, "MSFT": 500_000},
        send_buffer_bytes=256 * 1024,
    )
    async with Simulator(cfg) as sim:
        ws = await connect(ws_url(sim.ws_port), max_queue=1, compression=None)
        await recv_status(ws)
        await ws.send(json.dumps({"action": "auth", "params": KEY}))
        await recv_status(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.*"}))
        deadline = time.monotonic() + 20
        while sim.ws.slow_reader_drops == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # not reading
        assert sim.ws.slow_reader_drops == 1
        assert await closed_code(ws) == 1011
        assert ws.close_reason == "keepalive ping timeout"


async def test_accelerated_clock_pace() -> None:
    async with Simulator(config(speed=600.0)) as sim:
        ws = await open_client(sim.ws_port, topics="T.NVDA")
        first = (await collect(ws, 1))[0]
        started = time.monotonic()
        last = first
        while time.monotonic() - started < 1.0:
            events = [e for e in decode_frame(await recv_frame(ws)) if not isinstance(e, Status)]
            last = events[-1] if events else last
        await ws.close()
    assert isinstance(first, Trade) and isinstance(last, Trade)
    covered_s = (last.timestamp - first.timestamp) / 1000
    assert 400 < covered_s < 800  # about 600 market seconds per wall second


@pytest.mark.parametrize(
    "body",
    [
        '{"refuse_connections_s": 1e308}',
        '{"refuse_connections_s": Infinity}',
        '{"delay_ms": Infinity}',
        '{"delay_ms": 1e12}',
        '{"duplicate_rate": NaN}',
        '{"delay_ms": NaN}',
        '{"skip_next_bars": 100000000000000000000000000000}',
        '{"seed": 100000000000000000000000000000}',
    ],
)
async def test_fault_values_must_be_finite_and_bounded(body: str) -> None:
    async with Simulator(config()) as sim:
        url = f"http://127.0.0.1:{sim.rest_port}/admin/faults"
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers={"Content-Type": "application/json"}) as response,
        ):
            assert response.status == 400, await response.text()
            assert "error" in await response.json()
        state = await admin(sim, "GET", "/admin/faults")
        assert state["refuse_connections_s"] == 0 and state["delay_ms"] == 0  # nothing applied
        assert state["skip_next_bars"] == 0 and state["duplicate_rate"] == 0


@pytest.mark.parametrize("code", ['"abc"', "99999", "1.5", "[]"])
async def test_drop_refuses_a_bad_close_code(code: str) -> None:
    async with Simulator(config()) as sim:
        url = f"http://127.0.0.1:{sim.rest_port}/admin/drop"
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=f'{{"code": {code}}}') as response,
        ):
            assert response.status == 400, await response.text()
