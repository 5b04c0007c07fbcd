"""The action map and sizing, and the environment: no lookahead, costs, episode boundaries."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from its_common.actions import (
    ACTION_NAMES,
    BUY_FRACTION,
    Action,
    Leg,
    action_map,
    joint_action,
    legs,
    order_quantity,
)
from its_common.calendar import sessions_between
from its_common.features import N_FEATURES, batch_features
from its_trainer.data import build_pair, frame_to_bars
from its_trainer.env import OBS_SIZE, EnvConfig, TwoTickerEnv, observation_layout
from tests.features.helpers import random_bars

FIRST, LAST = date(2025, 3, 3), date(2025, 3, 5)
PAIR = ("NVDA", "MSFT")


def make_frame(seed: int = 1, drop: float = 0.0) -> pd.DataFrame:
    sessions = sessions_between(FIRST, LAST)
    frames = []
    for k, (symbol, price) in enumerate(zip(PAIR, (180.0, 500.0), strict=True)):
        bars = random_bars(sessions, seed + k, drop=drop, price=price)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol, "ts": bars.ts, "open": bars.open, "high": bars.high,
                    "low": bars.low, "close": bars.close, "volume": bars.volume,
                    "vwap": bars.vwap,
                }
            )
        )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def data():
    frame = make_frame()
    return build_pair(frame_to_bars(frame, PAIR, FIRST, LAST), PAIR, FIRST, LAST)


def test_action_map_is_the_documented_one():
    assert ACTION_NAMES == (
        "SELL_BOTH", "SELL_NVDA_HOLD_MSFT", "SELL_NVDA_BUY_MSFT", "HOLD_NVDA_SELL_MSFT",
        "HOLD_BOTH", "HOLD_NVDA_BUY_MSFT", "BUY_NVDA_SELL_MSFT", "BUY_NVDA_HOLD_MSFT", "BUY_BOTH",
    )  # fmt: skip
    for action in Action:
        first, second = legs(action)
        assert joint_action(first, second) is action
    assert legs(Action.SELL_NVDA_BUY_MSFT) == (Leg.SELL, Leg.BUY)
    assert legs(Action.BUY_NVDA_HOLD_MSFT) == (Leg.BUY, Leg.HOLD)
    assert action_map()["8"] == "BUY_BOTH"
    with pytest.raises(ValueError):
        legs(9)


def test_sizing():
    assert BUY_FRACTION == 0.10
    assert order_quantity(Leg.BUY, 0, 100_000, 180.0) == math.floor(10_000 / 180.0)
    assert order_quantity(Leg.BUY, 55, 100_000, 180.0) == 55  # adds another 10 %
    assert order_quantity(Leg.SELL, 55, 100_000, 180.0) == -55  # closes
    assert order_quantity(Leg.SELL, 0, 100_000, 180.0) == 0
    assert order_quantity(Leg.HOLD, 55, 100_000, 180.0) == 0
    # A cap on the position value: at most 15 % of equity in the symbol.
    assert order_quantity(Leg.BUY, 55, 100_000, 180.0, max_position_fraction=0.15) == 28


def test_observation_layout(data):
    env = TwoTickerEnv(data)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (OBS_SIZE,) == (26,) and obs.dtype == np.float32
    layout = observation_layout(PAIR)
    assert layout[0] == "NVDA.returns" and layout[12] == "NVDA.position"
    assert layout[13] == "MSFT.returns" and layout[25] == "MSFT.position"
    t = env.t
    np.testing.assert_array_equal(obs[:N_FEATURES], data.features[t, 0].astype(np.float32))
    np.testing.assert_array_equal(obs[13:25], data.features[t, 1].astype(np.float32))
    assert obs[12] == 0 and obs[25] == 0
    obs, *_ = env.step(Action.BUY_BOTH)
    value = env.shares[0] * data.close[env.t, 0] / env.equity
    assert obs[12] == pytest.approx(value, rel=1e-6) and 0.09 < obs[12] < 0.11
    assert 0.09 < obs[25] < 0.11


def test_decision_on_bar_t_fills_at_the_next_open_with_costs(data):
    config = EnvConfig(slippage_bps=2.0)
    env = TwoTickerEnv(data, config)
    env.reset(options={"episode": 1})
    for _ in range(5):
        env.step(Action.HOLD_BOTH)
    t = env.t
    equity = env.equity
    cash = env.cash
    env.step(Action.BUY_NVDA_HOLD_MSFT)
    qty = math.floor(0.10 * equity / data.close[t, 0])  # sized at t's close
    price = data.open[t + 1, 0] * (1 + 2e-4)  # filled at t+1's open
    fee = max(1.0, 0.005 * qty)
    assert env.shares == [qty, 0.0]
    assert env.cash == pytest.approx(cash - qty * price - fee, abs=1e-6)
    assert env.equity == pytest.approx(env.cash + qty * data.close[t + 1, 0], abs=1e-6)
    # Selling closes the whole position at the following open, minus slippage and commission.
    t = env.t
    cash = env.cash
    env.step(Action.SELL_BOTH)
    assert env.shares == [0.0, 0.0]
    assert env.cash == pytest.approx(
        cash + qty * data.open[t + 1, 0] * (1 - 2e-4) - max(1.0, 0.005 * qty), abs=1e-6
    )
    assert env.trades == 2


def test_minimum_commission_and_per_share_commission():
    config = EnvConfig()
    assert config.commission(10) == 1.0  # $1 minimum
    assert config.commission(1000) == 5.0  # $0.005 per share


def test_no_lookahead_future_bars_do_not_change_past_observations_or_fills():
    frame = make_frame(seed=5)
    full = build_pair(frame_to_bars(frame, PAIR, FIRST, LAST), PAIR, FIRST, LAST)
    # Change everything after minute 100 of the first session: observations up to 100 and
    # the fills of decisions up to 99 (at opens up to 100) stay the same.
    cut = int(full.ts[100])
    later = frame["ts"] > cut
    noisy = frame.copy()
    noise = np.random.default_rng(9).uniform(0.95, 1.05, int(later.sum()))
    for column in ("open", "high", "low", "close", "vwap"):
        noisy.loc[later, column] = noisy.loc[later, column] * noise
    changed = build_pair(frame_to_bars(noisy, PAIR, FIRST, LAST), PAIR, FIRST, LAST)
    np.testing.assert_array_equal(full.features[:101], changed.features[:101])
    assert np.abs(full.features[101:] - changed.features[101:]).max() > 1e-4
    runs = []
    for d in (full, changed):
        env = TwoTickerEnv(d)
        obs, _ = env.reset(options={"episode": 0})
        observations = [obs]
        cash = []
        for step in range(100):
            obs, *_ = env.step(Action.BUY_BOTH if step % 7 == 0 else Action.HOLD_BOTH)
            observations.append(obs)
            cash.append(env.cash)
        runs.append((np.array(observations), np.array(cash)))
    np.testing.assert_array_equal(runs[0][1], runs[1][1])  # identical fills
    np.testing.assert_array_equal(runs[0][0][:, :12], runs[1][0][:, :12])


def test_episode_is_a_session_and_ends_flat(data):
    env = TwoTickerEnv(data, sequential=True)
    for episode in range(data.episodes):
        _obs, info = env.reset()
        assert env.episode == episode
        lo, hi = int(data.bounds[episode]), int(data.bounds[episode + 1])
        assert info["row"] == lo
        session = data.sessions[episode]
        assert int(data.ts[lo]) == int(session.open.timestamp() * 1000)
        assert hi - lo == session.minutes
        steps = 0
        total_reward = 0.0
        done = False
        while not done:
            _obs, reward, done, truncated, info = env.step(Action.BUY_BOTH)
            total_reward += reward
            steps += 1
            assert not truncated
        assert steps == hi - lo - 1
        assert env.shares == [0.0, 0.0]  # flattened at the session's last close
        assert env.cash == env.equity
        assert total_reward == pytest.approx((env.equity - 100_000) / 100_000, abs=1e-9)
        with pytest.raises(RuntimeError):
            env.step(Action.HOLD_BOTH)


def test_buys_never_exceed_cash_and_random_resets_cover_sessions(data):
    env = TwoTickerEnv(data)
    env.reset(seed=3)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(12_000):
        _, _, done, _, _ = env.step(int(rng.integers(9)))
        assert env.cash >= -1e-6
        if done:
            seen.add(env.episode)
            env.reset()
    assert seen == set(range(data.episodes))
    # BUY_BOTH ten times in a row spends everything it can, never more.
    env.reset(options={"episode": 0})
    for _ in range(12):
        env.step(Action.BUY_BOTH)
    assert 0 <= env.cash < 0.2 * env.equity


def test_pair_data_drops_rows_before_both_symbols_have_a_price():
    frame = make_frame(seed=2)
    # NVDA's first three bars are missing and nothing is known before: the first episode
    # starts at minute 3 for both symbols.
    first_ts = sorted(frame["ts"].unique())[:3]
    frame = frame[~((frame["symbol"] == "NVDA") & frame["ts"].isin(first_ts))]
    data = build_pair(frame_to_bars(frame, PAIR, FIRST, LAST), PAIR, FIRST, LAST)
    assert int(data.ts[0]) == int(first_ts[-1]) + 60_000
    assert data.episodes == 3
    grid, values = batch_features(
        frame_to_bars(frame, PAIR, FIRST, LAST)["NVDA"].bars, sessions_between(FIRST, LAST)
    )
    np.testing.assert_array_equal(values[3 : 3 + 10], data.features[:10, 0])
    assert not grid.ready[:3].any()
