"""The alert rules: each reads current state and returns the conditions that hold now.

A rule returns ``[]`` when all is well; the engine turns appearing conditions into firing
notifications and disappearing ones into resolved notifications. A rule that raises is retried on
the next round (its alerts are neither fired nor resolved meanwhile).

Sources (contracts of other services):

- feed: hash ``its:feed:state`` (router: ``state``, ``detail``, ``ts_ms``) and the latest trade
  hashes ``its:last:trade:<SYM>`` (``rt`` = receive ms); only while the market is open.
- price divergence: latest ``price_checks`` row per symbol (validator; ``diff_pct`` in percent).
- Redis memory: ``INFO memory`` ``used_memory``.
- loader lag: ``XPENDING`` of the loader's group (oldest pending entry) and the oldest entry not
  yet delivered to the group, per stream.
- trading halted: ``service_state(service='trader', key='halt')`` ``{"halted": true, ...}`` and
  the kill-switch flag ``its:trader:kill``.
- heartbeats: ``its:heartbeat:<service>:<instance>`` of every expected service.
- model age: hash ``its:model:active`` (``created_at`` ISO 8601 or Unix ms, ``name``), else the
  newest ``bundle.json`` under ``ITS_ALERTER_MODEL_BUNDLE_DIR``.
- Redis and PostgreSQL reachable: a ``PING`` and a ``SELECT 1`` answered within a timeout (the
  rules of a store that does not answer fail meanwhile; their failures are not counted).
- dead letters: entries added to ``its:stream:dead-letter`` (malformed input, poison entries)
  within the last ``dead_letter_window_s``.
- feed overflow: ``slow_consumer`` states on ``its:stream:feed-status`` (the feed closed the
  router as a reader that fell behind) within the last ``feed_overflow_window_s``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.exceptions import RedisError, ResponseError

from its_alerter.config import AlerterSettings
from its_alerter.model import Condition
from its_common import calendar
from its_common.feed_status import FEED_STATE_KEY, HEALTHY_STATES, SLOW_CONSUMER, decode_status
from its_common.heartbeat import read_heartbeats
from its_common.redaction import redact
from its_common.rediscluster import memory_info
from its_common.streams import Stream, latest_trade_key

KILL_KEY: Final = "its:trader:kill"
HEALTHY_FEED_STATES: Final = HEALTHY_STATES
# Entries read per window by the windowed rules: enough to count "many".
WINDOW_SCAN: Final = 1_000


class DatabaseNotReadyError(RuntimeError):
    """The schema is not there yet: database rules wait (not an error)."""


@dataclass
class RuleContext:
    settings: AlerterSettings
    redis: aioredis.Redis
    pool: AsyncConnectionPool | None
    now: datetime

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    def db(self) -> AsyncConnectionPool:
        if self.pool is None:
            raise DatabaseNotReadyError("database schema not ready")
        return self.pool


Rule = Callable[[RuleContext], Awaitable[list[Condition]]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


async def feed_rule(ctx: RuleContext) -> list[Condition]:
    s = ctx.settings
    if not (s.feed_always or calendar.is_open(ctx.now)):
        return []
    out: list[Condition] = []
    state = _decode(await ctx.redis.hgetall(FEED_STATE_KEY))
    name = state.get("state", "")
    if name not in HEALTHY_FEED_STATES:
        detail = state.get("detail", "") or ("no feed state published" if not name else "")
        out.append(
            Condition(
                "feed_disconnected",
                "critical",
                f"feed is {name or 'unknown'} during market hours"
                + (f": {detail}" if detail else ""),
                labels={
                    "state": name or "missing",
                    "detail": detail,
                    "since_ms": state.get("ts_ms"),
                },
            )
        )
    newest: int | None = None
    for symbol in s.symbols:
        rt = await ctx.redis.hget(latest_trade_key(symbol), "rt")
        if rt is not None:
            newest = max(newest or 0, int(rt))
    age_s = None if newest is None else (ctx.now_ms - newest) / 1000
    if age_s is None or age_s > s.feed_stale_after_s:
        seen = "never" if age_s is None else f"{age_s:.0f}s ago"
        out.append(
            Condition(
                "feed_stale",
                "critical",
                f"no trade received for {','.join(s.symbols)} (last {seen}; "
                f"threshold {s.feed_stale_after_s:.0f}s)",
                labels={"last_trade_age_s": None if age_s is None else round(age_s, 1)},
            )
        )
    return out


async def price_divergence_rule(ctx: RuleContext) -> list[Condition]:
    s = ctx.settings
    async with ctx.db().connection() as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT ON (symbol) symbol, ts, feed_price, broker_price, diff_pct"
            " FROM price_checks"
            " WHERE ts > now() - make_interval(secs => %s)"
            " AND feed_price IS NOT NULL AND broker_price IS NOT NULL AND diff_pct IS NOT NULL"
            " AND coalesce(detail, 'ok') IN ('ok', 'divergence')"
            " ORDER BY symbol, ts DESC",
            (s.price_check_max_age_s,),
        )
        rows = await cursor.fetchall()
    out = []
    for symbol, ts, feed_price, broker_price, diff_pct in rows:
        if diff_pct > s.price_divergence_pct:
            out.append(
                Condition(
                    "price_divergence",
                    "warning",
                    f"{symbol}: feed {feed_price} vs broker {broker_price} differ by "
                    f"{diff_pct:.3f} % (threshold {s.price_divergence_pct} %)",
                    key=symbol,
                    labels={"symbol": symbol, "diff_pct": round(diff_pct, 4), "ts": ts.isoformat()},
                )
            )
    return out


async def redis_memory_rule(ctx: RuleContext) -> list[Condition]:
    info = await memory_info(ctx.redis)
    used = int(info.get("used_memory", 0))
    limit = ctx.settings.redis_memory_bytes
    if used <= limit:
        return []
    return [
        Condition(
            "redis_memory",
            "critical",
            f"Redis uses {used / 2**20:.1f} MiB (threshold {limit / 2**20:.1f} MiB; "
            "noeviction: writes fail at maxmemory)",
            labels={"used_memory": used, "threshold": limit},
        )
    ]


async def stream_lag(redis: aioredis.Redis, stream: str, group: str, now_ms: int) -> dict[str, Any]:
    """Pending count, oldest pending age and oldest undelivered age (seconds) of a group."""
    try:
        summary: Any = await redis.xpending(stream, group)
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream or no group (yet)
        return {"pending": 0, "oldest_pending_s": 0.0, "backlog_s": 0.0, "group": False}
    pending = int(summary.get("pending", 0) or 0)
    oldest = summary.get("min")
    oldest_s = (now_ms - int(_text(oldest).split("-")[0])) / 1000 if pending and oldest else 0.0
    backlog_s = 0.0
    for info in groups:
        if _text(info.get("name")) != group:
            continue
        last = info.get("last-delivered-id")
        if last is not None:
            after: Any = await redis.xrange(stream, min=f"({_text(last)}", max="+", count=1)
            if after:
                backlog_s = (now_ms - int(_text(after[0][0]).split("-")[0])) / 1000
        return {
            "pending": pending,
            "oldest_pending_s": max(0.0, oldest_s),
            "backlog_s": max(0.0, backlog_s),
            "group": True,
        }
    return {"pending": 0, "oldest_pending_s": 0.0, "backlog_s": 0.0, "group": False}


async def loader_lag_rule(ctx: RuleContext) -> list[Condition]:
    s = ctx.settings
    out = []
    for stream in s.stream_layout().expand(s.loader_streams):  # every shard (ITS_STREAM_SHARDS)
        lag = await stream_lag(ctx.redis, stream, s.loader_group, ctx.now_ms)
        worst = max(lag["oldest_pending_s"], lag["backlog_s"])
        if worst > s.loader_lag_s:
            out.append(
                Condition(
                    "loader_lag",
                    "warning",
                    f"loader group {s.loader_group!r} lags on {stream}: oldest pending "
                    f"{lag['oldest_pending_s']:.0f}s, oldest undelivered {lag['backlog_s']:.0f}s, "
                    f"{lag['pending']} pending (threshold {s.loader_lag_s:.0f}s)",
                    key=stream,
                    labels={"stream": stream, **{k: v for k, v in lag.items() if k != "group"}},
                )
            )
    return out


async def trading_halted_rule(ctx: RuleContext) -> list[Condition]:
    out = []
    async with ctx.db().connection() as conn:
        cursor = await conn.execute(
            "SELECT value, updated_at FROM service_state WHERE service = %s AND key = 'halt'",
            (ctx.settings.trader_service,),
        )
        row = await cursor.fetchone()
    if row is not None and isinstance(row[0], dict) and row[0].get("halted"):
        value = row[0]
        out.append(
            Condition(
                "trading_halted",
                "critical",
                f"trading HALTED: {value.get('reason', '')} {value.get('detail', '')}".strip(),
                labels={"reason": value.get("reason"), "since": row[1].isoformat()},
            )
        )
    flag = await ctx.redis.get(KILL_KEY)
    if flag is not None:
        out.append(
            Condition(
                "kill_switch",
                "critical",
                f"kill switch engaged ({KILL_KEY} is set)",
                labels={"flag": _text(flag)[:200]},
            )
        )
    return out


async def heartbeat_rule(ctx: RuleContext) -> list[Condition]:
    s = ctx.settings
    beats = await read_heartbeats(ctx.redis)
    youngest: dict[str, float] = {}
    for beat in beats:
        service = str(beat.get("service", ""))
        youngest[service] = min(youngest.get(service, float("inf")), float(beat["age_s"]))
    out = []
    for service in s.expected_services:
        age = youngest.get(service)
        if age is None or age > s.heartbeat_max_age_s:
            seen = "no heartbeat" if age is None else f"last heartbeat {age:.0f}s ago"
            out.append(
                Condition(
                    "heartbeat_missing",
                    "critical",
                    f"service {service}: {seen}",
                    key=service,
                    labels={"service": service, "age_s": age},
                )
            )
    return out


def _parse_created(value: str) -> float | None:
    """Unix seconds from ISO 8601 or Unix milliseconds."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return int(value) / 1000
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def newest_bundle(bundle_dir: Path) -> tuple[str, float] | None:
    """Name and creation time (Unix s) of the newest bundle: bundle.json created_at, else mtime."""
    newest: tuple[str, float] | None = None
    for manifest in bundle_dir.glob("*/bundle.json"):
        created: float | None = None
        try:
            created = _parse_created(str(json.loads(manifest.read_text()).get("created_at", "")))
        except (OSError, ValueError, AttributeError):
            created = None
        if created is None:
            created = manifest.stat().st_mtime
        if newest is None or created > newest[1]:
            newest = (manifest.parent.name, created)
    return newest


