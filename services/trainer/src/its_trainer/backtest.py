"""Backtest: held-out sessions through the same environment, the policy driven as live inference
drives it (VecNormalize statistics frozen, LSTM state kept across bars, ``episode_start`` at each
session open, deterministic actions, confidence = the policy's probability of the chosen action),
every decision passed through the live trader's risk rules (:mod:`its_common.risk`, the one
implementation both use); compared with buy-and-hold of both symbols.

Two portfolios, as live: the policy observes the positions of a *shadow* environment in which
every action it chooses is executed (live inference's shadow portfolio, which never learns of
the trader's denials), while the reported account is a second environment stepped with the
actions the risk rules allow. Without risk rules (``limits=None``) the two are one.

Risk rules in simulated time. The decision on bar t is taken at its close (``ts + 1 min``): that
instant is ``market_now`` for regular hours, the closing window and cooldowns, and (as seconds)
the clock of the order rate limit. As in the trader, a decision that is not HOLD_BOTH must pass
the confidence threshold; then each leg's order (sized by :mod:`its_common.actions` exactly as
the environment sizes it) passes :func:`~its_common.risk.check_order` in symbol order against the
positions (updated by the legs already allowed), the bar's closes and the equity. A denied leg
is executed as HOLD: the environment steps with the allowed legs only. After each step the loss
limits are checked (:func:`~its_common.risk.check_portfolio`: the day's start equity is the
session's starting capital, the peak the highest equity so far); a breach halts trading for the
rest of the backtest (live, HALTED survives restarts until an explicit resume), and every later
order is denied as ``halted``. With ``flatten_before_close_min > 0``, the first decision inside
the closing window closes every position instead (flatten orders bypass the checks, as live).
The environment itself still closes every position at each session's last bar, halted or not.
Denials are counted by reason in the report (``risk.denials``)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from its_common import calendar
from its_common.actions import ACTION_NAMES, Leg, joint_action, legs, order_quantity
from its_common.features.spec import BAR_MS
from its_common.model.bundle import Bundle
from its_common.model.runner import PolicyRunner
from its_common.risk import (
    HALT_REASONS,
    Exposure,
    Halt,
    RiskLimits,
    RiskState,
    check_decision,
    check_order,
    check_portfolio,
    in_closing_window,
)
from its_trainer.data import PairData
from its_trainer.env import EnvConfig, TwoTickerEnv

MINUTES_PER_YEAR = 252 * 390
DEFAULT_LIMITS = RiskLimits()  # the live trader's defaults


@dataclass
class Metrics:
    total_return: float
    sharpe: float  # per-bar returns, annualised by sqrt(252 * 390)
    max_drawdown: float  # largest fall from a running peak, as a fraction
    trades: int
    final_equity: float
    turnover: float = 0.0  # value bought and sold / starting equity


@dataclass
class RiskSummary:
    """What the risk rules did: the limits, denials by reason, decisions by outcome (``hold``,
    ``orders``, ``denied``, ``no_order``, ``flatten``) and the halt, if one happened."""

    limits: RiskLimits
    denials: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    halted: dict[str, str] | None = None

    def report(self) -> dict[str, Any]:
        return {
            "limits": asdict(self.limits),
            "denials": dict(sorted(self.denials.items())),
            "denied": sum(self.denials.values()),
            "decisions": dict(sorted(self.outcomes.items())),
            "halted": self.halted,
        }


@dataclass(frozen=True, slots=True)
class _Intent:
    symbol: str
    side: str
    quantity: int


class RiskGate:
    """The trader's risk rules over the backtest's simulated portfolio (see the module doc)."""

    def __init__(self, limits: RiskLimits, symbols: tuple[str, str]) -> None:
        self.limits = limits
        self.symbols = symbols
        self.state = RiskState()
        self.denials: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.halted: dict[str, str] | None = None
        self.flattened_day: str | None = None
        self.day_start = 0.0
        self.peak = 0.0

    def start_session(self, equity: float) -> None:
        self.day_start = equity
        self.peak = max(self.peak, equity)

    def gate(self, action: int, confidence: float, env: TwoTickerEnv, market_now: datetime) -> int:
        """The action the trader would execute: denied legs become HOLD."""
        wanted = legs(action)
        shares = env.shares
        day = calendar.new_york_date(market_now).isoformat()
        if (
            in_closing_window(market_now, self.limits.flatten_before_close_min)
            and self.flattened_day != day
        ):
            self.flattened_day = day
            if any(q > 0 for q in shares):
                self.outcomes["flatten"] += 1
                return int(joint_action(*(Leg.SELL if q > 0 else Leg.HOLD for q in shares)))
        if all(leg is Leg.HOLD for leg in wanted):
            self.outcomes["hold"] += 1
            return action
        denial = check_decision(confidence, self.limits)
        if denial is not None:
            self.denials[denial.reason.value] += 1
            self.outcomes["denied"] += 1
            return int(joint_action(Leg.HOLD, Leg.HOLD))
        close = env.close_prices()
        prices = dict(zip(self.symbols, close, strict=True))
        positions = dict(zip(self.symbols, shares, strict=True))
        cap = env.config.max_position_fraction
        executed = list(wanted)
        mono_now = market_now.timestamp()
        sent = denied = 0
        for i, (symbol, leg) in enumerate(zip(self.symbols, wanted, strict=True)):
            quantity = order_quantity(leg, shares[i], env.equity, close[i], cap)
            if quantity == 0:
                continue
            intent = _Intent(symbol, "BUY" if quantity > 0 else "SELL", int(abs(quantity)))
            denial = check_order(
                intent,
                limits=self.limits,
                state=self.state,
                exposure=Exposure(positions, prices, env.equity),
                market_now=market_now,
                mono_now=mono_now,
            )
            if denial is not None:
                self.denials[denial.reason.value] += 1
                executed[i] = Leg.HOLD
                denied += 1
                continue
            self.state.record_order(intent, market_now, mono_now)
            positions[symbol] += quantity
            sent += 1
        outcome = "orders" if sent else "denied" if denied else "no_order"
        self.outcomes[outcome] += 1
        return int(joint_action(*executed))

    def after_step(self, equity: float, market_now: datetime) -> None:
        """The loss limits: a breach halts trading for the rest of the backtest."""
        self.peak = max(self.peak, equity)
        if self.state.halt.halted:
            return
        breach = check_portfolio(equity, self.day_start, self.peak, self.limits)
        if breach is not None and breach.reason in HALT_REASONS:
            self.denials[breach.reason.value] += 1
            self.state.halt = Halt(
                True, breach.reason.value, breach.detail, int(market_now.timestamp() * 1000)
            )
            self.halted = {
                "reason": breach.reason.value,
                "detail": breach.detail,
                "at": market_now.isoformat(),
            }

    def summary(self) -> RiskSummary:
        return RiskSummary(self.limits, dict(self.denials), dict(self.outcomes), self.halted)


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
    risk: RiskSummary | None = None  # None: run without the risk rules

    def report(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols),
            "from": self.first_day,
            "to": self.last_day,
            "sessions": self.sessions,
            "policy": asdict(self.policy),
            "buy_and_hold": asdict(self.buy_and_hold),
            "actions": self.actions,
            "risk": None if self.risk is None else self.risk.report(),
        }


def metrics(equity: NDArray[np.float64], trades: int, traded: float = 0.0) -> Metrics:
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
        turnover=float(traded / equity[0]),
    )


def buy_and_hold(data: PairData, config: EnvConfig) -> tuple[NDArray[np.float64], int, float]:
    """Half the capital in each symbol at the first possible fill (the first session's second
    bar open, as for the policy), held to the last bar's close and sold there; same costs.
    One value per point of the policy's curve (each session's first row, then every step);
    the number of fills and the value traded."""
    capital = config.initial_capital
    slip = config.slippage_bps / 10_000.0
    lo = int(data.bounds[0])
    shares = [0.0, 0.0]
    cash = capital
    traded = 0.0
    for i in (0, 1):
        price = data.open[lo + 1, i] * (1 + slip)
        qty = math.floor((capital / 2 - config.commission_min) / price)
        while qty > 0 and qty * price + config.commission(qty) > capital / 2:
            qty -= 1
        shares[i] = float(qty)
        cash -= qty * price + config.commission(qty)
        traded += qty * price
    curve = [capital]
    for e in range(data.episodes):
        start, end = int(data.bounds[e]), int(data.bounds[e + 1])
        rows = range(start + 1, end) if e == 0 else range(start, end)
        for row in rows:
            curve.append(cash + shares[0] * data.close[row, 0] + shares[1] * data.close[row, 1])
    last = int(data.bounds[-1]) - 1
    for i in (0, 1):
        cash += shares[i] * data.close[last, i] * (1 - slip) - config.commission(shares[i])
        traded += shares[i] * data.close[last, i] * (1 - slip)
    curve[-1] = cash
    return np.asarray(curve), 4, traded


def _decision_time(data: PairData, row: int) -> datetime:
    """When the decision on ``row`` is taken: the bar's close."""
    return datetime.fromtimestamp((int(data.ts[row]) + BAR_MS) / 1000, tz=UTC)


