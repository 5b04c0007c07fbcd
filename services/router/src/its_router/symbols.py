"""The live symbol list: ITS_SYMBOLS at start, then the Redis key ``its:config:symbols``.

`its-router set-symbols NVDA,MSFT,AAPL` (or any client doing ``SET its:config:symbols``) changes
what every router subscribes to without a restart; the key, when present, wins over ITS_SYMBOLS.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.settings import SYMBOL_PATTERN

log = logging.getLogger("its.router.symbols")


class SymbolError(ValueError):
    pass


def parse_symbols(text: str) -> list[str]:
    symbols = [part.strip().upper() for part in text.split(",") if part.strip()]
    bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
    if not symbols or bad:
        raise SymbolError(f"expected comma-separated tickers like NVDA,MSFT; got {text!r}")
    return list(dict.fromkeys(symbols))


async def read_symbols(redis: aioredis.Redis, key: str, default: list[str]) -> list[str]:
    """The key's list, or ``default`` when absent, invalid (logged) or Redis is unreachable."""
    try:
        raw = await redis.get(key)
    except (RedisError, OSError) as exc:
        log.warning("symbol list not read from Redis (%s); keeping the current one", exc)
        return default
    if raw is None:
        return default
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        return parse_symbols(text)
    except SymbolError as exc:
        log.error("ignoring invalid symbol list in %s: %s", key, exc)
        return default


async def write_symbols(redis: aioredis.Redis, key: str, symbols: list[str]) -> None:
    await redis.set(key, ",".join(symbols))
