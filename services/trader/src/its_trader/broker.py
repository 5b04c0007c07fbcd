"""The broker interface the trader talks to: the SimBroker now, the IB adapter later.

Order submission is idempotent by client order id: placing an id the broker already knows
returns that order instead of a new one (IB: ``orderRef``). After every connect and reconnect
the trader reconciles with :meth:`Broker.positions`, :meth:`Broker.open_orders` and
:meth:`Broker.executions`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from its_trader.actions import Side

OrderType = Literal["MKT", "LMT"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A market order, or a limit order when ``limit_price`` is set (IB's MKT / LMT)."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    not_before_ms: int = 0  # market time: fill on no trade earlier than this (decision's bar)
    limit_price: float | None = None  # LMT: buy at or below, sell at or above this price

    @property
    def order_type(self) -> OrderType:
        return "MKT" if self.limit_price is None else "LMT"


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: int
    status: str  # open | filled | cancelled | rejected (a cancelled order may be part filled)
    filled_quantity: int = 0

    @property
    def remaining(self) -> int:
        """Shares still working (0 once the order is done)."""
        return max(0, self.quantity - self.filled_quantity) if self.status == "open" else 0


@dataclass(frozen=True, slots=True)
class Execution:
    execution_id: str
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: int
    price: float
    commission: float
    ts_ms: int  # market time of the fill


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    mark_price: float | None


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    cash: float
    equity: float
    gross_exposure: float
    realized_pnl: float
    unrealized_pnl: float


@dataclass(frozen=True, slots=True)
class OrderIncident:
    kind: str  # unacknowledged | lost
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: int
    age_s: float


class Broker(Protocol):
    """What an adapter (SimBroker, IB) provides."""

    name: str
    account: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def positions(self) -> list[BrokerPosition]: ...

    async def open_orders(self) -> list[BrokerOrder]: ...

    async def executions(self, since_ms: int = 0) -> list[Execution]: ...

    async def order(self, client_order_id: str) -> BrokerOrder | None: ...

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        """Place a market or limit order (idempotent by client order id)."""
        ...

    async def cancel(self, client_order_id: str) -> bool: ...

    async def account_summary(self) -> AccountSummary: ...

    def fills(self) -> asyncio.Queue[Execution]:
        """Executions as they happen (the trader also reconciles, so a lost event is recovered)."""
        ...

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every reconnect (the trader reconciles); adapters without a
        connection to lose keep it and never call it."""
        ...

    async def subscribe(self, symbols: list[str]) -> None:
        """Publish the broker's own prices of ``symbols`` for the validator
        (``its:broker:price:<SYM>``)."""
        ...

    def drain_incidents(self) -> list[OrderIncident]:
        """Order incidents (unacknowledged, lost) since the last call."""
        ...
