"""Model decisions: the versioned entry the inference service writes on
:data:`its_common.streams.Stream.DECISIONS` (and the trader reads).

Entry format, version 1 (all values bytes):

``v``
    ``b"1"``; readers reject any other version (:class:`its_common.streams.EntryFormatError`)
``type``
    ``b"decision"``
``ts``
    the bar minute the decision was made on (UTC ms of the bar start), as text: lets a reader
    skip an entry without decoding ``data``
``data``
    JSON of :class:`Decision`
``tp``
    optional W3C ``traceparent`` of the span that made the decision, so the trader's handling
    joins the minute bar's trace (absent when tracing is off or in entries written before it
    existed; readers never require it: :func:`decision_traceparent`)

One decision per completed minute (every configured symbol's bar of minute ``ts`` known or
forward-filled), made at that minute's close. Orders it asks for are meant for the next bar
(the environment fills them at bar ``ts + 1 min``'s open). ``action`` follows
:mod:`its_common.actions` (``3 * leg(first) + leg(second)``; ``symbols`` gives first, second).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from its_common.actions import ACTION_NAMES, N_ACTIONS
from its_common.streams import EntryFormatError

DECISION_ENTRY_VERSION: Final = b"1"
DECISION_TYPE: Final = b"decision"


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of the policy on one completed minute."""

    ts_ms: int  # bar minute (bar start, UTC ms) the decision was made on
    action: Annotated[int, msgspec.Meta(ge=0, le=N_ACTIONS - 1)]  # 0-8, its_common.actions
    action_name: str  # ACTION_NAMES[action], e.g. "BUY_NVDA_HOLD_MSFT"
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]  # P(action) under the policy
    model_version: str  # the bundle's name (bundle.json "name")
    features_hash: str  # feature spec hash (its_common.features.FEATURE_SPEC_HASH)
    symbols: tuple[str, ...]  # (first, second): what the legs of `action` refer to
    session_start: bool = False  # first decision of a session (the LSTM state was reset)
    session_last: bool = False  # the session's last minute: the environment trades no more
    filled: tuple[str, ...] = ()  # symbols whose bar of ts_ms was missing (forward-filled)
    demo: bool = False  # made by a demo model (bundle.json "demo": true)
    demo_market: str = ""  # its training market's planted pattern, e.g. "demo market with a ..."
    decided_ms: int = 0  # wall clock when the decision was made (UTC ms)
    latency_us: int = 0  # features entry received -> decision made, microseconds

    def __post_init__(self) -> None:
        if not 0 <= self.action < N_ACTIONS:
            raise ValueError(f"action must be 0-{N_ACTIONS - 1}, not {self.action}")
        if ACTION_NAMES[self.action] != self.action_name:
            raise ValueError(f"action {self.action} is {ACTION_NAMES[self.action]}")


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Decision)


def encode_decision(decision: Decision, traceparent: str | None = None) -> dict[bytes, bytes]:
    fields = {
        b"v": DECISION_ENTRY_VERSION,
        b"type": DECISION_TYPE,
        b"ts": str(decision.ts_ms).encode(),
        b"data": _encoder.encode(decision),
    }
    if traceparent:
        fields[b"tp"] = traceparent.encode()
    return fields


def decision_traceparent(fields: dict[bytes, bytes]) -> str | None:
    """The entry's optional ``tp`` (None when absent)."""
    raw = fields.get(b"tp")
    return raw.decode(errors="replace") if raw else None


def decode_decision(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Decision:
    """Decode a decision entry; :class:`EntryFormatError` for anything that is not v1."""
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    version = fields.get(b"v")
    if version != DECISION_ENTRY_VERSION:
        raise EntryFormatError(f"entry {ident}: unsupported decision version {version!r}")
    if fields.get(b"type") != DECISION_TYPE:
        raise EntryFormatError(f"entry {ident}: not a decision ({fields.get(b'type')!r})")
    try:
        return _decoder.decode(fields[b"data"])
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise EntryFormatError(f"entry {ident}: {exc}") from exc
