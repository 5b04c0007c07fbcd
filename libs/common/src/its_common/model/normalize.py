"""Observation normalization from frozen VecNormalize statistics, in plain numpy.

``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` computed in float64 (the
statistics' dtype) and returned as float32: the same operations, in the same order, as
stable-baselines3's ``VecNormalize.normalize_obs``, so the result is bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ObsNormalizer:
    mean: NDArray[np.float64]
    var: NDArray[np.float64]
    clip_obs: float
    epsilon: float

    def __post_init__(self) -> None:
        if self.mean.shape != self.var.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and var {self.var.shape} must be (n,)")
        if not (np.all(np.isfinite(self.mean)) and np.all(self.var >= 0)):
            raise ValueError("normalization statistics must be finite, variances >= 0")

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    def __call__(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """``obs``: (size,) or (batch, size)."""
        scaled = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        out: NDArray[np.float32] = np.clip(scaled, -self.clip_obs, self.clip_obs).astype(np.float32)
        return out

    def to_json(self) -> dict[str, Any]:
        """Floats as JSON numbers (shortest round-trip repr: float64 values survive exactly)."""
        return {
            "mean": [float(v) for v in self.mean],
            "var": [float(v) for v in self.var],
            "clip_obs": float(self.clip_obs),
            "epsilon": float(self.epsilon),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObsNormalizer:
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            var=np.asarray(data["var"], dtype=np.float64),
            clip_obs=float(data["clip_obs"]),
            epsilon=float(data["epsilon"]),
        )