async def model_age_rule(ctx: RuleContext) -> list[Condition]:
    s = ctx.settings
    raw = _decode(await ctx.redis.hgetall(s.model_key))
    found: tuple[str, float] | None = None
    source = s.model_key
    if raw:
        created = _parse_created(raw.get("created_at", ""))
        if created is not None:
            found = (raw.get("name", raw.get("version", "?")), created)
    elif s.model_bundle_dir:
        source = s.model_bundle_dir
        found = await asyncio.to_thread(newest_bundle, Path(s.model_bundle_dir))
        if found is None:
            return [
                Condition(
                    "model_stale",
                    "warning",
                    f"no model bundle in {s.model_bundle_dir}",
                    labels={"source": source},
                )
            ]
    if found is None:
        return []  # no model in use and no bundle directory configured: nothing to judge
    name, created = found
    age_s = ctx.now.timestamp() - created
    if age_s <= s.model_max_age_s:
        return []
    return [
        Condition(
            "model_stale",
            "warning",
            f"model bundle {name} is {age_s / 86400:.1f} days old "
            f"(threshold {s.model_max_age_s / 86400:.1f} days)",
            labels={"bundle": name, "age_s": round(age_s), "source": source},
        )
    ]


def _reason(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}".rstrip(": "))[:300]


