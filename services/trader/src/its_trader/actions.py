"""Orders for the nine joint actions, on the shared definition in :mod:`its_common.actions`.

The action encoding (legs per symbol: 0 sell, 1 hold, 2 buy; ``action = 3 * first + second``)
and the sizing (a buy adds 10 % of equity in whole shares; a sell closes the long position, no
shorting) come from the shared module the trainer also uses; this module only turns them into
:class:`OrderIntent` values over the first two configured symbols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from its_common.actions import ACTION_NAMES, BUY_FRACTION, Leg, legs, order_quantity

Side = Literal["BUY", "SELL"]
LegAction = Leg
DEFAULT_BUY_FRACTION: Final = BUY_FRACTION

__all__ = ["LegAction", "OrderIntent", "Side", "action_name", "legs", "orders_for_action"]


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    quantity: int
    reason: str  # "buy" | "close"


def action_name(action: int) -> str:
    legs(action)  # validates the range
    return ACTION_NAMES[action]


def orders_for_action(
    action: int,
    positions: Mapping[str, float],
    equity: float,
    prices: Mapping[str, float],
    *,
    symbols: Sequence[str] = ("NVDA", "MSFT"),
    buy_fraction: float = DEFAULT_BUY_FRACTION,
) -> list[OrderIntent]:
    """The orders a joint action asks for, given positions (shares), equity and prices.

    ``buy_fraction`` other than the shared 10 % scales the shared buy size.
    """
    if len(symbols) < 2:
        raise ValueError("the joint action space needs two symbols")
    intents: list[OrderIntent] = []
    for symbol, leg in zip(symbols[:2], legs(action), strict=True):
        held = positions.get(symbol, 0.0)
        price = prices.get(symbol, 0.0)
        quantity = order_quantity(leg, held, equity * buy_fraction / BUY_FRACTION, price)
        if quantity > 0:
            intents.append(OrderIntent(symbol, "BUY", int(quantity), "buy"))
        elif quantity < 0:
            intents.append(OrderIntent(symbol, "SELL", int(-quantity), "close"))
    return intents
