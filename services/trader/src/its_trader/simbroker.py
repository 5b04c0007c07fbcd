"""SimBroker: the default paper broker, filling market orders from the live feed.

- A market order fills at the **next** trade of its symbol on ``its:stream:trades``: a trade in a
  stream entry written after the order was placed (the entry id is snapshotted at placement) and
  not earlier in market time than the order's ``not_before_ms`` nor than the latest trade already
  seen in ``its:last:trade:<SYM>``. A price seen before the order never fills it.
- When the feed clock goes back below an open order's market-time bound (the simulator replays
  the day again: a new router writes earlier times), that bound is dropped and the order fills at
  its next trade in stream order.
- Fill price = trade price ± ``slippage_bps`` (buys pay more, sells get less); commission
  IB-like: ``commission_per_share`` with a ``commission_min`` per execution.
- Liquidity: a market order takes all it needs from its next trade (no price impact). A limit
  order fills only where that price is at or better than its limit, and takes at most the size of
  each such print (the volume that really traded there), at most one print per stream entry: a
  large order fills in parts over several prints (``filled_quantity`` grows, the order stays
  ``open``) until it is complete or cancelled; a cancel keeps the part already filled.
- A limit price off IB's tick is refused as IB does (error 110): the order is ``rejected``.
- Its books (cash, positions, orders, executions) live in the ``sim_*`` tables, each fill in one
  transaction, so a restart continues where it stopped: open orders are loaded and the trades
  stream is read again from the oldest open order's snapshot, so trades that happened while the
  process was down fill them (the stream keeps hours of trades).
- It publishes its reference price per symbol to ``its:broker:price:<SYM>`` (fields ``p``, ``t``,
  ``rt``, ``src=sim``) for the price validator: the newest trade of the last entry read, in
  stream order like the router's ``its:last:trade:<SYM>``, so it follows a replay that starts the
  day again (older market times in later entries) instead of waiting for market time to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import redis.asyncio as aioredis
from psycopg.rows import dict_row
from redis.exceptions import RedisError

from its_common.backoff import Backoff
from its_common.clock import read_feed_clock
from its_common.events import Trade
from its_common.rediscluster import xread_streams
from its_common.streams import (
    EntryFormatError,
    Stream,
    StreamLayout,
    decode_entry,
    latest_trade_key,
    now_ms,
)
from its_common.ticks import conforms_to_tick
from its_trader.actions import Side
from its_trader.broker import (
    AccountSummary,
    BrokerOrder,
    BrokerPosition,
    Execution,
    OrderIncident,
    OrderRequest,
)

log = logging.getLogger("its.trader.sim")
BROKER_PRICE_PREFIX: Final = "its:broker:price:"
FILL_QUEUE_MAX: Final = 10_000


def broker_price_key(symbol: str) -> str:
    """Hash with the broker's reference price of one symbol (``p``, ``t``, ``rt``, ``src``)."""
    return f"{BROKER_PRICE_PREFIX}{symbol}"


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def commission_for(quantity: float, per_share: float, minimum: float) -> float:
    return round(max(minimum, quantity * per_share), 6)


def apply_fill(
    quantity: float, avg_price: float, side: Side, fill_qty: float, price: float
) -> tuple[float, float, float]:
    """New (quantity, average price) and the realized P&L of one fill (long and short)."""
    signed = fill_qty if side == "BUY" else -fill_qty
    realized = 0.0
    if quantity == 0 or (quantity > 0) == (signed > 0):
        new_qty = quantity + signed
        new_avg = (abs(quantity) * avg_price + fill_qty * price) / abs(new_qty)
        return new_qty, new_avg, realized
    closing = min(abs(quantity), fill_qty)
    direction = 1.0 if quantity > 0 else -1.0
    realized = closing * (price - avg_price) * direction
    new_qty = quantity + signed
    if new_qty == 0:
        return 0.0, 0.0, realized
    if (new_qty > 0) == (quantity > 0):
        return new_qty, avg_price, realized
    return new_qty, price, realized  # flipped: the remainder opened at this price


