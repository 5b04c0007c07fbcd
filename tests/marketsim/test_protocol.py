"""Status messages and the session protocol, checked with a real websockets client."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from its_common.events import Status
from its_marketsim.app import Simulator
from tests.marketsim.support import KEY, config, open_client, recv_status, ws_url


async def test_connected_auth_and_subscription_replies() -> None:
    async with Simulator(config()) as sim, connect(ws_url(sim.ws_port)) as ws:
        hello = await recv_status(ws)
        assert hello == Status(status="connected", message="Connected Successfully")
        await ws.send(json.dumps({"action": "auth", "params": KEY}))
        assert await recv_status(ws) == Status(status="auth_success", message="authenticated")
        await ws.send(json.dumps({"action": "subscribe", "params": "T.NVDA, AM.NVDA,Q.*"}))
        replies = [await recv_status(ws) for _ in range(3)]
        assert [r.message for r in replies] == [
            "subscribed to: T.NVDA",
            "subscribed to: AM.NVDA",
            "subscribed to: Q.*",
        ]
        assert {r.status for r in replies} == {"success"}
        await ws.send(json.dumps({"action": "unsubscribe", "params": "Q.*,AM.NVDA"}))
        replies = [await recv_status(ws) for _ in range(2)]
        assert [r.message for r in replies] == [
            "unsubscribed to: Q.*",
            "unsubscribed to: AM.NVDA",
        ]


async def test_frames_are_text_json_arrays() -> None:
    async with Simulator(config()) as sim, connect(ws_url(sim.ws_port)) as ws:
        raw = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(raw, str)  # a text frame, like Polygon's
        assert json.loads(raw) == [
            {"ev": "status", "status": "connected", "message": "Connected Successfully"}
        ]


async def test_auth_failed_then_close() -> None:
    async with Simulator(config(auth_close_code=1008)) as sim:
        ws = await connect(ws_url(sim.ws_port))
        await recv_status(ws)
        await ws.send(json.dumps({"action": "auth", "params": "wrong"}))
        reply = await recv_status(ws)
        assert reply == Status(status="auth_failed", message="authentication failed")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008


async def test_auth_timeout() -> None:
    async with Simulator(config(auth_timeout_s=0.3)) as sim:
        ws = await connect(ws_url(sim.ws_port))
        await recv_status(ws)
        reply = await recv_status(ws, within_s=3)
        assert reply == Status(status="auth_timeout", message="No authentication request received.")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1000


async def test_subscribe_before_auth_and_bad_messages_are_errors() -> None:
    async with Simulator(config()) as sim, connect(ws_url(sim.ws_port)) as ws:
        await recv_status(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.NVDA"}))
        assert (await recv_status(ws)).status == "error"
        await ws.send("not json")
        assert (await recv_status(ws)).status == "error"
        await ws.send(json.dumps({"action": "auth", "params": KEY}))
        assert (await recv_status(ws)).status == "auth_success"
        await ws.send(json.dumps({"action": "subscribe", "params": "X.NVDA"}))
        reply = await recv_status(ws)
        assert reply.status == "error"
        assert "X.NVDA" in reply.message


async def test_unknown_path_is_404() -> None:
    async with Simulator(config()) as sim:
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{sim.ws_port}/crypto")
        assert info.value.response.status_code == 404


@pytest.mark.parametrize(("drop", "code"), [("newest", 1008), ("oldest", 1000)])
async def test_max_connections(drop: str, code: int) -> None:
    cfg = config(max_connections_drop=drop, max_connections_close_code=code)
    async with Simulator(cfg) as sim:
        first = await open_client(sim.ws_port)
        second = await connect(ws_url(sim.ws_port))
        await recv_status(second)
        await second.send(json.dumps({"action": "auth", "params": KEY}))
        victim, survivor = (second, first) if drop == "newest" else (first, second)
        if drop == "oldest":
            assert (await recv_status(second)).status == "auth_success"
        reply = await recv_status(victim)
        assert reply == Status(
            status="max_connections", message="Maximum number of connections exceeded."
        )
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(victim.recv(), 5)
        assert victim.close_code == code
        # the survivor still works
        await survivor.send(json.dumps({"action": "subscribe", "params": "T.NVDA"}))
        assert (await recv_status(survivor)).message == "subscribed to: T.NVDA"
        # another key is not affected
        other = await open_client(sim.ws_port, key="other-key")
        await other.close()
        await survivor.close()
