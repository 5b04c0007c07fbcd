"""Walk-forward evaluation of the training pipeline: honest, out-of-sample figures.

The sessions of the range are cut into folds: fold ``i`` trains a fresh model (the same
:class:`~its_trainer.train.TrainConfig`, seed and costs) on sessions ``i*M .. i*M+N-1`` and
backtests it (:func:`~its_trainer.backtest.run_backtest`, the live trader's risk rules unless
turned off) on the next ``M`` sessions, which no model of that fold has seen; then the window
rolls by ``M``. Each fold's test sessions follow the previous fold's, so the test periods chain
into one out-of-sample record.

Reported per fold and overall (the folds' test equity curves chained), for the policy and for
buy-and-hold of both symbols (:func:`~its_trainer.backtest.buy_and_hold`, bought again at each
fold's start): total return, Sharpe (per-bar returns annualised), max drawdown, turnover (value
bought and sold / starting equity) and fills. Uncertainty: a seeded bootstrap over the test
sessions (resampled with replacement) of the mean session return and of the mean session return
minus buy-and-hold's (close to close), with percentile intervals and the share of resamples
where the policy beats buy-and-hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from its_common.model.bundle import load_bundle
from its_common.risk import RiskLimits
from its_trainer.backtest import BacktestResult, Metrics, metrics, run_backtest
from its_trainer.data import DataError, PairData
from its_trainer.env import EnvConfig
from its_trainer.train import TrainConfig, train

F64 = NDArray[np.float64]
DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Plan:
    """Train on ``train_sessions``, test on the next ``test_sessions``, roll by
    ``test_sessions``; at most ``max_folds`` folds (the latest ones; None = every fold)."""

    train_sessions: int
    test_sessions: int
    max_folds: int | None = None

    def folds(self, episodes: int) -> list[tuple[int, int, int]]:
        """(train start, test start, test stop) episode indices of each fold."""
        if self.train_sessions < 1 or self.test_sessions < 1:
            raise DataError("train and test sessions must be at least 1")
        out = []
        start = 0
        while start + self.train_sessions + self.test_sessions <= episodes:
            out.append(
                (
                    start,
                    start + self.train_sessions,
                    start + self.train_sessions + self.test_sessions,
                )
            )
            start += self.test_sessions
        if not out:
            raise DataError(
                f"{episodes} sessions hold no fold of {self.train_sessions} training and "
                f"{self.test_sessions} test sessions"
            )
        return out[-self.max_folds :] if self.max_folds else out


@dataclass
class Fold:
    index: int
    train_data: PairData
    test_data: PairData
    bundle: Path
    result: BacktestResult
    train_seconds: float

    def report(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train": _span(self.train_data),
            "test": _span(self.test_data),
            "bundle": str(self.bundle),
            "train_seconds": round(self.train_seconds, 1),
            "policy": asdict(self.result.policy),
            "buy_and_hold": asdict(self.result.buy_and_hold),
            "actions": self.result.actions,
            "risk": None if self.result.risk is None else self.result.risk.report(),
        }


def _span(data: PairData) -> dict[str, Any]:
    return {
        "from": data.first_day.isoformat(),
        "to": data.last_day.isoformat(),
        "sessions": data.episodes,
    }


def train_and_test(
    train_data: PairData,
    test_data: PairData,
    config: TrainConfig,
    env_config: EnvConfig,
    bundle_dir: Path,
    limits: RiskLimits | None,
    *,
    data_source: str = "",
    market: dict[str, Any] | None = None,
) -> tuple[Path, BacktestResult, float]:
    """One fold: a model trained on ``train_data`` into ``bundle_dir``, backtested on
    ``test_data`` (the runtime bundle, as inference loads it). Returns (bundle, result,
    training seconds)."""
    started = time.monotonic()
    trained = train(
        train_data, config, env_config, bundle_dir, data_source=data_source, market=market,
        progress=None,
    )  # fmt: skip
    seconds = time.monotonic() - started
    result = run_backtest(load_bundle(trained.bundle), test_data, env_config, limits)
    return trained.bundle, result, seconds


def session_returns(result: BacktestResult) -> tuple[F64, F64]:
    """Close-to-close returns of each test session, for the policy and buy-and-hold (the
    policy is flat overnight; buy-and-hold carries the overnight move)."""
    n = len(result.equity)
    ends = [s - 1 for s in result.session_starts[1:]] + [n - 1]
    before = [0, *ends[:-1]]
    policy = result.equity[ends] / result.equity[before] - 1.0
    bench = result.benchmark[ends] / result.benchmark[before] - 1.0
    return np.asarray(policy, dtype=np.float64), np.asarray(bench, dtype=np.float64)


def chain(curves: list[F64]) -> tuple[F64, list[float]]:
    """Equity curves of consecutive periods, each rescaled to start where the previous ended;
    the scale of each (to convert its traded value)."""
    out = [curves[0]]
    scales = [1.0]
    for curve in curves[1:]:
        scale = float(out[-1][-1] / curve[0])
        out.append(curve[1:] * scale)
        scales.append(scale)
    return np.concatenate(out), scales


def bootstrap(
    policy: F64, bench: F64, seed: int, resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any]:
    """Percentile intervals of the mean session return and the mean excess over buy-and-hold,
    resampling the sessions with replacement (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    n = len(policy)
    index = rng.integers(0, n, (resamples, n))
    excess = policy - bench
    tail = (1.0 - CONFIDENCE) / 2 * 100
    out: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE,
                           "sessions": n}  # fmt: skip
    for name, values in (("mean_session_return", policy), ("mean_session_excess", excess)):
        means = values[index].mean(axis=1)
        low, high = np.percentile(means, [tail, 100 - tail])
        out[name] = {"mean": float(values.mean()), "low": float(low), "high": float(high)}
    out["p_beats_buy_and_hold"] = float((excess[index].mean(axis=1) > 0).mean())
    return out


