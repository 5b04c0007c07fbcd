"""IbBroker: the :class:`~its_trader.broker.Broker` adapter for Interactive Brokers (ib_async).

- Paper only by default (:mod:`its_trader.ib_guard`): live ports and non-``DU`` accounts are
  refused before and after connecting unless ``ITS_ALLOW_LIVE_TRADING=true``.
- ITS client order ids travel as IB's ``orderRef``; placing a known id returns that order.
- Every outgoing request passes a token bucket (45/s, burst 4: under IB's 50 messages/s).
- A dropped connection is re-established with exponential backoff and jitter. After every
  connect and reconnect positions, open and completed orders and executions are fetched; the
  order and execution books are rebuilt from them, executions not yet delivered are put on
  :meth:`fills` (fills that happened while disconnected are recovered), market data is
  resubscribed and :attr:`generation` increments (the engine can re-run its reconciliation).
- An order without acknowledgement after ``ack_timeout_s`` is an incident: logged with
  ``alert=ib_order_unacknowledged``, counted, and returned by :meth:`drain_incidents`. An
  unacknowledged order the broker does not know after a reconnect is marked ``rejected``.
- While disconnected, :meth:`positions`, :meth:`open_orders`, :meth:`executions` and
  :meth:`account_summary` raise :class:`ConnectionError` (an ``OSError``) instead of answering
  from an empty or stale cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import redis.asyncio as aioredis
from ib_async import IB, Contract, Fill, LimitOrder, MarketOrder, Order, Stock, Ticker, Trade
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from its_common.backoff import Backoff
from its_common.clock import MarketClock
from its_trader.actions import Side
from its_trader.broker import (
    AccountSummary,
    BrokerOrder,
    BrokerPosition,
    Execution,
    OrderIncident,
    OrderRequest,
)
from its_trader.ib_guard import LiveTradingRefusedError, TokenBucket, ensure_paper

log = logging.getLogger("its.trader.ib")
FILL_QUEUE_MAX: Final = 10_000
MAX_EXECUTIONS: Final = 50_000
MAX_ORDERS: Final = 20_000
MAX_INCIDENTS: Final = 1_000
CONNECT_MESSAGES: Final = 8  # startApi + the initial requests ib_async sends on connect
ACK_STATES: Final = frozenset(
    {"PreSubmitted", "Submitted", "Filled", "Cancelled", "ApiCancelled", "Inactive"}
)
STATUS_MAP: Final = {
    "PendingSubmit": "open",
    "ApiPending": "open",
    "PreSubmitted": "open",
    "Submitted": "open",
    "PendingCancel": "open",
    "Filled": "filled",
    "Cancelled": "cancelled",
    "ApiCancelled": "cancelled",
    "Inactive": "rejected",
}
BROKER_PRICE_PREFIX: Final = "its:broker:price:"  # same keys as the SimBroker's reference price


@dataclass(frozen=True, slots=True)
class IbConfig:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    account: str = ""  # empty: the only managed account
    allow_live: bool = False
    connect_timeout_s: float = 4.0
    connect_attempts: int = 0  # at the first connect; 0 = until it works
    ack_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_messages_per_s: float = 45.0
    burst: float = 4.0
    market_data_type: int = 1  # 3 = delayed
    exchange: str = "SMART"
    currency: str = "USD"
    watchdog_interval_s: float = 0.5
    commission_wait_s: float = 5.0  # a fill without its commission report is delivered anyway


@dataclass
class _Tracked:
    client_order_id: str
    order_id: int
    symbol: str
    side: Side
    quantity: int
    placed: float  # monotonic
    status: str = "open"
    filled: int = 0
    acked: bool = False
    incident: bool = False
    generation: int = 0

    def view(self) -> BrokerOrder:
        return BrokerOrder(
            self.client_order_id,
            str(self.order_id),
            self.symbol,
            self.side,
            self.quantity,
            self.status,
            self.filled,
        )


@dataclass
class _Pending:
    execution: Execution
    seen: float  # monotonic


@dataclass
class _Metrics:
    incidents: Counter | None = None
    reconnects: Counter | None = None
    paced: Counter | None = None

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> _Metrics:
        if registry is None:
            return cls()
        return cls(
            Counter(
                "its_trader_ib_order_incidents",
                "IB orders without acknowledgement (or lost)",
                ["kind"],
                registry=registry,
            ),
            Counter("its_trader_ib_reconnects", "IB reconnections", registry=registry),
            Counter("its_trader_ib_requests", "IB requests through the pacer", registry=registry),
        )


def side_of(ib_side: str) -> Side:
    return "BUY" if ib_side.upper() in ("BOT", "BUY") else "SELL"


def execution_of(fill: Fill, commission: float | None = None) -> Execution:
    ex = fill.execution
    ref = ex.orderRef or f"ib-perm-{ex.permId}"
    when: datetime = ex.time
    return Execution(
        execution_id=ex.execId,
        client_order_id=ref,
        broker_order_id=str(ex.orderId),
        symbol=fill.contract.symbol,
        side=side_of(ex.side),
        quantity=round(ex.shares),
        price=float(ex.price),
        commission=float(fill.commissionReport.commission if commission is None else commission),
        ts_ms=int(when.timestamp() * 1000),
    )


class IbBroker:
    name = "ib"

    def __init__(
        self,
        config: IbConfig,
        redis: aioredis.Redis | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.account = config.account
        self.ib = IB()
        self._redis = redis
        self._metrics = _Metrics.create(registry)
        self._bucket = TokenBucket(config.max_messages_per_s, config.burst)
        self._fills: asyncio.Queue[Execution] = asyncio.Queue(FILL_QUEUE_MAX)
        self._orders: OrderedDict[str, _Tracked] = OrderedDict()
        self._executions: OrderedDict[str, Execution] = OrderedDict()
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._contracts: dict[str, Contract] = {}
        self._market_data: dict[str, Ticker] = {}
        self._prices: dict[str, tuple[float, int]] = {}
        self._incidents: deque[OrderIncident] = deque(maxlen=MAX_INCIDENTS)
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._stopping = False
        self._ready = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.generation = 0
        self.reconnects = 0
        self.incident_count = 0
        self.requests = 0
        self.last_error: str = ""
        self._wire_events()

    # -- lifecycle ---------------------------------------------------------------------------

    def _wire_events(self) -> None:
        ib = self.ib
        ib.orderStatusEvent += self._on_order_status
        ib.openOrderEvent += self._on_open_order
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.pendingTickersEvent += self._on_tickers

    @property
    def connected(self) -> bool:
        return self._ready and self.ib.isConnected()

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every reconnect's sync (e.g. the engine's reconciliation)."""
        self._hooks.append(hook)

    async def connect(self) -> None:
        """Connect (retrying with backoff until ``connect_attempts``), then sync the books."""
        self._stopping = False
        cfg = self.config
        ensure_paper(cfg.port, [cfg.account] if cfg.account else [], allow_live=cfg.allow_live)
        if self.connected:
            return
        backoff, attempt = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s), 0
        while True:
            attempt += 1
            try:
                await self._connect_once()
                break
            except LiveTradingRefusedError:
                raise
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.last_error = repr(exc)
                if cfg.connect_attempts and attempt >= cfg.connect_attempts:
                    raise ConnectionError(f"IB not reachable at {cfg.host}:{cfg.port}") from exc
                delay = backoff.next_delay()
                log.warning("IB connect failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="ib-watchdog")

    async def close(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._reconnect_task, self._watchdog) if t is not None]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reconnect_task = self._watchdog = None
        self._ready = False
        self.ib.disconnect()

    async def _connect_once(self) -> None:
        cfg = self.config
        self._ready = False
        await self._pace(CONNECT_MESSAGES)
        await self.ib.connectAsync(
            cfg.host, cfg.port, clientId=cfg.client_id, timeout=cfg.connect_timeout_s,
            account=cfg.account,
        )  # fmt: skip
        accounts = self.ib.managedAccounts()
        account = cfg.account or (accounts[0] if len(accounts) == 1 else "")
        try:
            if not account or account not in accounts:
                raise ConnectionError(f"account {cfg.account!r} not among {accounts}")
            ensure_paper(cfg.port, [account], allow_live=cfg.allow_live)
        except LiveTradingRefusedError:
            self.ib.disconnect()
            self._stopping = True
            raise
        except ConnectionError:
            self.ib.disconnect()
            raise
        self.account = account
        if cfg.market_data_type != 1:
            await self._pace()
            self.ib.reqMarketDataType(cfg.market_data_type)
        await self._sync()
        self._ready = True
        log.info(
            "IB connected",
            extra={"account": account, "port": cfg.port, "generation": self.generation},
        )

    def _on_disconnected(self) -> None:
        was_ready, self._ready = self._ready, False
        if self._stopping or not was_ready:
            return
        log.warning("IB connection lost; reconnecting", extra={"alert": "ib_disconnected"})
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(
                self._reconnect_loop(), name="ib-reconnect"
            )

    async def _reconnect_loop(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        delay = backoff.next_delay()
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await self._connect_once()
            except LiveTradingRefusedError as exc:
                log.critical("IB reconnect refused: %s", exc, extra={"alert": "ib_live_refused"})
                return
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.last_error = repr(exc)
                delay = backoff.next_delay()
                log.warning("IB reconnect failed (%s); next try in %.1fs", exc, delay)
                continue
            self.reconnects += 1
            if self._metrics.reconnects is not None:
                self._metrics.reconnects.inc()
            for hook in list(self._hooks):
                try:
                    await hook()
                except Exception:
                    log.exception("reconnect hook failed")
            return

    async def wait_connected(self, generation: int = 0, within_s: float = 30.0) -> None:
        """Until connected and synced at least ``generation`` times (tests, start-up checks)."""
        deadline = time.monotonic() + within_s
        while not (self.connected and self.generation >= generation):
            if time.monotonic() > deadline:
                raise TimeoutError(f"IB not connected (generation {self.generation})")
            await asyncio.sleep(0.05)

    # -- pacing ------------------------------------------------------------------------------

    async def _pace(self, messages: int = 1) -> None:
        for _ in range(messages):
            await self._bucket.acquire()
        self.requests += messages
        if self._metrics.paced is not None:
            self._metrics.paced.inc(messages)

    @property
    def pacing_wait_s(self) -> float:
        return self._bucket.waited_s

    # -- sync after (re)connect --------------------------------------------------------------

    async def _sync(self) -> None:
        """Rebuild orders and executions from the broker after a (re)connect."""
        started = time.monotonic()
        # ib_async's connect already requested positions, open and completed orders and
        # executions; ask for executions once more so this does not depend on its internals.
        await self._pace()
        fills = await asyncio.wait_for(self.ib.reqExecutionsAsync(), self.config.connect_timeout_s)
        known_refs: set[str] = set()
        for trade in self.ib.trades():
            ref = trade.order.orderRef
            if ref:
                known_refs.add(ref)
                self._track_trade(trade, acked=True)
        for fill in fills:
            self._record_fill(fill, deliver=True)
            if fill.execution.orderRef:
                known_refs.add(fill.execution.orderRef)
        for tracked in self._orders.values():
            if (
                tracked.status == "open"
                and not tracked.acked
                and tracked.placed < started
                and tracked.client_order_id not in known_refs
            ):
                tracked.status = "rejected"
                self._incident("lost", tracked, "IB lost an unacknowledged order")
        for symbol in list(self._market_data):
            del self._market_data[symbol]
            await self._subscribe(symbol)
        self.generation += 1

    # -- orders ------------------------------------------------------------------------------

    async def _contract(self, symbol: str) -> Contract:
        contract = self._contracts.get(symbol)
        if contract is not None:
            return contract
        await self._pace()
        qualified = await self.ib.qualifyContractsAsync(
            Stock(symbol, self.config.exchange, self.config.currency)
        )
        found = qualified[0] if qualified else None
        if not isinstance(found, Contract) or not found.conId:
            raise ValueError(f"IB does not know the stock {symbol}")
        self._contracts[symbol] = found
        return found

    def _require(self) -> None:
        if not self.connected:
            raise ConnectionError("IB is not connected")

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        if request.quantity <= 0:
            raise ValueError("quantity must be positive")
        existing = await self.order(request.client_order_id)
        if existing is not None:
            return existing  # idempotent: the same client order id is the same order
        self._require()
        contract = await self._contract(request.symbol)
        self._require()
        await self._pace()
        order: Order
        if request.limit_price is None:
            order = MarketOrder(
                request.side,
                request.quantity,
                orderRef=request.client_order_id,
                account=self.account,
                tif="DAY",
            )
        else:
            order = LimitOrder(
                request.side,
                request.quantity,
                request.limit_price,
                orderRef=request.client_order_id,
                account=self.account,
                tif="DAY",
            )
        trade = self.ib.placeOrder(contract, order)
        tracked = _Tracked(
            request.client_order_id,
            trade.order.orderId,
            request.symbol,
            request.side,
            request.quantity,
            time.monotonic(),
            generation=self.generation,
        )
        self._remember(tracked)
        self._track_trade(trade, acked=False)  # the server may have answered already
        log.info(
            "IB order placed",
            extra={
                "client_order_id": request.client_order_id,
                "order_id": tracked.order_id,
                "symbol": request.symbol,
                "side": request.side,
                "quantity": request.quantity,
                "order_type": request.order_type,
                "limit_price": request.limit_price,
            },
        )
        return tracked.view()

    def _remember(self, tracked: _Tracked) -> None:
        self._orders[tracked.client_order_id] = tracked
        self._orders.move_to_end(tracked.client_order_id)
        while len(self._orders) > MAX_ORDERS:
            oldest = next(iter(self._orders))
            if self._orders[oldest].status == "open":
                break
            self._orders.popitem(last=False)

    def _track_trade(self, trade: Trade, *, acked: bool) -> None:
        ref = trade.order.orderRef
        if not ref:
            return
        status = STATUS_MAP.get(trade.orderStatus.status, "open")
        tracked = self._orders.get(ref)
        if tracked is None:
            tracked = _Tracked(
                ref,
                trade.order.orderId,
                trade.contract.symbol,
                side_of(trade.order.action),
                round(trade.order.totalQuantity),
                time.monotonic(),
                generation=self.generation,
            )
            self._remember(tracked)
        tracked.order_id = trade.order.orderId or tracked.order_id
        if acked or trade.orderStatus.status in ACK_STATES:
            tracked.acked = True
            tracked.status = status
            tracked.filled = max(tracked.filled, round(trade.orderStatus.filled))

    async def order(self, client_order_id: str) -> BrokerOrder | None:
        tracked = self._orders.get(client_order_id)
        if tracked is not None:
            return tracked.view()
        fills = [e for e in self._executions.values() if e.client_order_id == client_order_id]
        if not fills:
            return None
        first = fills[0]
        filled = sum(e.quantity for e in fills)
        return BrokerOrder(
            client_order_id, first.broker_order_id, first.symbol, first.side, filled, "filled",
            filled,
        )  # fmt: skip

    async def open_orders(self) -> list[BrokerOrder]:
        self._require()
        await self._pace()
        trades = await asyncio.wait_for(self.ib.reqOpenOrdersAsync(), self.config.connect_timeout_s)
        for trade in trades:
            self._track_trade(trade, acked=True)
        return [t.view() for t in self._orders.values() if t.status == "open"]

    async def cancel(self, client_order_id: str) -> bool:
        tracked = self._orders.get(client_order_id)
        if tracked is None or tracked.status != "open":
            return False
        self._require()
        for trade in self.ib.openTrades():
            if trade.order.orderRef == client_order_id:
                await self._pace()
                self.ib.cancelOrder(trade.order)
                return True
        return False

    async def executions(self, since_ms: int = 0) -> list[Execution]:
        self._require()
        await self._pace()
        fills = await asyncio.wait_for(self.ib.reqExecutionsAsync(), self.config.connect_timeout_s)
        for fill in fills:
            self._record_fill(fill, deliver=False)
        return sorted(
            (e for e in self._executions.values() if e.ts_ms >= since_ms),
            key=lambda e: (e.ts_ms, e.execution_id),
        )

    def fills(self) -> asyncio.Queue[Execution]:
        return self._fills

    # -- events ------------------------------------------------------------------------------

    def _on_order_status(self, trade: Trade) -> None:
        self._track_trade(trade, acked=False)

    def _on_open_order(self, trade: Trade) -> None:
        self._track_trade(trade, acked=True)

    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._track_trade(trade, acked=True)
        self._record_fill(fill, deliver=False, wait_commission=True)

    def _on_commission(self, trade: Trade, fill: Fill, _report: Any) -> None:
        self._record_fill(fill, deliver=True)

    def _on_error(self, req_id: int, code: int, message: str, _contract: Any = None) -> None:
        level = logging.INFO if code in (2104, 2106, 2107, 2108, 2158) else logging.WARNING
        log.log(level, "IB message %s: %s", code, message, extra={"req_id": req_id, "code": code})

    def _record_fill(self, fill: Fill, *, deliver: bool, wait_commission: bool = False) -> None:
        known = self.ib.wrapper.fills.get(fill.execution.execId, fill)
        execution = execution_of(fill, known.commissionReport.commission)
        self._executions[execution.execution_id] = execution
        while len(self._executions) > MAX_EXECUTIONS:
            self._executions.popitem(last=False)
        tracked = self._orders.get(execution.client_order_id)
        if tracked is not None:
            tracked.acked = True
        if wait_commission and not known.commissionReport.execId:
            self._pending[execution.execution_id] = _Pending(execution, time.monotonic())
            return
        if deliver:
            self._deliver(execution)

    def _deliver(self, execution: Execution) -> None:
        self._pending.pop(execution.execution_id, None)
        if execution.execution_id in self._delivered:
            return
        try:
            self._fills.put_nowait(execution)
        except asyncio.QueueFull:
            log.error("fill queue full; the reconciliation will recover %s", execution.execution_id)
            return
        self._delivered[execution.execution_id] = None
        while len(self._delivered) > MAX_EXECUTIONS:
            self._delivered.popitem(last=False)

    # -- unacknowledged orders ---------------------------------------------------------------

    async def _watch(self) -> None:
        cfg = self.config
        while not self._stopping:
            await asyncio.sleep(cfg.watchdog_interval_s)
            now = time.monotonic()
            for tracked in list(self._orders.values()):
                if (
                    tracked.status == "open"
                    and not tracked.acked
                    and not tracked.incident
                    and now - tracked.placed > cfg.ack_timeout_s
                ):
                    self._incident("unacknowledged", tracked, "IB order not acknowledged")
            for pending in list(self._pending.values()):
                if now - pending.seen > cfg.commission_wait_s:
                    self._deliver(pending.execution)

    def _incident(self, kind: str, tracked: _Tracked, message: str) -> None:
        tracked.incident = True
        age = time.monotonic() - tracked.placed
        incident = OrderIncident(
            kind,
            tracked.client_order_id,
            str(tracked.order_id),
            tracked.symbol,
            tracked.side,
            tracked.quantity,
            round(age, 3),
        )
        self._incidents.append(incident)
        self.incident_count += 1
        if self._metrics.incidents is not None:
            self._metrics.incidents.labels(kind).inc()
        log.error(
            message,
            extra={
                "alert": f"ib_order_{kind}",
                "client_order_id": tracked.client_order_id,
                "order_id": tracked.order_id,
                "symbol": tracked.symbol,
                "age_s": round(age, 3),
            },
        )

    def drain_incidents(self) -> list[OrderIncident]:
        """Incidents since the last call (the engine polls this)."""
        out = list(self._incidents)
        self._incidents.clear()
        return out

    # -- books -------------------------------------------------------------------------------

    async def positions(self) -> list[BrokerPosition]:
        self._require()
        items = {p.contract.conId: p for p in self.ib.portfolio(self.account)}
        out = []
        for position in self.ib.positions(self.account):
            symbol = position.contract.symbol
            item = items.get(position.contract.conId)
            mark = self._prices.get(symbol)
            out.append(
                BrokerPosition(
                    symbol,
                    float(position.position),
                    float(position.avgCost),
                    float(item.realizedPNL) if item is not None else 0.0,
                    float(item.marketPrice) if item is not None else (mark[0] if mark else None),
                )
            )
        return sorted(out, key=lambda p: p.symbol)

    async def account_summary(self) -> AccountSummary:
        self._require()
        values = {
            v.tag: v.value
            for v in self.ib.accountValues(self.account)
            if v.currency in ("USD", "BASE", "") and not v.modelCode
        }

        def number(tag: str) -> float:
            try:
                return float(values.get(tag, 0.0))
            except ValueError:
                return 0.0

        return AccountSummary(
            self.account,
            number("TotalCashValue"),
            number("NetLiquidation"),
            number("GrossPositionValue"),
            number("RealizedPnL"),
            number("UnrealizedPnL"),
        )

    # -- market data -------------------------------------------------------------------------

    async def subscribe(self, symbols: list[str]) -> None:
        """Stream prices for ``symbols`` (kept across reconnects); see :meth:`price`."""
        self._require()
        for symbol in symbols:
            if symbol not in self._market_data:
                await self._subscribe(symbol)

    async def _subscribe(self, symbol: str) -> None:
        contract = await self._contract(symbol)
        await self._pace()
        self._market_data[symbol] = self.ib.reqMktData(contract)

    def price(self, symbol: str) -> tuple[float, int] | None:
        """The latest IB price of ``symbol`` (last, else midpoint) and when it came (ms)."""
        return self._prices.get(symbol)

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        now = int(time.time() * 1000)
        changed: dict[str, tuple[float, int]] = {}
        for ticker in tickers:
            symbol = ticker.contract.symbol if ticker.contract is not None else ""
            if symbol not in self._market_data:
                continue
            price = ticker.last if _valid(ticker.last) else ticker.midpoint()
            if _valid(price):
                self._prices[symbol] = changed[symbol] = (float(price), now)
        if changed and self._redis is not None:
            task = asyncio.get_running_loop().create_task(self._publish(changed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _publish(self, prices: dict[str, tuple[float, int]]) -> None:
        assert self._redis is not None
        try:
            # A tick is the market's price now: stamped with the market clock (the feed's, so a
            # replayed or accelerated day compares like with like), received on the wall clock.
            market_ms = await MarketClock(self._redis).now_ms()
            async with self._redis.pipeline(transaction=False) as pipe:
                for symbol, (price, ts) in prices.items():
                    mapping: dict[Any, Any] = {
                        "p": repr(price), "t": str(market_ms), "rt": str(ts), "src": self.name,
                    }  # fmt: skip
                    pipe.hset(f"{BROKER_PRICE_PREFIX}{symbol}", mapping=mapping)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cannot publish IB prices: %s", exc)


def _valid(value: float | None) -> bool:
    with contextlib.suppress(TypeError, ValueError):
        return value is not None and math.isfinite(value) and float(value) > 0
    return False
