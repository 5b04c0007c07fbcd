"""Backtest: held-out sessions through the same environment, the policy driven as live inference
drives it (VecNormalize statistics frozen, LSTM state kept across bars, ``episode_start`` at each
session open, deterministic actions); compared with buy-and-hold of both symbols."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from its_common.actions import ACTION_NAMES
from its_trainer.bundle import Bundle
from its_trainer.data import PairData
from its_trainer.env import EnvConfig, TwoTickerEnv

MINUTES_PER_YEAR = 252 * 390


@dataclass
class Metrics:
    total_return: float
    sharpe: float  # per-bar returns, annualised by sqrt(252 * 390)
    max_drawdown: float  # largest fall from a running peak, as a fraction
    trades: int
    final_equity: float


@dataclass
class BacktestResult:
    symbols: tuple[str, str]
    first_day: str
    last_day: str
    sessions: int
    policy: Metrics
    buy_and_hold: Metrics
    actions: dict[str, int]
    equity: NDArray[np.float64] = field(repr=False)
    benchmark: NDArray[np.float64] = field(repr=False)
    session_starts: list[int] = field(repr=False, default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols),
            "from": self.first_day,
            "to": self.last_day,
            "sessions": self.sessions,
            "policy": asdict(self.policy),
            "buy_and_hold": asdict(self.buy_and_hold),
            "actions": self.actions,
        }


def metrics(equity: NDArray[np.float64], trades: int) -> Metrics:
    returns = np.diff(equity) / equity[:-1]
    std = float(returns.std()) if len(returns) > 1 else 0.0
    sharpe = float(returns.mean() / std * math.sqrt(MINUTES_PER_YEAR)) if std > 0 else 0.0
    peak = np.maximum.accumulate(equity)
    return Metrics(
        total_return=float(equity[-1] / equity[0] - 1.0),
        sharpe=sharpe,
        max_drawdown=float(np.max(1.0 - equity / peak)),
        trades=trades,
        final_equity=float(equity[-1]),
    )


def buy_and_hold(data: PairData, config: EnvConfig) -> tuple[NDArray[np.float64], int]:
    """Half the capital in each symbol at the first possible fill (the first session's second
    bar open, as for the policy), held to the last bar's close and sold there; same costs.
    One value per point of the policy's curve (each session's first row, then every step)."""
    capital = config.initial_capital
    slip = config.slippage_bps / 10_000.0
    lo = int(data.bounds[0])
    shares = [0.0, 0.0]
    cash = capital
    for i in (0, 1):
        price = data.open[lo + 1, i] * (1 + slip)
        qty = math.floor((capital / 2 - config.commission_min) / price)
        while qty > 0 and qty * price + config.commission(qty) > capital / 2:
            qty -= 1
        shares[i] = float(qty)
        cash -= qty * price + config.commission(qty)
    curve = [capital]
    for e in range(data.episodes):
        start, end = int(data.bounds[e]), int(data.bounds[e + 1])
        rows = range(start + 1, end) if e == 0 else range(start, end)
        for row in rows:
            curve.append(cash + shares[0] * data.close[row, 0] + shares[1] * data.close[row, 1])
    last = int(data.bounds[-1]) - 1
    for i in (0, 1):
        cash += shares[i] * data.close[last, i] * (1 - slip) - config.commission(shares[i])
    curve[-1] = cash
    return np.asarray(curve), 4


def run_backtest(bundle: Bundle, data: PairData, config: EnvConfig | None = None) -> BacktestResult:
    if tuple(data.symbols) != bundle.symbols:
        raise ValueError(f"data is for {data.symbols}, the bundle for {bundle.symbols}")
    config = config or bundle.env_config()
    env = TwoTickerEnv(data, config, sequential=True)
    capital = config.initial_capital
    curve = [capital]
    session_starts = [0]
    trades = 0
    counts = np.zeros(9, dtype=np.int64)
    for episode in range(data.episodes):
        obs, _ = env.reset(options={"episode": episode, "capital": capital})
        state: tuple[NDArray[np.float32], ...] | None = None
        start = np.array([True])
        done = False
        if episode:
            session_starts.append(len(curve))
            curve.append(capital)
        while not done:
            action, state = bundle.model.predict(
                bundle.normalize(obs[None, :]), state=state, episode_start=start, deterministic=True
            )
            start = np.array([False])
            chosen = int(action[0])
            counts[chosen] += 1
            obs, _, done, _, info = env.step(chosen)
            curve.append(float(info["equity"]))
        trades += env.trades
        capital = env.equity
    equity = np.asarray(curve)
    bench, bench_trades = buy_and_hold(data, config)
    # The benchmark has one point per row; the policy's curve repeats each session's last equity
    # as the next session's first point, which the benchmark marks at that row's close.
    assert len(bench) == len(equity), (len(bench), len(equity))
    return BacktestResult(
        symbols=data.symbols,
        first_day=data.first_day.isoformat(),
        last_day=data.last_day.isoformat(),
        sessions=data.episodes,
        policy=metrics(equity, trades),
        buy_and_hold=metrics(bench, bench_trades),
        actions={ACTION_NAMES[i]: int(c) for i, c in enumerate(counts)},
        equity=equity,
        benchmark=bench,
        session_starts=session_starts,
    )


def write_report(result: BacktestResult, out_dir: Path, plot: bool = True) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "backtest.json"}
    (paths["report"]).write_text(json.dumps(result.report(), indent=2) + "\n")
    np.savetxt(
        out_dir / "equity.csv",
        np.column_stack([result.equity, result.benchmark]),
        delimiter=",",
        header="policy,buy_and_hold",
        comments="",
    )
    paths["csv"] = out_dir / "equity.csv"
    if plot:
        paths["png"] = plot_equity(result, out_dir / "equity.png")
    return paths


def plot_equity(result: BacktestResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    x = np.arange(len(result.equity))
    ax.plot(x, result.equity, label=f"policy ({result.policy.total_return:+.2%})", lw=1.2)
    ax.plot(
        x, result.benchmark, label=f"buy & hold ({result.buy_and_hold.total_return:+.2%})", lw=1.0
    )
    for start in result.session_starts[1:]:
        ax.axvline(start, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel("bar (sessions separated by grey lines)")
    ax.set_ylabel("equity ($)")
    ax.set_title(
        f"{result.symbols[0]}+{result.symbols[1]} {result.first_day}..{result.last_day}: "
        f"Sharpe {result.policy.sharpe:.2f} vs {result.buy_and_hold.sharpe:.2f}, "
        f"max DD {result.policy.max_drawdown:.2%}, {result.policy.trades} trades"
    )
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
