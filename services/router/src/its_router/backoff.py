"""Capped exponential backoff with jitter ("equal jitter": half fixed, half random)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The next wait: uniform in [cap/2, cap], cap = min(max, initial * 2**attempt)."""
        cap = min(self.max_s, self.initial_s * (2.0**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        jitter = float(self.rng.random())
        return cap / 2 + jitter * cap / 2

    def reset(self) -> None:
        self.attempt = 0
