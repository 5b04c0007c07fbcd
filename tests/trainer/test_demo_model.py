"""The committed demo bundle (models/demo) on the demo market: labelled as trained on a planted
pattern, and trading at the trader's production confidence threshold (0.6) on sessions it never
saw (its training took 2025-03-03..14, its walk-forward evaluation ran to 2025-03-28)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from its_common.model.bundle import load_bundle
from its_common.model.card import read_card
from its_common.model.runner import PolicyRunner
from its_common.risk import RiskLimits
from its_common.simmarket import pattern
from its_trainer.backtest import run_backtest
from its_trainer.data import build_pair, frame_to_bars
from its_trainer.env import TwoTickerEnv
from its_trainer.simdata import simulator_bars

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
HELD_OUT = (date(2025, 3, 31), date(2025, 4, 2))  # 3 sessions after everything it was fit on
HOLD_BOTH = 4


def test_the_demo_bundle_says_what_it_was_trained_on() -> None:
    bundle = load_bundle(DEMO)
    assert bundle.demo and bundle.demo_market == pattern.DEMO_PATTERN_LABEL
    planted = bundle.meta["data"]["market"]["demo_pattern"]
    assert (planted["name"], planted["version"]) == (
        pattern.DEMO_PATTERN_NAME,
        pattern.DEMO_PATTERN_VERSION,
    )
    card = read_card(DEMO)
    assert card is not None and card["demo"] and "planted pattern" in card["intended_use"]
    evaluation = card["evaluation"]
    assert evaluation["same_config_as_bundle"] is True
    assert len(evaluation["folds"]) == 2 and evaluation["risk_limits"]["min_confidence"] == 0.6


def test_the_demo_model_trades_at_the_production_threshold_on_the_demo_market() -> None:
    bundle = load_bundle(DEMO)
    frame = simulator_bars(bundle.symbols, *HELD_OUT, 42, 20_000, demo_pattern=True)
    data = build_pair(frame_to_bars(frame, bundle.symbols, *HELD_OUT), bundle.symbols, *HELD_OUT)
    # The policy's confidence (its probability of the action it chooses), as inference reports it.
    env = TwoTickerEnv(data, bundle.env_config(), sequential=True)
    confident = 0
    for episode in range(data.episodes):
        obs, _ = env.reset(options={"episode": episode})
        runner = PolicyRunner(bundle)
        start, done = True, False
        while not done:
            choice = runner.step(obs, session_start=start)
            start = False
            confidence = choice.confidence
            if choice.action != HOLD_BOTH and confidence >= 0.6:
                confident += 1
            obs, _, done, _, _ = env.step(choice.action)
    # Measured: 821 of the 1,163 decisions other than HOLD_BOTH on these 3 sessions.
    assert confident >= 400, confident
    # Through the live trader's default risk rules (threshold 0.6): orders pass.
    limits = RiskLimits()
    assert limits.min_confidence == 0.6
    result = run_backtest(bundle, data, limits=limits)
    assert result.risk is not None
    # Measured: 191 fills, +6.5 % against buy-and-hold's +3.0 %, no halt.
    assert result.risk.outcomes.get("orders", 0) >= 30, result.risk.report()
    assert result.policy.trades >= 60 and result.risk.halted is None
    assert result.policy.total_return > result.buy_and_hold.total_return
