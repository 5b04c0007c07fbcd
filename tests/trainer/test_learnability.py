"""The training pipeline learns what is learnable.

The same pipeline (features, environment, RecurrentPPO, bundle, runtime policy, backtest) is
trained twice with the same seed and configuration on the same simulated market (same seed, same
days): once with the demo market's planted pattern (its_common.simmarket.pattern: every full
hour from 10:00 each symbol rises 0.8 % in 20 minutes, then falls back over 40), once without it.
Both models are backtested on held-out sessions of the pattern market. Only the first can know
the pattern, so it must earn clearly more there; a pipeline that does not learn (broken
rewards, observations, normalization or bundle export) makes the two alike and fails this.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from its_trainer.data import PairData, build_pair, frame_to_bars
from its_trainer.env import EnvConfig
from its_trainer.evaluate import train_and_test
from its_trainer.simdata import simulator_bars
from its_trainer.train import TrainConfig

PAIR = ("NVDA", "MSFT")
TRAIN = (date(2025, 3, 3), date(2025, 3, 12))  # 8 sessions
TEST = (date(2025, 3, 13), date(2025, 3, 19))  # 5 held-out sessions
SMALL = TrainConfig(
    timesteps=12_288, seed=4, n_envs=4, n_steps=256, batch_size=256, n_epochs=4,
    learning_rate=1e-3, lstm_hidden=16, hidden=32,
)  # fmt: skip
# Measured with this configuration (seed 4): pattern model +6.6 %, control -5.6 % on the 5
# held-out sessions (buy-and-hold -3.1 %); over seeds 1-5 the pattern model led by 5-12 points.
LEAD = 0.03  # the pattern model's return over the control's
GAIN = 0.01  # the pattern model's own return


def pair(frame: pd.DataFrame, span: tuple[date, date]) -> PairData:
    return build_pair(frame_to_bars(frame, PAIR, *span), PAIR, *span)


def test_a_planted_pattern_is_learnt(tmp_path: Path) -> None:
    with_pattern = simulator_bars(PAIR, TRAIN[0], TEST[1], 9, 4_000, demo_pattern=True)
    without = simulator_bars(PAIR, *TRAIN, 9, 4_000, demo_pattern=False)
    held_out = pair(with_pattern, TEST)
    results = {}
    for name, frame in (("pattern", with_pattern), ("control", without)):
        _, result, _ = train_and_test(
            pair(frame, TRAIN), held_out, SMALL, EnvConfig(), tmp_path / name, limits=None
        )
        results[name] = result.policy.total_return
    assert results["pattern"] > results["control"] + LEAD, results
    assert results["pattern"] > GAIN, results
