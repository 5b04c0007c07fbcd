"""The TWS API wire format: framing, the handshake and the server messages ITS needs.

After the handshake every message is a 4-byte big-endian length followed by NUL-terminated
text fields. Field lists follow ib_async's ``decoder.py`` for the server version this module
negotiates (157-178; the simulator offers 176 by default). Builders return the field list; a
session frames it with :func:`frame`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MIN_CLIENT_VERSION: Final = 157
MAX_SERVER_VERSION: Final = 178
MAX_MESSAGE_BYTES: Final = 1 << 24
Field = str | int | float | bool | None


class ProtocolError(ValueError):
    """The peer did not speak the TWS API."""


# -- incoming (client to server) message ids ---------------------------------------------------
class In:
    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_CURRENT_TIME = 49
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


# -- outgoing (server to client) message ids ---------------------------------------------------
class Out:
    TICK_PRICE = 1
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    CURRENT_TIME = 49
    CONTRACT_DATA = 10
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


def _text(value: Field) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def encode(fields: Sequence[Field]) -> bytes:
    """One message body: every field NUL-terminated."""
    return b"".join(_text(f).encode() + b"\0" for f in fields)


def frame(fields: Sequence[Field]) -> bytes:
    body = encode(fields)
    return struct.pack(">I", len(body)) + body


def decode(body: bytes) -> list[str]:
    parts = body.decode(errors="backslashreplace").split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    (length,) = struct.unpack(">I", header)
    if length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {length} bytes is too large")
    return await reader.readexactly(length)


def negotiate(version_text: str, server_version: int) -> int:
    """The server version for a client's ``v<min>..<max>[ options]`` (ProtocolError if none)."""
    text = version_text.strip()
    if not text.startswith("v"):
        raise ProtocolError(f"bad version range {text!r}")
    span = text[1:].split(" ", 1)[0]
    low_text, sep, high_text = span.partition("..")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        raise ProtocolError(f"bad version range {text!r}") from None
    chosen = min(high, server_version, MAX_SERVER_VERSION)
    if chosen < max(low, MIN_CLIENT_VERSION):
        raise ProtocolError(f"no common version in {text!r} (server {server_version})")
    return chosen


# -- contracts ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Contract:
    con_id: int
    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    primary_exchange: str = "NASDAQ"
    currency: str = "USD"

    def fields(self, *, primary: bool = False) -> list[Field]:
        """conId..tradingClass as in position/execDetails/openOrder (exchange or primary)."""
        return [
            self.con_id,
            self.symbol,
            self.sec_type,
            "",  # lastTradeDateOrContractMonth
            0.0,  # strike
            "",  # right
            "",  # multiplier
            self.primary_exchange if primary else self.exchange,
            self.currency,
            self.symbol,  # localSymbol
            "NMS",  # tradingClass
        ]


# -- server messages ---------------------------------------------------------------------------
def managed_accounts(accounts: Sequence[str]) -> list[Field]:
    return [Out.MANAGED_ACCTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> list[Field]:
    return [Out.NEXT_VALID_ID, 1, order_id]


def error(req_id: int, code: int, message: str) -> list[Field]:
    return [Out.ERR_MSG, 2, req_id, code, message, ""]  # advancedOrderRejectJson (>= 166)


def current_time(epoch_s: int) -> list[Field]:
    return [Out.CURRENT_TIME, 1, epoch_s]


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> list[Field]:
    return [Out.TICK_PRICE, 6, req_id, tick_type, price, size, 0]


def market_data_type(req_id: int, data_type: int) -> list[Field]:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_snapshot_end(req_id: int) -> list[Field]:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


def position(account: str, contract: Contract, quantity: float, avg_cost: float) -> list[Field]:
    return [Out.POSITION_DATA, 3, account, *contract.fields(), quantity, avg_cost]


def position_end() -> list[Field]:
    return [Out.POSITION_END, 1]


def account_value(key: str, value: str, currency: str, account: str) -> list[Field]:
    return [Out.ACCT_VALUE, 2, key, value, currency, account]


def portfolio_value(
    contract: Contract,
    quantity: float,
    market_price: float,
    market_value: float,
    avg_cost: float,
    unrealized: float,
    realized: float,
    account: str,
) -> list[Field]:
    c = contract.fields(primary=True)
    # updatePortfolio has no exchange: conId..multiplier, primaryExchange, currency, ...
    return [
        Out.PORTFOLIO_VALUE, 8, *c,
        quantity, market_price, market_value, avg_cost, unrealized, realized, account,
    ]  # fmt: skip


def account_update_time(hhmm: str) -> list[Field]:
    return [Out.ACCT_UPDATE_TIME, 1, hhmm]


def account_download_end(account: str) -> list[Field]:
    return [Out.ACCT_DOWNLOAD_END, 1, account]


def account_update_multi(
    req_id: int, account: str, key: str, value: str, currency: str
) -> list[Field]:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value, currency]


