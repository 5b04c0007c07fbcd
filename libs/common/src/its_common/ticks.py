"""IB's minimum price variation for US stocks and the limit price of a marketable-limit order.

One rule for the trader (which prices its limit orders) and its-ibsim (which rejects a limit
price off the tick with IB's error 110): $0.01 from $1 up, $0.0001 below.
"""

from __future__ import annotations

import math
from typing import Final

EPSILON: Final = 1e-6


def min_tick(price: float) -> float:
    return 0.01 if price >= 1.0 else 0.0001


def conforms_to_tick(price: float) -> bool:
    steps = price / min_tick(price)
    return abs(steps - round(steps)) < EPSILON


def marketable_limit(side: str, reference: float, cap_bps: float) -> float:
    """The limit of a buy (``side`` BUY) or sell at most ``cap_bps`` worse than ``reference``.

    Rounded to the tick towards the reference, so the cap is never exceeded: a buy pays at most
    ``reference * (1 + cap)``, a sell gets at least ``reference * (1 - cap)``.
    """
    if reference <= 0 or cap_bps < 0:
        raise ValueError(f"reference {reference} must be positive and cap {cap_bps} not negative")
    buy = side == "BUY"
    raw = reference * (1 + cap_bps / 10_000.0) if buy else reference * (1 - cap_bps / 10_000.0)
    tick = min_tick(raw)
    steps = raw / tick
    n = math.floor(steps + EPSILON) if buy else math.ceil(steps - EPSILON)
    return round(max(n, 1) * tick, 4)
