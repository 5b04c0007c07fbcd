"""The decision entry on ``its:stream:decisions`` (written by the inference service).

Entry fields follow the stream format v1: ``v=1``, ``type=decision``, ``n=1``, ``rt`` (write time,
ms) and ``data``: one JSON object, the :class:`Decision` below (its own ``dv`` version field, so
the payload can evolve without touching the stream envelope). An optional ``tp`` field carries the
W3C traceparent of the inference span that made the decision (the trader's span continues it).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from its_common.streams import ENTRY_VERSION, EntryFormatError, now_ms

DECISION_VERSION: Final = 1
ENTRY_TYPE: Final = "decision"


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One policy decision for one bar (all symbols at once: a joint action 0..8)."""

    ts_ms: Annotated[int, msgspec.Meta(ge=0)]  # the bar the decision was made on (Unix ms)
    action: Annotated[int, msgspec.Meta(ge=0, le=8)]
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    model_version: str
    dv: int = DECISION_VERSION


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Decision)


def encode_decision(
    decision: Decision, written_ms: int | None = None, traceparent: str | None = None
) -> dict[bytes, bytes]:
    fields = {
        b"v": ENTRY_VERSION,
        b"type": ENTRY_TYPE.encode(),
        b"n": b"1",
        b"data": _encoder.encode(decision),
        b"rt": str(written_ms if written_ms is not None else now_ms()).encode(),
    }
    if traceparent:
        fields[b"tp"] = traceparent.encode()
    return fields


def decode_decision(entry_id: str, fields: dict[bytes, bytes]) -> Decision:
    """Decode one entry; :class:`EntryFormatError` for anything that is not a v1 decision."""
    if fields.get(b"v") != ENTRY_VERSION or fields.get(b"type") != ENTRY_TYPE.encode():
        raise EntryFormatError(f"entry {entry_id}: not a v1 decision entry")
    try:
        decision = _decoder.decode(fields[b"data"])
    except (KeyError, msgspec.DecodeError) as exc:
        raise EntryFormatError(f"entry {entry_id}: {exc}") from exc
    if decision.dv != DECISION_VERSION:
        raise EntryFormatError(f"entry {entry_id}: unsupported decision version {decision.dv}")
    return decision