def overall(folds: list[Fold]) -> dict[str, Any]:
    """The folds' test periods as one record (curves chained)."""
    out: dict[str, Any] = {}
    for key in ("policy", "buy_and_hold"):
        if key == "policy":
            curves = [f.result.equity for f in folds]
        else:
            curves = [f.result.benchmark for f in folds]
        chained, scales = chain(curves)
        parts: list[Metrics] = [getattr(f.result, key) for f in folds]
        traded = sum(m.turnover * c[0] * s for m, c, s in zip(parts, curves, scales, strict=True))
        out[key] = asdict(metrics(chained, sum(m.trades for m in parts), traded))
    sessions = sum(f.test_data.episodes for f in folds)
    out["sessions"] = sessions
    out["turnover_per_session"] = out["policy"]["turnover"] / max(sessions, 1)
    return out


def walk_forward(
    data: PairData,
    plan: Plan,
    config: TrainConfig,
    env_config: EnvConfig,
    out_dir: Path,
    limits: RiskLimits | None,
    *,
    data_source: str = "",
    market: dict[str, Any] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every fold (bundles in ``out_dir/fold-<i>``) and return the report (also written
    to ``out_dir/evaluation.json``)."""
    folds: list[Fold] = []
    for i, (lo, mid, hi) in enumerate(plan.folds(data.episodes)):
        train_data, test_data = data.episodes_slice(lo, mid), data.episodes_slice(mid, hi)
        if log:
            log(
                f"fold {i}: training on {train_data.first_day}..{train_data.last_day}, "
                f"testing on {test_data.first_day}..{test_data.last_day}"
            )
        bundle, result, seconds = train_and_test(
            train_data, test_data, config, env_config, out_dir / f"fold-{i}", limits,
            data_source=data_source, market=market,
        )  # fmt: skip
        folds.append(Fold(i, train_data, test_data, bundle, result, seconds))
    policy = np.concatenate([session_returns(f.result)[0] for f in folds])
    bench = np.concatenate([session_returns(f.result)[1] for f in folds])
    report: dict[str, Any] = {
        "symbols": list(data.symbols),
        "from": data.first_day.isoformat(),
        "to": data.last_day.isoformat(),
        "data_source": data_source,
        "market": market,
        "plan": asdict(plan),
        "seed": config.seed,
        "train_config": config.__dict__,
        "env_config": env_config.as_dict(),
        "risk_limits": None if limits is None else asdict(limits),
        "folds": [f.report() for f in folds],
        "overall": overall(folds),
        "bootstrap": bootstrap(policy, bench, config.seed, resamples),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
