"""its-ibsim's order life with the real ib_async client: limit orders, partial fills against the
shown liquidity, cancels, IB's statuses and IB's error codes for rejections."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Order, Trade

from its_common.ticks import conforms_to_tick, marketable_limit
from its_ibsim.server import SimOptions
from tests.conditions import wait_until
from tests.ibsim.support import running_sim
from tests.ibsim.test_ibsim import qualify

ASK = 180.018  # 180 + 1 bp (the default 2 bp spread around the last trade)
BID = 179.982


class Errors:
    """The (order id, code) pairs the client received."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int]] = []
        ib.errorEvent += self.on_error

    def on_error(self, req_id: int, code: int, _message: str, _contract: Any = None) -> None:
        self.seen.append((req_id, code))

    def codes(self, trade: Trade) -> list[int]:
        return [code for req, code in self.seen if req == trade.order.orderId]


def inactive(trade: Trade) -> bool:
    return bool(trade.orderStatus.status == "Inactive")


def statuses(trade: Trade) -> list[str]:
    out: list[str] = []
    for entry in trade.log:
        if not out or out[-1] != entry.status:
            out.append(entry.status)
    return out


def test_tick_size_rule() -> None:
    assert conforms_to_tick(180.01) and conforms_to_tick(180.0) and conforms_to_tick(0.1234)
    assert not conforms_to_tick(180.005) and not conforms_to_tick(0.12345)
    # The trader's marketable limit: never beyond the cap, always on the tick.
    assert marketable_limit("BUY", 180.0, 20) == 180.36
    assert marketable_limit("SELL", 180.0, 20) == 179.64
    assert marketable_limit("BUY", 180.003, 1) == 180.02  # 180.021 rounded down
    assert marketable_limit("SELL", 180.003, 1) == 179.99  # 179.985 rounded up
    assert conforms_to_tick(marketable_limit("BUY", 0.5123, 7))


async def test_a_limit_order_fills_in_parts_and_a_cancel_keeps_the_filled_part() -> None:
    async with running_sim(SimOptions(tick_interval_s=0.05, quote_size=10)) as sim:
        sim.static.sizes["NVDA"] = 30  # each print shows 30 shares at the bid and at the ask
        ib = IB()
        errors = Errors(ib)
        await ib.connectAsync("127.0.0.1", sim.port, clientId=21, timeout=4)
        try:
            contract = await qualify(ib, "NVDA")
            ticker = ib.reqMktData(contract)
            await wait_until(lambda: ticker.askSize == 30 and ticker.bidSize == 30)  # shown
            trade = ib.placeOrder(contract, LimitOrder("BUY", 100, 180.10, orderRef="part"))
            await wait_until(lambda: trade.orderStatus.filled == 30)
            assert trade.orderStatus.status == "Submitted"  # working: 70 remain
            assert trade.orderStatus.remaining == 70
            assert trade.fills[0].execution.price == pytest.approx(ASK)  # the ask, not the limit
            assert statuses(trade)[:3] == ["PendingSubmit", "PreSubmitted", "Submitted"]

            sim.static.set("NVDA", 180.0)  # a new print: 30 more shares shown
            await wait_until(lambda: trade.orderStatus.filled == 60)
            assert sum(f.execution.shares for f in trade.fills) == 60

            ib.cancelOrder(trade.order)
            await wait_until(lambda: trade.orderStatus.status == "Cancelled")
            assert 202 in errors.codes(trade)
            assert trade.orderStatus.filled == 60
            assert [(p.contract.symbol, p.position) for p in ib.positions()] == [("NVDA", 60.0)]
            executions = await ib.reqExecutionsAsync()
            assert [f.execution.shares for f in executions] == [30.0, 30.0]
            assert [f.execution.cumQty for f in executions] == [30.0, 60.0]
            completed = await ib.reqCompletedOrdersAsync(False)
            assert [(t.order.orderRef, t.orderStatus.status) for t in completed] == [
                ("part", "Cancelled")
            ]
            again = ib.cancelOrder(trade.order)
            assert again is not None
            await wait_until(lambda: 161 in errors.codes(trade))  # not cancellable any more
        finally:
            ib.disconnect()


async def test_a_limit_order_away_from_the_market_works_until_the_price_comes() -> None:
    async with running_sim() as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=22, timeout=4)
        try:
            contract = await qualify(ib, "NVDA")
            buy = ib.placeOrder(contract, LimitOrder("BUY", 50, 179.00, orderRef="low"))
            sell = ib.placeOrder(contract, LimitOrder("SELL", 5, 181.00, orderRef="high"))
            await wait_until(lambda: sell.orderStatus.status == "Submitted")
            await wait_until(lambda: buy.orderStatus.status == "Submitted")
            open_refs = {t.order.orderRef: t.order.lmtPrice for t in await ib.reqOpenOrdersAsync()}
            assert open_refs == {"low": 179.0, "high": 181.0}
            assert buy.fills == [] and sell.fills == []

            sim.static.set("NVDA", 178.9)  # ask 178.918 <= 179: the buy fills, at the ask
            await wait_until(lambda: buy.orderStatus.status == "Filled")
            assert buy.fills[0].execution.price == pytest.approx(178.9 * 1.0001, abs=1e-4)
            sim.static.set("NVDA", 181.5)  # bid 181.482 >= 181: the sell fills, at the bid
            await wait_until(lambda: sell.orderStatus.status == "Filled")
            assert sell.fills[0].execution.price == pytest.approx(181.5 * 0.9999, abs=1e-4)
        finally:
            ib.disconnect()


async def test_rejections_carry_ib_error_codes_and_end_inactive() -> None:
    async with running_sim() as sim:
        ib = IB()
        errors = Errors(ib)
        await ib.connectAsync("127.0.0.1", sim.port, clientId=23, timeout=4)
        try:
            contract = await qualify(ib, "NVDA")
            off_tick = ib.placeOrder(contract, LimitOrder("BUY", 1, 180.005, orderRef="tick"))
            stop = Order(action="BUY", totalQuantity=1, orderType="STP", auxPrice=190.0)
            stop.orderRef = "stop"
            unsupported = ib.placeOrder(contract, stop)
            no_price = ib.placeOrder(
                await qualify(ib, "AAPL"), MarketOrder("BUY", 1, orderRef="no-price")
            )
            for trade, code in ((off_tick, 110), (unsupported, 201), (no_price, 201)):
                await wait_until(partial(inactive, trade))
                assert code in errors.codes(trade)
                assert trade.fills == []
            assert ib.positions() == []
            status = await sim.admin("/admin/faults", {})
            assert status["positions"] == {}
        finally:
            ib.disconnect()
