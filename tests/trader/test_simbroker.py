"""SimBroker against real Redis and PostgreSQL: next-trade fills, costs, restart continuation."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from its_common.db.connect import connection_kwargs
from its_common.events import Trade
from its_common.streams import Stream, StreamLayout, encode_entry, now_ms
from its_trader.broker import BrokerOrder, OrderRequest
from its_trader.simbroker import SimBroker, SimConfig, apply_fill, broker_price_key
from its_validator.check import broker_prices, compare, feed_prices
from tests.conditions import wait_until

from .conftest import Feed, make_settings, query


def broker(redis_client: Any, db_url: str, **kw: Any) -> SimBroker:
    settings = make_settings("redis://127.0.0.1:1/0", db_url)
    config = SimConfig(slippage_bps=10.0, **kw)
    return SimBroker(connection_kwargs(settings), redis_client, config)


async def test_fills_at_the_next_trade_never_at_a_price_seen_before_the_order(redis_client, db_url):
    feed = Feed(redis_client)
    sim = broker(redis_client, db_url)
    await feed.prices(NVDA=100.0)
    await sim.connect()
    try:
        # Trades written before the order while the broker's reader lags behind: never used.
        await feed.prices(NVDA=100.5, MSFT=300.0)
        order = await sim.place_order(OrderRequest("c1", "NVDA", "BUY", 10))
        assert order.status == "open"
        await feed.trade("MSFT", 301.0)  # another symbol does not fill it
        await feed.trade("NVDA", 102.0)
        execution = await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())
        assert execution.price == pytest.approx(102.0 * 1.001)  # next trade + 10 bps slippage
        assert execution.commission == 1.0  # 10 shares x $0.005 < $1 minimum
        assert execution.ts_ms == feed.t
        again = await sim.place_order(OrderRequest("c1", "NVDA", "BUY", 10))
        assert again.status == "filled" and again.broker_order_id == order.broker_order_id
        sell = await sim.place_order(OrderRequest("c2", "NVDA", "SELL", 10))
        assert sell.status == "open"
        await feed.trade("NVDA", 110.0)
        sold = await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())
        assert sold.price == pytest.approx(110.0 * 0.999)
        summary = await sim.account_summary()
        realized = 10 * (110.0 * 0.999 - 102.0 * 1.001)
        assert summary.realized_pnl == pytest.approx(realized - 2.0)
        assert summary.cash == pytest.approx(100_000 + realized - 2.0)
        positions = {p.symbol: p.quantity for p in await sim.positions()}
        assert positions["NVDA"] == 0
        mark = await redis_client.hgetall(broker_price_key("NVDA"))
        assert float(mark[b"p"]) == 110.0 and int(mark[b"t"]) == feed.t
    finally:
        await sim.close()
    assert len(query(db_url, "SELECT * FROM sim_orders")) == 2  # c1 re-sent: still one order


async def test_restart_continues_and_fills_with_trades_from_while_it_was_down(redis_client, db_url):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0)
    first = broker(redis_client, db_url, commission_per_share=0.005)
    await first.connect()
    await first.place_order(OrderRequest("big", "NVDA", "BUY", 400))
    await first.close()  # "down"
    await feed.trade("NVDA", 99.0)  # the next trade after the order, while down
    await feed.trade("NVDA", 98.0)
    second = broker(redis_client, db_url)
    await second.connect()
    try:
        execution = await wait_until(
            lambda: second.fills().qsize() > 0 and second.fills().get_nowait()
        )
        assert execution.client_order_id == "big"
        assert execution.price == pytest.approx(99.0 * 1.001)
        assert execution.commission == pytest.approx(2.0)  # 400 x $0.005
        summary = await second.account_summary()
        assert summary.cash == pytest.approx(100_000 - 400 * 99.0 * 1.001 - 2.0)
        assert summary.unrealized_pnl == pytest.approx(400 * (98.0 - 99.0 * 1.001))
    finally:
        await second.close()
    third = broker(redis_client, db_url)
    await third.connect()  # books persisted: same cash and position after another restart
    try:
        assert {p.symbol: p.quantity for p in await third.positions()} == {"NVDA": 400}
        assert (await third.account_summary()).cash == pytest.approx(summary.cash)
        assert await third.open_orders() == []
    finally:
        await third.close()


REPLAY_BACK_MS = 3 * 3600 * 1000  # the simulator starts the day again from 09:30


async def _skew_check(redis_client: Any, symbol: str) -> Any:
    """The validator's compare() on what the router and the broker published."""
    return compare(
        symbol,
        await feed_prices(redis_client).price(symbol),
        await broker_prices(redis_client).price(symbol),
        now_ms=now_ms(),
        threshold_pct=0.1,
        max_age_s=30.0,
        max_skew_ms=5_000,
    )


