"""The trader on the IB adapter against its-ibsim: the default local configuration fills a buy
decision, and a marketable limit part filled then cancelled reconciles with IB's positions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.localstack.services import trader_env
from its_common.risk import PAPER_INITIAL_CASH, RiskLimits
from its_common.settings import load_settings
from its_ibsim.config import IbSimSettings
from its_ibsim.prices import RedisPrices, StaticPrices
from its_ibsim.server import SimOptions
from its_trader.app import build_trader
from its_trader.config import TraderSettings
from its_trader.engine import Trader
from its_trader.ibbroker import IbBroker
from its_trader.metrics import TraderMetrics
from tests.conditions import wait_until
from tests.ibsim.support import running_sim
from tests.trader.conftest import Feed, decision

BUY_NVDA = 7  # buy the first symbol (NVDA), hold the second


def rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql.encode()).fetchall()


async def drain_fills(trader: Trader, database_url: str, count: int) -> None:
    async def recorded() -> bool:
        queue = trader.broker.fills()
        while not queue.empty():
            await trader.handle_fill(queue.get_nowait())
        return len(rows(database_url, "SELECT 1 FROM fills")) >= count

    await wait_until(recorded)


def test_the_paper_defaults_are_coherent() -> None:
    """A default buy (10 % of the paper cash) fits under the default per-symbol cap."""
    assert IbSimSettings().initial_cash == TraderSettings().sim_initial_cash == PAPER_INITIAL_CASH
    buy = PAPER_INITIAL_CASH * TraderSettings().buy_fraction
    assert buy <= RiskLimits().max_position_usd and buy <= RiskLimits().max_gross_exposure_usd


async def test_the_local_ib_sim_configuration_fills_a_buy_decision(
    redis_server: Any, redis_client: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    feed = Feed(redis_client)
    await feed.prices(NVDA=180.0, MSFT=500.0)
    # The simulator exactly as `make run BROKER=ib-sim` configures it (its defaults, the feed in
    # Redis), and the trader with the local stack's environment for ib-sim.
    options = replace(IbSimSettings(feed="redis").options(), port=0, tick_interval_s=0.05)
    async with running_sim(options, prices=RedisPrices(redis_client)) as sim:
        for name, value in trader_env("ib-sim").items():
            monkeypatch.setenv(name, value)
        settings = load_settings(
            TraderSettings, redis_url=redis_server.url, database_url=database_url, http_port=0,
            ib_port=sim.port, ib_client_id=41,
        )  # fmt: skip
        trader = build_trader(settings, redis_client, TraderMetrics(CollectorRegistry()))
        await trader.start()
        try:
            # Confident enough for the production threshold (0.6), which the local stack keeps.
            assert await trader.handle_decision(decision(feed.t, BUY_NVDA, 0.7)) == "orders"
            await drain_fills(trader, database_url, 1)
            [(order_type, status, quantity, filled)] = rows(
                database_url, "SELECT order_type, status, quantity, filled_quantity FROM orders"
            )
            assert (order_type, status) == ("LMT", "filled")
            assert quantity == filled == int(PAPER_INITIAL_CASH * 0.10 / 180.0)
            assert rows(database_url, "SELECT symbol, quantity FROM positions") == [
                ("NVDA", filled)
            ]
            assert sim.server.book.positions["NVDA"].quantity == filled
            assert rows(database_url, "SELECT reason FROM risk_events") == []
        finally:
            await trader.broker.close()
            await trader.store.close()


async def test_a_part_filled_limit_order_cancelled_at_its_timeout_reconciles_with_ib(
    redis_server: Any, redis_client: Any, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    feed = Feed(redis_client)
    await feed.prices(NVDA=180.0, MSFT=500.0)
    # Each print of the simulator shows 30 shares at the ask; the trader buys 55.
    static = StaticPrices({"NVDA": 180.0, "MSFT": 500.0})
    async with running_sim(SimOptions(tick_interval_s=0.05, quote_size=30), static=static) as sim:
        settings = load_settings(
            TraderSettings, redis_url=redis_server.url, database_url=database_url, http_port=0,
            broker="ib", ib_port=sim.port, ib_client_id=42, order_type="marketable_limit",
            limit_timeout_s=0.2,
        )  # fmt: skip
        trader = build_trader(settings, redis_client, TraderMetrics(CollectorRegistry()))
        await trader.start()
        broker = trader.broker
        assert isinstance(broker, IbBroker)
        try:
            assert await trader.handle_decision(decision(feed.t, BUY_NVDA)) == "orders"
            [(cid, limit)] = rows(database_url, "SELECT client_order_id, limit_price FROM orders")
            assert limit == 180.36
            await drain_fills(trader, database_url, 1)
            working = await broker.order(cid)
            assert working is not None and (working.status, working.filled_quantity) == ("open", 30)
            assert [o.remaining for o in await broker.open_orders()] == [25]

            async def expired() -> bool:
                async with trader.lock:
                    await trader.expire_limit_orders()
                known = await broker.order(cid)
                return known is not None and known.status == "cancelled"

            await wait_until(expired)
            async with trader.lock:
                await trader.reconcile()
            assert rows(database_url, "SELECT status, filled_quantity FROM orders") == [
                ("cancelled", 30.0)
            ]
            ib_positions = {p.symbol: p.quantity for p in await broker.positions()}
            assert ib_positions == {"NVDA": 30.0}
            assert (
                dict(rows(database_url, "SELECT symbol, quantity FROM positions")) == ib_positions
            )
            assert sim.server.book.positions["NVDA"].quantity == 30.0
            assert rows(database_url, "SELECT sum(quantity) FROM fills") == [(30.0,)]
        finally:
            await trader.broker.close()
            await trader.store.close()
