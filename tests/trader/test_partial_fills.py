"""The trader with marketable-limit orders and partial fills (SimBroker, real Redis/PostgreSQL):
positions, risk on open remainders, the remainder's timeout and the reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from its_trader.broker import Execution
from its_trader.engine import Trader
from tests.conditions import wait_until

from .conftest import Feed, decision, make_settings, query, scalar
from .test_trader import denials, fills_of

BUY_NVDA = 7  # buy the first symbol, hold the second


def limit_settings(redis_url: str, db_url: str, **kw: Any) -> Any:
    return make_settings(
        redis_url, db_url, order_type="marketable_limit", limit_slippage_bps=20.0,
        cooldown_s=0.0, **kw,
    )  # fmt: skip


async def expire_all(trader: Trader, db_url: str, count: int) -> None:
    async def expired() -> bool:
        await trader.periodic()  # the service's periodic step cancels remainders past the timeout
        return (
            int(scalar(db_url, "SELECT count(*) FROM orders WHERE status = 'cancelled'")) >= count
        )

    await wait_until(expired)


async def test_a_part_filled_marketable_limit_is_cancelled_after_its_timeout(
    redis_server, redis_client, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    # 21,000 per symbol: room for the first order's 100 shares plus a second buy of ~99, but not
    # if the part already filled were counted twice (position + the order's full quantity).
    settings = limit_settings(
        redis_server.url, db_url, max_position_usd=21_000, limit_timeout_s=0.2
    )
    trader = make_trader(settings)
    await trader.start()
    assert await trader.handle_decision(decision(feed.t, BUY_NVDA)) == "orders"
    [(cid, order_type, limit)] = query(
        db_url, "SELECT client_order_id, order_type, limit_price FROM orders"
    )
    assert (order_type, limit) == ("LMT", 100.2)  # 100 + 20 bps, on the cent
    await feed.trade("NVDA", 100.3, size=500)  # 100.3 x 1.001 > 100.2: beyond the cap, no fill
    await feed.trade("NVDA", 100.05, size=40)  # 100.15 <= 100.2: the print's 40 shares
    await fills_of(trader, db_url, 1)
    assert query(db_url, "SELECT status, filled_quantity FROM orders") == [
        ("partially_filled", 40.0)
    ]
    assert dict(query(db_url, "SELECT symbol, quantity FROM positions")) == {"NVDA": 40.0}

    # Risk counts the position (40) and the open remainder (60), not the order's full 100.
    assert await trader.handle_decision(decision(feed.t, BUY_NVDA)) == "orders"
    assert denials(db_url) == []

    await expire_all(trader, db_url, 2)
    rows = query(
        db_url, "SELECT client_order_id, status, filled_quantity FROM orders ORDER BY created_at"
    )
    assert [(s, f) for _, s, f in rows] == [("cancelled", 40.0), ("cancelled", 0.0)]
    assert rows[0][0] == cid
    assert await trader.broker.open_orders() == []
    [counter] = trader.metrics.remainders_cancelled.collect()
    assert [x.value for x in counter.samples if x.name.endswith("_total")] == [2.0]
    await feed.trade("NVDA", 100.0, size=1_000)  # nothing is left working to fill
    async with trader.lock:
        await trader.reconcile()
    broker_positions = {p.symbol: p.quantity for p in await trader.broker.positions()}
    assert broker_positions == {"NVDA": 40.0}
    assert dict(query(db_url, "SELECT symbol, quantity FROM positions")) == broker_positions
    assert scalar(db_url, "SELECT sum(quantity) FROM fills") == 40.0
    assert query(db_url, "SELECT status FROM orders WHERE client_order_id = %s", cid) == [
        ("cancelled",)
    ]


async def test_a_fill_reported_after_the_cancel_keeps_the_order_cancelled(
    redis_server, redis_client, db_url, make_trader
):
    """IB may report an execution after the trader recorded the cancel (they cross on the wire):
    the fill counts, the order stays cancelled unless it completed."""
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    trader = make_trader(limit_settings(redis_server.url, db_url))
    await trader.start()
    assert await trader.handle_decision(decision(feed.t, BUY_NVDA)) == "orders"
    [(cid, quantity)] = query(db_url, "SELECT client_order_id, quantity FROM orders")
    async with trader.lock:
        assert await trader.cancel_open_orders() == 1

    def late(n: int, shares: int) -> Execution:
        return Execution(f"late-{n}", cid, "1", "NVDA", "BUY", shares, 100.1, 1.0, feed.t)

    assert await trader.store.record_fill(late(1, 30), "SIM", "sim")
    assert query(db_url, "SELECT status, filled_quantity FROM orders") == [("cancelled", 30.0)]
    assert await trader.store.record_fill(late(2, int(quantity) - 30), "SIM", "sim")
    assert query(db_url, "SELECT status, filled_quantity FROM orders") == [
        ("filled", pytest.approx(quantity))
    ]
