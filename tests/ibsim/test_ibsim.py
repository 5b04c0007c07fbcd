"""its-ibsim against the real ib_async client: handshake, accounts, market data, orders, faults."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from ib_async import IB, Contract, MarketOrder, Stock

from its_common.risk import PAPER_INITIAL_CASH
from its_common.streams import latest_trade_key
from its_ibsim.book import commission, con_id
from its_ibsim.prices import RedisPrices, StaticPrices, parse_prices
from its_ibsim.server import SimOptions
from its_ibsim.wire import ProtocolError, negotiate
from tests.ibsim.support import FAST, running_sim


async def wait_until(predicate, within_s: float = 5.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def qualify(ib: IB, symbol: str) -> Contract:
    [contract] = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
    assert isinstance(contract, Contract)
    return contract


def test_version_negotiation() -> None:
    assert negotiate("v157..178", 176) == 176
    assert negotiate("v157..170 +PACEAPI", 176) == 170
    with pytest.raises(ProtocolError):
        negotiate("v100..150", 176)
    with pytest.raises(ProtocolError):
        negotiate("157..178", 176)


def test_prices_and_commission() -> None:
    assert parse_prices("nvda=180.5, MSFT=500") == {"NVDA": 180.5, "MSFT": 500.0}
    with pytest.raises(ValueError, match="SYM=PRICE"):
        parse_prices("NVDA=-1")
    assert commission(10, 0.005, 1.0) == 1.0
    assert commission(1000, 0.005, 1.0) == 5.0
    assert con_id("NVDA") == con_id("NVDA") != con_id("MSFT")


async def test_client_connects_trades_and_reconciles() -> None:
    async with running_sim() as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=3, timeout=4)
        try:
            assert ib.managedAccounts() == ["DU1234567"]
            assert ib.positions() == []
            contract = await qualify(ib, "NVDA")
            assert contract.conId == con_id("NVDA")
            ticker = ib.reqMktData(contract)
            await wait_until(lambda: ticker.last == 180.0)
            assert ticker.bid < ticker.last < ticker.ask

            small = ib.placeOrder(contract, MarketOrder("BUY", 10, orderRef="its-a"))
            large = ib.placeOrder(contract, MarketOrder("BUY", 400, orderRef="its-b"))
            await wait_until(lambda: large.orderStatus.status == "Filled" and bool(large.fills))
            await wait_until(lambda: large.fills[0].commissionReport.commission > 0)
            assert small.orderStatus.status == "Filled"
            assert small.fills[0].commissionReport.commission == 1.0  # the minimum
            assert large.fills[0].commissionReport.commission == 2.0  # 400 x 0.005
            assert large.fills[0].execution.price == pytest.approx(180.018)  # at the ask
            await wait_until(lambda: sum(p.position for p in ib.positions()) == 410)

            executions = await ib.reqExecutionsAsync()
            assert sorted(f.execution.orderRef for f in executions) == ["its-a", "its-b"]
            assert await ib.reqOpenOrdersAsync() == []
            completed = await ib.reqCompletedOrdersAsync(False)
            assert sorted(t.order.orderRef for t in completed) == ["its-a", "its-b"]
            values = {v.tag: v.value for v in ib.accountValues()}
            assert float(values["TotalCashValue"]) < PAPER_INITIAL_CASH - 410 * 180
        finally:
            ib.disconnect()


async def test_prices_come_from_the_redis_feed(redis_client: aioredis.Redis) -> None:
    await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "181.5", "t": "1000"})
    async with running_sim(prices=RedisPrices(redis_client)) as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=4, timeout=4)
        try:
            contract = await qualify(ib, "NVDA")
            ticker = ib.reqMktData(contract)
            await wait_until(lambda: ticker.last == 181.5)
            await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "182", "t": "2000"})
            await wait_until(lambda: ticker.last == 182.0)
            trade = ib.placeOrder(contract, MarketOrder("SELL", 5, orderRef="short"))
            await wait_until(lambda: bool(trade.fills))
            assert trade.fills[0].execution.price == pytest.approx(182 * (1 - 0.0001), abs=1e-4)
            # A symbol without a price is rejected, not filled at a made-up price.
            other = await qualify(ib, "AAPL")
            rejected = ib.placeOrder(other, MarketOrder("BUY", 1, orderRef="no-price"))
            await wait_until(lambda: rejected.orderStatus.status == "Inactive")
            assert rejected.fills == []
        finally:
            ib.disconnect()


async def test_drop_refuse_and_state_survives_reconnect() -> None:
    async with running_sim() as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=4)
        contract = await qualify(ib, "MSFT")
        trade = ib.placeOrder(contract, MarketOrder("BUY", 20, orderRef="keep"))
        await wait_until(lambda: bool(trade.fills))
        before = {f.execution.execId for f in ib.fills()}

        result = await sim.admin("/admin/drop", {"refuse_s": 1.0})
        assert result["dropped"] == 1
        await wait_until(lambda: not ib.isConnected())
        with pytest.raises(OSError):
            await IB().connectAsync("127.0.0.1", sim.port, clientId=6, timeout=2)

        await asyncio.sleep(1.2)
        await ib.connectAsync("127.0.0.1", sim.port, clientId=5, timeout=4)
        try:
            assert {f.execution.execId for f in ib.fills()} == before
            assert [(p.contract.symbol, p.position) for p in ib.positions()] == [("MSFT", 20.0)]
            status = await sim.admin("/admin/faults", {})
            assert status["drops"] == 1 and status["executions"] == 1
        finally:
            ib.disconnect()


async def test_duplicate_client_id_is_refused() -> None:
    async with running_sim() as sim:
        first = IB()
        await first.connectAsync("127.0.0.1", sim.port, clientId=9, timeout=4)
        try:
            with pytest.raises((ConnectionError, TimeoutError)):
                await IB().connectAsync("127.0.0.1", sim.port, clientId=9, timeout=2)
            assert first.isConnected()
        finally:
            first.disconnect()


async def test_ignored_order_is_never_acknowledged() -> None:
    async with running_sim(SimOptions(tick_interval_s=0.05)) as sim:
        await sim.admin("/admin/faults", {"ignore_orders": 1})
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=10, timeout=4)
        try:
            contract = await qualify(ib, "NVDA")
            lost = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="lost"))
            kept = ib.placeOrder(contract, MarketOrder("BUY", 1, orderRef="kept"))
            await wait_until(lambda: kept.orderStatus.status == "Filled")
            await asyncio.sleep(0.3)
            assert lost.orderStatus.status == "PendingSubmit"
            assert sim.server.orders_ignored == 1
        finally:
            ib.disconnect()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_serves_with_env_settings(tmp_path: Path) -> None:
    api_port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "ITS_IBSIM_ACCOUNT": "DU7777777",
        "ITS_IBSIM_FEED": "static",
        "ITS_IBSIM_STATIC_PRICES": "NVDA=150",
        "ITS_HTTP_PORT": str(http_port),
    }
    exe = Path(sys.executable).with_name("its-ibsim")
    with (tmp_path / "ibsim.log").open("w") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(exe), "--port", str(api_port), env=env, stdout=log_file, stderr=log_file
        )
    try:
        ib = IB()
        deadline = time.monotonic() + 20
        while True:
            try:
                await ib.connectAsync("127.0.0.1", api_port, clientId=1, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise
                await asyncio.sleep(0.2)
        try:
            assert ib.managedAccounts() == ["DU7777777"]
        finally:
            ib.disconnect()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{http_port}/admin/status") as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["account"] == "DU7777777"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 15) == 0


def test_static_prices_are_settable() -> None:
    static = StaticPrices({}, default=0.0)
    assert asyncio.run(static.latest("NVDA")) is None
    static.set("NVDA", 10.0)
    quote = asyncio.run(static.latest("NVDA"))
    assert quote is not None and quote.price == 10.0
    assert FAST.port == 0
