"""The simulated IB Gateway: an asyncio TCP server speaking the TWS API to real clients.

One :class:`Book` (account, positions, orders, executions) is shared by all sessions and
outlives them: a client that reconnects finds the same state. Faults for tests and drills:
:meth:`IbSimServer.drop_all` (close every connection, optionally refuse new ones for a while)
and orders that are never acknowledged (:meth:`IbSimServer.ignore_next_orders` or configured
symbols), as the paper server does with orders sent in bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from its_common.risk import PAPER_INITIAL_CASH
from its_common.streams import now_ms
from its_common.ticks import conforms_to_tick
from its_ibsim import wire
from its_ibsim.book import Book, SimOrder, contract_for
from its_ibsim.prices import PriceSource
from its_ibsim.wire import In

log = logging.getLogger("its.ibsim")
MAX_WRITE_BUFFER: Final = 8 * 1024 * 1024
REQUEST_LOG: Final = 20_000
DELAYED_TYPES: Final = frozenset({3, 4})


@dataclass(frozen=True, slots=True)
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 4002
    account: str = "DU1234567"
    server_version: int = 176
    initial_cash: float = PAPER_INITIAL_CASH
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    spread_bps: float = 2.0  # bid/ask around the last trade; buys fill at the ask
    tick_interval_s: float = 0.25  # how often each subscription polls for a new price
    fill_delay_s: float = 0.0  # between acknowledgement and fill (market orders)
    quote_size: float = 100.0  # shares shown at the bid and at the ask, at least, per print
    ignore_order_symbols: frozenset[str] = frozenset()  # orders never acknowledged


def _optional_price(text: str) -> float | None:
    """A price field of the wire: empty or IB's UNSET_DOUBLE (1.7976931348623157e308) is None."""
    if not text:
        return None
    value = float(text)
    return None if value >= 1e300 else value


@dataclass
class Liquidity:
    """Shares still shown at the bid and at the ask for the current print of one symbol.

    Each new print (a new last trade: price or time changes) shows ``max(quote_size, print
    size)`` shares on each side; working limit orders take from that, oldest first, so an order
    larger than what is shown fills in parts over several prints.
    """

    print_key: tuple[float, int]
    bid: float
    ask: float

    def shown(self, action: str) -> float:
        """The shares still shown on the side ``action`` trades against."""
        return self.ask if action == "BUY" else self.bid

    def taken(self, action: str, shares: float) -> None:
        if action == "BUY":
            self.ask = max(0.0, self.ask - shares)
        else:
            self.bid = max(0.0, self.bid - shares)


class Session:
    """One client connection after the handshake."""

    def __init__(
        self,
        server: IbSimServer,
        writer: asyncio.StreamWriter,
        version: int,
        peer: str,
    ) -> None:
        self.server = server
        self.writer = writer
        self.version = version
        self.peer = peer
        self.client_id = -1
        self.market_data_type = 1
        self.subscriptions: dict[int, asyncio.Task[None]] = {}
        self.positions_subscribed = False
        self.account_subscribed = False

    def send(self, fields: Sequence[wire.Field]) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("client %s does not read; dropping it", self.client_id)
            transport.abort()
            return
        self.writer.write(wire.frame(fields))

    def abort(self) -> None:
        self.writer.transport.abort()

    def stop_subscriptions(self) -> None:
        for task in self.subscriptions.values():
            task.cancel()
        self.subscriptions.clear()