async def redis_rule(ctx: RuleContext) -> list[Condition]:
    """Redis answers a PING within ``redis_timeout_s`` (down, restarting, loading or frozen:
    every stream stops; the services hold or retry what they produce meanwhile)."""
    timeout = ctx.settings.redis_timeout_s
    try:
        await asyncio.wait_for(ctx.redis.ping(), timeout)
    except (RedisError, OSError, TimeoutError) as exc:
        return _unreachable("redis_unreachable", "Redis", exc, timeout)
    return []


async def database_rule(ctx: RuleContext) -> list[Condition]:
    """PostgreSQL answers ``SELECT 1`` within ``database_timeout_s``."""
    pool = ctx.db()
    timeout = ctx.settings.database_timeout_s
    try:
        async with asyncio.timeout(timeout):
            async with pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
    except (psycopg.Error, PoolTimeout, OSError, TimeoutError) as exc:
        return _unreachable("database_unreachable", "PostgreSQL", exc, timeout)
    return []


def _unreachable(rule: str, store: str, exc: BaseException, timeout: float) -> list[Condition]:
    """The critical condition of a store that did not answer within ``timeout``."""
    reason = "no answer" if isinstance(exc, TimeoutError) else _reason(exc)
    return [
        Condition(
            rule,
            "critical",
            f"{store} does not answer ({reason}; timeout {timeout:.0f}s)",
            labels={"error": reason},
        )
    ]


