"""The dashboard's panels: each reads one source and never raises.

A panel is ``{"status": "ok", "data": ...}``, ``{"status": "no_data", "detail": ...}`` (the source
does not exist yet: no table, no key, no rows) or ``{"status": "error", "detail": ...}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import ResponseError

from its_common.features.spec import FEATURE_NAMES
from its_common.feed_status import FEED_STATE_KEY
from its_common.heartbeat import read_heartbeats
from its_common.redaction import redact
from its_common.rediscluster import memory_info, server_info
from its_common.streams import Stream, now_ms
from its_dashboard.config import DashboardSettings

log = logging.getLogger("its.dashboard.data")
Panel = dict[str, Any]


class NoData(Exception):  # noqa: N818 - a panel state, not an error
    """The panel's source has nothing (yet)."""


def ok(data: Any) -> Panel:
    return {"status": "ok", "data": data}


async def guard(name: str, producer: Callable[[], Awaitable[Any]]) -> Panel:
    try:
        return ok(await producer())
    except NoData as exc:
        return {"status": "no_data", "detail": str(exc) or "no data yet"}
    except psycopg.errors.UndefinedTable as exc:
        return {"status": "no_data", "detail": f"no data yet ({exc.diag.message_primary})"}
    except Exception as exc:
        log.debug("panel %s failed", name, exc_info=True)
        return {"status": "error", "detail": redact(f"{type(exc).__name__}: {exc}")[:300]}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(cursor_rows: list[tuple[Any, ...]], names: list[str]) -> list[dict[str, Any]]:
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in cursor_rows]


