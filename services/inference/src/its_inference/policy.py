"""The policy driven live, exactly as the backtest drives it: observations built by the training
environment itself, normalized with the bundle's frozen VecNormalize statistics, the LSTM state
kept across bars, ``episode_start`` at each session's first minute, the deterministic action.

Observation positions: the policy saw its own positions in training, so live inference keeps a
**shadow portfolio**: a :class:`its_trainer.env.TwoTickerEnv` over the current session whose rows
are filled in as minutes complete. The decision of minute t is applied (``env.step``) when minute
t+1 arrives: orders sized at t's close fill at t+1's open with the bundle's costs, and at the
session's last minute everything is closed, exactly as in training and backtests (the capital
carries over to the next session). The shadow portfolio is what the model assumes it holds; the
trader's real positions can differ (risk rules, rejected orders).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from its_common import calendar
from its_common.actions import ACTION_NAMES, Action
from its_common.features import FEATURE_SPEC_HASH, N_FEATURES
from its_common.features.spec import BAR_MS
from its_features.messages import FeatureSet
from its_inference.bundles import Bundle, is_demo, version_of
from its_trainer.data import PairData
from its_trainer.env import TwoTickerEnv

log = logging.getLogger("its.inference.policy")


class FeatureMismatchError(ValueError):
    """Features computed by another spec, or without the bundle's symbols."""


@dataclass(frozen=True)
class Step:
    ts_ms: int
    action: int
    confidence: float
    probabilities: NDArray[np.float32]
    session_start: bool
    session_last: bool
    observation: NDArray[np.float32]

    @property
    def action_name(self) -> str:
        return ACTION_NAMES[self.action]


class LivePolicy:
    """One bundle's policy over a stream of :class:`FeatureSet` (one per minute, in order)."""

    def __init__(self, bundle: Bundle, capital: float | None = None) -> None:
        self.bundle = bundle
        self.version = version_of(bundle)
        self.demo = is_demo(bundle)
        self.symbols = bundle.symbols
        self.config = bundle.env_config()
        self.capital = self.config.initial_capital if capital is None else capital
        # sb3-contrib's RecurrentActorCriticPolicy (untyped: sb3's stubs see its parent class).
        policy: Any = bundle.model.policy
        self.policy = policy
        policy.set_training_mode(False)
        shape = tuple(int(n) for n in policy.lstm_hidden_state_shape)  # (layers, 1, hidden)
        zeros = torch.zeros(shape, dtype=torch.float32)
        self.state: tuple[torch.Tensor, ...] = (zeros, zeros.clone())
        self.env: TwoTickerEnv | None = None
        self.session_open_ms: int | None = None
        self.first_ms = 0
        self.row = -1
        self.pending_action = int(Action.HOLD_BOTH)
        self.last_ts: int | None = None
        self.skipped_minutes = 0

    @property
    def equity(self) -> float:
        return self.env.equity if self.env is not None else self.capital

    def step(self, fs: FeatureSet) -> Step | None:
        """The decision on minute ``fs.ts_ms``; None for a minute already seen or not ready."""
        if self.last_ts is not None and fs.ts_ms <= self.last_ts:
            return None
        if fs.spec_hash != FEATURE_SPEC_HASH:
            raise FeatureMismatchError(
                f"features of minute {fs.ts_ms} were computed by spec {fs.spec_hash}, this code "
                f"and bundle {self.version} use {FEATURE_SPEC_HASH}"
            )
        missing = [s for s in self.symbols if s not in fs.symbols]
        if missing:
            raise FeatureMismatchError(
                f"bundle {self.version} trades {self.symbols}; features lack {missing}"
            )
        if not all(fs.symbols[s].values is not None for s in self.symbols):
            return None
        self.last_ts = fs.ts_ms
        start = fs.session_open_ms != self.session_open_ms
        obs = self._start_session(fs) if start else self._advance(fs)
        return self._decide(fs, obs, start)

    # ---- shadow portfolio ------------------------------------------------------------------
    def _start_session(self, fs: FeatureSet) -> NDArray[np.float32]:
        if self.env is not None:
            self.capital = self.env.equity  # everything was closed at the previous session end
        day = calendar.new_york_date(datetime.fromtimestamp(fs.ts_ms / 1000, tz=UTC))
        session = calendar.session(day)
        assert session is not None, f"minute {fs.ts_ms} is not in a session"
        close_ms = int(session.close.timestamp() * 1000)
        rows = max((close_ms - fs.ts_ms) // BAR_MS, 1)
        data = PairData(
            symbols=self.symbols,
            sessions=(session,),
            ts=fs.ts_ms + BAR_MS * np.arange(rows, dtype=np.int64),
            features=np.zeros((rows, 2, N_FEATURES)),
            open=np.ones((rows, 2)),
            close=np.ones((rows, 2)),
            filled=np.zeros((rows, 2), dtype=bool),
            bounds=np.asarray([0, rows], dtype=np.int64),
        )
        self.env = TwoTickerEnv(data, self.config, sequential=True)
        self.session_open_ms = fs.session_open_ms
        self.first_ms = fs.ts_ms
        self.row = 0
        self._fill_row(0, fs)
        obs, _ = self.env.reset(options={"episode": 0, "capital": self.capital})
        return obs

    def _advance(self, fs: FeatureSet) -> NDArray[np.float32]:
        env = self.env
        assert env is not None
        row = (fs.ts_ms - self.first_ms) // BAR_MS
        if row >= env.hi:
            raise ValueError(f"minute {fs.ts_ms} is past the session's end")
        action = self.pending_action
        obs = None
        # Normally row == self.row + 1; minutes never received are filled with this minute's
        # values and held (degraded: counted in skipped_minutes).
        for r in range(self.row + 1, row + 1):
            self._fill_row(r, fs)
            if r < row:
                self.skipped_minutes += 1
            obs, _, _, _, _ = env.step(action)
            action = int(Action.HOLD_BOTH)
        self.row = row
        assert obs is not None
        return obs

    def _fill_row(self, row: int, fs: FeatureSet) -> None:
        env = self.env
        assert env is not None
        first, second = (fs.symbols[s] for s in self.symbols)
        assert first.values is not None and second.values is not None
        env._features[row, 0] = first.values
        env._features[row, 1] = second.values
        env._open[row] = [float(first.open or 0.0), float(second.open or 0.0)]
        env._close[row] = [float(first.close or 0.0), float(second.close or 0.0)]

    # ---- the policy ------------------------------------------------------------------------
    def _decide(self, fs: FeatureSet, obs: NDArray[np.float32], start: bool) -> Step:
        normalized = self.bundle.normalize(obs[None, :])
        with torch.no_grad():
            dist, state = self.policy.get_distribution(
                torch.as_tensor(normalized),
                self.state,
                torch.tensor([1.0 if start else 0.0], dtype=torch.float32),
            )
            probs = dist.distribution.probs[0]
            action = int(torch.argmax(probs))
        self.state = state
        self.pending_action = action
        probabilities = probs.numpy().astype(np.float32)
        return Step(
            ts_ms=fs.ts_ms,
            action=action,
            confidence=min(1.0, max(0.0, float(probabilities[action]))),
            probabilities=probabilities,
            session_start=start,
            session_last=fs.session_last,
            observation=obs,
        )
