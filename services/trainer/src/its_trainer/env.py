"""The two-ticker trading environment (gymnasium).

Episode: one trading session of :class:`~its_trainer.data.PairData` (rows ``lo .. hi-1``).
At row t the agent sees the observation built from bar t (known at t's close) and chooses one of
the nine joint actions (:mod:`its_common.actions`). Orders are sized at t's close and fill at
bar t+1's **open** (never on the bar the decision saw), buys at ``open * (1 + slippage)``, sells
at ``open * (1 - slippage)``, each order paying ``max(min_commission, per_share * shares)``.
Sells fill before buys; a buy the cash cannot pay for is cut to what it can. After the fill the
portfolio is marked at t+1's close. The last row of the session closes every position at its
close (with slippage and commission): no position is held overnight, and the episode ends.

Reward of a step: ``(equity_{t+1} - equity_t) / initial_capital - risk_penalty *
gross_exposure_{t+1}``, where equity is marked at closes net of every commission and slippage
paid, and gross exposure is the sum of |position value| / equity after the step
(``risk_penalty`` defaults to 0).

Observation (26, float32): the first symbol's 12 features, its position, the second symbol's 12
features, its position; a position is the signed value of the shares held divided by equity
(at t's close).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from its_common.actions import N_ACTIONS, legs, order_quantity
from its_common.features import FEATURE_NAMES, N_FEATURES
from its_trainer.data import PairData

OBS_SIZE = 2 * (N_FEATURES + 1)


def observation_layout(symbols: tuple[str, str]) -> list[str]:
    """Names of the 26 observation entries, in order (``NVDA.returns``, ..., ``MSFT.position``)."""
    names: list[str] = []
    for symbol in symbols:
        names += [f"{symbol}.{name}" for name in FEATURE_NAMES]
        names.append(f"{symbol}.position")
    return names


@dataclass(frozen=True)
class EnvConfig:
    initial_capital: float = 100_000.0
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    slippage_bps: float = 1.0
    max_position_fraction: float | None = None  # cap on one position's value / equity
    risk_penalty: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def commission(self, shares: float) -> float:
        return max(self.commission_min, self.commission_per_share * abs(shares))


class TwoTickerEnv(gym.Env[NDArray[np.float32], np.int64]):
    """See the module docstring. ``reset(options={"episode": e, "capital": c})`` picks a session
    and a starting capital (default: a random session from the env's generator, or the next one
    in order when ``sequential``; ``initial_capital``)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, data: PairData, config: EnvConfig | None = None, sequential: bool = False):
        super().__init__()
        self.data = data
        self.config = config or EnvConfig()
        self.sequential = sequential
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_SIZE,), np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self._features = data.features.astype(np.float32)
        self._open = data.open.tolist()  # lists: scalar access is faster than numpy's
        self._close = data.close.tolist()
        self._slip = self.config.slippage_bps / 10_000.0
        self._next_episode = 0
        self.episode = -1
        self.t = 0
        self.hi = 0
        self.cash = 0.0
        self.shares = [0.0, 0.0]
        self.equity = 0.0
        self.start_capital = self.config.initial_capital
        self.trades = 0
        self.costs = 0.0

    # ---- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "episode" in options:
            episode = int(options["episode"])
        elif self.sequential:
            episode = self._next_episode % self.data.episodes
        else:
            episode = int(self.np_random.integers(self.data.episodes))
        self._next_episode = episode + 1
        self.episode = episode
        self.t = int(self.data.bounds[episode])
        self.hi = int(self.data.bounds[episode + 1])
        self.start_capital = float(options.get("capital", self.config.initial_capital))
        self.cash = self.start_capital
        self.shares = [0.0, 0.0]
        self.equity = self.start_capital
        self.trades = 0
        self.costs = 0.0
        return self._obs(), self._info()

    def step(
        self, action: np.int64 | int
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        t = self.t
        if t >= self.hi - 1:
            raise RuntimeError("step() after the episode ended; call reset()")
        before = self.equity
        leg_a, leg_b = legs(int(action))
        close_t = self._close[t]
        cap = self.config.max_position_fraction
        qty = [
            order_quantity(leg_a, self.shares[0], before, close_t[0], cap),
            order_quantity(leg_b, self.shares[1], before, close_t[1], cap),
        ]
        nxt = t + 1
        open_n = self._open[nxt]
        # Sells first (they free cash), then buys, at the next bar's open.
        for i in (0, 1):
            if qty[i] < 0:
                self._sell(i, -qty[i], open_n[i])
        for i in (0, 1):
            if qty[i] > 0:
                self._buy(i, qty[i], open_n[i])
        self.t = nxt
        close_n = self._close[nxt]
        terminated = nxt >= self.hi - 1
        if terminated:  # the session ends: close everything at its last close
            for i in (0, 1):
                if self.shares[i] > 0:
                    self._sell(i, self.shares[i], close_n[i])
        self.equity = self.cash + self.shares[0] * close_n[0] + self.shares[1] * close_n[1]
        reward = (self.equity - before) / self.config.initial_capital
        if self.config.risk_penalty:
            gross = (abs(self.shares[0]) * close_n[0] + abs(self.shares[1]) * close_n[1]) / max(
                self.equity, 1e-9
            )
            reward -= self.config.risk_penalty * gross
        return self._obs(), float(reward), terminated, False, self._info()

    # ---- internals -------------------------------------------------------------------------
    def _sell(self, i: int, shares: float, price: float) -> None:
        fill = price * (1.0 - self._slip)
        fee = self.config.commission(shares)
        self.cash += shares * fill - fee
        self.costs += fee + shares * price * self._slip
        self.shares[i] -= shares
        self.trades += 1

    def _buy(self, i: int, shares: float, price: float) -> None:
        fill = price * (1.0 + self._slip)
        affordable = math.floor((self.cash - self.config.commission(shares)) / fill)
        shares = float(min(shares, max(affordable, 0)))
        if shares <= 0:
            return
        fee = self.config.commission(shares)
        self.cash -= shares * fill + fee
        self.costs += fee + shares * price * self._slip
        self.shares[i] += shares
        self.trades += 1

    def _obs(self) -> NDArray[np.float32]:
        t = self.t
        obs = np.empty(OBS_SIZE, dtype=np.float32)
        feats = self._features[t]
        close = self._close[t]
        equity = self.equity if self.equity > 0 else 1e-9
        obs[:N_FEATURES] = feats[0]
        obs[N_FEATURES] = self.shares[0] * close[0] / equity
        obs[N_FEATURES + 1 : 2 * N_FEATURES + 1] = feats[1]
        obs[2 * N_FEATURES + 1] = self.shares[1] * close[1] / equity
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "equity": self.equity,
            "cash": self.cash,
            "shares": (self.shares[0], self.shares[1]),
            "trades": self.trades,
            "costs": self.costs,
            "row": self.t,
        }
