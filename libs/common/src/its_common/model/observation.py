"""The policy's observation (26 float32): the first symbol's 12 features, its position, the second
symbol's 12 features, its position. A position is the signed value of the shares held divided by
equity, both at the decision bar's close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from its_common.features import FEATURE_NAMES, N_FEATURES

OBS_SIZE: Final = 2 * (N_FEATURES + 1)


def observation_layout(symbols: tuple[str, str]) -> list[str]:
    """Names of the 26 observation entries, in order (``NVDA.returns``, ..., ``MSFT.position``)."""
    names: list[str] = []
    for symbol in symbols:
        names += [f"{symbol}.{name}" for name in FEATURE_NAMES]
        names.append(f"{symbol}.position")
    return names


def build_observation(
    first: ArrayLike, second: ArrayLike, positions: Sequence[float]
) -> NDArray[np.float32]:
    """``first``/``second``: the symbols' feature vectors (FEATURE_NAMES order); ``positions``:
    see :meth:`its_common.model.portfolio.Portfolio.positions`. Values are stored as float32."""
    obs = np.empty(OBS_SIZE, dtype=np.float32)
    obs[:N_FEATURES] = first
    obs[N_FEATURES] = positions[0]
    obs[N_FEATURES + 1 : 2 * N_FEATURES + 1] = second
    obs[2 * N_FEATURES + 1] = positions[1]
    return obs