def run_backtest(
    bundle: Bundle,
    data: PairData,
    config: EnvConfig | None = None,
    limits: RiskLimits | None = DEFAULT_LIMITS,
) -> BacktestResult:
    """``limits``: the trader's risk rules (default: the trader's defaults); None = no rules."""
    if tuple(data.symbols) != bundle.symbols:
        raise ValueError(f"data is for {data.symbols}, the bundle for {bundle.symbols}")
    config = config or bundle.env_config()
    # The policy's view: every action it chooses is executed (live inference's shadow
    # portfolio, which never sees the trader's denials). Without risk rules it is also the
    # account; with them the account is a second environment stepped with the allowed legs.
    shadow = TwoTickerEnv(data, config, sequential=True)
    gate = None if limits is None else RiskGate(limits, data.symbols)
    account = shadow if gate is None else TwoTickerEnv(data, config, sequential=True)
    capital = config.initial_capital
    shadow_capital = capital
    curve = [capital]
    session_starts = [0]
    trades = 0
    traded = 0.0
    counts = np.zeros(9, dtype=np.int64)
    for episode in range(data.episodes):
        obs, _ = shadow.reset(options={"episode": episode, "capital": shadow_capital})
        if gate is not None:
            account.reset(options={"episode": episode, "capital": capital})
            gate.start_session(capital)
        # The runtime policy, driven as live inference drives it (state zeroed at each session).
        runner = PolicyRunner(bundle)
        start = True
        done = False
        if episode:
            session_starts.append(len(curve))
            curve.append(capital)
        while not done:
            choice = runner.step(obs, session_start=start)
            start = False
            chosen = choice.action
            counts[chosen] += 1
            obs, _, done, _, info = shadow.step(chosen)
            if gate is not None:
                now = _decision_time(data, account.t)
                executed = gate.gate(chosen, float(choice.probabilities[chosen]), account, now)
                _, _, _, _, info = account.step(executed)
                gate.after_step(account.equity, _decision_time(data, account.t))
            curve.append(float(info["equity"]))
        trades += account.trades
        traded += account.portfolio.traded
        capital = account.equity
        shadow_capital = shadow.equity
    equity = np.asarray(curve)
    bench, bench_trades, bench_traded = buy_and_hold(data, config)
    # The benchmark has one point per row; the policy's curve repeats each session's last equity
    # as the next session's first point, which the benchmark marks at that row's close.
    assert len(bench) == len(equity), (len(bench), len(equity))
    return BacktestResult(
        symbols=data.symbols,
        first_day=data.first_day.isoformat(),
        last_day=data.last_day.isoformat(),
        sessions=data.episodes,
        policy=metrics(equity, trades, traded),
        buy_and_hold=metrics(bench, bench_trades, bench_traded),
        actions={ACTION_NAMES[i]: int(c) for i, c in enumerate(counts)},
        equity=equity,
        benchmark=bench,
        session_starts=session_starts,
        risk=None if gate is None else gate.summary(),
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
