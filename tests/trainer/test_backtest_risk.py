"""The backtest applies the live trader's risk rules (its_common.risk, the one implementation):
strict limits trade less, and every denial is counted by its reason in the report."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from its_common.risk import RiskLimits
from its_trainer.__main__ import main
from its_trainer.backtest import BacktestResult, run_backtest
from its_trainer.bundle import Bundle, load_bundle
from its_trainer.data import PairData, build_pair, frame_to_bars
from its_trainer.env import EnvConfig
from its_trainer.simdata import simulator_bars
from its_trainer.train import TrainConfig, train

PAIR = ("NVDA", "MSFT")
TRAIN = (date(2025, 3, 3), date(2025, 3, 4))
TEST = (date(2025, 3, 5), date(2025, 3, 6))
TINY = TrainConfig(
    timesteps=128, seed=5, n_envs=2, n_steps=32, batch_size=32, n_epochs=1, lstm_hidden=8, hidden=8
)
# Nothing is ever denied: the gate must then change nothing.
OPEN = RiskLimits(
    min_confidence=0.0,
    cooldown_s=0.0,
    max_position_usd=1e12,
    max_gross_exposure_usd=1e12,
    max_daily_loss_usd=1e12,
    max_drawdown_pct=1.0,
    max_orders_per_minute=1_000_000,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Bundle, PairData, Path]:
    frame = simulator_bars(PAIR, TRAIN[0], TEST[1], seed=11, trades_per_day=8_000)
    root = tmp_path_factory.mktemp("risk")
    bars = root / "bars.parquet"
    frame.to_parquet(bars, index=False)
    data = build_pair(frame_to_bars(frame, PAIR, *TRAIN), PAIR, *TRAIN)
    result = train(data, TINY, EnvConfig(), root / "bundle", progress=None)
    test = build_pair(frame_to_bars(frame, PAIR, *TEST), PAIR, *TEST)
    return load_bundle(result.bundle), test, bars


def traded(result: BacktestResult) -> int:
    return result.policy.trades


def test_without_denials_the_gate_changes_nothing(setup):
    bundle, data, _ = setup
    free = run_backtest(bundle, data, limits=None)
    gated = run_backtest(bundle, data, limits=OPEN)
    assert free.risk is None and free.report()["risk"] is None
    assert traded(free) > 0, "the tiny policy should trade when nothing is denied"
    np.testing.assert_array_equal(free.equity, gated.equity)
    assert gated.actions == free.actions
    assert gated.risk is not None and gated.risk.denials == {} and gated.risk.halted is None
    outcomes = gated.risk.outcomes
    assert sum(outcomes.values()) == sum(free.actions.values())
    assert outcomes.get("hold", 0) == free.actions["HOLD_BOTH"]


def test_a_strict_confidence_threshold_trades_less_and_counts_the_denials(setup):
    bundle, data, _ = setup
    free = run_backtest(bundle, data, limits=OPEN)
    strict = run_backtest(bundle, data, limits=replace(OPEN, min_confidence=0.99))
    assert strict.actions == free.actions  # the policy decides the same; the rules deny
    assert traded(strict) < traded(free)
    assert strict.risk is not None
    not_hold = sum(free.actions.values()) - free.actions["HOLD_BOTH"]
    assert strict.risk.denials == {"confidence_below_threshold": not_hold}
    report = strict.report()["risk"]
    assert report["denials"]["confidence_below_threshold"] == not_hold
    assert report["limits"]["min_confidence"] == 0.99
    assert report["decisions"]["denied"] == not_hold


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cooldown_s": 3_600.0}, "cooldown"),
        ({"max_position_usd": 1_000.0}, "max_position"),
        ({"max_gross_exposure_usd": 1_000.0}, "max_gross_exposure"),
        ({"max_orders_per_minute": 1}, "rate_limit"),
    ],
)
def test_each_order_rule_denies_with_its_reason(setup, change, reason):
    bundle, data, _ = setup
    free = run_backtest(bundle, data, limits=OPEN)
    limited = run_backtest(bundle, data, limits=replace(OPEN, **change))
    assert limited.risk is not None
    assert limited.risk.denials.get(reason, 0) > 0, limited.risk.denials
    assert set(limited.risk.denials) == {reason}
    assert traded(limited) < traded(free)


def test_a_loss_limit_halts_for_the_rest_of_the_backtest(setup):
    bundle, data, _ = setup
    result = run_backtest(bundle, data, limits=replace(OPEN, max_daily_loss_usd=0.01))
    assert result.risk is not None and result.risk.halted is not None
    assert result.risk.halted["reason"] == "max_daily_loss"
    assert result.risk.denials["max_daily_loss"] == 1  # halts once, never resumes by itself
    assert result.risk.denials.get("halted", 0) > 0
    free = run_backtest(bundle, data, limits=OPEN)
    assert traded(result) < traded(free)


def test_flatten_before_close_and_the_closing_window(setup):
    bundle, data, _ = setup
    result = run_backtest(bundle, data, limits=replace(OPEN, flatten_before_close_min=60.0))
    assert result.risk is not None
    assert result.risk.denials.get("closing_window", 0) > 0  # no new buys in the last hour
    assert set(result.risk.denials) == {"closing_window"}


def test_cli_backtest_reports_denials_by_reason(setup, tmp_path, capsys):
    bundle, _, bars = setup
    args = ["backtest", str(bundle.path), "--from", str(TEST[0]), "--to", str(TEST[1]),
            "--data", str(bars), "--out", str(tmp_path / "bt"), "--no-plot"]  # fmt: skip
    assert main([*args, "--min-confidence", "0.99"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["risk"]["limits"]["min_confidence"] == 0.99
    assert report["risk"]["denials"]["confidence_below_threshold"] > 0
    saved = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert saved["risk"] == report["risk"]
    assert main([*args, "--no-risk"]) == 0
    assert json.loads(capsys.readouterr().out)["risk"] is None
