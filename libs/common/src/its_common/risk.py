"""The risk rules: pure checks over a small state, one implementation shared by the live trader
and the trainer's backtest.

Every order intent passes :func:`check_order`; :func:`check_decision` checks a decision's
confidence; :func:`check_portfolio` decides when losses put trading in the HALTED state. Each
denial carries a :class:`RiskReason` (an enumerated, countable label) and a detail text.

Time is passed in, never read: ``market_now`` (aware UTC; hours, closing window, cooldowns) and
``mono_now`` (seconds on any monotonic clock; the order rate limit). The trader passes the feed's
market time and ``time.monotonic()``; the backtest passes the simulated bar time for both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from its_common import calendar


class OrderIntent(Protocol):
    """What the rules need of an order (the trader's ``its_trader.actions.OrderIntent``)."""

    @property
    def symbol(self) -> str: ...

    @property
    def side(self) -> str: ...

    @property
    def quantity(self) -> int: ...


class RiskReason(StrEnum):
    CONFIDENCE = "confidence_below_threshold"
    COOLDOWN = "cooldown"
    MAX_POSITION = "max_position"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_DAILY_LOSS = "max_daily_loss"
    MAX_DRAWDOWN = "max_drawdown"
    HALTED = "halted"
    RATE_LIMIT = "rate_limit"
    MARKET_CLOSED = "market_closed"
    CLOSING_WINDOW = "closing_window"
    NO_PRICE = "no_price"
    STALE_DECISION = "stale_decision"
    FOREIGN_SYMBOLS = "foreign_symbols"  # a decision about symbols this trader does not trade


# The paper accounts' starting cash (the SimBroker's and its-ibsim's defaults): one figure, so
# that the default sizing (a buy adds 10 % of equity) stays under the default per-symbol cap.
PAPER_INITIAL_CASH = 100_000.0

# Reasons that put trading in the HALTED state (besides the kill switch).
HALT_REASONS = frozenset({RiskReason.MAX_DAILY_LOSS, RiskReason.MAX_DRAWDOWN})


@dataclass(frozen=True, slots=True)
class RiskLimits:
    min_confidence: float = 0.6
    cooldown_s: float = 60.0
    max_position_usd: float = 50_000.0
    max_gross_exposure_usd: float = 100_000.0
    max_daily_loss_usd: float = 2_000.0
    max_drawdown_pct: float = 0.05
    max_orders_per_minute: int = 10
    regular_hours_only: bool = True
    flatten_before_close_min: float = 0.0  # 0 = off


@dataclass(frozen=True, slots=True)
class Denial:
    reason: RiskReason
    detail: str


@dataclass(frozen=True, slots=True)
class Halt:
    halted: bool = False
    reason: str = ""
    detail: str = ""
    since_ms: int = 0


@dataclass
class RiskState:
    """What the checks remember: last order time per (symbol, side) and recent order times."""

    halt: Halt = field(default_factory=Halt)
    last_order: dict[tuple[str, str], datetime] = field(default_factory=dict)
    recent_orders: deque[float] = field(default_factory=deque)  # monotonic seconds

    def record_order(self, intent: OrderIntent, market_now: datetime, mono_now: float) -> None:
        self.last_order[(intent.symbol, intent.side)] = market_now
        self.recent_orders.append(mono_now)
        while len(self.recent_orders) > 10_000:
            self.recent_orders.popleft()


@dataclass(frozen=True, slots=True)
class Exposure:
    """Positions (shares) and prices at check time; ``equity`` is the portfolio value."""

    positions: Mapping[str, float]
    prices: Mapping[str, float]
    equity: float

    def position_value(self, symbol: str) -> float:
        return abs(self.positions.get(symbol, 0.0)) * self.prices.get(symbol, 0.0)

    def gross(self) -> float:
        return sum(self.position_value(symbol) for symbol in self.positions)


def in_closing_window(now: datetime, minutes: float) -> bool:
    """True within ``minutes`` of today's close (early closes included)."""
    if minutes <= 0:
        return False
    current = calendar.session(calendar.new_york_date(now))
    if current is None or not current.contains(now):
        return False
    return now >= current.close - timedelta(minutes=minutes)


def check_decision(confidence: float, limits: RiskLimits) -> Denial | None:
    if confidence < limits.min_confidence:
        return Denial(
            RiskReason.CONFIDENCE, f"confidence {confidence:.3f} < {limits.min_confidence:.3f}"
        )
    return None


def check_order(
    intent: OrderIntent,
    *,
    limits: RiskLimits,
    state: RiskState,
    exposure: Exposure,
    market_now: datetime,
    mono_now: float,
) -> Denial | None:
    """None when the order may go; otherwise the first rule it breaks."""
    if state.halt.halted:
        return Denial(RiskReason.HALTED, f"trading halted ({state.halt.reason})")
    if limits.regular_hours_only and not calendar.is_open(market_now):
        return Denial(RiskReason.MARKET_CLOSED, f"outside regular hours at {market_now:%H:%M}Z")
    increases = intent.side == "BUY"
    if increases and in_closing_window(market_now, limits.flatten_before_close_min):
        return Denial(
            RiskReason.CLOSING_WINDOW,
            f"no new positions within {limits.flatten_before_close_min:g} min of the close",
        )
    last = state.last_order.get((intent.symbol, intent.side))
    if last is not None and (market_now - last).total_seconds() < limits.cooldown_s:
        waited = (market_now - last).total_seconds()
        return Denial(
            RiskReason.COOLDOWN,
            f"{intent.side} {intent.symbol} {waited:.0f}s after the last one "
            f"(cooldown {limits.cooldown_s:g}s)",
        )
    window = [t for t in state.recent_orders if mono_now - t < 60.0]
    if len(window) >= limits.max_orders_per_minute:
        return Denial(
            RiskReason.RATE_LIMIT,
            f"{len(window)} orders in the last minute (max {limits.max_orders_per_minute})",
        )
    price = exposure.prices.get(intent.symbol)
    if price is None or price <= 0:
        return Denial(RiskReason.NO_PRICE, f"no fresh price for {intent.symbol}")
    if increases:
        added = intent.quantity * price
        after = exposure.position_value(intent.symbol) + added
        if after > limits.max_position_usd:
            return Denial(
                RiskReason.MAX_POSITION,
                f"{intent.symbol} position would be ${after:,.0f}"
                f" > ${limits.max_position_usd:,.0f}",
            )
        gross = exposure.gross() + added
        if gross > limits.max_gross_exposure_usd:
            return Denial(
                RiskReason.MAX_GROSS_EXPOSURE,
                f"gross exposure would be ${gross:,.0f} > ${limits.max_gross_exposure_usd:,.0f}",
            )
    return None


def check_portfolio(
    equity: float, day_start_equity: float, peak_equity: float, limits: RiskLimits
) -> Denial | None:
    """A loss limit that is breached (trading must halt), or None."""
    daily_loss = day_start_equity - equity
    if daily_loss >= limits.max_daily_loss_usd:
        return Denial(
            RiskReason.MAX_DAILY_LOSS,
            f"daily loss ${daily_loss:,.2f} >= ${limits.max_daily_loss_usd:,.2f}",
        )
    if peak_equity > 0:
        drawdown = (peak_equity - equity) / peak_equity
        if drawdown >= limits.max_drawdown_pct:
            return Denial(
                RiskReason.MAX_DRAWDOWN,
                f"drawdown {drawdown:.2%} from ${peak_equity:,.2f}"
                f" >= {limits.max_drawdown_pct:.2%}",
            )
    return None
