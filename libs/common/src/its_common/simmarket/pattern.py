"""The demo market's planted pattern (``SimConfig.demo_pattern``; off by default).

A deliberately learnable regularity, so that the demo model has something real to learn and
``make run`` shows a model that trades at the production confidence threshold. It is **not** a
property of real markets; a market with it is labelled "demo market with a planted pattern"
wherever it is served.

Pattern ``hourly-sawtooth`` (version 1): every regular session, each symbol runs through
60-minute cycles that start at its phase (minutes past the hour, New York time) and lie wholly
inside the regular session. In each cycle a linear drift is added to the log mid price: it rises
by :data:`DEMO_PATTERN_MOVE` over the first :data:`DEMO_PATTERN_RISE_MIN` minutes and falls by the
same amount over the remaining 40 minutes. The random walk, volatility, activity and every other
part of the market are unchanged; the drift of a cycle sums to zero, so day levels chain as
without it. Phases: NVDA :00 (cycles 10:00-11:00 ... 15:00-16:00), MSFT :30 (09:30-10:30 ...
14:30-15:30), any other symbol ``15 * (crc32(symbol) % 4)`` minutes. On a 13:00 early close only
the cycles that end by 13:00 run.

What can be learnt: buy a symbol at the start of its cycle, sell it 20 minutes later (the
features ``hour`` and ``minute`` say where the cycle is).
"""

from __future__ import annotations

import zlib
from typing import Final

import numpy as np
from numpy.typing import NDArray

DEMO_PATTERN_NAME: Final = "hourly-sawtooth"
DEMO_PATTERN_VERSION: Final = 1
DEMO_PATTERN_MOVE: Final = 0.006  # log-price rise of a cycle's first part (0.6 %), then back
DEMO_PATTERN_RISE_MIN: Final = 20
DEMO_PATTERN_CYCLE_MIN: Final = 60
DEMO_PATTERN_PHASES: Final[dict[str, int]] = {"NVDA": 0, "MSFT": 30}
DEMO_PATTERN_LABEL: Final = "demo market with a planted pattern"


def phase_minutes(symbol: str) -> int:
    """Minutes past the hour (New York) at which the symbol's cycles start."""
    if symbol in DEMO_PATTERN_PHASES:
        return DEMO_PATTERN_PHASES[symbol]
    return 15 * (zlib.crc32(symbol.encode()) % 4)


def describe() -> dict[str, object]:
    """The pattern as recorded with data and models trained on it (bundle.json, model card)."""
    return {
        "name": DEMO_PATTERN_NAME,
        "version": DEMO_PATTERN_VERSION,
        "label": DEMO_PATTERN_LABEL,
        "move": DEMO_PATTERN_MOVE,
        "rise_minutes": DEMO_PATTERN_RISE_MIN,
        "cycle_minutes": DEMO_PATTERN_CYCLE_MIN,
        "phases": dict(DEMO_PATTERN_PHASES),
        "other_phases": "15 * (crc32(symbol) % 4) minutes past the hour",
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
    for k, symbol in enumerate(symbols):
        first = ((phase_minutes(symbol) - 30) % 60) * 60  # seconds after the open
        for start in range(first, regular_seconds - cycle + 1, cycle):
            a = open_second + start
            out[a : a + rise, k] = up
            out[a + rise : a + cycle, k] = down
    return out
