"""The IB adapter's full flow against a real its-ibsim with the real ib_async client."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from its_common.streams import latest_trade_key
from its_ibsim.prices import RedisPrices
from its_ibsim.server import SimOptions
from its_trader.broker import Execution, OrderRequest
from its_trader.ibbroker import IbBroker, IbConfig
from tests.ibsim.support import running_sim

FAST_IB = {"reconnect_initial_s": 0.1, "reconnect_max_s": 0.5, "connect_attempts": 1}


async def drain(queue: asyncio.Queue[Execution], settle_s: float = 0.3) -> list[Execution]:
    out: list[Execution] = []
    while True:
        try:
            out.append(await asyncio.wait_for(queue.get(), settle_s))
        except TimeoutError:
            return out


async def test_full_flow_with_drop_and_reconciliation(redis_client: aioredis.Redis) -> None:
    await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "180", "t": "1"})
    await redis_client.hset(latest_trade_key("MSFT"), mapping={"p": "500", "t": "1"})
    prices = RedisPrices(redis_client)
    async with running_sim(SimOptions(tick_interval_s=0.05), prices=prices) as sim:
        broker = IbBroker(
            IbConfig(port=sim.port, client_id=31, **FAST_IB),  # type: ignore[arg-type]
            redis=redis_client,
        )
        await broker.connect()
        try:
            assert broker.account == "DU1234567"
            assert broker.generation == 1
            assert await broker.positions() == []

            # Market data: ticks from ITS's feed, also published as the broker price.
            await broker.subscribe(["NVDA"])
            deadline = time.monotonic() + 5
            while broker.price("NVDA") is None or broker.price("NVDA")[0] != 180.0:  # type: ignore[index]
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "181", "t": "2"})
            while broker.price("NVDA")[0] != 181.0:  # type: ignore[index]
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            published = await redis_client.hgetall("its:broker:price:NVDA")
            assert published[b"src"] == b"ib"

            # A market order: acknowledged, filled, commission reported.
            placed = await broker.place_order(OrderRequest("cid-1", "NVDA", "BUY", 300))
            assert placed.status == "open" and placed.client_order_id == "cid-1"
            [fill] = await drain(broker.fills())
            assert fill.client_order_id == "cid-1" and fill.quantity == 300
            assert fill.side == "BUY" and fill.commission == 1.5
            assert fill.price == round(181 * 1.0001, 4)
            order = await broker.order("cid-1")
            assert order is not None and order.status == "filled" and order.filled_quantity == 300
            # Idempotent: the same client order id is not sent again.
            again = await broker.place_order(OrderRequest("cid-1", "NVDA", "BUY", 300))
            assert again.status == "filled"
            assert len(sim.server.book.executions) == 1
            await broker.place_order(OrderRequest("cid-2", "MSFT", "BUY", 10))
            [fill2] = await drain(broker.fills())
            assert fill2.commission == 1.0
            positions = {p.symbol: p.quantity for p in await broker.positions()}
            assert positions == {"NVDA": 300.0, "MSFT": 10.0}
            summary = await broker.account_summary()
            assert summary.account == "DU1234567" and summary.cash < 1_000_000 - 300 * 181
            before_exec = await broker.executions()
            assert [e.client_order_id for e in before_exec] == ["cid-1", "cid-2"]

            # The gateway drops us (and refuses for a moment); an order fills while we are away.
            await sim.admin("/admin/drop", {"refuse_s": 0.5})
            deadline = time.monotonic() + 5
            while broker.connected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert broker.generation == 1
            # While disconnected the books are not answered from an empty cache.
            try:
                await broker.positions()
            except ConnectionError:
                pass
            else:
                raise AssertionError("positions answered while disconnected")
            await broker.wait_connected(generation=2, within_s=10)
            assert broker.reconnects == 1

            # Reconciliation: same positions, same executions, no duplicate fill delivered.
            positions_after = {p.symbol: p.quantity for p in await broker.positions()}
            assert positions_after == positions
            after_exec = await broker.executions()
            assert after_exec == before_exec
            assert await drain(broker.fills()) == []
            assert await broker.open_orders() == []
            # Market data resumed on the new connection.
            await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "182", "t": "3"})
            deadline = time.monotonic() + 5
            while broker.price("NVDA")[0] != 182.0:  # type: ignore[index]
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        finally:
            await broker.close()


async def test_fill_during_a_disconnect_is_recovered() -> None:
    options = SimOptions(tick_interval_s=0.05, fill_delay_s=0.3)
    async with running_sim(options) as sim:
        broker = IbBroker(IbConfig(port=sim.port, client_id=32, **FAST_IB))  # type: ignore[arg-type]
        hooks: list[int] = []

        async def reconciled() -> None:
            hooks.append(broker.generation)

        broker.on_reconnect(reconciled)
        await broker.connect()
        try:
            await broker.place_order(OrderRequest("away-1", "MSFT", "SELL", 4))
            await asyncio.sleep(0.1)  # acknowledged, not yet filled
            order = await broker.order("away-1")
            assert order is not None and order.status == "open"
            await sim.admin("/admin/drop", {"refuse_s": 0.5})  # the fill happens while away
            await broker.wait_connected(generation=2, within_s=10)
            [fill] = await drain(broker.fills())
            assert fill.client_order_id == "away-1" and fill.side == "SELL"
            assert hooks == [2]
            order = await broker.order("away-1")
            assert order is not None and order.status == "filled"
            assert {p.symbol: p.quantity for p in await broker.positions()} == {"MSFT": -4.0}
        finally:
            await broker.close()


async def test_unacknowledged_order_is_an_incident() -> None:
    async with running_sim(SimOptions(tick_interval_s=0.05)) as sim:
        broker = IbBroker(
            IbConfig(port=sim.port, client_id=33, ack_timeout_s=0.5, watchdog_interval_s=0.1)
        )
        await broker.connect()
        try:
            await sim.admin("/admin/faults", {"ignore_orders": 1})
            await broker.place_order(OrderRequest("silent", "NVDA", "BUY", 1))
            await broker.place_order(OrderRequest("heard", "NVDA", "BUY", 1))
            await asyncio.sleep(0.3)
            assert broker.drain_incidents() == []  # not yet overdue
            await asyncio.sleep(0.6)
            [incident] = broker.drain_incidents()
            assert incident.kind == "unacknowledged"
            assert incident.client_order_id == "silent" and incident.age_s >= 0.5
            assert broker.incident_count == 1
            assert broker.drain_incidents() == []  # drained
            heard = await broker.order("heard")
            assert heard is not None and heard.status == "filled"
            silent = await broker.order("silent")
            assert silent is not None and silent.status == "open"
            # After a reconnect the broker does not know it: rejected, one more incident.
            await sim.admin("/admin/drop", {})
            await broker.wait_connected(generation=2, within_s=10)
            silent = await broker.order("silent")
            assert silent is not None and silent.status == "rejected"
            assert [i.kind for i in broker.drain_incidents()] == ["lost"]
        finally:
            await broker.close()
