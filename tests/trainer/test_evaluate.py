"""``its-trainer evaluate``: walk-forward folds, per-fold and overall metrics against
buy-and-hold, a seeded bootstrap, and the model card written into the bundle."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from its_common.features import FEATURE_SPEC_HASH
from its_common.model.card import MODEL_CARD_FILE, MODEL_CARD_MARKDOWN, read_card
from its_trainer.__main__ import main
from its_trainer.data import DataError
from its_trainer.evaluate import Plan, bootstrap, chain

FIRST, LAST = date(2025, 3, 3), date(2025, 3, 12)  # 8 sessions
TINY_FLAGS = [
    "--timesteps", "128", "--seed", "3", "--n-envs", "2", "--n-steps", "32",
    "--batch-size", "32", "--epochs", "1", "--lstm-hidden", "8", "--hidden", "8",
]  # fmt: skip


def test_folds_train_on_n_test_on_the_next_m_and_roll_by_m() -> None:
    assert Plan(4, 2).folds(10) == [(0, 4, 6), (2, 6, 8), (4, 8, 10)]
    assert Plan(4, 2).folds(9) == [(0, 4, 6), (2, 6, 8)]  # an incomplete last fold is left out
    assert Plan(4, 2, max_folds=1).folds(10) == [(4, 8, 10)]
    with pytest.raises(DataError, match="no fold"):
        Plan(8, 3).folds(10)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    rng = np.random.default_rng(0)
    policy = rng.normal(0.002, 0.01, 40)
    bench = rng.normal(0.0, 0.01, 40)
    first = bootstrap(policy, bench, seed=11, resamples=500)
    assert first == bootstrap(policy, bench, seed=11, resamples=500)
    assert first != bootstrap(policy, bench, seed=12, resamples=500)
    for key in ("mean_session_return", "mean_session_excess"):
        item = first[key]
        assert item["low"] < item["mean"] < item["high"]
    assert first["mean_session_return"]["mean"] == pytest.approx(policy.mean())
    assert 0.0 <= first["p_beats_buy_and_hold"] <= 1.0
    # A policy always 1 % ahead of buy-and-hold: the interval of the excess is tight around it.
    sure = bootstrap(bench + 0.01, bench, seed=1, resamples=200)
    assert sure["mean_session_excess"]["low"] == pytest.approx(0.01)
    assert sure["p_beats_buy_and_hold"] == 1.0


def test_chained_curves_continue_where_the_previous_ended() -> None:
    curve, scales = chain([np.array([100.0, 110.0]), np.array([100.0, 90.0, 120.0])])
    assert curve.tolist() == pytest.approx([100.0, 110.0, 99.0, 132.0])
    assert scales == [1.0, 1.1]


def test_cli_walk_forward_report_and_model_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = tmp_path / "bars.parquet"
    assert main(["sim-bars", "--from", str(FIRST), "--to", str(LAST), "--out", str(bars),
                 "--trades-per-day", "4000", "--seed", "5", "--demo-pattern"]) == 0  # fmt: skip
    market = json.loads((tmp_path / "bars.parquet.market.json").read_text())
    assert market["demo_pattern"]["label"] == "demo market with a planted pattern"
    common = ["--from", str(FIRST), "--to", str(LAST), "--data", str(bars), *TINY_FLAGS]
    assert main(["train", *common, "--bundle-dir", str(tmp_path), "--name", "m",
                 "--checkpoint-every", "0", "--no-progress", "--demo"]) == 0  # fmt: skip
    bundle = tmp_path / "m"
    card = read_card(bundle)
    assert card is not None and card["evaluation"] is None and card["demo"] is True
    assert card["feature_spec"]["hash"] == FEATURE_SPEC_HASH
    assert card["data"]["from"] == str(FIRST) and card["data"]["market"] == market
    assert "planted pattern" in card["intended_use"]
    capsys.readouterr()

    out = tmp_path / "evaluation"
    assert main(["evaluate", *common, "--train-sessions", "4", "--test-sessions", "2",
                 "--out", str(out), "--bundle", str(bundle), "--no-risk",
                 "--resamples", "300"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "evaluation.json").read_text())
    assert printed["bootstrap"] == report["bootstrap"]
    folds = report["folds"]
    assert [(f["train"]["from"], f["test"]["from"], f["test"]["to"]) for f in folds] == [
        ("2025-03-03", "2025-03-07", "2025-03-10"),
        ("2025-03-05", "2025-03-11", "2025-03-12"),
    ]
    for fold in folds:
        assert fold["train"]["sessions"] == 4 and fold["test"]["sessions"] == 2
        assert fold["train"]["to"] < fold["test"]["from"]  # never tested on what it saw
        for side in ("policy", "buy_and_hold"):
            assert {"total_return", "sharpe", "max_drawdown", "turnover", "trades"} <= set(
                fold[side]
            )
        assert fold["buy_and_hold"]["turnover"] == pytest.approx(2.0, abs=0.05)
        assert (out / f"fold-{fold['fold']}" / "bundle.json").is_file()
    overall = report["overall"]
    assert overall["sessions"] == 4
    chained = (1 + folds[0]["policy"]["total_return"]) * (1 + folds[1]["policy"]["total_return"])
    assert overall["policy"]["total_return"] == pytest.approx(chained - 1)
    assert report["bootstrap"]["sessions"] == 4 and report["bootstrap"]["seed"] == 3
    assert report["market"] == market and report["risk_limits"] is None

    card = read_card(bundle)
    assert card is not None and card["evaluation"]["folds"] == folds
    assert card["evaluation"]["same_config_as_bundle"] is True
    text = (bundle / MODEL_CARD_MARKDOWN).read_text()
    assert "walk-forward" in text and "| all |" in text and "Bootstrap" in text
    assert (bundle / MODEL_CARD_FILE).is_file()


def test_cli_refuses_a_range_without_a_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = tmp_path / "bars.parquet"
    assert main(["sim-bars", "--from", "2025-03-03", "--to", "2025-03-05", "--out", str(bars),
                 "--trades-per-day", "3000"]) == 0  # fmt: skip
    code = main(["evaluate", "--from", "2025-03-03", "--to", "2025-03-05", "--data", str(bars),
                 "--train-sessions", "3", "--test-sessions", "1", *TINY_FLAGS])  # fmt: skip
    assert code == 2
    assert "no fold" in capsys.readouterr().err
