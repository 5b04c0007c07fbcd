"""Polygon's REST endpoints over the same market the WebSocket streams.

``/v2/aggs/ticker/{T}/range/{multiplier}/{timespan}/{from}/{to}``, ``/v3/trades/{T}`` and
``/v2/last/trade/{T}``; ``apiKey`` query parameter or ``Authorization: Bearer``; Polygon's
error bodies; an optional per-key rate limit (429). Only trades reported by the simulation
clock's current time are visible, so REST agrees with what the WebSocket has sent so far.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import numpy as np
from aiohttp import web

from its_common.simmarket import sessions
from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import (
    Bars,
    DayData,
    MarketSource,
    TradeColumns,
    concat_bars,
    merge_bars,
)
from its_marketsim.clock import SimClock

MAX_LIMIT: Final = 50_000
AGGS_DEFAULT_LIMIT: Final = 5_000
TRADES_DEFAULT_LIMIT: Final = 1_000
RATE_LIMIT_MESSAGE: Final = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription "
    "to continue."
)
TIMESPANS: Final = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 0}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequestError(ValueError):
    pass


def request_id() -> str:
    return uuid.uuid4().hex


def error(status: int, message: str, label: str = "ERROR") -> web.Response:
    key = "message" if label == "NOT_FOUND" else "error"
    body = {"status": label, "request_id": request_id(), key: message}
    return web.json_response(body, status=status)


def encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError("invalid cursor") from exc
    if not isinstance(value, dict):
        raise BadRequestError("invalid cursor")
    return value


class RestApi:
    def __init__(self, config: SimConfig, source: MarketSource, clock: SimClock) -> None:
        self.config = config
        self.source = source
        self.clock = clock
        self._bar_cache: OrderedDict[tuple[date, str, int], Bars] = OrderedDict()
        self._calls: dict[str, deque[float]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get(
            "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}", self.aggs
        )
        app.router.add_get("/v3/trades/{ticker}", self.trades)
        app.router.add_get("/v2/last/trade/{ticker}", self.last_trade)
        app.middlewares.append(self._auth_middleware)

    # ---- auth and rate limit ---------------------------------------------------------
    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path.startswith("/v2/") or request.path.startswith("/v3/")):
            return await handler(request)
        key = request.query.get("apiKey")
        header = request.headers.get("Authorization", "")
        if key is None and header.lower().startswith("bearer "):
            key = header[7:].strip()
        if not key:
            return error(401, "API Key was not provided")
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.config.api_keys):
            return error(401, "Unknown API Key")
        if self.config.rest_rate_limit > 0 and not self._allow(key):
            return error(429, RATE_LIMIT_MESSAGE)
        try:
            return await handler(request)
        except BadRequestError as exc:
            return error(400, str(exc))

    def _allow(self, key: str) -> bool:
        now = time.monotonic()
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self.config.rest_rate_limit:
            return False
        calls.append(now)
        return True

    def _base(self, request: web.Request) -> str:
        if self.config.public_base_url:
            return self.config.public_base_url.rstrip("/")
        return str(request.url.origin())

    async def _day(self, day: date) -> DayData | None:
        return await asyncio.to_thread(self.source.day, day)

    # ---- aggregates ------------------------------------------------------------------
    async def aggs(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        try:
            multiplier = int(request.match_info["multiplier"])
        except ValueError:
            raise BadRequestError("multiplier must be a positive integer") from None
        timespan = request.match_info["timespan"]
        if multiplier < 1:
            raise BadRequestError("multiplier must be a positive integer")
        if timespan not in TIMESPANS:
            raise BadRequestError(f"timespan must be one of {', '.join(TIMESPANS)}")
        query: dict[str, str] = dict(request.query)
        if "cursor" in query:
            query.update(dict(parse_qsl(_b64decode(query["cursor"]))))
        start = _time_param(request.match_info["start"], "from", end_of_day=False)
        end = _time_param(request.match_info["end"], "to", end_of_day=True)
        adjusted = query.get("adjusted", "true").lower() != "false"
        sort = query.get("sort", "asc").lower()
        if sort not in ("asc", "desc"):
            raise BadRequestError("sort must be asc or desc")
        limit = _limit(query.get("limit"), AGGS_DEFAULT_LIMIT)
        bars = await self._bars(ticker, multiplier, timespan, start, end)
        keep = (bars.start >= start) & (bars.start <= end)
        index = np.flatnonzero(keep)
        if sort == "desc":
            index = index[::-1]
        page = index[:limit]
        results = [
            {
                "v": float(bars.volume[i]),
                "vw": round(float(bars.value[i]) / max(int(bars.volume[i]), 1), 4),
                "o": float(bars.open[i]),
                "c": float(bars.close[i]),
                "h": float(bars.high[i]),
                "l": float(bars.low[i]),
                "t": int(bars.start[i]),
                "n": int(bars.count[i]),
            }
            for i in page.tolist()
        ]
        body: dict[str, Any] = {
            "ticker": ticker,
            "queryCount": len(results),
            "resultsCount": len(results),
            "adjusted": adjusted,
            "status": "OK",
            "request_id": request_id(),
            "count": len(results),
        }
        if results:
            body["results"] = results
        if len(index) > limit:
            last = results[-1]["t"]
            lo, hi = (last + 1, end) if sort == "asc" else (start, last - 1)
            cursor = _b64encode(
                urlencode({"adjusted": str(adjusted).lower(), "limit": limit, "sort": sort})
            )
            body["next_url"] = (
                f"{self._base(request)}/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}"
                f"/{lo}/{hi}?cursor={cursor}"
            )
        return web.json_response(body)

    async def _bars(
        self, ticker: str, multiplier: int, timespan: str, start: int, end: int
    ) -> Bars:
        first, last = sessions.ny_date(start), sessions.ny_date(end)
        days = sessions.sessions_between(first, last)[-self.config.rest_max_days :]
        now = self.clock.now_ms()
        parts: list[Bars] = []
        for session in days:
            if session.pre_open_ms > now:
                break
            if timespan == "second":
                parts.append(await self._day_bars(session.day, ticker, now, 1_000 * multiplier))
            elif timespan == "day":  # from the trades: odd lots of a bar-less minute count
                day_bar = await self._day_bars(session.day, ticker, now, 10**15)
                day_bar.start[:] = sessions.ny_midnight_ms(session.day)
                parts.append(day_bar)
            else:
                width = TIMESPANS[timespan] * multiplier
                parts.append(await self._day_bars(session.day, ticker, now, width))
        bars = concat_bars(parts)
        if timespan == "day" and multiplier > 1 and len(bars):
            index = np.array(
                [(sessions.ny_date(int(t)) - first).days // multiplier for t in bars.start.tolist()]
            )
            starts = np.array(
                [
                    sessions.ny_midnight_ms(first + timedelta(days=int(k) * multiplier))
                    for k in index
                ]
            )
            bars.start = starts
            bars = merge_bars(bars, 1, origin_ms=0)
        elif timespan in ("minute", "hour") and len(bars):
            bars = merge_bars(bars, TIMESPANS[timespan] * multiplier)  # buckets spanning days
        return bars

    async def _day_bars(self, day: date, ticker: str, now: int, width: int) -> Bars:
        """One day's bars of ``width`` ms (epoch-aligned) by Polygon's sale-condition rules."""
        cached = self._bar_cache.get((day, ticker, width))
        if cached is not None:
            return Bars(*(getattr(cached, f).copy() for f in Bars.__dataclass_fields__))
        data = await self._day(day)
        if data is None:
            return Bars.empty()
        trades = data.symbol_trades(ticker, now)
        if trades is None:
            return Bars.empty()
        bars = data.bars(trades, width)
        if now >= data.end_ms and width >= 60_000:  # the day is complete: bars never change
            self._bar_cache[(day, ticker, width)] = bars
            while len(self._bar_cache) > 2048:
                self._bar_cache.popitem(last=False)
            return Bars(*(getattr(bars, f).copy() for f in Bars.__dataclass_fields__))
        return bars

    # ---- trades ------------------------------------------------------------------------
    async def trades(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        query = request.query
        if "cursor" in query:
            state = decode_cursor(query["cursor"])
            lo, hi = int(state["lo"]), int(state["hi"])
            order, limit = str(state["order"]), int(state["limit"])
            after: tuple[int, int] | None = (int(state["after"][0]), int(state["after"][1]))
        else:
            lo, hi = self._trade_bounds(query)
            order = query.get("order", "desc").lower()
            if order not in ("asc", "desc"):
                raise BadRequestError("order must be asc or desc")
            sort = query.get("sort", "timestamp")
            if sort != "timestamp":
                raise BadRequestError("sort must be timestamp")
            limit = _limit(query.get("limit"), TRADES_DEFAULT_LIMIT)
            after = None
        rows, more = await self._trade_rows(ticker, lo, hi, order, limit, after)
        body: dict[str, Any] = {"results": rows, "status": "OK", "request_id": request_id()}
        if more and rows:
            last = rows[-1]
            cursor = encode_cursor(
                {
                    "lo": lo,
                    "hi": hi,
                    "order": order,
                    "limit": limit,
                    "after": [last["sip_timestamp"], last["sequence_number"]],
                }
            )
            body["next_url"] = f"{self._base(request)}/v3/trades/{ticker}?cursor={cursor}"
        return web.json_response(body)

    def _trade_bounds(self, query: Any) -> tuple[int, int]:
        lo, hi = 0, 2**62
        if "timestamp" in query:
            value = query["timestamp"]
            lo = _ns_param(value, "timestamp", end_of_day=False)
            hi = _ns_param(value, "timestamp", end_of_day=True) if len(value) == 10 else lo
        for name, is_end, strict in (
            ("timestamp.gte", False, False),
            ("timestamp.gt", True, True),
            ("timestamp.lte", True, False),
            ("timestamp.lt", False, True),
        ):
            if name not in query:
                continue
            value = _ns_param(query[name], name, end_of_day=is_end)
            if name.endswith("gte"):
                lo = max(lo, value)
            elif name.endswith("gt"):
                lo = max(lo, value + 1)
            elif name.endswith("lte"):
                hi = min(hi, value)
            else:
                hi = min(hi, value - 1 if strict else value)
        if lo == 0 and hi == 2**62:  # no filter: the current (or latest) session
            window = self.source.last_window_before(self.clock.now_ms())
            if window is not None:
                lo = window[1] * 1_000_000
        return lo, hi

    async def _trade_rows(
        self,
        ticker: str,
        lo: int,
        hi: int,
        order: str,
        limit: int,
        after: tuple[int, int] | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        now = self.clock.now_ms()
        hi = min(hi, (now + 1) * 1_000_000 - 1)
        if hi < lo:
            return [], False
        first = sessions.ny_date(lo // 1_000_000)
        last = sessions.ny_date(hi // 1_000_000)
        days = sessions.sessions_between(first, last)
        if order == "desc":
            days.reverse()
        rows: list[dict[str, Any]] = []
        for session in days[: self.config.rest_max_days]:
            data = await self._day(session.day)
            cols = data.symbol_trades(ticker, now) if data else None
            if cols is None or len(cols) == 0:
                continue
            t, seq = cols.t_ns, cols.seq
            mask = (t >= lo) & (t <= hi)
            if after is not None:
                at, aseq = after
                if order == "asc":
                    mask &= (t > at) | ((t == at) & (seq > aseq))
                else:
                    mask &= (t < at) | ((t == at) & (seq < aseq))
            index = np.flatnonzero(mask)
            if order == "desc":
                index = index[::-1]
            index = index[: limit + 1 - len(rows)]
            assert data is not None
            rows.extend(_trade_dicts(cols.take(index), data))
            if len(rows) > limit:
                return rows[:limit], True
        return rows, False

    # ---- last trade ------------------------------------------------------------------
    async def last_trade(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        if ticker not in self.source.symbols:
            return error(404, "Data not found.", "NOT_FOUND")
        now = self.clock.now_ms()
        window = self.source.last_window_before(now)
        for _ in range(10):
            if window is None:
                break
            data = await self._day(window[0])
            cols = data.symbol_trades(ticker, now) if data else None
            if data is not None and cols is not None and len(cols):
                last = _trade_dicts(cols.take(np.array([len(cols) - 1])), data)[0]
                result: dict[str, Any] = {
                    "T": ticker,
                    "i": last["id"],
                    "p": last["price"],
                    "q": last["sequence_number"],
                    "s": last["size"],
                    "t": last["sip_timestamp"],
                    "x": last["exchange"],
                    "y": last["participant_timestamp"],
                    "z": last["tape"],
                }
                if "conditions" in last:
                    result["c"] = last["conditions"]
                if "trf_id" in last:
                    result["r"] = last["trf_id"]
                    result["f"] = last["trf_timestamp"]
                body = {"request_id": request_id(), "results": result, "status": "OK"}
                return web.json_response(body)
            window = self.source.last_window_before(window[1] - 1)
        return error(404, "Data not found.", "NOT_FOUND")


def _trade_dicts(cols: TradeColumns, data: DayData) -> list[dict[str, Any]]:
    ids = cols.trade_ids()
    cond_table = data.cond_table
    tapes = [data.tapes[k] for k in cols.sym.tolist()]
    out: list[dict[str, Any]] = []
    for j, (t, part, price, size, x, cond, seq, trf, trf_delta) in enumerate(
        zip(
            cols.t_ns.tolist(),
            cols.part_delta_ns.tolist(),
            cols.price.tolist(),
            cols.size.tolist(),
            cols.exchange.tolist(),
            cols.cond.tolist(),
            cols.seq.tolist(),
            cols.trf_id.tolist(),
            cols.trf_delta_ns.tolist(),
            strict=True,
        )
    ):
        row: dict[str, Any] = {
            "exchange": x,
            "id": ids[j],
            "participant_timestamp": t - part,
            "price": price,
            "sequence_number": seq,
            "sip_timestamp": t,
            "size": size,
        }
        conditions = cond_table[cond] if cond < len(cond_table) else ()
        if conditions:
            row["conditions"] = list(conditions)
        row["tape"] = tapes[j]
        if trf:
            row["trf_id"] = trf
            row["trf_timestamp"] = t - trf_delta
        out.append(row)
    return out


def _limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError:
        raise BadRequestError("limit must be an integer") from None
    if limit < 1:
        raise BadRequestError("limit must be at least 1")
    return min(limit, MAX_LIMIT)


def _time_param(value: str, name: str, end_of_day: bool) -> int:
    """A ``YYYY-MM-DD`` date (New York day) or Unix milliseconds, to milliseconds."""
    if value.isdigit():
        return int(value)
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequestError(
            f"Could not parse the time parameter: '{name}'. Use YYYY-MM-DD or Unix MS Timestamps"
        ) from None
    if end_of_day:
        return sessions.ny_midnight_ms(day + timedelta(days=1)) - 1
    return sessions.ny_midnight_ms(day)


def _ns_param(value: str, name: str, end_of_day: bool) -> int:
    """A ``YYYY-MM-DD`` date (New York day) or Unix nanoseconds, to nanoseconds."""
    if value.isdigit():
        return int(value)
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequestError(
            f"Could not parse the time parameter: '{name}'. Use YYYY-MM-DD or Unix nanoseconds"
        ) from None
    if end_of_day:
        return sessions.ny_midnight_ms(day + timedelta(days=1)) * 1_000_000 - 1
    return sessions.ny_midnight_ms(day) * 1_000_000


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except ValueError as exc:
        raise BadRequestError("invalid cursor") from exc