@dataclass(frozen=True, slots=True)
class SimConfig:
    account: str = "SIM"
    initial_cash: float = 100_000.0
    slippage_bps: float = 1.0
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    mark_bias_bps: float = 0.0  # fault injection: shifts only the published reference price
    read_count: int = 500
    block_ms: int = 200


@dataclass
class _Open:
    broker_order_id: int
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    after: tuple[int, int]
    not_before_ms: int
    limit_price: float | None = None
    filled: int = 0
    executions: int = 0

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled


@dataclass
class _Position:
    quantity: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0


@dataclass
class _Mark:
    price: float
    ts_ms: int


@dataclass
class _Books:
    cash: float = 0.0
    realized_pnl: float = 0.0
    positions: dict[str, _Position] = field(default_factory=dict)
    marks: dict[str, _Mark] = field(default_factory=dict)
    open: dict[str, _Open] = field(default_factory=dict)


class SimBroker:
    name = "sim"

    def __init__(
        self,
        conn_kwargs: dict[str, Any],
        redis: aioredis.Redis,
        config: SimConfig,
        layout: StreamLayout | None = None,
    ) -> None:
        self.account = config.account
        self._layout = layout or StreamLayout()
        self.config = config
        self._conn_kwargs = conn_kwargs
        self._redis = redis
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._books = _Books()
        self._fills: asyncio.Queue[Execution] = asyncio.Queue(FILL_QUEUE_MAX)
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        # Where the reader is in each trades stream (one per shard, ITS_STREAM_SHARDS): a symbol
        # lives in one shard, so an order compares entry ids of its own symbol's stream only.
        self._cursors: dict[str, str] = {}
        self.trades_read = 0
        self.feed_rewinds = 0  # times the feed clock went back under open orders (a replay)
        self.clock_read_errors = 0
        self.db_reconnects = 0
        self.read_errors = 0  # entries that failed and were read again (PostgreSQL down, ...)

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        conn = await psycopg.AsyncConnection.connect(**self._conn_kwargs, autocommit=True)
        self._conn = conn
        try:
            await self._load()
        except BaseException:  # Redis or the database failed: the next connect() starts over
            self._conn = None
            await conn.close()
            raise
        self._reader = asyncio.create_task(self._read_loop(), name="simbroker-reader")

    async def close(self) -> None:
        if self._reader is not None:
            # Let the blocking XREAD return by itself: cancelling it mid-read can hang redis-py's
            # connection clean-up. Cancel only if it does not finish within a block period.
            self._closing = True
            done, _ = await asyncio.wait({self._reader}, timeout=self.config.block_ms / 1000 + 2)
            if not done:
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
            self._closing = False
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def fills(self) -> asyncio.Queue[Execution]:
        return self._fills

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """The simulated broker lives in this process: there is no connection to lose."""

    async def subscribe(self, symbols: list[str]) -> None:
        """Its reference prices are published as it reads trades (``_publish_marks``)."""

    def drain_incidents(self) -> list[OrderIncident]:
        """Orders are acknowledged synchronously: no incidents."""
        return []

    async def _db(self) -> psycopg.AsyncConnection[Any]:
        """The broker's connection, opened again if PostgreSQL closed it (a restart): the books
        are in memory and every write is one transaction, so nothing needs reloading."""
        if self._conn is None:
            raise RuntimeError("SimBroker is not connected")
        if self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(**self._conn_kwargs, autocommit=True)
            self.db_reconnects += 1
            log.warning("sim broker reconnected to PostgreSQL (connection %d)", self.db_reconnects)
        return self._conn

    async def _load(self) -> None:
        conn = await self._db()
        cfg = self.config
        await conn.execute(
            "INSERT INTO sim_accounts (account, cash, initial_cash) VALUES (%s, %s, %s) "
            "ON CONFLICT (account) DO NOTHING",
            (cfg.account, cfg.initial_cash, cfg.initial_cash),
        )
        books = _Books()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT cash, realized_pnl FROM sim_accounts WHERE account = %s", (cfg.account,)
            )
            row = await cur.fetchone()
            assert row is not None
            books.cash, books.realized_pnl = float(row["cash"]), float(row["realized_pnl"])
            await cur.execute(
                "SELECT symbol, quantity, avg_price, realized_pnl, mark_price, mark_ts_ms "
                "FROM sim_positions WHERE account = %s",
                (cfg.account,),
            )
            for row in await cur.fetchall():
                books.positions[row["symbol"]] = _Position(
                    float(row["quantity"]), float(row["avg_price"]), float(row["realized_pnl"])
                )
                if row["mark_price"] is not None:
                    books.marks[row["symbol"]] = _Mark(
                        float(row["mark_price"]), int(row["mark_ts_ms"] or 0)
                    )
            await cur.execute(
                "SELECT broker_order_id, client_order_id, symbol, side, quantity, after_entry_id,"
                " not_before_ms, limit_price, filled_quantity, (SELECT count(*) FROM"
                " sim_executions e WHERE e.broker_order_id = o.broker_order_id) AS executions"
                " FROM sim_orders o WHERE account = %s AND status = 'open'"
                " ORDER BY broker_order_id",
                (cfg.account,),
            )
            for row in await cur.fetchall():
                limit = row["limit_price"]
                books.open[row["client_order_id"]] = _Open(
                    int(row["broker_order_id"]),
                    row["client_order_id"],
                    row["symbol"],
                    row["side"],
                    int(row["quantity"]),
                    entry_key(row["after_entry_id"]),
                    int(row["not_before_ms"]),
                    None if limit is None else float(limit),
                    int(row["filled_quantity"]),
                    int(row["executions"]),
                )
        self._books = books
        cursors: dict[str, str] = {}
        for stream in self._layout.names(Stream.TRADES):
            afters = [o.after for o in books.open.values() if self._stream_of(o.symbol) == stream]
            if afters:
                oldest = min(afters)
                cursors[stream] = f"{oldest[0]}-{oldest[1]}"
            else:
                cursors[stream] = await self._last_entry_id(stream)
        self._cursors = cursors
        log.info(
            "sim broker loaded",
            extra={"open_orders": len(books.open), "cursors": cursors, "cash": books.cash},
        )

    def _stream_of(self, symbol: str) -> str:
        return self._layout.for_symbol(Stream.TRADES, symbol)

    async def _last_entry_id(self, stream: str) -> str:
        last = await self._redis.xrevrange(stream, "+", "-", count=1)
        if not last:
            return "0-0"
        entry_id = last[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _last_seen_trade_ms(self, symbol: str) -> int:
        value = await self._redis.hget(latest_trade_key(symbol), "t")
        try:
            return int(value) if value is not None else 0
        except ValueError:
            return 0

    # -- orders ------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        """Accept a market or limit order (idempotent by client order id); it fills from the next
        trade on. A limit price off IB's tick is refused as IB does (error 110): the order is
        recorded ``rejected`` (IB: ``Inactive``) and never fills."""
        if request.quantity <= 0:
            raise ValueError("quantity must be positive")
        if request.limit_price is not None and request.limit_price <= 0:
            raise ValueError("a limit price must be positive")
        status = "open"
        if request.limit_price is not None and not conforms_to_tick(request.limit_price):
            status = "rejected"
        existing = await self.order(request.client_order_id)
        if existing is not None:
            return existing  # idempotent: a re-sent client order id is the same order
        # Snapshot the feed position BEFORE the order exists: only later trades can fill it.
        after_id = await self._last_entry_id(self._stream_of(request.symbol))
        not_before = max(request.not_before_ms, await self._last_seen_trade_ms(request.symbol))
        async with self._lock:
            conn = await self._db()
            row = await (
                await conn.execute(
                    "INSERT INTO sim_orders (account, client_order_id, symbol, side, quantity,"
                    " status, after_entry_id, not_before_ms, order_type, limit_price)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (client_order_id) DO NOTHING RETURNING broker_order_id",
                    (
                        self.account,
                        request.client_order_id,
                        request.symbol,
                        request.side,
                        request.quantity,
                        status,
                        after_id,
                        not_before,
                        request.order_type,
                        request.limit_price,
                    ),
                )
            ).fetchone()
            if row is not None and status == "rejected":
                log.warning(
                    "sim order rejected: 110 The price does not conform to the minimum price"
                    " variation for this contract.",
                    extra={"client_order_id": request.client_order_id,
                           "limit_price": request.limit_price},
                )  # fmt: skip
            elif row is not None:
                self._books.open[request.client_order_id] = _Open(
                    int(row[0]),
                    request.client_order_id,
                    request.symbol,
                    request.side,
                    request.quantity,
                    entry_key(after_id),
                    not_before,
                    request.limit_price,
                )
            placed = await self._order_unlocked(request.client_order_id)
        assert placed is not None
        return placed

    async def order(self, client_order_id: str) -> BrokerOrder | None:
        async with self._lock:
            return await self._order_unlocked(client_order_id)

    async def _order_unlocked(self, client_order_id: str) -> BrokerOrder | None:
        cur = await (await self._db()).execute(
            "SELECT client_order_id, broker_order_id, symbol, side, quantity, status,"
            " filled_quantity FROM sim_orders WHERE client_order_id = %s",
            (client_order_id,),
        )
        row = await cur.fetchone()
        return None if row is None else _order(row)

    async def open_orders(self) -> list[BrokerOrder]:
        async with self._lock:
            cur = await (await self._db()).execute(
                "SELECT client_order_id, broker_order_id, symbol, side, quantity, status,"
                " filled_quantity FROM sim_orders WHERE account = %s AND status = 'open'"
                " ORDER BY broker_order_id",
                (self.account,),
            )
            return [_order(row) for row in await cur.fetchall()]

    async def cancel(self, client_order_id: str) -> bool:
        async with self._lock:
            cur = await (await self._db()).execute(
                "UPDATE sim_orders SET status = 'cancelled', updated_at = now() "
                "WHERE client_order_id = %s AND status = 'open' RETURNING 1",
                (client_order_id,),
            )
            done = await cur.fetchone() is not None
            self._books.open.pop(client_order_id, None)
            return done

    async def executions(self, since_ms: int = 0) -> list[Execution]:
        async with self._lock:
            cur = await (await self._db()).execute(
                "SELECT execution_id, client_order_id, broker_order_id, symbol, side, quantity,"
                " price, commission, ts_ms FROM sim_executions WHERE account = %s"
                " AND ts_ms >= %s ORDER BY ts_ms, execution_id",
                (self.account, since_ms),
            )
            rows = await cur.fetchall()
        return [_execution(r) for r in rows]

    # -- books -------------------------------------------------------------------------------

    def mark(self, symbol: str) -> tuple[float, int] | None:
        mark = self._books.marks.get(symbol)
        return None if mark is None else (mark.price, mark.ts_ms)

    async def positions(self) -> list[BrokerPosition]:
        out = []
        for symbol, position in sorted(self._books.positions.items()):
            mark = self._books.marks.get(symbol)
            out.append(
                BrokerPosition(
                    symbol,
                    position.quantity,
                    position.avg_price,
                    position.realized_pnl,
                    None if mark is None else mark.price,
                )
            )
        return out

    async def account_summary(self) -> AccountSummary:
        books = self._books
        market_value = gross = unrealized = 0.0
        for symbol, position in books.positions.items():
            mark = books.marks.get(symbol)
            price = mark.price if mark is not None else position.avg_price
            market_value += position.quantity * price
            gross += abs(position.quantity) * price
            unrealized += position.quantity * (price - position.avg_price)
        return AccountSummary(
            self.account,
            books.cash,
            books.cash + market_value,
            gross,
            books.realized_pnl,
            unrealized,
        )

    # -- the feed ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while not self._closing:
            try:
                reply = await xread_streams(
                    self._redis, self._cursors, self.config.read_count, self.config.block_ms
                )
                backoff.reset()
            except RedisError as exc:
                delay = backoff.next_delay()
                log.warning("sim broker cannot read trades: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if reply and self._books.open:
                await self._release_on_rewind()
            try:
                for raw_stream, messages in reply or []:
                    stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
                    for raw_id, fields in messages:
                        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                        await self._on_entry(entry_id, fields)
                        self._cursors[stream] = entry_id
            except Exception as exc:  # the reader must outlive any failure
                # Read again from the last entry done: fills are keyed by the entry they took
                # (an order's ``after``), so an entry read twice fills nothing twice.
                self.read_errors += 1
                delay = backoff.next_delay()
                log.warning(
                    "sim broker could not apply trades: %r; reading again in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                continue
            if reply:
                await self._publish_marks()

    async def _release_on_rewind(self) -> None:
        """When the feed clock went back under an open order, drop its market-time guard.

        An order's ``not_before_ms`` (its decision's bar, or the latest trade at placement) is at
        most the feed clock when it is placed, and within one router process that clock never
        goes back. A clock below it means a new router is writing an earlier time: the simulator
        replays the day again from 09:30. The order then fills at its next trade in stream order
        instead of waiting hours for market time to catch up. Read after the entries, so the
        clock written in the same pipeline as them is seen.
        """
        try:
            clock = await read_feed_clock(self._redis)
        except (RedisError, ValueError) as exc:
            self.clock_read_errors += 1
            log.warning("sim broker cannot read the feed clock (%s); rewind check skipped", exc)
            return
        if clock is None:
            return
        rewound = [order for order in self._books.open.values() if order.not_before_ms > clock]
        if not rewound:
            return
        self.feed_rewinds += 1
        for order in rewound:
            order.not_before_ms = 0
        log.info(
            "feed clock went back (a replay): open orders fill at their next trade",
            extra={"feed_clock_ms": clock, "orders": [o.client_order_id for o in rewound]},
        )

    async def _on_entry(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            entry = decode_entry(entry_id, fields)
        except (EntryFormatError, ValueError) as exc:
            log.warning("sim broker skips a bad trades entry: %s", exc)
            return
        position = entry_key(entry_id)
        newest: dict[str, Trade] = {}
        for event in entry.events:
            if not isinstance(event, Trade) or event.price <= 0:
                continue
            self.trades_read += 1
            seen = newest.get(event.symbol)
            if seen is None or event.timestamp >= seen.timestamp:
                newest[event.symbol] = event
            print_left = float(event.size)  # what limit orders can take from this print
            for order in list(self._books.open.values()):
                if (
                    order.symbol == event.symbol
                    and position > order.after
                    and event.timestamp >= order.not_before_ms
                ):
                    if order.limit_price is None:
                        await self._fill(order, event, entry_id, order.remaining)
                        continue
                    shares = min(order.remaining, int(print_left))
                    if shares > 0 and self._within_limit(order, event.price):
                        print_left -= shares
                        await self._fill(order, event, entry_id, shares)
        # The mark follows stream order, as the router's latest-trade hash does (the newest
        # trade of the last entry written): when a replay starts the day again, its older
        # trades are the feed's price now, not something to ignore until market time catches up.
        for symbol, trade in newest.items():
            self._books.marks[symbol] = _Mark(trade.price, trade.timestamp)

    def _fill_price(self, side: Side, trade_price: float) -> float:
        slip = self.config.slippage_bps / 10_000.0
        return round(trade_price * (1 + slip) if side == "BUY" else trade_price * (1 - slip), 6)

    def _within_limit(self, order: _Open, trade_price: float) -> bool:
        """The fill price (slippage included) is at or better than the order's limit."""
        price = self._fill_price(order.side, trade_price)
        limit = order.limit_price
        assert limit is not None
        return price <= limit + 1e-9 if order.side == "BUY" else price >= limit - 1e-9

    async def _fill(self, order: _Open, trade: Trade, entry_id: str, shares: int) -> None:
        cfg = self.config
        price = self._fill_price(order.side, trade.price)
        commission = commission_for(shares, cfg.commission_per_share, cfg.commission_min)
        execution = Execution(
            execution_id=f"sim-{order.broker_order_id}-{order.executions + 1}",
            client_order_id=order.client_order_id,
            broker_order_id=str(order.broker_order_id),
            symbol=order.symbol,
            side=order.side,
            quantity=shares,
            price=price,
            commission=commission,
            ts_ms=trade.timestamp,
        )
        done = order.filled + shares >= order.quantity
        async with self._lock:
            if order.client_order_id not in self._books.open:
                return  # cancelled meanwhile
            current = self._books.positions.get(order.symbol, _Position())
            qty, avg, realized = apply_fill(
                current.quantity, current.avg_price, order.side, shares, price
            )
            signed_value = shares * price * (1 if order.side == "BUY" else -1)
            conn = await self._db()
            async with conn.transaction():
                # A part fill moves the order's stream bound to this entry: after a restart the
                # trades stream is read again from there, and no print fills it twice.
                cur = await conn.execute(
                    "UPDATE sim_orders SET status = CASE WHEN %s THEN 'filled' ELSE 'open' END,"
                    " filled_quantity = filled_quantity + %s, after_entry_id = %s,"
                    " updated_at = now() WHERE broker_order_id = %s AND status = 'open'"
                    " RETURNING 1",
                    (done, shares, entry_id, order.broker_order_id),
                )
                if await cur.fetchone() is None:
                    self._books.open.pop(order.client_order_id, None)
                    return
                await conn.execute(
                    "INSERT INTO sim_executions (execution_id, account, broker_order_id,"
                    " client_order_id, symbol, side, quantity, price, trade_price,"
                    " trade_entry_id, commission, ts_ms)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        execution.execution_id, self.account, order.broker_order_id,
                        order.client_order_id, order.symbol, order.side, shares, price,
                        trade.price, entry_id, commission, trade.timestamp,
                    ),
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO sim_positions (account, symbol, quantity, avg_price,"
                    " realized_pnl, mark_price, mark_ts_ms) VALUES (%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (account, symbol) DO UPDATE SET quantity = EXCLUDED.quantity,"
                    " avg_price = EXCLUDED.avg_price, realized_pnl = EXCLUDED.realized_pnl,"
                    " mark_price = EXCLUDED.mark_price, mark_ts_ms = EXCLUDED.mark_ts_ms,"
                    " updated_at = now()",
                    (
                        self.account, order.symbol, qty, avg, current.realized_pnl + realized,
                        trade.price, trade.timestamp,
                    ),
                )  # fmt: skip
                await conn.execute(
                    "UPDATE sim_accounts SET cash = cash - %s - %s,"
                    " realized_pnl = realized_pnl + %s - %s, commissions = commissions + %s,"
                    " updated_at = now() WHERE account = %s",
                    (signed_value, commission, realized, commission, commission, self.account),
                )
            order.filled += shares
            order.executions += 1
            order.after = entry_key(entry_id)
            if done:
                self._books.open.pop(order.client_order_id, None)
            self._books.positions[order.symbol] = _Position(
                qty, avg, current.realized_pnl + realized
            )
            self._books.cash -= signed_value + commission
            self._books.realized_pnl += realized - commission
        log.info(
            "sim fill",
            extra={
                "client_order_id": order.client_order_id,
                "symbol": order.symbol,
                "side": order.side,
                "quantity": shares,
                "remaining": order.remaining,
                "price": price,
            },
        )
        with contextlib.suppress(asyncio.QueueFull):
            self._fills.put_nowait(execution)

    async def _publish_marks(self) -> None:
        bias = 1 + self.config.mark_bias_bps / 10_000.0
        received = now_ms()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for symbol, mark in self._books.marks.items():
                    mapping: dict[Any, Any] = {
                        "p": repr(round(mark.price * bias, 6)),
                        "t": str(mark.ts_ms),
                        "rt": str(received),
                        "src": self.name,
                    }
                    pipe.hset(broker_price_key(symbol), mapping=mapping)
                await pipe.execute()
        except RedisError as exc:
            log.warning("sim broker cannot publish marks: %s", exc)


def _execution(r: Any) -> Execution:
    return Execution(
        execution_id=str(r[0]),
        client_order_id=str(r[1]),
        broker_order_id=str(r[2]),
        symbol=str(r[3]),
        side=r[4],
        quantity=int(r[5]),
        price=float(r[6]),
        commission=float(r[7]),
        ts_ms=int(r[8]),
    )


def _order(row: Any) -> BrokerOrder:
    return BrokerOrder(
        client_order_id=str(row[0]),
        broker_order_id=str(row[1]),
        symbol=str(row[2]),
        side=row[3],
        quantity=int(row[4]),
        status=str(row[5]),
        filled_quantity=int(row[6]),
    )
