"""Where the simulator's prices come from: ITS's feed in Redis, or static prices (tests)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.streams import latest_trade_key, now_ms

log = logging.getLogger("its.ibsim.prices")


@dataclass(frozen=True, slots=True)
class Quote:
    price: float
    ts_ms: int  # market time of the trade (static prices: when first asked or set)
    size: float = 0.0  # shares of that trade (0 = unknown: the simulator's quote size applies)


class PriceSource(Protocol):
    async def latest(self, symbol: str) -> Quote | None: ...


class StaticPrices:
    """Fixed prices per symbol (``default`` for others; 0 = none); settable at run time."""

    def __init__(self, prices: Mapping[str, float] | None = None, default: float = 0.0) -> None:
        self.prices = dict(prices or {})
        self.default = default
        self.sizes: dict[str, float] = {}
        self._stamps: dict[str, int] = {}

    def set(self, symbol: str, price: float, size: float | None = None) -> None:
        """A new print of ``symbol`` (a new stamp: fresh liquidity for resting limit orders)."""
        self.prices[symbol] = price
        if size is not None:
            self.sizes[symbol] = size
        self._stamps[symbol] = max(now_ms(), self._stamps.get(symbol, 0) + 1)

    async def latest(self, symbol: str) -> Quote | None:
        price = self.prices.get(symbol, self.default)
        if price <= 0:
            return None
        return Quote(price, self._stamps.setdefault(symbol, now_ms()), self.sizes.get(symbol, 0.0))


class RedisPrices:
    """The latest trade per symbol from ``its:last:trade:<SYM>`` (fields ``p``, ``t``)."""

    def __init__(self, redis: aioredis.Redis, fallback: StaticPrices | None = None) -> None:
        self.redis = redis
        self.fallback = fallback
        self.errors = 0

    async def latest(self, symbol: str) -> Quote | None:
        try:
            price, ts, size = await self.redis.hmget(latest_trade_key(symbol), ["p", "t", "s"])
        except (RedisError, OSError) as exc:
            self.errors += 1
            log.warning("cannot read the latest trade of %s: %s", symbol, exc)
            price = ts = size = None
        if price is not None:
            try:
                return Quote(float(price), int(ts or 0), float(size or 0))
            except ValueError:
                log.warning("bad latest trade of %s: %r", symbol, price)
        if self.fallback is not None:
            return await self.fallback.latest(symbol)
        return None


def parse_prices(text: str) -> dict[str, float]:
    """``SYM=PRICE,...`` to a mapping (ValueError naming the bad part)."""
    out: dict[str, float] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        symbol, sep, value = part.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not symbol.strip() or price <= 0:
            raise ValueError(f"expected SYM=PRICE with a positive price, got {part!r}")
        out[symbol.strip().upper()] = price
    return out
