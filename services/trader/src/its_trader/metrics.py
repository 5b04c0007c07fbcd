"""The trader's Prometheus metrics (registered on the service's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class TraderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "its_trader_decisions",
            "Decisions consumed, by outcome (orders, hold, denied, invalid)",
            ["outcome"],
            registry=registry,
        )
        self.orders = Counter(
            "its_trader_orders", "Orders sent to the broker", ["side", "reason"], registry=registry
        )
        self.order_errors = Counter(
            "its_trader_order_errors", "Orders the broker did not accept", registry=registry
        )
        self.denials = Counter(
            "its_trader_risk_denials", "Orders denied by the risk engine", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.fills = Counter("its_trader_fills", "Fills recorded", registry=registry)
        self.remainders_cancelled = Counter(
            "its_trader_limit_remainders_cancelled",
            "Marketable-limit orders whose unfilled remainder was cancelled at the timeout",
            registry=registry,
        )
        self.fills_recovered = Counter(
            "its_trader_fills_recovered",
            "Fills found only by reconciliation (happened while the trader was down)",
            registry=registry,
        )
        self.halted = Gauge("its_trader_halted", "1 while trading is HALTED", registry=registry)
        self.equity = Gauge("its_trader_equity", "Portfolio equity (USD)", registry=registry)
        self.cash = Gauge("its_trader_cash", "Cash (USD)", registry=registry)
        self.gross = Gauge("its_trader_gross_exposure", "Gross exposure (USD)", registry=registry)
        self.realized = Gauge("its_trader_realized_pnl", "Realized P&L (USD)", registry=registry)
        self.unrealized = Gauge(
            "its_trader_unrealized_pnl", "Unrealized P&L (USD)", registry=registry
        )
        self.position = Gauge(
            "its_trader_position", "Position (shares)", ["symbol"], registry=registry
        )
