"""The trader service wired to the IB adapter (ITS_TRADER_BROKER=ib) against its-ibsim."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.settings import load_settings
from its_common.streams import latest_trade_key
from its_trader.app import build_trader
from its_trader.broker import OrderRequest
from its_trader.config import TraderSettings
from its_trader.ib_guard import LiveTradingRefusedError
from its_trader.ibbroker import IbBroker, IbConfig
from its_trader.metrics import TraderMetrics
from tests.ibsim.support import running_sim


async def test_trader_reconciles_ib_fills_at_start_and_after_a_reconnect(
    redis_server: Any, redis_client: Any, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    await redis_client.hset(latest_trade_key("NVDA"), mapping={"p": "180", "t": "1"})
    async with running_sim() as sim:
        # A fill made by another session of the account before the trader starts.
        other = IbBroker(IbConfig(port=sim.port, client_id=9, connect_attempts=1))
        await other.connect()
        await other.place_order(OrderRequest("outside-1", "NVDA", "BUY", 100))
        await asyncio.sleep(0.5)
        await other.close()

        settings = load_settings(
            TraderSettings,
            redis_url=redis_server.url,
            database_url=database_url,
            broker="ib",
            ib_port=sim.port,
            ib_client_id=3,
        )
        trader = build_trader(settings, redis_client, TraderMetrics(CollectorRegistry()))
        assert isinstance(trader.broker, IbBroker)
        await trader.start()
        try:
            assert trader.broker.account.startswith("DU")

            def fills() -> list[tuple[Any, ...]]:
                with psycopg.connect(database_url) as conn:
                    return conn.execute("SELECT execution_id, quantity FROM fills").fetchall()

            assert [quantity for _, quantity in fills()] == [100.0]  # recovered at start
            generation = trader.broker.generation
            await sim.admin("/admin/drop", {"refuse_s": 0.3})
            deadline = time.monotonic() + 15
            while trader.broker.generation <= generation:
                assert time.monotonic() < deadline, "no reconnect"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the reconnect hook reconciles under the trader's lock
            assert len(fills()) == 1  # reconciled again, nothing recorded twice
        finally:
            await trader.broker.close()
            await trader.store.close()


def test_live_port_is_refused_by_configuration() -> None:
    settings = load_settings(TraderSettings, broker="ib", ib_port=4001)
    trader = build_trader(settings, None, TraderMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    with pytest.raises(LiveTradingRefusedError, match="4001"):
        asyncio.run(trader.broker.connect())