def account_update_multi_end(req_id: int) -> list[Field]:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_summary_end(req_id: int) -> list[Field]:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


def order_status(
    order_id: int,
    status: str,
    filled: float,
    remaining: float,
    avg_fill_price: float,
    perm_id: int,
    last_fill_price: float,
    client_id: int,
) -> list[Field]:
    return [
        Out.ORDER_STATUS, order_id, status, filled, remaining, avg_fill_price, perm_id,
        0, last_fill_price, client_id, "", 0.0,
    ]  # fmt: skip


def contract_details(req_id: int, c: Contract) -> list[Field]:
    """CONTRACT_DATA (server version >= 164: no version field) for a stock."""
    return [
        Out.CONTRACT_DATA, req_id, c.symbol, c.sec_type, "", 0.0, "", c.exchange, c.currency,
        c.symbol, "NMS", "NMS", c.con_id, 0.01, "", "MKT,LMT", "SMART,ISLAND", 1, 0,
        f"{c.symbol} (simulated)", c.primary_exchange, "", "", "", "", "US/Eastern", "", "",
        "", "", 0,  # evRule, evMultiplier, no secIds
        1, "", "", "26", "", "COMMON", 1, 1, 100,
    ]  # fmt: skip


def contract_details_end(req_id: int) -> list[Field]:
    return [Out.CONTRACT_DATA_END, 1, req_id]


def open_order_end() -> list[Field]:
    return [Out.OPEN_ORDER_END, 1]


def execution_end(req_id: int) -> list[Field]:
    return [Out.EXECUTION_DATA_END, 1, req_id]


def completed_orders_end() -> list[Field]:
    return [Out.COMPLETED_ORDERS_END]


@dataclass(frozen=True, slots=True)
class OrderView:
    """What the order messages carry about one order."""

    order_id: int
    client_id: int
    perm_id: int
    contract: Contract
    action: str  # BUY | SELL
    quantity: float
    order_type: str
    account: str
    order_ref: str
    status: str
    filled: float
    completed_time: str = ""
    limit_price: float | None = None


def _price(value: float | None) -> Field:
    """A price field: empty when unset (IB's UNSET_DOUBLE)."""
    return "" if value is None else value


