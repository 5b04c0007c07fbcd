"""What a consumer writes about its failures: dead-letter records and gap windows."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from its_common.gaps import GapWindow, encode_gap
from its_common.streams import Stream, now_ms

TRIMMED_REASON = "trimmed_unread"


def dead_letter_record(
    *,
    service: str,
    stream: str,
    group: str,
    entry_id: str,
    fields: dict[bytes, bytes],
    reason: str,
    detail: str,
    deliveries: int,
) -> dict[bytes, bytes]:
    """A dead-letter entry: where it came from, why, and the original fields (JSON, lossy)."""
    return {
        b"v": b"1",
        b"type": b"dead_letter",
        b"service": service.encode(),
        b"stream": stream.encode(),
        b"group": group.encode(),
        b"entry_id": entry_id.encode(),
        b"reason": reason.encode(),
        b"detail": detail[:2000].encode(),
        b"deliveries": str(deliveries).encode(),
        b"fields": json.dumps(
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        ).encode(),
        b"ts": str(now_ms()).encode(),
    }


async def publish_gap(
    redis: aioredis.Redis,
    symbols: tuple[str, ...],
    start_ms: int,
    end_ms: int,
    source: str,
) -> GapWindow:
    """A gap window on ``its:stream:gaps`` for the loader's backfill (and the alerter)."""
    window = GapWindow(
        symbols, start_ms, max(start_ms, end_ms), reason=TRIMMED_REASON, source=source
    )
    payload: dict[Any, Any] = encode_gap(window)
    await redis.xadd(Stream.GAPS, payload)  # read by groups: its_common.trimming bounds it
    return window
