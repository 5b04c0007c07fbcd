"""Trader test helpers: migrated databases, a scripted feed, in-process traders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from its_common.actions import ACTION_NAMES
from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_common.db.migrate import apply_migrations
from its_common.decisions import Decision, encode_decision
from its_common.events import Trade
from its_common.features import FEATURE_SPEC_HASH
from its_common.settings import load_settings
from its_common.streams import Stream, StreamLayout, encode_entry, latest_trade_key, now_ms
from its_trader.app import build_trader
from its_trader.config import TraderSettings
from its_trader.engine import Trader
from its_trader.metrics import TraderMetrics

# Monday 2025-11-03 15:00 UTC = 10:00 New York: the regular session is open.
OPEN_MS = int(datetime(2025, 11, 3, 15, 0, tzinfo=UTC).timestamp() * 1000)
# Same day 22:00 UTC = 17:00 New York: closed.
CLOSED_MS = int(datetime(2025, 11, 3, 22, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def db_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    return database_url


class Feed:
    """Writes trades the way the router does: a stream entry plus the latest-trade hash."""

    def __init__(
        self, redis: Any, start_ms: int = OPEN_MS, layout: StreamLayout | None = None
    ) -> None:
        self.redis = redis
        self.t = start_ms
        self.seq = 0
        self.layout = layout or StreamLayout()  # sharded streams as the router writes them

    async def trade(self, symbol: str, price: float, step_ms: int = 1000, size: int = 100) -> str:
        self.t += step_ms
        self.seq += 1
        trade = Trade(
            symbol=symbol, exchange=4, trade_id=str(self.seq), tape=3, price=price, size=size,
            timestamp=self.t, sequence=self.seq,
        )  # fmt: skip
        async with self.redis.pipeline(transaction=False) as pipe:  # one pipeline, as the router
            pipe.xadd(self.layout.for_symbol(Stream.TRADES, symbol), encode_entry("T", [trade]))
            pipe.hset(
                latest_trade_key(symbol),
                mapping={"p": repr(price), "s": str(size), "t": str(self.t), "rt": now_ms()},
            )
            pipe.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(self.t))
            entry_id, *_ = await pipe.execute()
        return str(entry_id.decode())

    async def prices(self, **prices: float) -> None:
        for symbol, price in prices.items():
            await self.trade(symbol, price)


def make_settings(redis_url: str, db_url: str, **kw: Any) -> TraderSettings:
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": db_url,
        "http_port": 0,
        "block_ms": 100,
        "control_interval_s": 0.1,
        "snapshot_interval_s": 0.2,
        "sim_slippage_bps": 10.0,
    }
    overrides.update(kw)
    return load_settings(TraderSettings, **overrides)


@pytest.fixture
async def make_trader(redis_client: Any) -> AsyncIterator[Callable[..., Trader]]:
    started: list[Trader] = []

    def make(settings: TraderSettings) -> Trader:
        trader = build_trader(settings, redis_client, TraderMetrics(CollectorRegistry()))
        started.append(trader)
        return trader

    yield make
    for trader in started:
        await close_trader(trader)


async def close_trader(trader: Trader) -> None:
    await trader.broker.close()
    await trader.store.close()


def decision(
    ts_ms: int,
    action: int,
    confidence: float = 0.9,
    model: str = "m1",
    symbols: tuple[str, ...] = ("NVDA", "MSFT"),
) -> Decision:
    """A decision as the inference service writes it (its_common.decisions)."""
    return Decision(
        ts_ms=ts_ms, action=action, action_name=ACTION_NAMES[action], confidence=confidence,
        model_version=model, features_hash=FEATURE_SPEC_HASH, symbols=symbols,
    )  # fmt: skip


async def publish(redis: Any, d: Decision) -> str:
    entry_id = await redis.xadd(Stream.DECISIONS, encode_decision(d))
    return str(entry_id.decode())


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def scalar(db_url: str, sql: str, *params: Any) -> Any:
    return query(db_url, sql, *params)[0][0]
