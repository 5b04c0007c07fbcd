"""Feed state changes, published for the alerter and dashboard (never fatal when Redis is down)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass
class StatusPublisher:
    redis: aioredis.Redis
    # The newest state that could not be written (Redis down or paused): published again by
    # retry(), or it would stand in for the real one until the next change.
    unpublished: tuple[str, str] | None = None

    async def retry(self) -> None:
        """Publish the newest state again if it could not be written."""
        if self.unpublished is not None:
            await self.publish(*self.unpublished)

    async def publish(self, state: str, detail: str = "") -> None:
        status = FeedStatus(state=state, detail=detail, ts_ms=now_ms())
        fields: dict[Any, Any] = {
            b"v": b"1",
            b"type": b"feed_status",
            b"data": _encoder.encode(status),
        }
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    Stream.FEED_STATUS,
                    fields,
                    maxlen=DEFAULT_TRIM[Stream.FEED_STATUS].maxlen,
                    approximate=True,
                )
                pipe.hset(
                    FEED_STATE_KEY,
                    mapping={"state": state, "detail": detail, "ts_ms": str(status.ts_ms)},
                )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self.unpublished = (state, detail)
            log.warning("feed status %s not published (retried): %s", state, exc)
            return
        self.unpublished = None

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
