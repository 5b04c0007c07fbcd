"""What the features service writes: the per-minute entry on ``its:stream:features`` and the
per-symbol cache key; readers (the inference service) decode both with this module. It lives in
its-common so that no service imports another (as :mod:`its_common.decisions`).

Stream entry, version 1 (all values bytes), one per completed minute:

``v`` ``b"1"`` (readers reject other versions) · ``type`` ``b"features"`` · ``ts`` the minute
(bar start, UTC ms) as text · ``data`` JSON of :class:`FeatureSet` · ``tp`` optional W3C
``traceparent`` of the span that made the set (absent when tracing is off; readers ignore it
if they do not trace).

Cache key ``its:features:latest:<SYMBOL>`` (a string, TTL ``ITS_FEATURES_CACHE_TTL_S``): JSON of
:class:`CachedVector`, the symbol's newest vector.

Floats travel as JSON numbers in shortest round-trip form, so a decoded vector is bit-identical
to the computed one.
"""

from __future__ import annotations

from typing import Final

import msgspec

from its_common.streams import KEY_PREFIX, EntryFormatError

FEATURES_ENTRY_VERSION: Final = b"1"
FEATURES_TYPE: Final = b"features"


def cache_key(symbol: str) -> str:
    """Redis key of a symbol's latest feature vector."""
    return f"{KEY_PREFIX}:features:latest:{symbol}"


class SymbolVector(msgspec.Struct, frozen=True):
    """One symbol's features for one minute (``values`` in FEATURE_NAMES order; None = not
    ready: no price known yet). ``open``/``close`` are the bar's after the missing-bar rule."""

    values: tuple[float, ...] | None
    open: float | None
    close: float | None
    filled: bool = False  # the bar was missing (or unusable) and forward-filled


class FeatureSet(msgspec.Struct, frozen=True, kw_only=True):
    """Every configured symbol's vector for one completed minute."""

    ts_ms: int  # the minute (bar start, UTC ms); known at ts_ms + 60 s
    spec_hash: str  # FEATURE_SPEC_HASH of the code that computed it
    symbols: dict[str, SymbolVector]
    order: tuple[str, ...]  # the configured symbols, in order
    session_open_ms: int  # open of the minute's session (a new value = a new session)
    session_last: bool  # the session's last minute
    received_ms: int  # when the newest bar of this minute entered ITS (0: none, all filled)
    emitted_ms: int  # when this entry was written

    @property
    def ready(self) -> bool:
        return all(self.symbols[s].values is not None for s in self.order)

    @property
    def filled(self) -> tuple[str, ...]:
        return tuple(s for s in self.order if self.symbols[s].filled)


class CachedVector(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    ts_ms: int
    spec_hash: str
    values: tuple[float, ...]
    filled: bool


_encoder: Final = msgspec.json.Encoder()
_set_decoder: Final = msgspec.json.Decoder(FeatureSet)
_cached_decoder: Final = msgspec.json.Decoder(CachedVector)


def encode_feature_set(
    feature_set: FeatureSet, traceparent: str | None = None
) -> dict[bytes, bytes]:
    fields = {
        b"v": FEATURES_ENTRY_VERSION,
        b"type": FEATURES_TYPE,
        b"ts": str(feature_set.ts_ms).encode(),
        b"data": _encoder.encode(feature_set),
    }
    if traceparent:
        fields[b"tp"] = traceparent.encode()
    return fields


def decode_feature_set(entry_id: bytes | str, fields: dict[bytes, bytes]) -> FeatureSet:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if fields.get(b"v") != FEATURES_ENTRY_VERSION:
        raise EntryFormatError(f"entry {ident}: unsupported features version {fields.get(b'v')!r}")
    if fields.get(b"type") != FEATURES_TYPE:
        raise EntryFormatError(f"entry {ident}: not a features entry")
    try:
        return _set_decoder.decode(fields[b"data"])
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EntryFormatError(f"entry {ident}: {exc}") from exc


def encode_cached(vector: CachedVector) -> bytes:
    return _encoder.encode(vector)


def decode_cached(raw: bytes) -> CachedVector:
    return _cached_decoder.decode(raw)
