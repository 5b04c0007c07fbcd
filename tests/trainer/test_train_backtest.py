"""A tiny training run end to end: bundle written, reloaded, backtested; reproducible; the CLI
with a file and with the database."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import torch

from its_common.actions import action_map
from its_common.db.migrate import apply_migrations
from its_common.features import FEATURE_SPEC_HASH
from its_trainer.__main__ import main
from its_trainer.backtest import run_backtest, write_report
from its_trainer.bundle import BundleError, load_bundle, load_sb3
from its_trainer.data import PairData, build_pair, frame_to_bars, read_database
from its_trainer.env import EnvConfig
from its_trainer.simdata import simulator_bars
from its_trainer.train import TrainConfig, train

PAIR = ("NVDA", "MSFT")
TRAIN = (date(2025, 3, 3), date(2025, 3, 5))
TEST = (date(2025, 3, 6), date(2025, 3, 7))
TINY = TrainConfig(
    timesteps=256, seed=7, n_envs=2, n_steps=64, batch_size=64, n_epochs=1, lstm_hidden=8, hidden=8
)


@pytest.fixture(scope="module")
def frame():
    return simulator_bars(PAIR, TRAIN[0], TEST[1], seed=3, trades_per_day=10_000)


@pytest.fixture(scope="module")
def bars_file(frame, tmp_path_factory):
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    frame.to_parquet(path, index=False)
    return path


def pair(frame: pd.DataFrame, span: tuple[date, date]) -> PairData:
    return build_pair(frame_to_bars(frame, PAIR, *span), PAIR, *span)


def test_train_writes_a_bundle_that_reloads_and_backtests(frame, tmp_path):
    data = pair(frame, TRAIN)
    result = train(data, TINY, EnvConfig(), tmp_path / "b1", data_source="test", progress=None)
    meta = json.loads((result.bundle / "bundle.json").read_text())
    assert meta["feature_spec_hash"] == FEATURE_SPEC_HASH
    assert meta["observation"]["size"] == 26 and len(meta["observation"]["layout"]) == 26
    assert meta["action_map"] == action_map()
    assert meta["symbols"] == list(PAIR) and meta["seed"] == 7
    assert meta["data"]["from"] == "2025-03-03" and meta["data"]["to"] == "2025-03-05"
    assert meta["data"]["sessions"] == 3
    assert meta["metrics"]["timesteps"] >= 256 and meta["metrics"]["steps_per_second"] > 0
    assert {"torch", "sb3-contrib", "gymnasium", "numpy"} <= set(meta["libraries"])
    assert (result.bundle / "policy.zip").is_file() and (
        result.bundle / "vecnormalize.pkl"
    ).is_file()
    assert meta["format"] == 2 and meta["network"]["lstm_hidden_size"] == 8
    assert (result.bundle / "actor.pt").is_file() and (
        result.bundle / "normalization.json"
    ).is_file()

    bundle = load_bundle(result.bundle)
    rms: Any = load_sb3(result.bundle).vecnormalize.obs_rms
    assert rms.count > 256  # statistics learned in training
    assert np.array_equal(bundle.normalizer.mean, rms.mean)
    assert np.array_equal(bundle.normalizer.var, rms.var)
    test = pair(frame, TEST)
    report = run_backtest(bundle, test)
    steps = int(test.bounds[-1]) - test.episodes
    assert sum(report.actions.values()) == steps
    assert len(report.equity) == len(report.benchmark) == steps + test.episodes
    assert report.equity[0] == report.benchmark[0] == 100_000
    assert report.policy.final_equity == pytest.approx(report.equity[-1])
    assert -1 < report.policy.total_return < 1 and 0 <= report.policy.max_drawdown < 1
    assert report.buy_and_hold.trades == 4
    paths = write_report(report, tmp_path / "bt")
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    saved = json.loads(paths["report"].read_text())
    assert saved["policy"]["trades"] == report.policy.trades

    # Same seed, same data: the same policy weights.
    again = train(data, TINY, EnvConfig(), tmp_path / "b2", progress=None)
    first = load_sb3(result.bundle).model.policy.state_dict()
    second = load_sb3(again.bundle).model.policy.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    first = load_bundle(result.bundle).actor.state_dict()
    second = load_bundle(again.bundle).actor.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(FileExistsError):
        train(data, TINY, EnvConfig(), tmp_path / "b2", progress=None)


def test_a_bundle_from_another_feature_spec_is_refused(frame, tmp_path):
    data = pair(frame, TRAIN)
    config = TrainConfig(**{**TINY.__dict__, "timesteps": 128})
    result = train(data, config, EnvConfig(), tmp_path / "b", progress=None)
    meta_path = result.bundle / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_spec_hash"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="feature spec"):
        load_bundle(result.bundle)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_cli_train_and_backtest_from_a_file(bars_file, tmp_path, capsys):
    code = main([
        "train", "--from", "2025-03-03", "--to", "2025-03-05", "--data", str(bars_file),
        "--timesteps", "128", "--seed", "1", "--n-envs", "2", "--n-steps", "32",
        "--batch-size", "32", "--epochs", "1", "--lstm-hidden", "8", "--hidden", "8",
        "--bundle-dir", str(tmp_path), "--name", "cli", "--checkpoint-every", "64",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["bundle"] == str(tmp_path / "cli")
    assert summary["checkpoints"] and "100.0%" in out.err  # checkpoints and progress
    assert (tmp_path / "cli" / "checkpoints" / f"{summary['checkpoints'][0]}.zip").is_file()
    code = main(["backtest", str(tmp_path / "cli"), "--from", "2025-03-06", "--to", "2025-03-07",
                 "--data", str(bars_file), "--out", str(tmp_path / "bt")])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["sessions"] == 2 and (tmp_path / "bt" / "equity.png").is_file()
    assert set(report) >= {"policy", "buy_and_hold", "actions", "files"}


def test_cli_reports_bad_configuration(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ITS_TRAINER_PAIR", "NVDA")
    assert main(["train", "--from", "2025-03-03", "--to", "2025-03-05"]) == 2
    assert "ITS_TRAINER_PAIR" in capsys.readouterr().err
    monkeypatch.delenv("ITS_TRAINER_PAIR")
    code = main(["train", "--from", "2025-03-05", "--to", "2025-03-03", "--data", "x.csv"])
    assert code == 2 and "before" in capsys.readouterr().err
    code = main(["train", "--from", "2025-03-03", "--to", "2025-03-05",
                 "--data", str(tmp_path / "missing.parquet")])  # fmt: skip
    assert code == 2 and "no such bars file" in capsys.readouterr().err


def test_database_bars_equal_the_file_bars(frame, database_url, monkeypatch, tmp_path, capsys):
    with psycopg.connect(database_url, autocommit=True) as conn:
        apply_migrations(conn)
        rows = [
            (r.symbol, int(r.ts), r.open, r.high, r.low, r.close, r.volume, r.vwap)
            for r in frame.itertuples()
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, vwap, source)"
                " VALUES (%s, to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, 'test')",
                rows,
            )
    from_db = read_database({"conninfo": database_url}, PAIR, *TEST)
    from_file = frame_to_bars(frame, PAIR, *TEST)
    for symbol in PAIR:
        a, b = from_db[symbol], from_file[symbol]
        np.testing.assert_array_equal(a.bars.ts, b.bars.ts)
        np.testing.assert_allclose(a.bars.close, b.bars.close, rtol=0, atol=0)
        np.testing.assert_allclose(a.bars.vwap, b.bars.vwap, rtol=1e-15)
        assert a.last_close == b.last_close is not None
    # The CLI reads DATABASE_URL when no file is given.
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = main([
        "train", "--from", "2025-03-03", "--to", "2025-03-04", "--timesteps", "64",
        "--n-envs", "1", "--n-steps", "32", "--batch-size", "32", "--epochs", "1",
        "--lstm-hidden", "8", "--hidden", "8", "--bundle-dir", str(tmp_path), "--name", "db",
        "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    meta = json.loads((Path(tmp_path) / "db" / "bundle.json").read_text())
    assert meta["data"]["source"].startswith("database:") and meta["data"]["sessions"] == 2