def open_order(order: OrderView, server_version: int) -> list[Field]:
    """OPEN_ORDER for ib_async's ``Decoder.openOrder`` (market or limit stock orders)."""
    out: list[Field] = [Out.OPEN_ORDER, order.order_id, *order.contract.fields()]
    out += [
        order.action, order.quantity, order.order_type, _price(order.limit_price), "", "DAY", "",
        order.account, "O", 0, order.order_ref, order.client_id, order.perm_id, 0, 0, 0, "", "",
        "", "", "",  # faGroup, faMethod, faPercentage
    ]  # fmt: skip
    if server_version < 177:
        out.append("")  # faProfile
    out += [
        "", "", "", "", "", 0, "", -1,  # modelCode..exemptCode
        0, "", "", "", "", "",  # auctionStrategy..stockRangeUpper
        "", 0, 0, 0, "", 3, 0, 0, "",  # displaySize..nbboPriceCap
        0, 0, "", 0, "", "",  # parentId..deltaNeutralAuxPrice (deltaNeutralOrderType empty)
    ]  # fmt: skip
    out += [0, "", "", "", "", "", ""]  # continuousUpdate..comboLegsDescrip
    out += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
    out += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
    out += [""]  # hedgeType
    out += [0, "", "", 0, 0]  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dnc
    out += [""]  # algoStrategy
    out += [0, 0, order.status]  # solicited, whatIf, status
    out += ["", "", "", "", "", "", "", "", ""]  # margins (9)
    out += ["", "", "", "", ""]  # commission, min, max, commissionCurrency, warningText
    out += [0, 0]  # randomizeSize, randomizePrice
    out += [0]  # conditions
    out += ["", "", "", "", "", "", "", "", "", "", "", "", 0, 0, "", 0]  # adjusted..usePriceMgmt
    if server_version >= 159:
        out.append("")  # duration
    if server_version >= 160:
        out.append("")  # postToAts
    if server_version >= 162:
        out.append(0)  # autoCancelParent
    if server_version >= 170:
        out += ["", "", "", "", ""]  # minTradeQty..midOffsetAtHalf
    return out


def completed_order(order: OrderView, server_version: int) -> list[Field]:
    """COMPLETED_ORDER for ib_async's ``Decoder.completedOrder``."""
    out: list[Field] = [Out.COMPLETED_ORDER, *order.contract.fields()]
    out += [
        order.action, order.quantity, order.order_type, _price(order.limit_price), "", "DAY", "",
        order.account, "O", 0, order.order_ref, order.perm_id, 0, 0, 0, "",
        "", "", "",  # faGroup, faMethod, faPercentage
    ]  # fmt: skip
    if server_version < 177:
        out.append("")  # faProfile
    out += [
        "", "", "", "", "", 0, "", -1,  # modelCode..exemptCode
        "", "", "", "", "",  # startingPrice..stockRangeUpper
        "", 0, 0, "", 3, 0, "", 0, "", "",  # displaySize..deltaNeutralAuxPrice
    ]  # fmt: skip
    out += [0, "", "", "", ""]  # continuousUpdate..comboLegsDescrip
    out += [0, 0, 0]  # legs
    out += ["", "", ""]  # scale
    out += [""]  # hedgeType
    out += ["", "", 0, 0]  # clearingAccount, clearingIntent, notHeld, dnc
    out += [""]  # algoStrategy
    out += [0, order.status, 0, 0]  # solicited, status, randomizeSize, randomizePrice
    out += [0]  # conditions
    out += [
        "", "", "", 0, 0, "", order.filled, 0, 0, "", 0, 0, 0,  # trailStopPrice..parentPermId
        order.completed_time, order.status,
    ]  # fmt: skip
    if server_version >= 170:
        out += ["", "", "", "", ""]
    return out


@dataclass(frozen=True, slots=True)
class ExecView:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    contract: Contract
    account: str
    side: str  # BOT | SLD
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    order_ref: str
    time_text: str  # "YYYYmmdd HH:MM:SS UTC"
    commission: float
    realized_pnl: float


def execution(req_id: int, ex: ExecView, server_version: int) -> list[Field]:
    out: list[Field] = [Out.EXECUTION_DATA, req_id, ex.order_id, *ex.contract.fields()]
    out += [
        ex.exec_id, ex.time_text, ex.account, "ISLAND", ex.side, ex.shares, ex.price,
        ex.perm_id, ex.client_id, 0, ex.cum_qty, ex.avg_price, ex.order_ref, "", "", "", 1,
    ]  # fmt: skip
    if server_version >= 178:
        out.append(0)  # pendingPriceRevision
    return out


def commission_report(ex: ExecView) -> list[Field]:
    return [Out.COMMISSION_REPORT, 1, ex.exec_id, ex.commission, "USD", ex.realized_pnl, "", ""]
