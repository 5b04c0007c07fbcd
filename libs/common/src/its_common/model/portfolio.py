"""The shadow portfolio: cash, shares, fills and costs of the two-ticker policy. The training
environment, the backtest and live inference all account through :class:`Portfolio`, so they
agree by construction.

One step (decision on bar t, see :meth:`Portfolio.step`): orders are sized at t's close with the
equity before the step (:func:`its_common.actions.order_quantity`) and fill at bar t+1's **open**,
buys at ``open * (1 + slippage)``, sells at ``open * (1 - slippage)``, each order paying
``max(min_commission, per_share * shares)``. Sells fill before buys; a buy the cash cannot pay
for is cut to what it can. On the session's last bar every long position is closed at that
bar's close (with slippage and commission). The portfolio is then marked at t+1's close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from its_common.actions import legs, order_quantity


@dataclass(frozen=True)
class EnvConfig:
    """Capital, costs and sizing cap of the portfolio (``env_config`` in bundle.json);
    ``risk_penalty`` only shapes the training reward."""

    initial_capital: float = 100_000.0
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    slippage_bps: float = 1.0
    max_position_fraction: float | None = None  # cap on one position's value / equity
    risk_penalty: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def commission(self, shares: float) -> float:
        return max(self.commission_min, self.commission_per_share * abs(shares))


class Portfolio:
    """Two symbols' shares and the cash; ``equity`` is marked at the last close stepped to."""

    def __init__(self, config: EnvConfig, capital: float | None = None) -> None:
        self.config = config
        self._slip = config.slippage_bps / 10_000.0
        self.start_capital = config.initial_capital
        self.cash = 0.0
        self.shares = [0.0, 0.0]
        self.equity = 0.0
        self.trades = 0
        self.costs = 0.0
        self.traded = 0.0  # value of the shares bought and sold at their fill prices (turnover)
        self.reset(config.initial_capital if capital is None else capital)

    def reset(self, capital: float) -> None:
        """Flat, all cash (a session's start)."""
        self.start_capital = float(capital)
        self.cash = self.start_capital
        self.shares = [0.0, 0.0]
        self.equity = self.start_capital
        self.trades = 0
        self.costs = 0.0
        self.traded = 0.0

    def positions(self, close: Sequence[float]) -> tuple[float, float]:
        """Signed position values at ``close`` as fractions of equity (the observation's)."""
        equity = self.equity if self.equity > 0 else 1e-9
        return self.shares[0] * close[0] / equity, self.shares[1] * close[1] / equity

    def gross_exposure(self, close: Sequence[float]) -> float:
        """Sum of |position value| / equity at ``close``."""
        gross = abs(self.shares[0]) * close[0] + abs(self.shares[1]) * close[1]
        return gross / max(self.equity, 1e-9)

    def step(
        self,
        action: int,
        close_now: Sequence[float],
        open_next: Sequence[float],
        close_next: Sequence[float],
        last: bool,
    ) -> None:
        """Execute the decision taken at ``close_now`` (see the module doc); ``last``: the next
        bar is the session's last (everything is closed at its close)."""
        before = self.equity
        leg_a, leg_b = legs(int(action))
        cap = self.config.max_position_fraction
        qty = [
            order_quantity(leg_a, self.shares[0], before, close_now[0], cap),
            order_quantity(leg_b, self.shares[1], before, close_now[1], cap),
        ]
        # Sells first (they free cash), then buys, at the next bar's open.
        for i in (0, 1):
            if qty[i] < 0:
                self._sell(i, -qty[i], open_next[i])
        for i in (0, 1):
            if qty[i] > 0:
                self._buy(i, qty[i], open_next[i])
        if last:  # the session ends: close everything at its last close
            for i in (0, 1):
                if self.shares[i] > 0:
                    self._sell(i, self.shares[i], close_next[i])
        self.equity = self.cash + self.shares[0] * close_next[0] + self.shares[1] * close_next[1]

    def _sell(self, i: int, shares: float, price: float) -> None:
        fill = price * (1.0 - self._slip)
        fee = self.config.commission(shares)
        self.cash += shares * fill - fee
        self.costs += fee + shares * price * self._slip
        self.traded += shares * fill
        self.shares[i] -= shares
        self.trades += 1

    def _buy(self, i: int, shares: float, price: float) -> None:
        fill = price * (1.0 + self._slip)
        affordable = math.floor((self.cash - self.config.commission(shares)) / fill)
        shares = float(min(shares, max(affordable, 0)))
        if shares <= 0:
            return
        fee = self.config.commission(shares)
        self.cash -= shares * fill + fee
        self.costs += fee + shares * price * self._slip
        self.traded += shares * fill
        self.shares[i] += shares
        self.trades += 1