async def test_marks_follow_the_feed_back_when_a_replay_restarts_the_day(redis_client, db_url):
    feed = Feed(redis_client)
    sim = broker(redis_client, db_url)
    await feed.prices(NVDA=100.0)
    await sim.connect()
    try:
        await feed.trade("NVDA", 101.0)
        await wait_until(lambda: sim.mark("NVDA") == (101.0, feed.t))
        assert (await _skew_check(redis_client, "NVDA")).skipped is None
        late = feed.t
        feed.t -= REPLAY_BACK_MS  # a new router writes the day again: older trades, later entries
        await feed.trade("NVDA", 95.0)
        await wait_until(lambda: sim.mark("NVDA") == (95.0, feed.t))
        published = await redis_client.hgetall(broker_price_key("NVDA"))
        assert float(published[b"p"]) == 95.0 and int(published[b"t"]) == feed.t < late
        result = await _skew_check(redis_client, "NVDA")
        assert result.skipped is None and result.ok, result
        # Fills still follow stream order: an order placed during the replay fills at its next
        # trade, never at the price seen before it.
        order = await sim.place_order(OrderRequest("r1", "NVDA", "BUY", 10, not_before_ms=feed.t))
        assert order.status == "open"
        await feed.trade("NVDA", 96.0)
        execution = await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())
        assert execution.price == pytest.approx(96.0 * 1.001) and execution.ts_ms == feed.t
        await wait_until(lambda: sim.mark("NVDA") == (96.0, feed.t))
    finally:
        await sim.close()


async def test_an_order_open_when_the_replay_restarts_fills_at_the_next_trade(redis_client, db_url):
    feed = Feed(redis_client)
    sim = broker(redis_client, db_url)
    await feed.prices(NVDA=100.0)
    await sim.connect()
    try:
        decided = feed.t
        await sim.place_order(OrderRequest("o1", "NVDA", "BUY", 10, not_before_ms=decided))
        # A late trade (market time before the decision, the feed clock unchanged) never fills.
        late = Trade(
            symbol="NVDA", exchange=4, trade_id="late", tape=3, price=90.0, size=100,
            timestamp=decided - 2_000, sequence=0,
        )  # fmt: skip
        await redis_client.xadd(Stream.TRADES, encode_entry("T", [late]))
        await wait_until(lambda: sim.mark("NVDA") == (90.0, decided - 2_000))
        assert sim.fills().qsize() == 0
        # The simulator starts the day again: a new router writes older trades and moves the feed
        # clock back. The open order fills at the first of them (stream order), not hours later.
        feed.t -= REPLAY_BACK_MS
        await feed.trade("NVDA", 95.0)
        execution = await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())
        assert execution.client_order_id == "o1"
        assert execution.price == pytest.approx(95.0 * 1.001) and execution.ts_ms == feed.t
        assert sim.feed_rewinds == 1 and sim.clock_read_errors == 0
    finally:
        await sim.close()


def test_position_arithmetic() -> None:
    assert apply_fill(0, 0, "BUY", 10, 100) == (10, 100, 0)
    assert apply_fill(10, 100, "BUY", 10, 110) == (20, 105, 0)
    assert apply_fill(20, 105, "SELL", 5, 115) == (15, 105, 50)
    assert apply_fill(15, 105, "SELL", 20, 100) == (-5, 100, -75)  # flip to short
    assert apply_fill(-5, 100, "BUY", 5, 90) == (0, 0, 50)


async def next_fill(sim: SimBroker) -> Any:
    return await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())


async def test_a_limit_order_fills_in_parts_against_prints_and_a_cancel_keeps_them(
    redis_client, db_url
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0)
    sim = broker(redis_client, db_url)  # 10 bps slippage
    await sim.connect()
    try:
        order = await sim.place_order(OrderRequest("lmt", "NVDA", "BUY", 250, limit_price=101.0))
        assert order.status == "open" and order.remaining == 250
        await feed.trade("NVDA", 100.5, size=100)  # 100.6005 <= 101: takes the print's 100
        first = await next_fill(sim)
        assert (first.quantity, first.price) == (100, pytest.approx(100.5 * 1.001))
        assert first.execution_id.endswith("-1")
        await feed.trade("NVDA", 101.5, size=500)  # 101.6015 > 101: not at this print
        await feed.trade("NVDA", 100.0, size=60)  # only 60 traded there
        second = await next_fill(sim)
        assert (second.quantity, second.execution_id[-2:]) == (60, "-2")
        assert await sim.order("lmt") == BrokerOrder(
            "lmt", order.broker_order_id, "NVDA", "BUY", 250, "open", 160
        )
        assert [o.remaining for o in await sim.open_orders()] == [90]
        assert await sim.cancel("lmt")
        await feed.trade("NVDA", 99.0, size=1000)  # a cancelled order takes nothing more
        await wait_until(lambda: sim.mark("NVDA") == (99.0, feed.t))
        assert sim.fills().qsize() == 0
        cancelled = await sim.order("lmt")
        assert cancelled is not None and cancelled.status == "cancelled"
        assert (cancelled.filled_quantity, cancelled.remaining) == (160, 0)
        assert {p.symbol: p.quantity for p in await sim.positions()} == {"NVDA": 160}
        cost = 100 * 100.5 * 1.001 + 60 * 100.0 * 1.001
        assert (await sim.account_summary()).cash == pytest.approx(100_000 - cost - 2.0)
        # A limit off IB's tick is refused as IB does (110, Inactive): recorded, never filled.
        off = await sim.place_order(OrderRequest("off", "NVDA", "BUY", 5, limit_price=99.005))
        assert off.status == "rejected" and await sim.open_orders() == []
        with pytest.raises(ValueError, match="limit price"):
            await sim.place_order(OrderRequest("neg", "NVDA", "BUY", 5, limit_price=-1.0))
    finally:
        await sim.close()


