"""The trader: decisions → risk → orders → broker; fills → records; halts, kill switch, recovery.

All state changes run under one lock (decisions, fills, control, periodic checks), so the order
of effects is the order of events. Every effect is idempotent: a decision's orders have
deterministic client order ids (derived from the decision), an order is recorded before it is
sent, the broker dedupes client ids, fills are keyed by execution id. A crash at any point and a
replay of the decision therefore never duplicates an order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from opentelemetry import trace

from its_common import calendar
from its_common.actions import ACTION_NAMES, Leg, legs
from its_common.alert_events import AlertEvent, publish_alert_event
from its_common.clock import ClockMode, MarketClock
from its_common.decisions import Decision
from its_common.risk import (
    HALT_REASONS,
    Denial,
    Exposure,
    Halt,
    RiskLimits,
    RiskReason,
    RiskState,
    check_decision,
    check_order,
    check_portfolio,
    in_closing_window,
)
from its_common.streams import latest_trade_key, now_ms
from its_common.symbols import LiveSymbols
from its_common.ticks import marketable_limit
from its_trader import control
from its_trader.actions import OrderIntent, Side, orders_for_action
from its_trader.broker import Broker, Execution, OrderRequest
from its_trader.metrics import TraderMetrics
from its_trader.store import TraderStore

log = logging.getLogger("its.trader")
tracer = trace.get_tracer("its.trader")
OrderStyle = Literal["market", "marketable_limit"]
DAY_STATE = "day"
PEAK_STATE = "peak_equity"
FLATTENED_STATE = "flattened_session"


@dataclass(frozen=True, slots=True)
class TraderConfig:
    symbols: tuple[str, ...]
    limits: RiskLimits
    buy_fraction: float = 0.10
    order_type: OrderStyle = "market"
    limit_slippage_bps: float = 20.0  # marketable limit: the cap against the decision's price
    limit_timeout_s: float = 30.0  # marketable limit: the remainder is cancelled after this
    clock: ClockMode = "feed"
    max_price_age_s: float = 30.0
    max_decision_age_s: float = 300.0
    stale_order_s: float = 120.0


def client_order_id(decision: Decision, intent: OrderIntent) -> str:
    """Deterministic id of a decision's order: a replayed decision maps to the same order."""
    model = hashlib.sha1(decision.model_version.encode()).hexdigest()[:8]
    return f"its-{decision.ts_ms}-{model}-{intent.symbol}-{intent.side[0]}"


