"""Price checks: the feed's last trade per symbol against the broker's price.

Broker prices come through :class:`BrokerPrices`. The implementation used today reads the hash
``its:broker:price:<SYM>`` (fields ``p`` price, ``t`` market time ms, ``rt`` receive time ms,
``src`` adapter) that the active broker adapter publishes: the SimBroker writes its reference (the
last trade it read, ``src=sim``) and the IB adapter its IB market-data ticks (last, else midpoint;
``src=ib``, ``t`` = when the tick arrived) to the same key, so the validator needs no broker
connection of its own and checks whichever adapter runs (it never filters on ``src``; the source
is carried into the divergence events).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

import redis.asyncio as aioredis

from its_common.streams import latest_trade_key

BROKER_PRICE_PREFIX: Final = "its:broker:price:"


def broker_price_key(symbol: str) -> str:
    return f"{BROKER_PRICE_PREFIX}{symbol}"


@dataclass(frozen=True, slots=True)
class PricePoint:
    price: float
    ts_ms: int  # market time of the price
    received_ms: int  # wall clock when it was written
    source: str = ""  # who published it (the hash's ``src``: "sim", "ib"; "" when absent)


class PriceSource(Protocol):
    async def price(self, symbol: str) -> PricePoint | None: ...


class RedisHashPrices:
    """A price per symbol from a Redis hash with fields ``p``, ``t`` and ``rt``."""

    def __init__(self, redis: aioredis.Redis, key: Callable[[str], str]) -> None:
        self.redis = redis
        self.key = key

    async def price(self, symbol: str) -> PricePoint | None:
        p, t, rt, src = await self.redis.hmget(self.key(symbol), ["p", "t", "rt", "src"])
        if p is None or t is None:
            return None
        try:
            received = int(rt) if rt is not None else int(t)
            source = src.decode(errors="replace") if isinstance(src, bytes) else str(src or "")
            return PricePoint(float(p), int(t), received, source)
        except ValueError:
            return None


def feed_prices(redis: aioredis.Redis) -> RedisHashPrices:
    """The router's latest trade per symbol (``its:last:trade:<SYM>``)."""
    return RedisHashPrices(redis, latest_trade_key)


def broker_prices(redis: aioredis.Redis) -> RedisHashPrices:
    """The broker adapter's reference price (``its:broker:price:<SYM>``)."""
    return RedisHashPrices(redis, broker_price_key)


class Skip(StrEnum):
    NO_FEED_PRICE = "no_feed_price"
    NO_BROKER_PRICE = "no_broker_price"
    STALE_FEED = "stale_feed"
    STALE_BROKER = "stale_broker"
    SKEW = "skew"


@dataclass(frozen=True, slots=True)
class Result:
    symbol: str
    feed: PricePoint | None
    broker: PricePoint | None
    skipped: Skip | None = None
    diff_pct: float = 0.0
    ok: bool = True

    @property
    def detail(self) -> str:
        if self.skipped is not None:
            return self.skipped.value
        return "ok" if self.ok else "divergence"


def compare(
    symbol: str,
    feed: PricePoint | None,
    broker: PricePoint | None,
    *,
    now_ms: int,
    threshold_pct: float,
    max_age_s: float,
    max_skew_ms: int,
) -> Result:
    """Compare when both prices are fresh and close in market time; flag over the threshold."""
    if feed is None or feed.price <= 0:
        return Result(symbol, feed, broker, Skip.NO_FEED_PRICE)
    if broker is None or broker.price <= 0:
        return Result(symbol, feed, broker, Skip.NO_BROKER_PRICE)
    if now_ms - feed.received_ms > max_age_s * 1000:
        return Result(symbol, feed, broker, Skip.STALE_FEED)
    if now_ms - broker.received_ms > max_age_s * 1000:
        return Result(symbol, feed, broker, Skip.STALE_BROKER)
    if abs(feed.ts_ms - broker.ts_ms) > max_skew_ms:
        return Result(symbol, feed, broker, Skip.SKEW)
    diff_pct = abs(broker.price - feed.price) / feed.price * 100.0
    return Result(symbol, feed, broker, None, diff_pct, diff_pct <= threshold_pct)
