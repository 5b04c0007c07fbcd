"""The demo market's planted pattern (``SimConfig.demo_pattern``; off by default).

A deliberately learnable regularity, so that the demo model has something real to learn and
``make run`` shows a model that trades at the production confidence threshold. It is **not** a
property of real markets; a market with it is labelled "demo market with a planted pattern"
wherever it is served.

Pattern ``hourly-sawtooth`` (version 1): every regular session runs through 60-minute cycles,
one per full clock hour from 10:00 (New York) to the close: 10:00-11:00, ..., 15:00-16:00 (on a
13:00 early close, 10:00 to 13:00). In each cycle a linear drift is added to the log mid price of
every symbol: it rises by :data:`DEMO_PATTERN_MOVE` (0.8 %) over the first
:data:`DEMO_PATTERN_RISE_MIN` (20) minutes and falls by the same amount over the remaining 40.
The random walk, volatility, activity and every other part of the market are unchanged; the
drift of a cycle sums to zero, so day levels chain as without it.

What can be learnt: buy at the full hour, sell 20 minutes later (the features ``hour`` and
``minute`` say where the cycle is). All symbols share the cycle, so the two-ticker policy's best
moves are single joint actions (BUY_BOTH, then SELL_BOTH).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

DEMO_PATTERN_NAME: Final = "hourly-sawtooth"
DEMO_PATTERN_VERSION: Final = 1
DEMO_PATTERN_MOVE: Final = 0.008  # log-price rise of a cycle's first part (0.8 %), then back
DEMO_PATTERN_RISE_MIN: Final = 20
DEMO_PATTERN_CYCLE_MIN: Final = 60
DEMO_PATTERN_LABEL: Final = "demo market with a planted pattern"


def describe() -> dict[str, object]:
    """The pattern as recorded with data and models trained on it (bundle.json, model card)."""
    return {
        "name": DEMO_PATTERN_NAME,
        "version": DEMO_PATTERN_VERSION,
        "label": DEMO_PATTERN_LABEL,
        "move": DEMO_PATTERN_MOVE,
        "rise_minutes": DEMO_PATTERN_RISE_MIN,
        "cycle_minutes": DEMO_PATTERN_CYCLE_MIN,
        "cycles": "every full clock hour from 10:00 New York to the close, all symbols",
        "doc": "its_common.simmarket.pattern (services/marketsim/README.md, Demo pattern)",
    }


def drift(
    symbols: tuple[str, ...], seconds: int, open_second: int, regular_seconds: int
) -> NDArray[np.float64]:
    """Per-second log drift, shape (seconds, symbols), on the simulator's one-second grid whose
    second ``open_second`` is the regular open (09:30 New York, so minute ``m`` after the open is
    ``(30 + m) % 60`` past the hour) and ``regular_seconds`` long."""
    out = np.zeros((seconds, len(symbols)))
    cycle = DEMO_PATTERN_CYCLE_MIN * 60
    rise = DEMO_PATTERN_RISE_MIN * 60
    up = DEMO_PATTERN_MOVE / rise
    down = -DEMO_PATTERN_MOVE / (cycle - rise)
    first = 30 * 60  # 10:00, seconds after the 09:30 open
    for start in range(first, regular_seconds - cycle + 1, cycle):
        a = open_second + start
        out[a : a + rise, :] = up
        out[a + rise : a + cycle, :] = down
    return out