class Sources:
    """Reads Redis and PostgreSQL for the panels."""

    def __init__(self, settings: DashboardSettings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.pool: AsyncConnectionPool | None = None

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.pool is None:
            raise NoData("database not ready yet")
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    # --- Redis ------------------------------------------------------------------------------
    async def health(self) -> list[dict[str, Any]]:
        beats = await read_heartbeats(self.redis)
        if not beats:
            raise NoData("no heartbeats yet")
        return [
            {
                "service": b.get("service"),
                "instance": b.get("instance"),
                "version": b.get("version"),
                "status": b.get("status"),
                "age_s": round(float(b["age_s"]), 1),
                "started_at": int(b.get("started_at", 0) or 0),
            }
            for b in beats
        ]

    async def feed(self) -> dict[str, Any]:
        raw = {_text(k): _text(v) for k, v in (await self.redis.hgetall(FEED_STATE_KEY)).items()}
        if not raw:
            raise NoData("the router has not published a feed state yet")
        last = {}
        for symbol in self.settings.symbols:
            rt = await self.redis.hget(f"its:last:trade:{symbol}", "rt")
            price = await self.redis.hget(f"its:last:trade:{symbol}", "p")
            if rt is not None and price is not None:
                last[symbol] = {"price": float(price), "age_s": (now_ms() - int(rt)) / 1000}
        return {**raw, "last_trades": last}

    async def redis_info(self) -> dict[str, Any]:
        memory = await memory_info(self.redis)
        stats = await server_info(self.redis, "stats")
        hits, misses = int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
        lengths = {}
        for stream in Stream:
            lengths[stream.value] = int(await self.redis.xlen(stream.value))
        return {
            "used_memory": int(memory.get("used_memory", 0)),
            "maxmemory": int(memory.get("maxmemory", 0)),
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else None,
            "streams": lengths,
        }

    async def loader(self) -> dict[str, Any]:
        out = {}
        group = self.settings.loader_group
        for stream in self.settings.stream_layout().expand(self.settings.loader_streams):
            try:
                summary: Any = await self.redis.xpending(stream, group)
                groups: Any = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue
            pending = int(summary.get("pending", 0) or 0)
            oldest = summary.get("min")
            now = now_ms()
            oldest_s = (now - int(_text(oldest).split("-")[0])) / 1000 if pending and oldest else 0
            backlog_s = 0.0
            for info in groups:
                if _text(info.get("name")) == group and info.get("last-delivered-id"):
                    last = _text(info["last-delivered-id"])
                    after: Any = await self.redis.xrange(stream, min=f"({last}", max="+", count=1)
                    if after:
                        backlog_s = (now - int(_text(after[0][0]).split("-")[0])) / 1000
                    out[stream] = {
                        "pending": pending,
                        "oldest_pending_s": round(max(0.0, oldest_s), 1),
                        "backlog_s": round(max(0.0, backlog_s), 1),
                        "consumers": int(info.get("consumers", 0)),
                    }
        if not out:
            raise NoData("no loader consumer group yet")
        return out

    async def features(self) -> dict[str, Any]:
        out = {}
        for symbol in self.settings.symbols:
            raw = await self.redis.get(f"its:features:latest:{symbol}")
            if raw is None:
                continue
            cached = json.loads(raw)
            values = cached.get("values") or []
            names = list(FEATURE_NAMES) if len(FEATURE_NAMES) == len(values) else []
            out[symbol] = {
                "ts_ms": cached.get("ts_ms"),
                "filled": cached.get("filled", False),
                "values": dict(
                    zip(names or [f"f{i}" for i in range(len(values))], values, strict=True)
                ),
            }
        if not out:
            raise NoData("no feature vectors cached yet")
        return out

    async def trader(self) -> dict[str, Any]:
        flag = await self.redis.get(self.settings.kill_key)
        halt: dict[str, Any] = {}
        if self.pool is not None:
            try:
                rows = await self.query(
                    "SELECT value, updated_at FROM service_state WHERE service = %s"
                    " AND key = 'halt'",
                    (self.settings.trader_service,),
                )
            except psycopg.errors.UndefinedTable:
                rows = []
            if rows and isinstance(rows[0][0], dict):
                halt = {**rows[0][0], "updated_at": rows[0][1].isoformat()}
        kill: Any = None
        if flag is not None:
            try:
                kill = json.loads(flag)
            except ValueError:
                kill = _text(flag)
        return {"halted": bool(halt.get("halted")), "halt": halt, "kill": kill}

    async def gap_report(self) -> dict[str, Any] | None:
        entries: Any = await self.redis.xrevrange(Stream.ALERT_EVENTS, count=200)
        for _, fields in entries:
            if fields.get(b"type") == b"gap_audit":
                return dict(json.loads(fields[b"data"]))
        return None

    # --- PostgreSQL ---------------------------------------------------------------------------
    async def candles(self) -> dict[str, Any]:
        minutes = self.settings.candle_minutes
        out: dict[str, Any] = {}
        for symbol in self.settings.symbols:
            rows = await self.query(
                "SELECT ts, open, high, low, close, volume FROM ("
                " SELECT * FROM market_data WHERE symbol = %s ORDER BY ts DESC LIMIT %s"
                ") recent ORDER BY ts",
                (symbol, minutes),
            )
            if not rows:
                continue
            first = rows[0][0]
            fills = await self.query(
                "SELECT ts, side, quantity, price FROM fills WHERE symbol = %s AND ts >= %s"
                " ORDER BY ts",
                (symbol, first),
            )
            out[symbol] = {
                "bars": [
                    {
                        "time": _ms(r[0]) // 1000,
                        "open": r[1],
                        "high": r[2],
                        "low": r[3],
                        "close": r[4],
                        "volume": r[5],
                    }
                    for r in rows
                ],
                "fills": [
                    {"time": _ms(f[0]) // 1000, "side": f[1], "quantity": f[2], "price": f[3]}
                    for f in fills
                ],
            }
        if not out:
            raise NoData("no minute bars stored yet")
        return out

    async def decisions(self) -> list[dict[str, Any]]:
        # ``demo``: the inference service writes the bundle's "demo" flag into each row's
        # ``features`` document (``{"demo": true, ...}``); rows without it are not demo.
        # ``demo_market``: the planted pattern of the demo model's training market, if any.
        rows = await self.query(
            "SELECT ts, model_version, action_name, confidence, risk_outcome,"
            " coalesce(features -> 'demo' = 'true'::jsonb, false),"
            " coalesce(features ->> 'demo_market', '') FROM signals"
            " ORDER BY ts DESC LIMIT %s",
            (self.settings.table_rows,),
        )
        if not rows:
            raise NoData("no decisions yet")
        columns = ["ts", "model_version", "action", "confidence", "risk_outcome", "demo"]
        return _rows(rows, [*columns, "demo_market"])

    async def portfolio(self) -> dict[str, Any]:
        accounts = await self.query(
            "SELECT DISTINCT ON (account) account, ts, cash, equity, gross_exposure,"
            " realized_pnl, unrealized_pnl FROM portfolio_snapshots ORDER BY account, ts DESC"
        )
        positions = await self.query(
            "SELECT account, symbol, quantity, avg_price, realized_pnl, updated_at FROM positions"
            " ORDER BY account, symbol"
        )
        if not accounts and not positions:
            raise NoData("no portfolio snapshots or positions yet")
        curve = await self.query(
            "SELECT ts, sum(equity) FROM portfolio_snapshots"
            " WHERE ts > (SELECT max(ts) FROM portfolio_snapshots) - interval '2 days'"
            " GROUP BY ts ORDER BY ts"
        )
        return {
            "accounts": _rows(
                accounts,
                [
                    "account",
                    "ts",
                    "cash",
                    "equity",
                    "gross_exposure",
                    "realized_pnl",
                    "unrealized_pnl",
                ],
            ),
            "positions": _rows(
                positions,
                ["account", "symbol", "quantity", "avg_price", "realized_pnl", "updated_at"],
            ),
            "equity_curve": [{"time": _ms(ts) // 1000, "value": value} for ts, value in curve],
        }

    async def orders(self) -> list[dict[str, Any]]:
        """Newest first; ``market_ts`` is the order's time on the market clock (the decision's
        bar, else its first fill) so orders and fills read on one clock in a replay, where the
        wall clock (``created_at``) is hours or days ahead of the market."""
        rows = await self.query(
            "SELECT o.created_at, coalesce(o.decision_ts, (SELECT min(f.ts) FROM fills f"
            " WHERE f.client_order_id = o.client_order_id)), o.client_order_id, o.symbol,"
            " o.side, o.quantity, o.status, o.filled_quantity, o.reason, o.order_type,"
            " o.limit_price FROM orders o"
            " ORDER BY o.created_at DESC LIMIT %s",
            (self.settings.table_rows,),
        )
        if not rows:
            raise NoData("no orders yet")
        return _rows(
            rows,
            ["created_at", "market_ts", "client_order_id", "symbol", "side", "quantity", "status",
             "filled_quantity", "reason", "order_type", "limit_price"],
        )  # fmt: skip

    async def fills(self) -> list[dict[str, Any]]:
        rows = await self.query(
            "SELECT ts, symbol, side, quantity, price, commission, client_order_id FROM fills"
            " ORDER BY ts DESC LIMIT %s",
            (self.settings.table_rows,),
        )
        if not rows:
            raise NoData("no fills yet")
        return _rows(
            rows, ["ts", "symbol", "side", "quantity", "price", "commission", "client_order_id"]
        )

    async def prices(self) -> list[dict[str, Any]]:
        rows = await self.query(
            "SELECT DISTINCT ON (symbol) symbol, ts, feed_price, broker_price, diff_pct, ok,"
            " detail FROM price_checks WHERE feed_price IS NOT NULL AND broker_price IS NOT NULL"
            " ORDER BY symbol, ts DESC"
        )
        if not rows:
            raise NoData("no price checks yet")
        return _rows(
            rows, ["symbol", "ts", "feed_price", "broker_price", "diff_pct", "ok", "detail"]
        )

    async def alerts(self) -> dict[str, Any]:
        """The firing alerts and the recent rows, from one query so they agree: a row is
        ``firing`` only when it is the latest of its fingerprint, still firing and not a one-off
        event; ``firing`` lists exactly those fingerprints (also beyond the recent rows)."""
        rows = await self.query(
            "SELECT ts, rule, fingerprint, severity, state, message, event, latest FROM ("
            " SELECT id, ts, rule, fingerprint, severity, state, message,"
            " coalesce(labels ? '_event', false) AS event,"
            " id = max(id) OVER (PARTITION BY fingerprint) AS latest FROM alerts) a"
            " WHERE latest OR id IN (SELECT id FROM alerts ORDER BY id DESC LIMIT %s)"
            " ORDER BY id DESC",
            (self.settings.table_rows,),
        )
        if not rows:
            raise NoData("no alerts yet")
        names = ["ts", "rule", "fingerprint", "severity", "state", "message"]
        firing: list[dict[str, Any]] = []
        recent: list[dict[str, Any]] = []
        for row in rows:
            item = _rows([row[:6]], names)[0]
            event, latest = bool(row[6]), bool(row[7])
            item["status"] = alert_status(str(row[4]), event, latest)
            if item["status"] == "firing":
                firing.append(item)
            if len(recent) < self.settings.table_rows:
                recent.append(item)
        return {"firing": firing, "recent": recent}

    async def gap_audit_rows(self) -> dict[str, Any] | None:
        rows = await self.query(
            "SELECT audit_date, count(*) FILTER (WHERE kind IN ('missing', 'mismatch'))"
            " FROM gap_audit GROUP BY audit_date ORDER BY audit_date DESC LIMIT 1"
        )
        if not rows:
            return None
        return {"date": rows[0][0].isoformat(), "gaps": int(rows[0][1])}


def alert_status(state: str, event: bool, latest: bool) -> str:
    """What a stored alert row means now: ``firing`` (still), ``event`` (a one-off notice),
    ``resolved``, or ``fired`` (it fired then; a later row of its fingerprint superseded it)."""
    if event:
        return "event"
    if state == "firing":
        return "firing" if latest else "fired"
    return state


def now_utc() -> datetime:
    return datetime.now(UTC)
