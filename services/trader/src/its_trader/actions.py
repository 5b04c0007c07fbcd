"""Orders for the nine joint actions, on the shared definition in :mod:`its_common.actions`.

The action encoding (legs per symbol: 0 sell, 1 hold, 2 buy; ``action = 3 * first + second``)
and the sizing (a buy adds 10 % of equity in whole shares; a sell closes the long position, no
shorting) come from the shared module the trainer also uses; this module only turns them into
:class:`OrderIntent` values over the decision's two symbols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from its_common.actions import BUY_FRACTION, legs, order_quantity

Side = Literal["BUY", "SELL"]


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    quantity: int
    reason: str  # "buy" | "close"


def orders_for_action(
    action: int,
    positions: Mapping[str, float],
    equity: float,
    prices: Mapping[str, float],
    *,
    symbols: Sequence[str],
    buy_fraction: float = BUY_FRACTION,
) -> list[OrderIntent]:
    """The orders a joint action asks for, given positions (shares), equity and prices; the
    legs refer to ``symbols`` (first, second): the decision's own pair.

    ``buy_fraction`` other than the shared 10 % scales the shared buy size.
    """
    if len(symbols) != 2:
        raise ValueError(f"the joint action space needs two symbols, not {list(symbols)}")
    intents: list[OrderIntent] = []
    for symbol, leg in zip(symbols, legs(action), strict=True):
        held = positions.get(symbol, 0.0)
        price = prices.get(symbol, 0.0)
        quantity = order_quantity(leg, held, equity * buy_fraction / BUY_FRACTION, price)
        if quantity > 0:
            intents.append(OrderIntent(symbol, "BUY", int(quantity), "buy"))
        elif quantity < 0:
            intents.append(OrderIntent(symbol, "SELL", int(-quantity), "close"))
    return intents
