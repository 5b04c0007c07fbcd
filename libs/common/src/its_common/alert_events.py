"""Alert events: what a service raises for the alerter (and the dashboard) to act on.

Entries on :data:`its_common.streams.Stream.ALERT_EVENTS`, format v1 (all values bytes):

``v`` ``b"1"``; ``type`` what happened (``gap_audit``, ``price_divergence``,
``foreign_symbols``...); ``source`` the raising service; ``severity`` ``info`` | ``warning`` |
``critical``; ``state`` ``firing`` | ``resolved`` | ``info`` (a one-off report); ``message`` one
human line; ``data`` JSON object with the type's details (for ``gap_audit``: the audit summary);
``ts`` when it was raised (UTC ms, wall clock).

Every producer writes through :func:`publish_alert_event` and every reader decodes with
:func:`decode_alert_event`: one contract, one place.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import msgspec
import redis.asyncio as aioredis

from its_common.streams import EntryFormatError, Stream, now_ms

ALERT_ENTRY_VERSION: Final = b"1"
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved", "info"]


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    source: str
    severity: Severity
    message: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    state: AlertState = "info"
    ts_ms: int = 0


def encode_alert_event(event: AlertEvent) -> dict[bytes, bytes]:
    return {
        b"v": ALERT_ENTRY_VERSION,
        b"type": event.type.encode(),
        b"source": event.source.encode(),
        b"severity": event.severity.encode(),
        b"state": event.state.encode(),
        b"message": event.message.encode(),
        b"data": msgspec.json.encode(event.data),
        b"ts": str(event.ts_ms or now_ms()).encode(),
    }


_SEVERITIES: Final = ("info", "warning", "critical")
_STATES: Final = ("firing", "resolved", "info")


def decode_alert_event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> AlertEvent:
    """One entry; :class:`EntryFormatError` naming what is wrong otherwise."""
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if fields.get(b"v") != ALERT_ENTRY_VERSION:
        raise EntryFormatError(f"entry {ident}: unsupported alert event version")
    try:
        data = json.loads(fields.get(b"data", b"{}"))
        severity = fields[b"severity"].decode()
        state = fields.get(b"state", b"info").decode()
        if not isinstance(data, dict) or severity not in _SEVERITIES or state not in _STATES:
            raise ValueError(f"bad severity {severity!r}, state {state!r} or data")
        return AlertEvent(
            type=fields[b"type"].decode(),
            source=fields.get(b"source", b"").decode(),
            severity=severity,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            message=fields.get(b"message", b"").decode(),
            data=data,
            ts_ms=int(fields.get(b"ts", b"0")),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise EntryFormatError(f"entry {ident}: {exc}") from exc


async def publish_alert_event(redis: aioredis.Redis, event: AlertEvent) -> str:
    fields: dict[Any, Any] = encode_alert_event(event)
    # No MAXLEN: groups read this stream; its_common.trimming bounds it.
    entry_id = await redis.xadd(Stream.ALERT_EVENTS, fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
