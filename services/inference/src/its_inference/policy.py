"""The policy driven live, exactly as the backtest drives it: observations built by
:func:`its_common.model.observation.build_observation`, normalized with the bundle's frozen
statistics, the LSTM state kept across bars, ``episode_start`` at each session's first minute, the
deterministic action (:class:`its_common.model.runner.PolicyRunner`).

Observation positions: the policy saw its own positions in training, so live inference keeps a
**shadow portfolio** (:class:`its_common.model.portfolio.Portfolio`, the accounting the training
environment itself uses). The decision of minute t is applied when minute t+1 arrives: orders
sized at t's close fill at t+1's open with the bundle's costs, and at the session's last minute
everything is closed, exactly as in training and backtests (the capital carries over to the next
session). The shadow portfolio is what the model assumes it holds; the trader's real positions
can differ (risk rules, rejected orders).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from its_common import calendar
from its_common.actions import ACTION_NAMES, Action
from its_common.features import FEATURE_SPEC_HASH
from its_common.features.spec import BAR_MS
from its_common.featureset import FeatureSet, SymbolVector
from its_common.model.bundle import Bundle
from its_common.model.observation import build_observation
from its_common.model.portfolio import Portfolio
from its_common.model.runner import PolicyRunner

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


def _prices(first: SymbolVector, second: SymbolVector) -> tuple[list[float], list[float]]:
    """(open, close) of both symbols (0.0 when unknown, as the environment's arrays)."""
    opens = [float(first.open or 0.0), float(second.open or 0.0)]
    closes = [float(first.close or 0.0), float(second.close or 0.0)]
    return opens, closes


class LivePolicy:
    """One bundle's policy over a stream of :class:`FeatureSet` (one per minute, in order)."""

    def __init__(self, bundle: Bundle, capital: float | None = None) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.demo = bundle.demo
        self.demo_market = bundle.demo_market
        self.symbols = bundle.symbols
        self.config = bundle.env_config()
        self.capital = self.config.initial_capital if capital is None else capital
        self.runner = PolicyRunner(bundle)
        self.portfolio: Portfolio | None = None
        self.session_open_ms: int | None = None
        self.first_ms = 0
        self.rows = 0  # the session's minutes from its first decided one to its close
        self.row = -1
        self.close: list[float] = [0.0, 0.0]  # the closes of ``row`` (the decision prices)
        self.pending_action = int(Action.HOLD_BOTH)
        self.last_ts: int | None = None
        self.skipped_minutes = 0

    @property
    def equity(self) -> float:
        return self.portfolio.equity if self.portfolio is not None else self.capital

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
        if self.portfolio is not None:
            self.capital = self.portfolio.equity  # everything was closed at the session's end
        day = calendar.new_york_date(datetime.fromtimestamp(fs.ts_ms / 1000, tz=UTC))
        session = calendar.session(day)
        if session is None:
            raise FeatureMismatchError(f"minute {fs.ts_ms} is not in a session")
        close_ms = int(session.close.timestamp() * 1000)
        self.rows = max((close_ms - fs.ts_ms) // BAR_MS, 1)
        self.portfolio = Portfolio(self.config, self.capital)
        self.session_open_ms = fs.session_open_ms
        self.first_ms = fs.ts_ms
        self.row = 0
        return self._observe(fs)

    def _advance(self, fs: FeatureSet) -> NDArray[np.float32]:
        portfolio = self.portfolio
        assert portfolio is not None
        row = (fs.ts_ms - self.first_ms) // BAR_MS
        if row >= self.rows:
            raise ValueError(f"minute {fs.ts_ms} is past the session's end")
        first, second = (fs.symbols[s] for s in self.symbols)
        opens, closes = _prices(first, second)
        action = self.pending_action
        # Normally row == self.row + 1; minutes never received take this minute's prices and
        # the policy holds through them (degraded: counted in skipped_minutes).
        for r in range(self.row + 1, row + 1):
            if r < row:
                self.skipped_minutes += 1
            portfolio.step(action, self.close, opens, closes, last=r >= self.rows - 1)
            self.close = closes
            action = int(Action.HOLD_BOTH)
        self.row = row
        return self._observe(fs)

    def _observe(self, fs: FeatureSet) -> NDArray[np.float32]:
        portfolio = self.portfolio
        assert portfolio is not None
        first, second = (fs.symbols[s] for s in self.symbols)
        assert first.values is not None and second.values is not None
        _, self.close = _prices(first, second)
        return build_observation(first.values, second.values, portfolio.positions(self.close))

    # ---- the policy ------------------------------------------------------------------------
    def _decide(self, fs: FeatureSet, obs: NDArray[np.float32], start: bool) -> Step:
        choice = self.runner.step(obs, session_start=start)
        self.pending_action = choice.action
        return Step(
            ts_ms=fs.ts_ms,
            action=choice.action,
            confidence=choice.confidence,
            probabilities=choice.probabilities,
            session_start=start,
            session_last=fs.session_last,
            observation=obs,
        )