async def test_a_part_filled_order_continues_after_a_restart_without_reusing_a_print(
    redis_client, db_url
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0)
    first = broker(redis_client, db_url)
    await first.connect()
    await first.place_order(OrderRequest("part", "NVDA", "SELL", 150, limit_price=99.0))
    await feed.trade("NVDA", 100.0, size=100)
    assert (await next_fill(first)).quantity == 100
    await first.close()
    await feed.trade("NVDA", 100.0, size=100)  # while down: the remaining 50 fill from this one
    second = broker(redis_client, db_url)
    await second.connect()
    try:
        rest = await next_fill(second)
        assert (rest.quantity, rest.execution_id[-2:]) == (50, "-2")
        order = await second.order("part")
        assert order is not None and (order.status, order.filled_quantity) == ("filled", 150)
        assert {p.symbol: p.quantity for p in await second.positions()} == {"NVDA": -150}
        assert len(query(db_url, "SELECT * FROM sim_executions")) == 2
    finally:
        await second.close()


def _terminate_other_sessions(db_url: str) -> int:
    """What a PostgreSQL restart does to the broker's connection ("terminating connection due
    to administrator command"), without stopping the test's server."""
    rows = query(
        db_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
        " current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    return len(rows)


async def _placed_once_the_database_answers(sim: SimBroker, request: OrderRequest) -> BrokerOrder:
    """The first call after the connection was cut may fail (the trader's consumer keeps the
    decision pending and calls again); the next one must work."""
    try:
        return await sim.place_order(request)
    except psycopg.OperationalError:
        return await sim.place_order(request)


async def test_a_database_restart_does_not_stop_orders_or_fills(redis_client, db_url):
    """The chaos suite's PostgreSQL restart left the SimBroker 'not connected' for good: every
    later decision was dead-lettered and no order filled again."""
    feed = Feed(redis_client)
    sim = broker(redis_client, db_url)
    await feed.prices(NVDA=100.0)
    await sim.connect()
    try:
        assert _terminate_other_sessions(db_url) >= 1
        order = await _placed_once_the_database_answers(sim, OrderRequest("c1", "NVDA", "BUY", 10))
        assert order.status == "open"
        assert _terminate_other_sessions(db_url) >= 1  # cut again: the fill path reconnects too
        await feed.trade("NVDA", 101.0)
        execution = await wait_until(lambda: sim.fills().qsize() > 0 and sim.fills().get_nowait())
        assert execution.client_order_id == "c1" and execution.quantity == 10
        assert (await sim.order("c1")) is not None
        positions = {p.symbol: p.quantity for p in await sim.positions()}
        assert positions["NVDA"] == 10
        assert sim.db_reconnects >= 2
    finally:
        await sim.close()
    assert query(db_url, "SELECT status, filled_quantity FROM sim_orders") == [("filled", 10)]


async def test_with_stream_shards_each_symbol_fills_from_its_own_shard(redis_client, db_url):
    """ITS_STREAM_SHARDS > 1: the router writes each symbol's trades to its shard's stream; the
    simulated broker read only the unsharded name and never filled."""
    layout = StreamLayout(3)
    assert layout.shard_of("NVDA") != layout.shard_of("AAPL")  # two shards (MSFT is NVDA's)
    feed = Feed(redis_client, layout=layout)
    settings = make_settings("redis://127.0.0.1:1/0", db_url)
    sim = SimBroker(connection_kwargs(settings), redis_client, SimConfig(slippage_bps=0.0), layout)
    await feed.prices(NVDA=100.0, AAPL=300.0)
    await sim.connect()
    try:
        await sim.place_order(OrderRequest("n", "NVDA", "BUY", 10))
        await sim.place_order(OrderRequest("a", "AAPL", "BUY", 5))
        await feed.trade("AAPL", 301.0)
        await feed.trade("NVDA", 101.0)
        filled: dict[str, float] = {}

        def both_filled() -> bool:
            while sim.fills().qsize():
                execution = sim.fills().get_nowait()
                filled[execution.client_order_id] = execution.price
            return len(filled) == 2

        await wait_until(both_filled)
        assert filled == pytest.approx({"n": 101.0, "a": 301.0})  # each at its next trade
    finally:
        await sim.close()
    assert await redis_client.xlen(Stream.TRADES) == 0  # only the shards were written
