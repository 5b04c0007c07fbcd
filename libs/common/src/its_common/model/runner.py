"""A bundle's policy driven over one sequence of observations, the way training saw it:
normalized with the frozen statistics, the LSTM state carried from bar to bar and zeroed at each
session's first bar (``episode_start``), the deterministic action = the most probable one.
Used by live inference and by the trainer's backtest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from its_common.model.bundle import Bundle


@dataclass(frozen=True)
class Choice:
    action: int
    probabilities: NDArray[np.float32]

    @property
    def confidence(self) -> float:
        """The chosen action's probability, within [0, 1]."""
        return min(1.0, max(0.0, float(self.probabilities[self.action])))


class PolicyRunner:
    def __init__(self, bundle: Bundle) -> None:
        self.actor = bundle.actor
        self.normalizer = bundle.normalizer
        self.state = self.actor.initial_state()

    def step(self, obs: NDArray[np.float32], session_start: bool) -> Choice:
        normalized = torch.as_tensor(self.normalizer(obs[None, :]))
        start = torch.tensor([1.0 if session_start else 0.0], dtype=torch.float32)
        with torch.no_grad():
            probs, self.state = self.actor(normalized, self.state, start)
        row = probs[0]
        return Choice(int(torch.argmax(row)), row.numpy().astype(np.float32))
