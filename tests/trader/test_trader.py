"""The trader in-process on real Redis and PostgreSQL: decisions, denials, halts, kill switch."""

from __future__ import annotations

from typing import Any

from its_common.alert_events import decode_alert_event
from its_common.clock import FEED_CLOCK_KEY
from its_common.risk import RiskReason
from its_common.streams import Stream
from its_trader import control
from its_trader.engine import Trader
from tests.conditions import wait_until

from .conftest import CLOSED_MS, OPEN_MS, Feed, decision, make_settings, query, scalar


async def fills_of(trader: Trader, db_url: str, count: int) -> None:
    async def drained() -> bool:
        queue = trader.broker.fills()
        while not queue.empty():
            await trader.handle_fill(queue.get_nowait())
        return int(scalar(db_url, "SELECT count(*) FROM fills")) >= count

    await wait_until(drained)


def denials(db_url: str) -> list[str]:
    rows = query(db_url, "SELECT reason FROM risk_events WHERE outcome = 'denied' ORDER BY id")
    return [str(r[0]) for r in rows]


async def test_decision_to_orders_fills_positions_and_snapshot(
    redis_server, redis_client, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    trader = make_trader(make_settings(redis_server.url, db_url))
    await trader.start()
    assert await trader.handle_decision(decision(feed.t, 8)) == "orders"  # buy / buy
    orders = query(db_url, "SELECT symbol, side, quantity, status FROM orders ORDER BY symbol")
    assert orders == [("MSFT", "BUY", 25.0, "submitted"), ("NVDA", "BUY", 100.0, "submitted")]
    await feed.prices(NVDA=101.0, MSFT=401.0)
    await fills_of(trader, db_url, 2)
    positions = dict(query(db_url, "SELECT symbol, quantity FROM positions"))
    assert positions == {"NVDA": 100.0, "MSFT": 25.0}
    assert scalar(db_url, "SELECT count(*) FROM orders WHERE status = 'filled'") == 2
    await trader.periodic()
    equity = scalar(db_url, "SELECT equity FROM portfolio_snapshots")
    assert 99_900 < equity < 100_000  # slippage and commissions cost a little
    assert await trader.handle_decision(decision(feed.t, 4)) == "hold"
    assert scalar(db_url, "SELECT risk_outcome FROM signals WHERE action = 8") == "orders"
    assert scalar(db_url, "SELECT risk_outcome FROM signals WHERE action = 4") == "hold"


async def test_every_denial_is_recorded_with_its_reason(
    redis_server, redis_client, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    settings = make_settings(
        redis_server.url, db_url, max_position_usd=15_000, max_gross_exposure_usd=18_000
    )
    trader = make_trader(settings)
    await trader.start()
    assert await trader.handle_decision(decision(feed.t, 8, confidence=0.5)) == "denied"
    assert await trader.handle_decision(decision(feed.t, 5)) == "orders"  # buy MSFT 25 @ 400
    await feed.trade("NVDA", 100.0, step_ms=10_000)  # market time +10 s; MSFT stays unfilled
    assert await trader.handle_decision(decision(feed.t, 5)) == "denied"  # cooldown
    await feed.trade("NVDA", 100.0, step_ms=60_000)
    # MSFT: 10,000 pending + 10,000 > 15,000
    assert await trader.handle_decision(decision(feed.t, 5)) == "denied"
    # NVDA: 10,000 + gross 10,000 > 18,000
    assert await trader.handle_decision(decision(feed.t, 7)) == "denied"
    assert await trader.handle_decision(decision(feed.t - 600_000, 5)) == "denied"  # stale
    expected = [
        RiskReason.CONFIDENCE,
        RiskReason.COOLDOWN,
        RiskReason.MAX_POSITION,
        RiskReason.MAX_GROSS_EXPOSURE,
        RiskReason.STALE_DECISION,
    ]
    assert denials(db_url) == [r.value for r in expected]
    await redis_client.hset(FEED_CLOCK_KEY, "event_ms", str(CLOSED_MS))  # the feed's clock
    assert await trader.handle_decision(decision(CLOSED_MS, 5)) == "denied"
    assert denials(db_url)[-1] == RiskReason.MARKET_CLOSED.value
    await redis_client.hset("its:last:trade:MSFT", "rt", "1")  # a price from long ago
    await redis_client.hset(FEED_CLOCK_KEY, "event_ms", str(OPEN_MS + 3_600_000))
    assert await trader.handle_decision(decision(OPEN_MS + 3_600_000, 5)) == "denied"
    assert denials(db_url)[-1] == RiskReason.NO_PRICE.value
    reasons = trader.metrics.denials
    assert reasons.labels(RiskReason.COOLDOWN.value)._value.get() == 1


async def test_daily_loss_halts_and_the_halt_survives_a_restart(
    redis_server, redis_client, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    settings = make_settings(redis_server.url, db_url, max_daily_loss_usd=500)
    trader = make_trader(settings)
    await trader.start()
    await trader.handle_decision(decision(feed.t, 7))  # buy NVDA 100
    await feed.prices(NVDA=100.0)
    await fills_of(trader, db_url, 1)
    await trader.periodic()  # the day starts at ~100,000
    await feed.prices(NVDA=90.0)  # -1,000 on 100 shares
    await wait_until(lambda: trader.broker.mark("NVDA") == (90.0, feed.t))
    await trader.periodic()
    assert trader.risk.halt.halted and trader.risk.halt.reason == "max_daily_loss"
    await trader.store.close()
    await trader.broker.close()

    restarted = make_trader(settings)
    await restarted.start()
    assert restarted.risk.halt.halted and restarted.risk.halt.reason == "max_daily_loss"
    feed.t += 120_000
    await feed.prices(MSFT=400.0)
    assert await restarted.handle_decision(decision(feed.t, 5)) == "denied"
    assert denials(db_url)[-1] == RiskReason.HALTED.value
    halt_rows = query(db_url, "SELECT reason FROM risk_events WHERE outcome = 'halt'")
    assert halt_rows == [("max_daily_loss",)]


async def test_kill_switch_cancels_flattens_halts_and_resume_is_explicit(
    redis_server, redis_client, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    trader = make_trader(make_settings(redis_server.url, db_url))
    await trader.start()
    await trader.handle_decision(decision(feed.t, 7))  # buy NVDA
    await feed.prices(NVDA=100.0)
    await fills_of(trader, db_url, 1)
    await trader.handle_decision(decision(feed.t, 5))  # buy MSFT: stays open (no MSFT trade)
    assert len(await trader.broker.open_orders()) == 1

    await control.engage_kill(redis_client, trader.store, flatten=True, reason="test")
    await trader.control_tick()
    assert trader.risk.halt.halted and trader.risk.halt.reason == control.KILL_REASON
    statuses = dict(query(db_url, "SELECT symbol, status FROM orders WHERE reason = 'buy'"))
    assert statuses == {"NVDA": "filled", "MSFT": "cancelled"}
    flatten = query(db_url, "SELECT symbol, side, quantity FROM orders WHERE reason = 'flatten'")
    assert flatten == [("NVDA", "SELL", 100.0)]
    await trader.control_tick()  # the same flag is handled once: no second flatten order
    assert scalar(db_url, "SELECT count(*) FROM orders WHERE reason = 'flatten'") == 1
    await feed.prices(NVDA=101.0)
    await fills_of(trader, db_url, 2)
    assert dict(query(db_url, "SELECT symbol, quantity FROM positions"))["NVDA"] == 0
    feed.t += 120_000
    await feed.prices(MSFT=400.0)
    assert await trader.handle_decision(decision(feed.t, 5)) == "denied"
    assert denials(db_url)[-1] == RiskReason.HALTED.value

    await redis_client.delete(control.KILL_KEY)  # dropping the flag alone does not resume
    await trader.control_tick()
    assert trader.risk.halt.halted
    await control.resume(redis_client, trader.store)
    await trader.control_tick()
    assert not trader.risk.halt.halted
    assert await trader.handle_decision(decision(feed.t, 5)) == "orders"


async def test_a_bare_redis_flag_engages_the_kill_switch(
    redis_server, redis_client, db_url, make_trader
):
    trader = make_trader(make_settings(redis_server.url, db_url))
    await trader.start()
    await redis_client.set(control.KILL_KEY, "1")
    await trader.control_tick()
    assert trader.risk.halt.halted
    stored: Any = await trader.store.get_state(control.HALT_STATE)
    assert stored["halted"] is True and stored["reason"] == control.KILL_REASON


async def test_a_decision_about_another_pair_is_refused_and_legs_follow_the_decision(
    redis_server, redis_client, db_url, make_trader
):
    """A bundle trained on another pair must never trade this trader's symbols by position:
    the decision is refused (risk event, alert event); a decision on the trader's own symbols
    in the other order trades the legs the decision names."""
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    trader = make_trader(make_settings(redis_server.url, db_url))
    await trader.start()
    assert await trader.handle_decision(decision(feed.t, 6, symbols=("AAPL", "TSLA"))) == "denied"
    assert denials(db_url) == ["foreign_symbols"]
    detail = scalar(db_url, "SELECT detail FROM risk_events WHERE reason = 'foreign_symbols'")
    assert "AAPL,TSLA" in detail and "NVDA,MSFT" in detail
    assert scalar(db_url, "SELECT count(*) FROM orders") == 0
    events = [decode_alert_event(i, f) for i, f in await redis_client.xrange(Stream.ALERT_EVENTS)]
    assert [(e.type, e.source, e.state) for e in events] == [
        ("foreign_symbols", "trader", "firing")
    ]
    assert "AAPL,TSLA" in events[0].message

    # action 6 = BUY first, SELL second: with (MSFT, NVDA) the buy is MSFT's.
    assert await trader.handle_decision(decision(feed.t, 6, symbols=("MSFT", "NVDA"))) == "orders"
    assert query(db_url, "SELECT symbol, side FROM orders") == [("MSFT", "BUY")]
