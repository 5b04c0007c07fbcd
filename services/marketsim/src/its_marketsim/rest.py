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
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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

log = logging.getLogger("its.marketsim")
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


@dataclass(frozen=True, slots=True)
class AggsSpec:
    """One aggregates request, validated."""

    ticker: str
    multiplier: int
    timespan: str
    start: int
    end: int
    adjusted: bool
    ascending: bool
    limit: int
    origin: date  # day bars of N days start at this date plus multiples of N


@dataclass(frozen=True, slots=True)
class TradesPage:
    """One trades request (or cursor), validated; bounds in ns."""

    ticker: str
    lo: int
    hi: int
    order: str
    limit: int
    after: tuple[int, int] | None


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
        self._heavy_lock = asyncio.Lock()

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
        query: dict[str, str] = dict(request.query)
        if "cursor" in query:
            query.update(dict(parse_qsl(_b64decode(query["cursor"]))))
        timespan = request.match_info["timespan"]
        if timespan not in TIMESPANS:
            raise BadRequestError(f"timespan must be one of {', '.join(TIMESPANS)}")
        start = _time_param(request.match_info["start"], "from", end_of_day=False)
        sort = query.get("sort", "asc").lower()
        if sort not in ("asc", "desc"):
            raise BadRequestError("sort must be asc or desc")
        spec = AggsSpec(
            ticker=request.match_info["ticker"].upper(),
            multiplier=_multiplier(request.match_info["multiplier"]),
            timespan=timespan,
            start=start,
            end=_time_param(request.match_info["end"], "to", end_of_day=True),
            adjusted=query.get("adjusted", "true").lower() != "false",
            ascending=sort == "asc",
            limit=_limit(query.get("limit"), AGGS_DEFAULT_LIMIT),
            origin=_origin(query.get("origin"), start),
        )
        base = self._base(request)
        body = await self._heavy(self._aggs_body, spec, base)
        return web.Response(body=body, content_type="application/json")

    async def _heavy(self, work: Callable[..., bytes], *args: Any) -> bytes:
        """Run one request's generation, aggregation and encoding in a worker thread, one
        request at a time: the event loop (and so the WebSocket feed) never waits on it, and
        memory holds at most one request's sessions."""
        async with self._heavy_lock:
            running = asyncio.ensure_future(asyncio.to_thread(work, *args))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:  # the client left; a thread cannot be stopped, so
                await asyncio.wait({running})  # the lock is held until it ends
                if not running.cancelled() and running.exception() is not None:
                    log.info("a REST request its client left failed: %s", running.exception())
                raise

    def _aggs_body(self, spec: AggsSpec, base: str) -> bytes:
        now = self.clock.now_ms()
        days = self._sessions(spec.start, spec.end, now)
        chunk, rest = self._aggs_chunk(spec, days)
        bars = self._bars(spec, chunk, now)
        keep = (bars.start >= spec.start) & (bars.start <= spec.end)
        index = np.flatnonzero(keep)
        if not spec.ascending:
            index = index[::-1]
        page = index[: spec.limit]
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
            "ticker": spec.ticker,
            "queryCount": len(results),
            "resultsCount": len(results),
            "adjusted": spec.adjusted,
            "status": "OK",
            "request_id": request_id(),
            "count": len(results),
        }
        if results:
            body["results"] = results
        bounds: tuple[int, int] | None = None
        if len(index) > spec.limit:  # the page is full: go on after its last bar
            last = int(results[-1]["t"])
            bounds = (last + 1, spec.end) if spec.ascending else (spec.start, last - 1)
        elif rest:  # sessions this request did not read: go on at the next one's first bar
            edge = self._bucket_start(spec, rest[0])
            if spec.ascending:
                bounds = (max(spec.start, edge), spec.end)
            else:
                bounds = (spec.start, self._bucket_start(spec, chunk[0]) - 1)
        if bounds is not None:
            params = {"adjusted": str(spec.adjusted).lower(), "limit": spec.limit}
            params["sort"] = "asc" if spec.ascending else "desc"
            params["origin"] = spec.origin.isoformat()
            cursor = _b64encode(urlencode(params))
            body["next_url"] = (
                f"{base}/v2/aggs/ticker/{spec.ticker}/range/{spec.multiplier}/{spec.timespan}"
                f"/{bounds[0]}/{bounds[1]}?cursor={cursor}"
            )
        return json.dumps(body).encode()

    def _sessions(self, start_ms: int, end_ms: int, now: int) -> list[sessions.TradingDay]:
        """The sessions between two times that have begun by ``now`` and lie within the last
        ``rest_max_days`` sessions (older history is not served)."""
        today = sessions.ny_date(now)
        first = max(sessions.ny_date(start_ms), self._history_start(today))
        last = min(sessions.ny_date(end_ms), today)
        if last < first:
            return []
        return [s for s in sessions.sessions_between(first, last) if s.pre_open_ms <= now]

    def _history_start(self, today: date) -> date:
        span = timedelta(days=self.config.rest_max_days * 7 // 4 + 14)
        known = sessions.sessions_between(today - span, today)[-self.config.rest_max_days :]
        return known[0].day if known else today

    def _bucket_span(self, spec: AggsSpec, session: sessions.TradingDay) -> tuple[int, int]:
        """First and last bar bucket that ``session``'s trades can fall into."""
        if spec.timespan == "day":
            k = (session.day - spec.origin).days // spec.multiplier
            return k, k
        width = TIMESPANS[spec.timespan] * spec.multiplier
        return session.pre_open_ms // width, session.post_close_ms // width

    def _bucket_start(self, spec: AggsSpec, session: sessions.TradingDay) -> int:
        """Start (ms) of the first bar that ``session``'s trades fall into."""
        if spec.timespan == "day":
            return self._day_bucket_ms(spec, session.day)
        first, _ = self._bucket_span(spec, session)
        return first * TIMESPANS[spec.timespan] * spec.multiplier

    def _day_bucket_ms(self, spec: AggsSpec, day: date) -> int:
        k = (day - spec.origin).days // spec.multiplier
        return sessions.ny_midnight_ms(spec.origin + timedelta(days=k * spec.multiplier))

    def _aggs_chunk(
        self, spec: AggsSpec, days: list[sessions.TradingDay]
    ) -> tuple[list[sessions.TradingDay], list[sessions.TradingDay]]:
        """The sessions this request reads (at most ``rest_sessions_per_request``, whole bars
        only) and those left for ``next_url``, each in time order."""
        budget = self.config.rest_sessions_per_request
        order = days if spec.ascending else days[::-1]
        taken = 0
        while taken < len(order):
            atom_end = taken + 1
            lo, hi = self._bucket_span(spec, order[taken])
            while atom_end < len(order):  # sessions that share a bar stay together
                nlo, nhi = self._bucket_span(spec, order[atom_end])
                if (nlo > hi) if spec.ascending else (nhi < lo):
                    break
                lo, hi = min(lo, nlo), max(hi, nhi)
                atom_end += 1
            if atom_end - taken > budget and taken == 0:
                raise BadRequestError(
                    f"a {spec.multiplier}/{spec.timespan} bar spans more than {budget} sessions, "
                    "more than one request may read; use a smaller multiplier"
                )
            if atom_end > budget:
                break
            taken = atom_end
        chunk, rest = order[:taken], order[taken:]
        if not spec.ascending:
            return chunk[::-1], rest[::-1]
        return chunk, rest

    def _bars(self, spec: AggsSpec, days: list[sessions.TradingDay], now: int) -> Bars:
        parts: list[Bars] = []
        for session in days:
            if session.pre_open_ms > now:
                break
            if spec.timespan == "second":
                parts.append(self._day_bars(session.day, spec.ticker, now, 1_000 * spec.multiplier))
            elif spec.timespan == "day":  # from the trades: odd lots of a bar-less minute count
                day_bar = self._day_bars(session.day, spec.ticker, now, 10**15)
                day_bar.start[:] = sessions.ny_midnight_ms(session.day)
                parts.append(day_bar)
            else:
                width = TIMESPANS[spec.timespan] * spec.multiplier
                parts.append(self._day_bars(session.day, spec.ticker, now, width))
        bars = concat_bars(parts)
        if spec.timespan == "day" and spec.multiplier > 1 and len(bars):
            starts = [
                self._day_bucket_ms(spec, sessions.ny_date(int(t))) for t in bars.start.tolist()
            ]
            bars.start = np.array(starts, dtype=np.int64)
            bars = merge_bars(bars, 1, origin_ms=0)
        elif spec.timespan in ("minute", "hour") and len(bars):
            # buckets that span days
            bars = merge_bars(bars, TIMESPANS[spec.timespan] * spec.multiplier)
        return bars

    def _day_bars(self, day: date, ticker: str, now: int, width: int) -> Bars:
        """One day's bars of ``width`` ms (epoch-aligned) by Polygon's sale-condition rules.
        Runs in the heavy-work thread."""
        cached = self._bar_cache.get((day, ticker, width))
        if cached is not None:
            return Bars(*(getattr(cached, f).copy() for f in Bars.__dataclass_fields__))
        data = self.source.day(day)
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
            lo, hi, order, limit, after = _trades_cursor(decode_cursor(query["cursor"]))
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
        page = TradesPage(ticker, lo, hi, order, limit, after)
        body = await self._heavy(self._trades_body, page, self._base(request))
        return web.Response(body=body, content_type="application/json")

    def _trades_body(self, page: TradesPage, base: str) -> bytes:
        rows, resume = self._trade_rows(page)
        body: dict[str, Any] = {"results": rows, "status": "OK", "request_id": request_id()}
        if resume is not None:
            body["next_url"] = f"{base}/v3/trades/{page.ticker}?cursor={encode_cursor(resume)}"
        return json.dumps(body).encode()

    def _trade_bounds(self, query: Any) -> tuple[int, int]:
        lo, hi = 0, MAX_NS
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
        if lo == 0 and hi == MAX_NS:  # no filter: the current (or latest) session
            window = self.source.last_window_before(self.clock.now_ms())
            if window is not None:
                lo = window[1] * 1_000_000
        return lo, hi

    def _trade_rows(self, page: TradesPage) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of trades and the cursor state that continues it (None: nothing more).
        At most ``rest_sessions_per_request`` sessions are read; a page may hold fewer than
        ``limit`` rows and still go on."""
        now = self.clock.now_ms()
        lo, hi = page.lo, min(page.hi, (now + 1) * 1_000_000 - 1)
        if hi < lo:
            return [], None
        days = self._sessions(lo // 1_000_000, hi // 1_000_000, now)
        descending = page.order == "desc"
        if descending:
            days.reverse()
        budget = self.config.rest_sessions_per_request
        limit, after = page.limit, page.after
        rows: list[dict[str, Any]] = []
        for n, session in enumerate(days):
            if n == budget:  # go on at the next session, from its midnight
                edge = sessions.ny_midnight_ms(session.day + timedelta(days=1)) * 1_000_000
                if descending:
                    resume = {"lo": lo, "hi": edge - 1, "order": page.order, "limit": limit}
                else:
                    edge = sessions.ny_midnight_ms(session.day) * 1_000_000
                    resume = {"lo": edge, "hi": page.hi, "order": page.order, "limit": limit}
                return rows, resume
            data = self.source.day(session.day)
            cols = data.symbol_trades(page.ticker, now) if data else None
            if data is None or cols is None or len(cols) == 0:
                continue
            t, seq = cols.t_ns, cols.seq
            mask = (t >= lo) & (t <= hi)
            if after is not None:
                at, aseq = after
                if descending:
                    mask &= (t < at) | ((t == at) & (seq < aseq))
                else:
                    mask &= (t > at) | ((t == at) & (seq > aseq))
            index = np.flatnonzero(mask)
            if descending:
                index = index[::-1]
            index = index[: limit + 1 - len(rows)]
            rows.extend(_trade_dicts(cols.take(index), data))
            if len(rows) > limit:
                rows = rows[:limit]
                last = rows[-1]
                resume = {"lo": lo, "hi": page.hi, "order": page.order, "limit": limit}
                resume["after"] = [last["sip_timestamp"], last["sequence_number"]]
                return rows, resume
        return rows, None

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
    if not (value.isascii() and value.lstrip("-").isdigit()) or len(value) > 12:
        raise BadRequestError("limit must be an integer")
    limit = int(value)
    if limit < 1:
        raise BadRequestError("limit must be at least 1")
    return min(limit, MAX_LIMIT)


MAX_MULTIPLIER: Final = 100_000
MIN_DAY: Final = date(1970, 1, 1)
MAX_DAY: Final = date(9000, 1, 1)
MAX_MS: Final = 218_398_000_000_000  # year 8990: later times are refused, not clipped
MAX_NS: Final = 2**62  # year 2116: nanoseconds stay within int64 arithmetic


def _multiplier(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise BadRequestError(f"multiplier must be an integer from 1 to {MAX_MULTIPLIER}")
    multiplier = int(value)
    if not 1 <= multiplier <= MAX_MULTIPLIER:
        raise BadRequestError(f"multiplier must be an integer from 1 to {MAX_MULTIPLIER}")
    return multiplier


def _origin(value: str | None, start_ms: int) -> date:
    first = sessions.ny_date(start_ms)
    if value is None:
        return first
    try:
        origin = date.fromisoformat(value)
    except ValueError:
        raise BadRequestError("invalid cursor") from None
    if not MIN_DAY <= origin <= first:
        raise BadRequestError("invalid cursor")
    return origin


def _unix(value: str, name: str, maximum: int, unit: str) -> int | None:
    """Digits as a Unix time up to ``maximum``; None when ``value`` is not digits."""
    if not (value.isascii() and value.isdigit()):
        return None
    if len(value) > 24 or int(value) > maximum:
        raise BadRequestError(
            f"The time parameter '{name}' is out of range: Unix {unit} up to {maximum}"
        )
    return int(value)


def _day_param(value: str, name: str, unit: str) -> date:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequestError(
            f"Could not parse the time parameter: '{name}'. Use YYYY-MM-DD or Unix {unit}"
        ) from None
    if not MIN_DAY <= day < MAX_DAY:
        raise BadRequestError(f"The time parameter '{name}' is out of range")
    return day


def _time_param(value: str, name: str, end_of_day: bool) -> int:
    """A ``YYYY-MM-DD`` date (New York day) or Unix milliseconds, to milliseconds."""
    ms = _unix(value, name, MAX_MS, "MS Timestamps")
    if ms is not None:
        return ms
    day = _day_param(value, name, "MS Timestamps")
    if end_of_day:
        return sessions.ny_midnight_ms(day + timedelta(days=1)) - 1
    return sessions.ny_midnight_ms(day)


def _ns_param(value: str, name: str, end_of_day: bool) -> int:
    """A ``YYYY-MM-DD`` date (New York day) or Unix nanoseconds, to nanoseconds."""
    ns = _unix(value, name, MAX_NS, "nanoseconds")
    if ns is not None:
        return ns
    day = _day_param(value, name, "nanoseconds")
    if end_of_day:
        return sessions.ny_midnight_ms(day + timedelta(days=1)) * 1_000_000 - 1
    return sessions.ny_midnight_ms(day) * 1_000_000


def _trades_cursor(state: dict[str, Any]) -> tuple[int, int, str, int, tuple[int, int] | None]:
    """The fields of a trades cursor, checked (a cursor is client input too)."""
    try:
        lo, hi, order, limit = state["lo"], state["hi"], state["order"], state["limit"]
        after = state.get("after")
        if after is not None and (not isinstance(after, list) or len(after) != 2):
            raise TypeError
        numbers = [lo, hi, *(after or [])]
        if any(isinstance(n, bool) or not isinstance(n, int) for n in [*numbers, limit]):
            raise TypeError
    except (KeyError, TypeError):
        raise BadRequestError("invalid cursor") from None
    if order not in ("asc", "desc") or not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError("invalid cursor")
    if not all(0 <= n <= MAX_NS for n in numbers):
        raise BadRequestError("invalid cursor")
    return lo, hi, order, limit, (after[0], after[1]) if after is not None else None


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except ValueError as exc:
        raise BadRequestError("invalid cursor") from exc
