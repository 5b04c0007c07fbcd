"""The risk engine's pure rules: each denies with its own reason; the action map and sizing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from its_common.actions import ACTION_NAMES, legs
from its_common.risk import (
    Denial,
    Exposure,
    Halt,
    RiskLimits,
    RiskReason,
    RiskState,
    check_decision,
    check_order,
    check_portfolio,
    in_closing_window,
)
from its_trader.actions import OrderIntent, orders_for_action

OPEN = datetime(2025, 11, 3, 15, 0, tzinfo=UTC)  # 10:00 New York, Monday
LIMITS = RiskLimits(
    min_confidence=0.6,
    cooldown_s=60,
    max_position_usd=10_000,
    max_gross_exposure_usd=15_000,
    max_daily_loss_usd=500,
    max_drawdown_pct=0.05,
    max_orders_per_minute=3,
    flatten_before_close_min=15,
)
BUY = OrderIntent("NVDA", "BUY", 10, "buy")
PRICES = {"NVDA": 100.0, "MSFT": 400.0}


def check(
    intent: OrderIntent = BUY,
    *,
    state: RiskState | None = None,
    positions: dict[str, float] | None = None,
    prices: dict[str, float] | None = None,
    now: datetime = OPEN,
    mono: float = 1000.0,
    limits: RiskLimits = LIMITS,
) -> Denial | None:
    return check_order(
        intent,
        limits=limits,
        state=state or RiskState(),
        exposure=Exposure(positions or {}, PRICES if prices is None else prices, 100_000),
        market_now=now,
        mono_now=mono,
    )


def reason(denial: Denial | None) -> RiskReason | None:
    return None if denial is None else denial.reason


def test_a_plain_order_in_market_hours_passes() -> None:
    assert check() is None


def test_confidence_below_the_threshold() -> None:
    assert reason(check_decision(0.59, LIMITS)) is RiskReason.CONFIDENCE
    assert check_decision(0.6, LIMITS) is None
    assert RiskLimits().min_confidence == 0.6  # the default


def test_cooldown_per_symbol_and_side() -> None:
    state = RiskState()
    state.record_order(BUY, OPEN, 0.0)
    denial = check(state=state, now=OPEN + timedelta(seconds=59), mono=100.0)
    assert reason(denial) is RiskReason.COOLDOWN
    assert check(state=state, now=OPEN + timedelta(seconds=60), mono=100.0) is None
    other = OrderIntent("MSFT", "BUY", 1, "buy")
    assert check(other, state=state, now=OPEN + timedelta(seconds=1), mono=100.0) is None
    assert RiskLimits().cooldown_s == 60


def test_max_position_per_symbol() -> None:
    denial = check(positions={"NVDA": 95})  # 9,500 + 1,000 > 10,000
    assert reason(denial) is RiskReason.MAX_POSITION
    assert check(positions={"NVDA": 90}) is None  # exactly 10,000 is allowed


def test_max_gross_exposure() -> None:
    denial = check(positions={"NVDA": 50, "MSFT": 25})  # 5,000 + 10,000 + 1,000 > 15,000
    assert reason(denial) is RiskReason.MAX_GROSS_EXPOSURE


def test_sells_that_reduce_risk_are_not_limited_by_exposure() -> None:
    sell = OrderIntent("NVDA", "SELL", 200, "close")
    assert check(sell, positions={"NVDA": 200, "MSFT": 100}) is None


def test_order_rate_limit() -> None:
    state = RiskState()
    for i in range(3):
        state.record_order(OrderIntent(f"S{i}", "BUY", 1, "buy"), OPEN, 1000.0 + i)
    assert reason(check(state=state, mono=1010.0)) is RiskReason.RATE_LIMIT
    assert check(state=state, mono=1061.0) is None  # the window has passed


def test_regular_trading_hours_only() -> None:
    evening = datetime(2025, 11, 3, 22, 0, tzinfo=UTC)
    saturday = datetime(2025, 11, 8, 15, 0, tzinfo=UTC)
    thanksgiving = datetime(2025, 11, 27, 15, 0, tzinfo=UTC)
    for when in (evening, saturday, thanksgiving):
        assert reason(check(now=when)) is RiskReason.MARKET_CLOSED, when
    relaxed = RiskLimits(regular_hours_only=False)
    assert check(now=evening, limits=relaxed) is None


def test_no_new_positions_in_the_closing_window() -> None:
    close = datetime(2025, 11, 3, 21, 0, tzinfo=UTC)  # 16:00 New York
    assert reason(check(now=close - timedelta(minutes=10))) is RiskReason.CLOSING_WINDOW
    assert in_closing_window(close - timedelta(minutes=10), 15)
    assert not in_closing_window(close - timedelta(minutes=20), 15)
    sell = OrderIntent("NVDA", "SELL", 5, "close")
    assert check(sell, positions={"NVDA": 5}, now=close - timedelta(minutes=10)) is None
    # Early close (day after Thanksgiving closes 13:00 New York = 18:00 UTC).
    assert in_closing_window(datetime(2025, 11, 28, 17, 50, tzinfo=UTC), 15)


def test_halted_denies_everything() -> None:
    state = RiskState(halt=Halt(True, "max_daily_loss", "x", 1))
    assert reason(check(state=state)) is RiskReason.HALTED


def test_missing_price_is_denied() -> None:
    assert reason(check(prices={"MSFT": 400.0})) is RiskReason.NO_PRICE


def test_daily_loss_and_drawdown_limits() -> None:
    assert reason(check_portfolio(99_500, 100_000, 100_000, LIMITS)) is RiskReason.MAX_DAILY_LOSS
    assert check_portfolio(99_501, 100_000, 100_000, LIMITS) is None
    # 5 % below the peak, but the day's loss is small (the peak was on an earlier day).
    assert reason(check_portfolio(95_000, 95_100, 100_000, LIMITS)) is RiskReason.MAX_DRAWDOWN


def test_action_map_and_sizing_follow_the_shared_definition() -> None:
    # Shared encoding (its_common.actions): legs 0 sell, 1 hold, 2 buy; action = 3*first+second.
    assert ACTION_NAMES[4] == "HOLD_BOTH" and ACTION_NAMES[8] == "BUY_BOTH"
    assert [int(leg) for leg in legs(6)] == [2, 0]
    with pytest.raises(ValueError):
        legs(9)
    intents = orders_for_action(
        6, {"NVDA": 0, "MSFT": 7}, 100_000, PRICES, symbols=("NVDA", "MSFT")
    )  # buy NVDA, sell MSFT
    assert intents == [
        OrderIntent("NVDA", "BUY", 100, "buy"),  # 10 % of 100,000 at 100
        OrderIntent("MSFT", "SELL", 7, "close"),
    ]
    pair = ("NVDA", "MSFT")
    assert orders_for_action(3, {}, 100_000, PRICES, symbols=pair) == []  # no shorting
    assert orders_for_action(4, {"NVDA": 5}, 100_000, PRICES, symbols=pair) == []
    half = orders_for_action(7, {}, 100_000, PRICES, symbols=pair, buy_fraction=0.05)
    assert half == [OrderIntent("NVDA", "BUY", 50, "buy")]
