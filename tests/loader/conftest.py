"""Loader test helpers: migrated databases, in-process loaders, stream fillers, a REST server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.events import MinuteAgg, Trade
from its_common.health import HealthState
from its_common.runtime import ServiceContext
from its_common.settings import load_settings
from its_common.streams import Stream, encode_entry
from its_loader.app import main as loader_main
from its_loader.config import LoaderSettings

from .polygon_rest import API_KEY, PolygonRestServer

T0 = 1_795_000_000_000  # a fixed ms timestamp (2026-11) for synthetic bars and trades


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI's setup_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def db_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    return database_url


@pytest.fixture
async def rest_server() -> AsyncIterator[PolygonRestServer]:
    server = await PolygonRestServer().start()
    yield server
    await server.stop()


def make_settings(redis_url: str, db_url: str, rest_url: str = "http://127.0.0.1:9", **kw: Any):
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": db_url,
        "polygon_rest_url": rest_url,
        "polygon_api_key": API_KEY,
        "http_port": 0,
        "consumer": "c1",
        "block_ms": 100,
        "claim_idle_ms": 300,
        "claim_interval_s": 0.2,
        "metrics_interval_s": 0.2,
        "backfill_on_start": False,
        "db_retry_max_s": 0.5,
        "rest_backoff_s": 0.05,
        "rest_backoff_max_s": 0.2,
        "settle_wait_s": 0.5,  # windows reaching "now" on a still clock: don't wait long
    }
    overrides.update(kw)
    return load_settings(LoaderSettings, **overrides)


class RunningLoader:
    def __init__(self, settings: LoaderSettings, redis: Any) -> None:
        registry = CollectorRegistry()
        self.ctx = ServiceContext(
            settings=settings,
            version="test",
            registry=registry,
            health=HealthState("loader", "test", registry),
            redis=redis,
        )
        self.task: asyncio.Task[None] = asyncio.create_task(loader_main(self.ctx))

    def metric(self, name: str, **labels: str) -> float:
        value = self.ctx.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def stop(self) -> None:
        self.ctx.stopping.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_loader(redis_client) -> AsyncIterator[Callable[..., RunningLoader]]:
    started: list[RunningLoader] = []

    def start(settings: LoaderSettings) -> RunningLoader:
        loader = RunningLoader(settings, redis_client)
        started.append(loader)
        return loader

    yield start
    for loader in started:
        if not loader.task.done():
            await loader.stop()


def bar(symbol: str, minute: int, close: float = 10.0, volume: float = 100.0, **kw: Any):
    start = T0 + minute * 60_000
    fields: dict[str, Any] = {
        "symbol": symbol,
        "volume": volume,
        "open": 10.0,
        "close": close,
        "high": max(11.0, close),
        "low": min(9.0, close),
        "start": start,
        "end": start + 60_000,
        "vwap": 10.2,
    }
    fields.update(kw)
    return MinuteAgg(**fields)


def trade(symbol: str, i: int) -> Trade:
    return Trade(
        symbol=symbol,
        exchange=4 + i % 3,
        trade_id=str(i),
        tape=3,
        price=100.0 + (i % 7) * 0.01,
        size=100 + i % 5,
        timestamp=T0 + i,
        sequence=i,
        conditions=(12, 37) if i % 2 else (),
    )


async def add_bars(redis, bars: list[MinuteAgg], received_ms: int | None = None) -> str:
    entry_id = await redis.xadd(Stream.BARS_1M, encode_entry("AM", bars, received_ms))
    return str(entry_id.decode())


async def add_trades(redis, trades: list[Trade]) -> str:
    entry_id = await redis.xadd(Stream.TRADES, encode_entry("T", trades))
    return str(entry_id.decode())


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(db_url: str, sql: str, *params: Any) -> Any:
    return query(db_url, sql, *params)[0][0]
