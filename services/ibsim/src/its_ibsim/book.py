"""The simulated account: cash, positions, orders and executions (in memory, shared by sessions).

It outlives client connections, so a client that reconnects finds the same positions and
executions. Commission is IB-like: ``per_share`` with a ``minimum`` per execution.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from its_ibsim.wire import Contract, ExecView, OrderView

MAX_EXECUTIONS: Final = 50_000
MAX_DONE_ORDERS: Final = 10_000
DONE_STATES: Final = frozenset({"Filled", "Cancelled", "Inactive", "ApiCancelled"})


def con_id(symbol: str) -> int:
    """A stable contract id per symbol (ib_async keys positions by conId)."""
    return 100_000 + zlib.crc32(symbol.encode()) % 900_000_000


def contract_for(symbol: str) -> Contract:
    return Contract(con_id(symbol), symbol)


def commission(shares: float, per_share: float, minimum: float) -> float:
    return round(max(minimum, shares * per_share), 6)


def ib_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


@dataclass
class SimOrder:
    order_id: int
    client_id: int
    perm_id: int
    symbol: str
    action: str  # BUY | SELL
    quantity: float
    order_type: str
    account: str
    order_ref: str
    limit_price: float | None = None  # LMT orders
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    completed_ms: int = 0

    def view(self) -> OrderView:
        return OrderView(
            order_id=self.order_id,
            client_id=self.client_id,
            perm_id=self.perm_id,
            contract=contract_for(self.symbol),
            action=self.action,
            quantity=self.quantity,
            order_type=self.order_type,
            account=self.account,
            order_ref=self.order_ref,
            limit_price=self.limit_price,
            status=self.status,
            filled=self.filled,
            completed_time=ib_time(self.completed_ms) if self.completed_ms else "",
        )

    @property
    def done(self) -> bool:
        return self.status in DONE_STATES

    @property
    def remaining(self) -> float:
        return max(0.0, self.quantity - self.filled)


@dataclass
class SimPosition:
    quantity: float = 0.0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0


@dataclass
class Book:
    account: str
    cash: float
    per_share: float = 0.005
    minimum: float = 1.0
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)  # perm id -> order
    executions: deque[ExecView] = field(default_factory=lambda: deque(maxlen=MAX_EXECUTIONS))
    marks: dict[str, float] = field(default_factory=dict)
    realized_pnl: float = 0.0
    commissions: float = 0.0
    _next_perm: int = 1_000_001
    _next_exec: int = 1
    _next_order_id: dict[int, int] = field(default_factory=dict)  # client id -> next order id

    def next_order_id(self, client_id: int) -> int:
        return self._next_order_id.get(client_id, 1)

    def reserve_order_id(self, client_id: int, order_id: int) -> None:
        self._next_order_id[client_id] = max(self.next_order_id(client_id), order_id + 1)

    def find(self, client_id: int, order_id: int) -> SimOrder | None:
        for order in reversed(self.orders.values()):
            if order.client_id == client_id and order.order_id == order_id:
                return order
        return None

    def new_order(
        self,
        *,
        order_id: int,
        client_id: int,
        symbol: str,
        action: str,
        quantity: float,
        order_type: str,
        order_ref: str,
        limit_price: float | None = None,
    ) -> SimOrder:
        perm = self._next_perm
        self._next_perm += 1
        order = SimOrder(
            order_id, client_id, perm, symbol, action, quantity, order_type, self.account,
            order_ref, limit_price,
        )  # fmt: skip
        self.orders[perm] = order
        self.reserve_order_id(client_id, order_id)
        self._trim_orders()
        return order

    def _trim_orders(self) -> None:
        done = [p for p, o in self.orders.items() if o.done]
        for perm in done[: max(0, len(done) - MAX_DONE_ORDERS)]:
            del self.orders[perm]

    def open_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.done]

    def completed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.done]

    def fill(
        self, order: SimOrder, price: float, ts_ms: int, shares: float | None = None
    ) -> ExecView:
        """Fill ``shares`` of an order (default: the rest) at ``price``: position, cash, P&L,
        one execution. The order is ``Filled`` once nothing remains, else it stays working."""
        shares = order.remaining if shares is None else min(shares, order.remaining)
        signed = shares if order.action == "BUY" else -shares
        position = self.positions.setdefault(order.symbol, SimPosition())
        realized = 0.0
        qty, avg = position.quantity, position.avg_cost
        if qty == 0 or (qty > 0) == (signed > 0):
            new_qty = qty + signed
            avg = (abs(qty) * avg + shares * price) / abs(new_qty)
        else:
            closing = min(abs(qty), shares)
            realized = closing * (price - avg) * (1.0 if qty > 0 else -1.0)
            new_qty = qty + signed
            if new_qty == 0:
                avg = 0.0
            elif (new_qty > 0) != (qty > 0):
                avg = price
        fee = commission(shares, self.per_share, self.minimum)
        position.quantity, position.avg_cost = new_qty, avg
        position.realized_pnl += realized - fee
        self.cash -= signed * price + fee
        self.realized_pnl += realized - fee
        self.commissions += fee
        self.marks[order.symbol] = price
        cum = order.filled + shares
        order.avg_fill_price = (
            (order.avg_fill_price * order.filled + price * shares) / cum if cum else 0.0
        )
        order.filled, order.last_fill_price = cum, price
        if order.remaining <= 0:
            order.status = "Filled"
            order.completed_ms = ts_ms
        exec_seq = self._next_exec
        self._next_exec += 1
        view = ExecView(
            exec_id=f"0000{order.perm_id:08x}.{exec_seq:08x}.01.01",
            order_id=order.order_id,
            client_id=order.client_id,
            perm_id=order.perm_id,
            contract=contract_for(order.symbol),
            account=self.account,
            side="BOT" if order.action == "BUY" else "SLD",
            shares=shares,
            price=price,
            cum_qty=cum,
            avg_price=order.avg_fill_price,
            order_ref=order.order_ref,
            time_text=ib_time(ts_ms),
            commission=fee,
            realized_pnl=realized - fee if realized else 0.0,
        )
        self.executions.append(view)
        return view

    def account_values(self) -> list[tuple[str, str]]:
        market_value = gross = unrealized = 0.0
        for symbol, position in self.positions.items():
            mark = self.marks.get(symbol, position.avg_cost)
            market_value += position.quantity * mark
            gross += abs(position.quantity) * mark
            unrealized += position.quantity * (mark - position.avg_cost)
        net = self.cash + market_value
        return [
            ("AccountCode", self.account),
            ("AccountType", "INDIVIDUAL"),
            ("NetLiquidation", f"{net:.2f}"),
            ("TotalCashValue", f"{self.cash:.2f}"),
            ("CashBalance", f"{self.cash:.2f}"),
            ("GrossPositionValue", f"{gross:.2f}"),
            ("AvailableFunds", f"{net:.2f}"),
            ("BuyingPower", f"{net * 4:.2f}"),
            ("RealizedPnL", f"{self.realized_pnl:.2f}"),
            ("UnrealizedPnL", f"{unrealized:.2f}"),
        ]
