"""Gap windows: spans of time the feed may have missed, published for the storage side to backfill.

The router publishes one after every reconnect, fallback switch or dropped batch; the loader
backfills the window from REST (authoritative) for the listed symbols. Entries on
:data:`its_common.streams.Stream.GAPS` carry ``v=1``, ``type=gap`` and ``data`` (JSON of
:class:`GapWindow`).
"""

from __future__ import annotations

from typing import Final

import msgspec

GAP_ENTRY_VERSION: Final = b"1"


class GapWindow(msgspec.Struct, frozen=True):
    """Unix-millisecond window ``[start_ms, end_ms)`` that may be missing for ``symbols``."""

    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    reason: str  # reconnect | fallback_switch | buffer_overflow | startup | ...
    source: str = "router"


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(GapWindow)


def encode_gap(window: GapWindow) -> dict[bytes, bytes]:
    if window.end_ms < window.start_ms:
        raise ValueError(f"gap window ends before it starts: {window}")
    return {b"v": GAP_ENTRY_VERSION, b"type": b"gap", b"data": _encoder.encode(window)}


def decode_gap(fields: dict[bytes, bytes]) -> GapWindow:
    if fields.get(b"v") != GAP_ENTRY_VERSION or fields.get(b"type") != b"gap":
        raise ValueError(f"not a v1 gap entry: {sorted(fields)}")
    return _decoder.decode(fields[b"data"])
