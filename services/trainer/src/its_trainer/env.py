"""The two-ticker trading environment (gymnasium).

Episode: one trading session of :class:`~its_trainer.data.PairData` (rows ``lo .. hi-1``).
At row t the agent sees the observation built from bar t (known at t's close) and chooses one of
the nine joint actions (:mod:`its_common.actions`). The accounting is the shadow portfolio's
(:class:`its_common.model.portfolio.Portfolio`, shared with the backtest and live inference): orders
are sized at t's close and fill at bar t+1's **open** (never on the bar the decision saw), with
slippage and commission; sells before buys; a buy the cash cannot pay for is cut to what it can.
After the fill the portfolio is marked at t+1's close. The last row of the session closes every
position at its close (with slippage and commission): no position is held overnight, and the
episode ends.

Reward of a step: ``(equity_{t+1} - equity_t) / initial_capital - risk_penalty *
gross_exposure_{t+1}``, where equity is marked at closes net of every commission and slippage
paid, and gross exposure is the sum of |position value| / equity after the step
(``risk_penalty`` defaults to 0).

Observation (26, float32): :func:`its_common.model.observation.build_observation` (the first
symbol's 12 features, its position, the second symbol's 12 features, its position; a position is the
signed value of the shares held divided by equity, at t's close).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from its_common.actions import N_ACTIONS
from its_common.model.observation import OBS_SIZE, build_observation, observation_layout
from its_common.model.portfolio import EnvConfig, Portfolio
from its_trainer.data import PairData

__all__ = ["OBS_SIZE", "EnvConfig", "TwoTickerEnv", "observation_layout"]


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
        self.portfolio = Portfolio(self.config)
        self._next_episode = 0
        self.episode = -1
        self.t = 0
        self.hi = 0

    # ---- the portfolio's state (read-only views) -------------------------------------------
    @property
    def cash(self) -> float:
        return self.portfolio.cash

    @property
    def shares(self) -> list[float]:
        return self.portfolio.shares

    @property
    def equity(self) -> float:
        return self.portfolio.equity

    @property
    def start_capital(self) -> float:
        return self.portfolio.start_capital

    @property
    def trades(self) -> int:
        return self.portfolio.trades

    @property
    def costs(self) -> float:
        return self.portfolio.costs

    def close_prices(self, row: int | None = None) -> list[float]:
        """Both symbols' closes of ``row`` (default: the current row, the decision price)."""
        closes: list[float] = self._close[self.t if row is None else row]
        return closes

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
        self.portfolio.reset(float(options.get("capital", self.config.initial_capital)))
        return self._obs(), self._info()

    def step(
        self, action: np.int64 | int
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        t = self.t
        if t >= self.hi - 1:
            raise RuntimeError("step() after the episode ended; call reset()")
        before = self.portfolio.equity
        nxt = t + 1
        terminated = nxt >= self.hi - 1
        close_n = self._close[nxt]
        self.portfolio.step(int(action), self._close[t], self._open[nxt], close_n, terminated)
        self.t = nxt
        reward = (self.portfolio.equity - before) / self.config.initial_capital
        if self.config.risk_penalty:
            reward -= self.config.risk_penalty * self.portfolio.gross_exposure(close_n)
        return self._obs(), float(reward), terminated, False, self._info()

    # ---- internals -------------------------------------------------------------------------
    def _obs(self) -> NDArray[np.float32]:
        feats = self._features[self.t]
        positions = self.portfolio.positions(self._close[self.t])
        return build_observation(feats[0], feats[1], positions)

    def _info(self) -> dict[str, Any]:
        p = self.portfolio
        return {
            "equity": p.equity,
            "cash": p.cash,
            "shares": (p.shares[0], p.shares[1]),
            "trades": p.trades,
            "costs": p.costs,
            "row": self.t,
        }