async def _recent(redis: aioredis.Redis, stream: str, window_s: float, now_ms: int) -> list[Any]:
    """Entries of ``stream`` added within the last ``window_s`` (newest first, at most
    :data:`WINDOW_SCAN`)."""
    since = now_ms - int(window_s * 1000)
    entries: Any = await redis.xrevrange(stream, max="+", min=str(since), count=WINDOW_SCAN)
    return list(entries or [])


async def dead_letters_rule(ctx: RuleContext) -> list[Condition]:
    """Input the system could not use was set aside (malformed frames, poison entries): nothing
    is lost (the router records a gap window for it), but its source needs a look."""
    window = ctx.settings.dead_letter_window_s
    entries = await _recent(ctx.redis, Stream.DEAD_LETTER, window, ctx.now_ms)
    if not entries:
        return []
    reasons: dict[str, int] = {}
    for _, fields in entries:
        decoded = _decode(fields)
        reason = f"{decoded.get('source', '?')}:{decoded.get('reason', '?')}"
        reasons[reason] = reasons.get(reason, 0) + 1
    count = len(entries)
    more = "+" if count >= WINDOW_SCAN else ""
    return [
        Condition(
            "dead_letters",
            "warning",
            f"{count}{more} entries dead-lettered in the last {window:.0f}s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))})",
            labels={"count": count, "window_s": window, "reasons": reasons},
        )
    ]


async def feed_overflow_rule(ctx: RuleContext) -> list[Condition]:
    """The feed closed the router as a slow consumer (its send buffer for us overflowed): what
    it dropped is backfilled from the reconnect's gap window, but the router is not keeping up."""
    window = ctx.settings.feed_overflow_window_s
    entries = await _recent(ctx.redis, Stream.FEED_STATUS, window, ctx.now_ms)
    slow = []
    for _, fields in entries:
        try:
            status = decode_status(fields)
        except (KeyError, ValueError):
            continue  # not a status entry this rule can read; the others say nothing of it
        if status.state == SLOW_CONSUMER:
            slow.append(status)
    if not slow:
        return []
    return [
        Condition(
            "feed_overflow",
            "warning",
            f"the feed closed the router as a slow consumer {len(slow)} time(s) in the last "
            f"{window:.0f}s (latest: {slow[0].detail[:200]})",
            labels={"count": len(slow), "window_s": window},
        )
    ]


RULES: Final[dict[str, Rule]] = {
    "redis": redis_rule,
    "database": database_rule,
    "dead_letters": dead_letters_rule,
    "feed_overflow": feed_overflow_rule,
    "feed": feed_rule,
    "price_divergence": price_divergence_rule,
    "redis_memory": redis_memory_rule,
    "loader_lag": loader_lag_rule,
    "trading_halted": trading_halted_rule,
    "heartbeat": heartbeat_rule,
    "model_age": model_age_rule,
}
"""Level rules by configuration name (``gaps`` is event-driven: see :mod:`its_alerter.events`)."""
