"""The nine joint actions of the two-ticker policy and their order sizing: one definition shared by
the training environment, the backtest and the live trader.

An action is ``3 * leg(first) + leg(second)`` with legs SELL = 0, HOLD = 1, BUY = 2; the names
use the default pair (NVDA first, MSFT second) and keep meaning "first"/"second" symbol for
any configured pair.

Sizing: BUY adds :data:`BUY_FRACTION` (10 %) of portfolio value in that symbol, in whole shares
at the decision price (``floor(0.10 * equity / price)``); SELL closes the position (sells every
share held; nothing when flat); HOLD does nothing. Positions are long-only. A buy that the cash
cannot pay for (after commission) is reduced to what the cash pays for; an optional cap on the
position value (``max_position_fraction``) reduces it further.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Final


class Leg(IntEnum):
    SELL = 0
    HOLD = 1
    BUY = 2


class Action(IntEnum):
    SELL_BOTH = 0
    SELL_NVDA_HOLD_MSFT = 1
    SELL_NVDA_BUY_MSFT = 2
    HOLD_NVDA_SELL_MSFT = 3
    HOLD_BOTH = 4
    HOLD_NVDA_BUY_MSFT = 5
    BUY_NVDA_SELL_MSFT = 6
    BUY_NVDA_HOLD_MSFT = 7
    BUY_BOTH = 8


N_ACTIONS: Final = len(Action)
BUY_FRACTION: Final = 0.10
ACTION_NAMES: Final[tuple[str, ...]] = tuple(action.name for action in Action)


def legs(action: int) -> tuple[Leg, Leg]:
    """(first symbol's leg, second symbol's leg) of a joint action."""
    if not 0 <= int(action) < N_ACTIONS:
        raise ValueError(f"action must be 0-{N_ACTIONS - 1}, not {action}")
    first, second = divmod(int(action), 3)
    return Leg(first), Leg(second)


def joint_action(first: Leg, second: Leg) -> Action:
    return Action(3 * int(first) + int(second))


def order_quantity(
    leg: Leg,
    position: float,
    equity: float,
    price: float,
    max_position_fraction: float | None = None,
) -> float:
    """Signed share quantity one leg asks for (positive buys, negative sells).

    ``position`` is the shares held, ``equity`` the portfolio value and ``price`` the decision
    price (the last close). Whole shares. With ``max_position_fraction``, a buy never takes the
    position's value above that fraction of equity.
    """
    if leg is Leg.SELL:
        return -position if position > 0 else 0.0
    if leg is Leg.HOLD or not (price > 0 and equity > 0):
        return 0.0
    shares = math.floor(BUY_FRACTION * equity / price)
    if max_position_fraction is not None:
        room = max_position_fraction * equity - max(position, 0.0) * price
        shares = min(shares, max(0, math.floor(room / price)))
    return float(max(shares, 0))


def action_map() -> dict[str, str]:
    """``{"0": "SELL_BOTH", ...}`` (for model bundles and APIs)."""
    return {str(int(action)): action.name for action in Action}