class IbSimServer:
    def __init__(self, options: SimOptions, prices: PriceSource) -> None:
        self.options = options
        self.prices = prices
        self.book = Book(
            account=options.account,
            cash=options.initial_cash,
            per_share=options.commission_per_share,
            minimum=options.commission_min,
        )
        self.sessions: dict[int, Session] = {}
        self.port = options.port
        self.connections = 0
        self.drops = 0
        self.orders_ignored = 0
        self.ignore_orders = 0
        self.ignore_symbols = set(options.ignore_order_symbols)
        self.refusing_until = 0.0
        self.request_times: deque[float] = deque(maxlen=REQUEST_LOG)
        self._server: asyncio.Server | None = None
        self._reopen: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.liquidity: dict[str, Liquidity] = {}
        self._matching = asyncio.Lock()
        self._matcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._handle, self.options.host, self.port, reuse_address=True
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        if self._matcher is None or self._matcher.done():
            self._matcher = asyncio.create_task(self._match_loop(), name="ibsim-matcher")
        log.info("ibsim listening", extra={"host": self.options.host, "port": self.port})
        return self.port

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        if self._matcher is not None:
            self._matcher.cancel()
            await asyncio.gather(self._matcher, return_exceptions=True)
            self._matcher = None
        await self._close_listener()
        for session in list(self.sessions.values()):
            session.stop_subscriptions()
            session.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # -- faults ------------------------------------------------------------------------------

    async def drop_all(self, refuse_s: float = 0.0) -> int:
        """Close every client connection now; refuse new ones for ``refuse_s`` seconds."""
        dropped = 0
        if refuse_s > 0:
            self.refusing_until = time.monotonic() + refuse_s
            await self._close_listener()
            if self._reopen is not None:
                self._reopen.cancel()
            self._reopen = asyncio.create_task(self._reopen_after(refuse_s), name="ibsim-reopen")
        for session in list(self.sessions.values()):
            session.stop_subscriptions()
            session.abort()
            dropped += 1
        self.drops += 1
        log.warning("dropped connections", extra={"dropped": dropped, "refuse_s": refuse_s})
        return dropped

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.refusing_until = 0.0
        await self.start()

    def ignore_next_orders(self, count: int) -> None:
        self.ignore_orders = max(0, count)

    def message_rate(self, window_s: float = 1.0) -> int:
        """Most client messages received within any ``window_s`` (pacing checks)."""
        times = list(self.request_times)
        best = start = 0
        for end, t in enumerate(times):
            while t - times[start] > window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "account": self.book.account,
            "clients": sorted(self.sessions),
            "connections": self.connections,
            "drops": self.drops,
            "refusing": self.refusing_until > time.monotonic(),
            "ignore_orders": self.ignore_orders,
            "ignore_symbols": sorted(self.ignore_symbols),
            "orders_ignored": self.orders_ignored,
            "orders": len(self.book.orders),
            "executions": len(self.book.executions),
            "positions": {s: p.quantity for s, p in self.book.positions.items() if p.quantity},
            "cash": round(self.book.cash, 2),
        }

    # -- connections -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        session: Session | None = None
        try:
            prefix = await asyncio.wait_for(reader.readexactly(4), 10.0)
            if prefix != b"API\0":
                raise wire.ProtocolError(f"bad prefix {prefix!r}")
            versions = wire.decode(await asyncio.wait_for(wire.read_frame(reader), 10.0))
            version = wire.negotiate(versions[0] if versions else "", self.options.server_version)
            stamp = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")
            writer.write(wire.frame([version, stamp]))
            session = Session(self, writer, version, peer)
            self.connections += 1
            while True:
                fields = wire.decode(await wire.read_frame(reader))
                self.request_times.append(time.monotonic())
                if not fields:
                    continue
                if not await self._dispatch(session, fields):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except wire.ProtocolError as exc:
            log.warning("protocol error from %s: %s", peer, exc)
        except Exception:
            log.exception("session of %s failed", peer)
        finally:
            if session is not None:
                session.stop_subscriptions()
                if self.sessions.get(session.client_id) is session:
                    del self.sessions[session.client_id]
                log.info("client disconnected", extra={"client_id": session.client_id})
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, s: Session, f: list[str]) -> bool:
        msg = int(f[0])
        if s.client_id < 0 and msg != In.START_API:
            return True  # nothing before START_API
        if msg == In.START_API:
            return self._start_api(s, f)
        if msg == In.REQ_MKT_DATA:
            self._req_mkt_data(s, f)
        elif msg == In.CANCEL_MKT_DATA:
            task = s.subscriptions.pop(int(f[2]), None)
            if task is not None:
                task.cancel()
        elif msg == In.PLACE_ORDER:
            await self._place_order(s, f)
        elif msg == In.CANCEL_ORDER:
            self._cancel_order(s, int(f[2]))
        elif msg == In.REQ_GLOBAL_CANCEL:
            for order in self.book.open_orders():
                self._cancel(order)
        elif msg in (In.REQ_OPEN_ORDERS, In.REQ_ALL_OPEN_ORDERS, In.REQ_AUTO_OPEN_ORDERS):
            if msg != In.REQ_AUTO_OPEN_ORDERS:
                mine = msg == In.REQ_OPEN_ORDERS and s.client_id != 0
                for order in self.book.open_orders():
                    if not mine or order.client_id == s.client_id:
                        s.send(wire.open_order(order.view(), s.version))
                        s.send(self._status_fields(order))
                s.send(wire.open_order_end())
        elif msg == In.REQ_COMPLETED_ORDERS:
            for order in self.book.completed_orders():
                s.send(wire.completed_order(order.view(), s.version))
            s.send(wire.completed_orders_end())
        elif msg == In.REQ_EXECUTIONS:
            self._req_executions(s, f)
        elif msg == In.REQ_POSITIONS:
            s.positions_subscribed = True
            for symbol, position in self.book.positions.items():
                s.send(
                    wire.position(
                        self.book.account, contract_for(symbol), position.quantity,
                        position.avg_cost,
                    )
                )  # fmt: skip
            s.send(wire.position_end())
        elif msg == In.CANCEL_POSITIONS:
            s.positions_subscribed = False
        elif msg == In.REQ_ACCOUNT_UPDATES:
            s.account_subscribed = f[2] not in ("0", "", "False")
            if s.account_subscribed:
                self._send_account(s)
                s.send(wire.account_download_end(self.book.account))
        elif msg == In.REQ_ACCOUNT_UPDATES_MULTI:
            req_id = int(f[2])
            for key, value in self.book.account_values():
                s.send(wire.account_update_multi(req_id, self.book.account, key, value, "USD"))
            s.send(wire.account_update_multi_end(req_id))
        elif msg == In.REQ_ACCOUNT_SUMMARY:
            req_id = int(f[2])
            for key, value in self.book.account_values():
                s.send([63, 1, req_id, self.book.account, key, value, "USD"])
            s.send(wire.account_summary_end(req_id))
        elif msg == In.REQ_MARKET_DATA_TYPE:
            s.market_data_type = int(f[2])
        elif msg == In.REQ_IDS:
            s.send(wire.next_valid_id(self.book.next_order_id(s.client_id)))
        elif msg == In.REQ_MANAGED_ACCTS:
            s.send(wire.managed_accounts([self.book.account]))
        elif msg == In.REQ_CURRENT_TIME:
            s.send(wire.current_time(int(time.time())))
        elif msg == In.REQ_CONTRACT_DETAILS:
            req_id, symbol, sec_type = int(f[2]), f[4].upper(), f[5]
            if symbol and sec_type in ("STK", ""):
                s.send(wire.contract_details(req_id, contract_for(symbol)))
                s.send(wire.contract_details_end(req_id))
            else:
                s.send(wire.error(req_id, 200, "No security definition has been found"))
        else:
            log.debug("unsupported message %s ignored", msg)
        return True

    def _start_api(self, s: Session, f: list[str]) -> bool:
        client_id = int(f[2])
        if client_id in self.sessions:
            s.send(
                wire.error(
                    -1, 326, "Unable to connect as the client id is already in use. "
                    "Retry with a unique client id."
                )
            )  # fmt: skip
            return False
        s.client_id = client_id
        self.sessions[client_id] = s
        s.send(wire.managed_accounts([self.book.account]))
        s.send(wire.next_valid_id(self.book.next_order_id(client_id)))
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            s.send(wire.error(-1, code, text))
        log.info("client connected", extra={"client_id": client_id, "peer": s.peer})
        return True

    # -- market data -------------------------------------------------------------------------

    def _req_mkt_data(self, s: Session, f: list[str]) -> None:
        req_id, symbol = int(f[2]), f[4].upper()
        offset = 15
        if f[5] == "BAG":
            offset += 1 + 4 * int(f[offset])
        if f[offset] not in ("0", ""):
            offset += 3
        snapshot = len(f) > offset + 2 and f[offset + 2] == "1"
        old = s.subscriptions.pop(req_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.create_task(
            self._stream_ticks(s, req_id, symbol, snapshot), name=f"ibsim-md-{symbol}"
        )
        s.subscriptions[req_id] = task

    async def _stream_ticks(self, s: Session, req_id: int, symbol: str, snapshot: bool) -> None:
        data_type = s.market_data_type
        s.send(wire.market_data_type(req_id, data_type))
        delayed = data_type in DELAYED_TYPES
        bid_t, ask_t, last_t = (66, 67, 68) if delayed else (1, 2, 4)
        last: tuple[float, int] | None = None
        deadline = time.monotonic() + 11.0
        half = self.options.spread_bps / 20_000.0
        try:
            while True:
                quote = await self.prices.latest(symbol)
                if quote is not None and (quote.price, quote.ts_ms) != last:
                    last = (quote.price, quote.ts_ms)
                    self.book.marks[symbol] = quote.price
                    shown = max(self.options.quote_size, quote.size)  # as limit orders see it
                    s.send(
                        wire.tick_price(req_id, bid_t, round(quote.price * (1 - half), 4), shown)
                    )
                    s.send(
                        wire.tick_price(req_id, ask_t, round(quote.price * (1 + half), 4), shown)
                    )
                    s.send(wire.tick_price(req_id, last_t, quote.price, quote.size or 100))
                if snapshot and (last is not None or time.monotonic() > deadline):
                    s.send(wire.tick_snapshot_end(req_id))
                    return
                await asyncio.sleep(self.options.tick_interval_s)
        finally:
            s.subscriptions.pop(req_id, None)

    # -- orders ------------------------------------------------------------------------------

    async def _place_order(self, s: Session, f: list[str]) -> None:
        order_id, symbol, sec_type = int(f[1]), f[3].upper(), f[4]
        action, quantity, order_type, order_ref = f[16].upper(), float(f[17]), f[18], f[26]
        limit = _optional_price(f[19])
        existing = self.book.find(s.client_id, order_id)
        if existing is not None:
            if existing.done:
                s.send(wire.error(order_id, 103, "Duplicate order id"))
            else:  # a modification: the quantity and limit price of an open order
                existing.quantity = max(quantity, existing.filled)
                if existing.order_type == "LMT" and limit is not None and limit > 0:
                    existing.limit_price = limit
                s.send(wire.open_order(existing.view(), s.version))
                s.send(self._status_fields(existing))
            return
        if self.ignore_orders > 0 or symbol in self.ignore_symbols:
            self.ignore_orders = max(0, self.ignore_orders - 1)
            self.orders_ignored += 1
            self.book.reserve_order_id(s.client_id, order_id)
            log.warning("order ignored (fault)", extra={"order_id": order_id, "ref": order_ref})
            return
        order = self.book.new_order(
            order_id=order_id, client_id=s.client_id, symbol=symbol, action=action,
            quantity=quantity, order_type=order_type, order_ref=order_ref,
            limit_price=limit if order_type == "LMT" else None,
        )  # fmt: skip
        rejection = self._validate(order, sec_type)
        if rejection is not None:
            self._reject(order, *rejection)
            return
        # IB's order life: PreSubmitted (accepted, not yet at the exchange), then Submitted
        # (working); the client itself shows PendingSubmit until the first answer.
        s.send(wire.open_order(order.view(), s.version))
        s.send(self._status_fields(order))
        order.status = "Submitted"
        s.send(wire.open_order(order.view(), s.version))
        s.send(self._status_fields(order))
        if order.order_type == "LMT":
            await self._match(order)
        elif self.options.fill_delay_s > 0:
            task = asyncio.create_task(self._fill_later(order), name=f"ibsim-fill-{order_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._fill(order)

    def _validate(self, order: SimOrder, sec_type: str) -> tuple[int, str] | None:
        """(IB error code, message) when the order is refused, else None."""
        if sec_type != "STK":
            return 201, f"Order rejected - reason:only stocks are simulated, not {sec_type}"
        if order.action not in ("BUY", "SELL"):
            return 201, f"Order rejected - reason:invalid action {order.action!r}"
        if order.quantity <= 0:
            return 434, "The order size cannot be zero."
        if order.order_type not in ("MKT", "LMT"):
            return 201, f"Order rejected - reason:order type {order.order_type} is not simulated"
        if order.order_type == "LMT":
            price = order.limit_price
            if price is None or price <= 0:
                return 201, "Order rejected - reason:a limit order needs a positive limit price"
            if not conforms_to_tick(price):
                return 110, (
                    "The price does not conform to the minimum price variation for this contract."
                )
        return None

    async def _fill_later(self, order: SimOrder) -> None:
        await asyncio.sleep(self.options.fill_delay_s)
        await self._fill(order)

    async def _fill(self, order: SimOrder) -> None:
        """A market order: filled in full at the ask (buys) or the bid (sells) of the last price;
        depth beyond the displayed size is assumed (no price impact is simulated)."""
        quote = await self.prices.latest(order.symbol)
        if order.done:  # cancelled meanwhile
            return
        if quote is None:
            self._reject(order, 201, f"Order rejected - reason:no market data for {order.symbol}")
            return
        price = self._touch(quote.price, order.action)
        self._execute(order, price, order.remaining)

    # -- limit orders against the displayed liquidity ----------------------------------------

    async def _match_loop(self) -> None:
        """Working limit orders meet each new print (see :class:`Liquidity`)."""
        while True:
            await asyncio.sleep(self.options.tick_interval_s)
            for order in self.book.open_orders():
                if order.order_type == "LMT" and order.status == "Submitted":
                    try:
                        await self._match(order)
                    except Exception:
                        log.exception("matching %s failed", order.order_ref)

    async def _match(self, order: SimOrder) -> None:
        async with self._matching:
            quote = await self.prices.latest(order.symbol)
            if quote is None or order.done or order.limit_price is None:
                return
            book = self.liquidity.get(order.symbol)
            if book is None or book.print_key != (quote.price, quote.ts_ms):
                shown = max(self.options.quote_size, quote.size)
                book = Liquidity((quote.price, quote.ts_ms), shown, shown)
                self.liquidity[order.symbol] = book
            price = self._touch(quote.price, order.action)
            buy = order.action == "BUY"
            if (buy and price > order.limit_price) or (not buy and price < order.limit_price):
                return  # not marketable at this print: keeps working
            shares = min(order.remaining, book.shown(order.action))
            if shares > 0:
                book.taken(order.action, shares)
                self._execute(order, price, shares)

    def _touch(self, last: float, action: str) -> float:
        """The ask (buys) or the bid (sells): ``spread_bps`` around the last trade."""
        half = self.options.spread_bps / 20_000.0
        sign = 1 if action == "BUY" else -1
        return round(last * (1 + sign * half), 4)

    def _execute(self, order: SimOrder, price: float, shares: float) -> None:
        ex = self.book.fill(order, price, now_ms(), shares)
        owner = self.sessions.get(order.client_id)
        if owner is not None:
            owner.send(wire.execution(-1, ex, owner.version))
            owner.send(wire.open_order(order.view(), owner.version))
            owner.send(self._status_fields(order))
            owner.send(wire.commission_report(ex))
        position = self.book.positions[order.symbol]
        for session in self.sessions.values():
            if session.positions_subscribed:
                session.send(
                    wire.position(
                        self.book.account, ex.contract, position.quantity, position.avg_cost
                    )
                )
            if session.account_subscribed:
                self._send_account(session, only=order.symbol)
        log.info(
            "filled",
            extra={
                "order_ref": order.order_ref, "symbol": order.symbol, "price": price,
                "shares": shares, "remaining": order.remaining,
            },
        )  # fmt: skip

    def _reject(self, order: SimOrder, code: int, message: str) -> None:
        """IB's rejection: the error, then the order ``Inactive`` (received, no longer active)."""
        order.status = "Inactive"
        order.completed_ms = now_ms()
        owner = self.sessions.get(order.client_id)
        if owner is not None:
            owner.send(wire.error(order.order_id, code, message))
            owner.send(self._status_fields(order))
        log.info("order rejected", extra={"order_ref": order.order_ref, "code": code})

    def _cancel_order(self, s: Session, order_id: int) -> None:
        order = self.book.find(s.client_id, order_id)
        if order is None:
            s.send(
                wire.error(
                    order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."
                )
            )
            return
        if order.done:
            s.send(
                wire.error(
                    order_id, 161, "Cancel attempted when order is not in a cancellable state"
                )
            )
            return
        self._cancel(order)

    def _cancel(self, order: SimOrder) -> None:
        """Cancelled: whatever was filled stays filled (the position keeps it)."""
        order.status = "Cancelled"
        order.completed_ms = now_ms()
        owner = self.sessions.get(order.client_id)
        if owner is not None:
            owner.send(self._status_fields(order))
            owner.send(wire.error(order.order_id, 202, "Order Canceled - reason:"))

    def _status_fields(self, order: SimOrder) -> list[wire.Field]:
        return wire.order_status(
            order.order_id, order.status, order.filled, order.quantity - order.filled,
            order.avg_fill_price, order.perm_id, order.last_fill_price, order.client_id,
        )  # fmt: skip

    def _req_executions(self, s: Session, f: list[str]) -> None:
        req_id = int(f[2])
        client_filter = int(f[3] or 0) if len(f) > 3 else 0
        symbol_filter = f[6].upper() if len(f) > 6 else ""
        side_filter = f[9].upper() if len(f) > 9 else ""
        for ex in list(self.book.executions):
            if client_filter and ex.client_id != client_filter:
                continue
            if symbol_filter and ex.contract.symbol != symbol_filter:
                continue
            if side_filter and {"BUY": "BOT", "SELL": "SLD"}.get(side_filter) != ex.side:
                continue
            s.send(wire.execution(req_id, ex, s.version))
            s.send(wire.commission_report(ex))
        s.send(wire.execution_end(req_id))

    def _send_account(self, s: Session, only: str | None = None) -> None:
        account = self.book.account
        for key, value in self.book.account_values():
            s.send(wire.account_value(key, value, "USD" if key != "AccountCode" else "", account))
        for symbol, position in self.book.positions.items():
            if only is not None and symbol != only:
                continue
            mark = self.book.marks.get(symbol, position.avg_cost)
            s.send(
                wire.portfolio_value(
                    contract_for(symbol), position.quantity, mark, position.quantity * mark,
                    position.avg_cost, position.quantity * (mark - position.avg_cost),
                    position.realized_pnl, account,
                )
            )  # fmt: skip
        s.send(wire.account_update_time(datetime.now(UTC).strftime("%H:%M")))