class Trader:
    def __init__(
        self,
        config: TraderConfig,
        redis: aioredis.Redis,
        broker: Broker,
        store: TraderStore,
        metrics: TraderMetrics,
    ) -> None:
        self.config = config
        self.redis = redis
        self.broker = broker
        self.store = store
        self.metrics = metrics
        self.risk = RiskState()
        self.lock = asyncio.Lock()
        self.clock = MarketClock(redis, config.clock)
        self.foreign_alerted: set[str] = set()
        self.symbols = LiveSymbols(redis, config.symbols)  # its_common.symbols: one live list
        # The leadership's fencing token (its_common.leader.gate.Leadership.fence): None with
        # leader election off; raises NotLeaderError once the lease is not held.
        self.fence: Callable[[], int | None] = lambda: None

    # -- time and prices ---------------------------------------------------------------------

    async def market_now(self) -> datetime:
        """The market clock (its_common.clock): the feed's, or the wall clock when configured."""
        return await self.clock.now()

    async def prices(self) -> dict[str, float]:
        """Fresh feed prices (received within max_price_age_s of the wall clock)."""
        out: dict[str, float] = {}
        now = now_ms()
        for symbol in self.symbols.current:
            fields = await self.redis.hmget(latest_trade_key(symbol), ["p", "rt"])
            if fields[0] is None:
                continue
            received = int(fields[1] or 0)
            age_limit = self.config.max_price_age_s
            if age_limit > 0 and now - received > age_limit * 1000:
                continue
            out[symbol] = float(fields[0])
        return out

    # -- start and reconciliation ------------------------------------------------------------

    async def start(self) -> None:
        await self.store.connect()
        await self.broker.connect()
        async with self.lock:
            self.risk.halt = await control.load_halt(self.store)
            self.metrics.halted.set(1 if self.risk.halt.halted else 0)
            await self.reconcile()
        log.info(
            "trader started",
            extra={"halted": self.risk.halt.halted, "halt_reason": self.risk.halt.reason},
        )

    async def reconcile(self) -> None:
        """Rebuild from the broker: missing fills, order states, unsent orders, positions."""
        recovered = 0
        for execution in await self.broker.executions():
            if await self.store.record_fill(execution, self.broker.account, self.broker.name):
                recovered += 1
        self.metrics.fills_recovered.inc(recovered)
        now = datetime.now(UTC)
        for unsettled in await self.store.unsettled_orders():
            cid, status = unsettled.client_order_id, unsettled.status
            known = await self.broker.order(cid)
            if known is not None:
                mapped = {"open": "submitted"}.get(known.status, known.status)
                if mapped == "submitted" and known.filled_quantity > 0:
                    mapped = "partially_filled"
                await self.store.set_order_status(cid, mapped, known.broker_order_id)
            elif status == "recorded":
                # Recorded, never reached the broker (crash between the two): send it if young.
                age = (now - unsettled.created_at).total_seconds()
                if age <= self.config.stale_order_s and not self.risk.halt.halted:
                    leg_side: Side = "BUY" if unsettled.side == "BUY" else "SELL"
                    intent = OrderIntent(unsettled.symbol, leg_side, unsettled.quantity, "")
                    await self._send(cid, intent, 0, unsettled.limit_price)
                else:
                    await self.store.set_order_status(cid, "expired")
            elif status in ("submitted", "partially_filled"):
                await self.store.set_order_status(cid, "rejected")  # the broker lost it
        await self._sync_positions()
        # Rebuild cooldowns from recent orders is unnecessary: cooldown keys use market time
        # and a replayed decision is recognised by its order id.
        log.info("reconciled", extra={"fills_recovered": recovered})

    async def _sync_positions(self) -> None:
        positions = await self.broker.positions()
        await self.store.sync_positions(self.broker.account, positions)
        for position in positions:
            self.metrics.position.labels(position.symbol).set(position.quantity)

    # -- decisions ---------------------------------------------------------------------------

    async def handle_decision(self, decision: Decision) -> str:
        async with self.lock:
            outcome = await self._handle_decision(decision)
        self.metrics.decisions.labels(outcome).inc()
        return outcome

    async def _deny(self, decision: Decision, denial: Denial, intent: OrderIntent | None) -> None:
        self.metrics.denials.labels(denial.reason.value).inc()
        log.info(
            "risk denied",
            extra={
                "reason": denial.reason.value,
                "detail": denial.detail,
                "action": decision.action,
            },
        )
        await self.store.risk_event(
            "denied",
            denial.reason.value,
            denial.detail,
            decision_ts_ms=decision.ts_ms,
            model_version=decision.model_version,
            action=decision.action,
            symbol=None if intent is None else intent.symbol,
            side=None if intent is None else intent.side,
            quantity=None if intent is None else intent.quantity,
        )

    def foreign_symbols(self, decision: Decision) -> Denial | None:
        """A decision's legs refer to its own pair (the bundle's): it is traded only when that
        pair is two of this trader's symbols; otherwise (a bundle trained on another pair) it is
        refused, never mapped onto the wrong legs."""
        pair = tuple(decision.symbols)
        mine = self.symbols.current
        if len(pair) == 2 and len(set(pair)) == 2 and all(s in mine for s in pair):
            return None
        detail = (
            f"model {decision.model_version} decided on {','.join(pair) or 'no symbols'}; this "
            f"trader trades {','.join(mine)}: load a bundle trained on its symbols or change "
            "the symbol list"
        )
        log.error("decision refused: %s", detail, extra={"alert": "trader_foreign_symbols"})
        return Denial(RiskReason.FOREIGN_SYMBOLS, detail)

    async def _alert_foreign(self, decision: Decision, denial: Denial) -> None:
        """One alert event per model version whose pair is not this trader's."""
        if decision.model_version in self.foreign_alerted:
            return
        self.foreign_alerted.add(decision.model_version)
        event = AlertEvent(
            type="foreign_symbols",
            source="trader",
            severity="critical",
            state="firing",
            message=f"decisions refused: {denial.detail}",
            data={"model_version": decision.model_version, "symbols": list(decision.symbols)},
        )
        await publish_alert_event(self.redis, event)

    async def _handle_decision(self, decision: Decision) -> str:
        name = ACTION_NAMES[decision.action]
        await self.symbols.refresh()
        market_now = await self.market_now()
        outcome = await self._decide(decision, market_now)
        await self.store.record_signal(
            decision.ts_ms, decision.model_version, decision.action, name, decision.confidence,
            outcome,
        )  # fmt: skip
        return outcome

    async def _decide(self, decision: Decision, market_now: datetime) -> str:
        foreign = self.foreign_symbols(decision)
        if foreign is not None:
            await self._deny(decision, foreign, None)
            await self._alert_foreign(decision, foreign)
            return "denied"
        if all(leg is Leg.HOLD for leg in legs(decision.action)):
            return "hold"
        denial = check_decision(decision.confidence, self.config.limits)
        age_s = market_now.timestamp() - decision.ts_ms / 1000
        if denial is None and age_s > self.config.max_decision_age_s:
            denial = Denial(RiskReason.STALE_DECISION, f"decision {age_s:.0f}s old")
        if denial is not None:
            await self._deny(decision, denial, None)
            return "denied"
        positions = {p.symbol: p.quantity for p in await self.broker.positions()}
        # Risk counts positions plus what open orders may still add: their unfilled remainder
        # (the filled part is in the positions already).
        pending = dict(positions)
        for order in await self.broker.open_orders():
            signed = order.remaining if order.side == "BUY" else -order.remaining
            pending[order.symbol] = pending.get(order.symbol, 0.0) + signed
        summary = await self.broker.account_summary()
        prices = await self.prices()
        sent = denied = 0
        for symbol, leg in zip(decision.symbols, legs(decision.action), strict=True):
            if leg is Leg.BUY and symbol not in prices:
                denied += 1
                await self._deny(
                    decision,
                    Denial(RiskReason.NO_PRICE, f"no fresh feed price for {symbol}"),
                    OrderIntent(symbol, "BUY", 0, "buy"),
                )
        intents = orders_for_action(
            decision.action,
            positions,
            summary.equity,
            prices,
            symbols=decision.symbols,
            buy_fraction=self.config.buy_fraction,
        )
        mono = time.monotonic()
        for intent in intents:
            cid = client_order_id(decision, intent)
            limit = self.limit_price(intent, prices)
            status = await self.store.order_status(cid)
            if status is not None:  # a replayed decision: make sure its order reached the broker
                if status == "recorded":
                    await self._send(cid, intent, decision.ts_ms, limit)
                sent += 1
                continue
            exposure = Exposure(pending, prices, summary.equity)
            denial = check_order(
                intent,
                limits=self.config.limits,
                state=self.risk,
                exposure=exposure,
                market_now=market_now,
                mono_now=mono,
            )
            if denial is not None:
                denied += 1
                await self._deny(decision, denial, intent)
                continue
            await self.store.record_order(
                cid, self.broker.account, self.broker.name, intent.symbol, intent.side,
                intent.quantity, decision.ts_ms, intent.reason, fence_token=self.fence(),
                limit_price=limit,
            )  # fmt: skip
            self.risk.record_order(intent, market_now, mono)
            signed = intent.quantity if intent.side == "BUY" else -intent.quantity
            pending[intent.symbol] = pending.get(intent.symbol, 0.0) + signed
            await self._send(cid, intent, decision.ts_ms, limit)
            sent += 1
        if sent:
            return "orders"
        return "denied" if denied else "no_order"

    def limit_price(self, intent: OrderIntent, prices: Mapping[str, float]) -> float | None:
        """The limit of a marketable-limit order (None: a market order).

        Priced from the feed price the decision was sized with, at most ``limit_slippage_bps``
        worse. A sell without a fresh price goes at market: closing must not wait for a price.
        """
        price = prices.get(intent.symbol)
        if self.config.order_type != "marketable_limit" or price is None or price <= 0:
            return None
        return marketable_limit(intent.side, price, self.config.limit_slippage_bps)

    async def _send(
        self, cid: str, intent: OrderIntent, not_before_ms: int, limit: float | None = None
    ) -> bool:
        with tracer.start_as_current_span("trader.place_order") as span:
            if span.is_recording():
                span.set_attribute("its.symbol", intent.symbol)
                span.set_attribute("its.side", intent.side)
                span.set_attribute("its.quantity", intent.quantity)
                span.set_attribute("its.client_order_id", cid)
                if limit is not None:
                    span.set_attribute("its.limit_price", limit)
            sent = await self._place(cid, intent, not_before_ms, limit)
            if span.is_recording():
                span.set_attribute("its.sent", sent)
            return sent

    async def _place(
        self, cid: str, intent: OrderIntent, not_before_ms: int, limit: float | None
    ) -> bool:
        self.fence()  # never send an order without the lease (raises NotLeaderError)
        request = OrderRequest(
            cid, intent.symbol, intent.side, intent.quantity, not_before_ms, limit
        )
        try:
            placed = await self.broker.place_order(request)
        except Exception as exc:
            self.metrics.order_errors.inc()
            log.error("order not accepted by the broker: %s", exc, extra={"client_order_id": cid})
            return False
        status = {"open": "submitted"}.get(placed.status, placed.status)
        await self.store.set_order_status(cid, status, placed.broker_order_id)
        self.metrics.orders.labels(intent.side, intent.reason or "recovered").inc()
        log.info(
            "order sent",
            extra={
                "client_order_id": cid,
                "symbol": intent.symbol,
                "side": intent.side,
                "quantity": intent.quantity,
                "limit_price": limit,
            },
        )
        return True

    # -- fills -------------------------------------------------------------------------------

    async def handle_fill(self, execution: Execution) -> None:
        async with self.lock:
            if await self.store.record_fill(execution, self.broker.account, self.broker.name):
                self.metrics.fills.inc()
            await self._sync_positions()

    # -- halts, kill switch, flatten ---------------------------------------------------------

    async def halt(self, reason: str, detail: str) -> None:
        """Enter HALTED (durably) and cancel open orders. Caller holds the lock."""
        if not self.risk.halt.halted:
            self.risk.halt = Halt(True, reason, detail, now_ms())
            await control.save_halt(self.store, self.risk.halt)
            await self.store.risk_event("halt", reason, detail)
            log.warning("trading HALTED", extra={"reason": reason, "detail": detail})
        self.metrics.halted.set(1)
        await self.cancel_open_orders()

    async def expire_limit_orders(self) -> int:
        """Cancel the remainder of marketable-limit orders working longer than the timeout.

        The decision priced them for its minute: a remainder left working would fill later at a
        price the model never saw, and would hold risk capacity meanwhile. What was filled stays
        (the order ends ``cancelled`` with its filled quantity). Caller holds the lock.
        """
        cancelled = 0
        for cid in await self.store.working_limit_orders(self.config.limit_timeout_s):
            known = await self.broker.order(cid)
            if known is None:
                continue  # the reconciliation decides about orders the broker does not know
            if known.status != "open":  # done meanwhile: record how it ended
                await self.store.set_order_status(cid, known.status, known.broker_order_id)
                continue
            if await self.broker.cancel(cid):
                cancelled += 1
                self.metrics.remainders_cancelled.inc()
                await self.store.set_order_status(cid, "cancelled")
                log.info(
                    "limit order remainder cancelled",
                    extra={
                        "client_order_id": cid,
                        "filled": known.filled_quantity,
                        "remaining": known.remaining,
                    },
                )
        return cancelled

    async def cancel_open_orders(self) -> int:
        cancelled = 0
        for order in await self.broker.open_orders():
            if await self.broker.cancel(order.client_order_id):
                cancelled += 1
            await self.store.set_order_status(order.client_order_id, "cancelled")
        return cancelled

    async def flatten(self, tag: str) -> int:
        """Close every position with market orders (risk-reducing: not subject to risk checks)."""
        sent = 0
        for position in await self.broker.positions():
            if position.quantity == 0:
                continue
            side: Side = "SELL" if position.quantity > 0 else "BUY"
            intent = OrderIntent(position.symbol, side, int(abs(position.quantity)), "flatten")
            cid = f"its-flat-{tag}-{position.symbol}"
            if await self.store.record_order(
                cid, self.broker.account, self.broker.name, intent.symbol, side,
                intent.quantity, None, "flatten", fence_token=self.fence(),
            ) or await self.store.order_status(cid) == "recorded":  # fmt: skip
                await self._send(cid, intent, 0)
                sent += 1
        return sent

    async def control_tick(self) -> None:
        """Kill flag, durable halt state (a CLI resume), once per control interval."""
        flag = await control.read_kill(self.redis)
        async with self.lock:
            if flag is not None:
                handled = await self.store.get_state(control.KILL_HANDLED_STATE)
                if handled != flag["id"]:
                    log.warning("kill switch engaged", extra={"flag": flag})
                    await self.halt(control.KILL_REASON, str(flag.get("reason", "")))
                    if flag.get("flatten"):
                        await self.flatten(f"kill-{flag['id']}")
                    await self.store.put_state(control.KILL_HANDLED_STATE, flag["id"])
            stored = await control.load_halt(self.store)
            if stored != self.risk.halt:
                if self.risk.halt.halted and not stored.halted:
                    log.warning("trading resumed")
                self.risk.halt = stored
            self.metrics.halted.set(1 if self.risk.halt.halted else 0)

    async def periodic(self) -> None:
        """Snapshot, loss limits (halt), flatten before the close."""
        market_now = await self.market_now()
        async with self.lock:
            summary = await self.broker.account_summary()
            await self.store.snapshot(summary, datetime.now(UTC))
            self._set_gauges(summary.equity, summary.cash, summary.gross_exposure,
                             summary.realized_pnl, summary.unrealized_pnl)  # fmt: skip
            day = calendar.new_york_date(market_now).isoformat()
            day_state = await self.store.get_state(DAY_STATE)
            if not isinstance(day_state, Mapping) or day_state.get("date") != day:
                day_state = {"date": day, "start_equity": summary.equity}
                await self.store.put_state(DAY_STATE, day_state)
            peak_state = await self.store.get_state(PEAK_STATE)
            peak = float(peak_state) if isinstance(peak_state, (int, float)) else 0.0
            if summary.equity > peak:
                peak = summary.equity
                await self.store.put_state(PEAK_STATE, peak)
            breach = check_portfolio(
                summary.equity, float(day_state["start_equity"]), peak, self.config.limits
            )
            if breach is not None and breach.reason in HALT_REASONS:
                self.metrics.denials.labels(breach.reason.value).inc()
                await self.halt(breach.reason.value, breach.detail)
            minutes = self.config.limits.flatten_before_close_min
            if in_closing_window(market_now, minutes):
                flattened = await self.store.get_state(FLATTENED_STATE)
                if flattened != day:
                    await self.cancel_open_orders()
                    await self.flatten(f"close-{day}")
                    await self.store.put_state(FLATTENED_STATE, day)
            # Last: a broker error here must not skip the loss limits above.
            await self.expire_limit_orders()

    def _set_gauges(self, *values: float) -> None:
        m = self.metrics
        for gauge, value in zip(
            (m.equity, m.cash, m.gross, m.realized, m.unrealized), values, strict=True
        ):
            gauge.set(value)

    def status(self) -> dict[str, Any]:
        return {"halted": self.risk.halt.halted, "halt_reason": self.risk.halt.reason}
