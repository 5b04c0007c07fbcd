"""The live symbol list: one source for every service.

``ITS_SYMBOLS`` is the default; the Redis key :data:`SYMBOLS_KEY` (``its:config:symbols``, set
with ``its-router set-symbols NVDA,MSFT,AAPL`` or :func:`set_symbols`), when present, wins. The
router subscribes to it, the features service computes features for it, the trader trades only
decisions whose pair is in it, the loader's start-up backfill and audit and the validator follow
it, each reading it again while running (:class:`LiveSymbols`).

The loaded model constrains it: the inference service publishes its bundle's pair in
:data:`ACTIVE_MODEL_KEY`; a list without that pair would leave the model without features and
the trader refusing its decisions, so :func:`set_symbols` refuses it with a message saying so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.settings import SYMBOL_PATTERN

log = logging.getLogger("its.symbols")

SYMBOLS_KEY: Final = "its:config:symbols"
ACTIVE_MODEL_KEY: Final = "its:model:active"


class SymbolError(ValueError):
    pass


def parse_symbols(text: str) -> list[str]:
    symbols = [part.strip().upper() for part in text.split(",") if part.strip()]
    bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
    if not symbols or bad:
        raise SymbolError(f"expected comma-separated tickers like NVDA,MSFT; got {text!r}")
    return list(dict.fromkeys(symbols))


async def read_symbols(
    redis: aioredis.Redis, key: str = SYMBOLS_KEY, default: Sequence[str] = ()
) -> list[str]:
    """The key's list, or ``default`` when absent, invalid (logged) or Redis is unreachable."""
    try:
        raw = await redis.get(key)
    except (RedisError, OSError) as exc:
        log.warning("symbol list not read from Redis (%s); keeping the current one", exc)
        return list(default)
    if raw is None:
        return list(default)
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        return parse_symbols(text)
    except SymbolError as exc:
        log.error("ignoring invalid symbol list in %s: %s", key, exc)
        return list(default)


async def publish_active_model(
    redis: aioredis.Redis,
    version: str,
    symbols: Sequence[str],
    demo: bool = False,
    created_at: str = "",
) -> None:
    """Written by the inference service when a bundle comes into use: ``name``/``version``
    (the bundle's name), ``symbols`` (its pair), ``demo`` and ``created_at`` (ISO 8601, read by
    the alerter's model-age rule)."""
    mapping: dict[Any, Any] = {
        "name": version,
        "version": version,
        "symbols": ",".join(symbols),
        "demo": json.dumps(demo),
        "created_at": created_at,
    }
    await redis.hset(ACTIVE_MODEL_KEY, mapping=mapping)


async def active_model(redis: aioredis.Redis) -> tuple[str, list[str]] | None:
    """(version, symbols) of the loaded bundle, None when no inference service published one."""
    raw: dict[Any, Any] = await redis.hgetall(ACTIVE_MODEL_KEY)
    if not raw or not raw.get(b"symbols"):
        return None
    return raw.get(b"version", b"?").decode(), raw[b"symbols"].decode().split(",")


async def set_symbols(
    redis: aioredis.Redis, symbols: Sequence[str], key: str = SYMBOLS_KEY
) -> None:
    """Set the live list; :class:`SymbolError` when it would drop the loaded model's pair."""
    wanted = parse_symbols(",".join(symbols))
    model = await active_model(redis)
    if model is not None:
        version, pair = model
        dropped = [s for s in pair if s not in wanted]
        if dropped:
            raise SymbolError(
                f"the loaded model {version} trades {','.join(pair)}; a symbol list without "
                f"{','.join(dropped)} would leave it without features and its decisions refused. "
                f"Keep {','.join(pair)} in the list, or deploy a bundle trained on the new "
                "symbols first"
            )
    await redis.set(key, ",".join(wanted))


class LiveSymbols:
    """The current list, re-read with :meth:`refresh` (cheap: one GET)."""

    def __init__(
        self, redis: aioredis.Redis | None, default: Sequence[str], key: str = SYMBOLS_KEY
    ) -> None:
        self.redis = redis
        self.key = key
        self.current: tuple[str, ...] = tuple(default)

    async def refresh(self) -> tuple[str, ...]:
        if self.redis is None:
            return self.current
        fresh = tuple(await read_symbols(self.redis, self.key, self.current))
        if fresh != self.current:
            log.info("symbol list changed", extra={"old": self.current, "new": fresh})
            self.current = fresh
        return self.current
