"""Feed state changes, published for the alerter and dashboard (never fatal when Redis is down)."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from its_common.feed_status import FEED_STATE_KEY, FeedStatus, decode_status
from its_common.gaps import GapWindow, encode_gap
from its_common.streams import DEFAULT_TRIM, Stream, now_ms

log = logging.getLogger("its.router.status")
__all__ = ["FEED_STATE_KEY", "FeedStatus", "StatusPublisher", "decode_status"]
_encoder: Final = msgspec.json.Encoder()
UNPUBLISHED_MAX: Final = 1_000


@dataclass
class StatusPublisher:
    redis: aioredis.Redis
    # States that could not be written (Redis down or paused), oldest first: published again by
    # retry() with their own times, every one (a slow_consumer close between two others is
    # what the alerter's feed_overflow rule looks for), the newest also as the current state.
    unpublished: deque[FeedStatus] = field(default_factory=lambda: deque(maxlen=UNPUBLISHED_MAX))

    async def retry(self) -> None:
        """Publish the states that could not be written, if any."""
        if self.unpublished:
            await self._write()

    async def publish(self, state: str, detail: str = "") -> None:
        self.unpublished.append(FeedStatus(state=state, detail=detail, ts_ms=now_ms()))
        await self._write()

    async def _write(self) -> None:
        statuses = list(self.unpublished)
        newest = statuses[-1]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for status in statuses:
                    fields: dict[Any, Any] = {
                        b"v": b"1",
                        b"type": b"feed_status",
                        b"data": _encoder.encode(status),
                    }
                    pipe.xadd(
                        Stream.FEED_STATUS,
                        fields,
                        maxlen=DEFAULT_TRIM[Stream.FEED_STATUS].maxlen,
                        approximate=True,
                    )
                pipe.hset(
                    FEED_STATE_KEY,
                    mapping={
                        "state": newest.state,
                        "detail": newest.detail,
                        "ts_ms": str(newest.ts_ms),
                    },
                )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning(
                "feed status %s not published (%d kept, retried): %s",
                newest.state,
                len(self.unpublished),
                exc,
            )
            return
        for _ in statuses:
            self.unpublished.popleft()

    async def publish_gap(self, window: GapWindow) -> None:
        """Publish a missed window; raises on Redis errors so the caller can keep and retry it."""
        fields: dict[Any, Any] = encode_gap(window)
        await self.redis.xadd(Stream.GAPS, fields)  # read by groups: the trimmer bounds it
        log.info(
            "gap window published",
            extra={
                "symbols": list(window.symbols),
                "start_ms": window.start_ms,
                "end_ms": window.end_ms,
                "reason": window.reason,
            },
        )
