"""Polygon stocks events and a fast codec to and from Polygon's WebSocket JSON.

Attribute names are readable; the wire names are Polygon's single letters (see
shared/reference/polygon.md). Every WebSocket timestamp is Unix **milliseconds**. Unknown fields
are ignored on decode, so new fields Polygon adds (``ds`` on trades, for example) never break us.

The market events are ``gc=False`` structs: they hold only numbers, strings and tuples of ints,
so they can never be part of a reference cycle, and leaving them out of the cyclic garbage
collector's tracking makes decoding a batch of them two to three times faster (measured on the
loader's trades path, where the collector's passes over the live events dominated).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Final, TypeAlias

import msgspec

Price = Annotated[float, msgspec.Meta(ge=0.0)]
Size = Annotated[int, msgspec.Meta(ge=0)]
# Share counts of aggregates (``v``, ``av``, ``z``): Polygon sends integers and so do we; a
# float is still accepted on decode (older recordings, stream entries written before integers).
WholeShares = Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0.0)]
Millis = Annotated[int, msgspec.Meta(ge=0)]


class Trade(msgspec.Struct, tag_field="ev", tag="T", omit_defaults=True, frozen=True, gc=False):
    """``T`` event: one trade."""

    symbol: str = msgspec.field(name="sym")
    exchange: int = msgspec.field(name="x")
    trade_id: str = msgspec.field(name="i")
    tape: int = msgspec.field(name="z")
    price: Price = msgspec.field(name="p")
    size: Size = msgspec.field(name="s")
    timestamp: Millis = msgspec.field(name="t")
    sequence: int = msgspec.field(name="q")
    conditions: tuple[int, ...] = msgspec.field(default=(), name="c")
    trf_id: int | None = msgspec.field(default=None, name="trfi")
    trf_timestamp: int | None = msgspec.field(default=None, name="trft")


class Quote(msgspec.Struct, tag_field="ev", tag="Q", omit_defaults=True, frozen=True, gc=False):
    """``Q`` event: NBBO quote."""

    symbol: str = msgspec.field(name="sym")
    bid_exchange: int = msgspec.field(name="bx")
    bid_price: Price = msgspec.field(name="bp")
    bid_size: Size = msgspec.field(name="bs")
    ask_exchange: int = msgspec.field(name="ax")
    ask_price: Price = msgspec.field(name="ap")
    ask_size: Size = msgspec.field(name="as")
    timestamp: Millis = msgspec.field(name="t")
    sequence: int = msgspec.field(name="q")
    tape: int = msgspec.field(name="z")
    condition: int | None = msgspec.field(default=None, name="c")
    indicators: tuple[int, ...] = msgspec.field(default=(), name="i")


class _Aggregate(msgspec.Struct, tag_field="ev", omit_defaults=True, frozen=True, gc=False):
    symbol: str = msgspec.field(name="sym")
    volume: WholeShares = msgspec.field(name="v")
    open: Price = msgspec.field(name="o")
    close: Price = msgspec.field(name="c")
    high: Price = msgspec.field(name="h")
    low: Price = msgspec.field(name="l")
    start: Millis = msgspec.field(name="s")
    end: Millis = msgspec.field(name="e")
    vwap: Price = msgspec.field(default=0.0, name="vw")
    day_volume: WholeShares = msgspec.field(default=0, name="av")
    day_open: Price = msgspec.field(default=0.0, name="op")
    day_vwap: Price = msgspec.field(default=0.0, name="a")
    avg_trade_size: WholeShares = msgspec.field(default=0, name="z")
    otc: bool = False


class SecondAgg(_Aggregate, tag="A", frozen=True):
    """``A`` event: **per-second** aggregate (e - s = 1000)."""


class MinuteAgg(_Aggregate, tag="AM", frozen=True):
    """``AM`` event: **per-minute** aggregate (e - s = 60000); may be re-sent with new values."""


class Status(msgspec.Struct, tag_field="ev", tag="status", frozen=True):
    """``status`` message: connected, auth_success, auth_failed, success, max_connections, ..."""

    status: str
    message: str = ""


Event: TypeAlias = Trade | Quote | SecondAgg | MinuteAgg | Status
MarketEvent: TypeAlias = Trade | Quote | SecondAgg | MinuteAgg
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    "T": Trade,
    "Q": Quote,
    "A": SecondAgg,
    "AM": MinuteAgg,
    "status": Status,
}


class CodecError(ValueError):
    """A frame or event that does not match the Polygon contract; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str, raw: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw


_frame_decoder: Final = msgspec.json.Decoder(list[Event])
_encoder: Final = msgspec.json.Encoder()
_RANGE: Final = re.compile(r"` (>=|<=|>|<) ")


def encode_frame(events: Sequence[Event]) -> bytes:
    """Encode events as one Polygon frame: a JSON array."""
    return _encoder.encode(events)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_frame(frame: bytes | str) -> list[Event]:
    """Decode a whole frame strictly; raises :class:`CodecError` on the first problem."""
    try:
        events = _frame_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise CodecError(_reason(str(exc)), str(exc), _as_bytes(frame)) from exc
    except msgspec.DecodeError as exc:
        raise CodecError("invalid_json", str(exc), _as_bytes(frame)) from exc
    # No per-event finiteness pass here: msgspec's JSON decoder never yields a non-finite float
    # (``NaN``/``Infinity`` tokens are malformed JSON, an overflowing number is "Number out of
    # range", both raised above). The pass cost a third of the router's CPU on Polygon-like
    # frames; events built another way (``convert_event``, from ``json.loads``) keep it.
    return events


def decode_frame_lenient(frame: bytes | str) -> tuple[list[Event], list[CodecError]]:
    """Decode a frame event by event, keeping the good ones and a :class:`CodecError` per bad one.

    The fast path decodes the whole frame at once; only a frame with a problem is split. A frame
    that is not strict JSON (``NaN`` tokens, say) is split with the standard library's parser, so
    its good events survive and the bad ones are reported as ``non_finite``.
    """
    try:
        return decode_frame(frame), []
    except CodecError:
        try:
            parts = json.loads(frame)
        except ValueError as exc:
            return [], [CodecError("invalid_json", str(exc), _as_bytes(frame))]
    if not isinstance(parts, list):
        return [], [CodecError("not_an_array", "a frame must be a JSON array", _as_bytes(frame))]
    good: list[Event] = []
    bad: list[CodecError] = []
    for part in parts:
        try:
            good.append(convert_event(part))
        except CodecError as exc:
            bad.append(exc)
    return good, bad


def decode_event(raw: bytes | str) -> Event:
    """Decode one event object from JSON."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise CodecError("invalid_json", str(exc), _as_bytes(raw)) from exc
    return convert_event(obj)


def convert_event(obj: object) -> Event:
    """Validate one already-parsed event object (a dict) into its typed event."""
    raw = _dump(obj)
    if not isinstance(obj, dict):
        raise CodecError("not_an_object", "an event must be a JSON object", raw)
    tag = obj.get("ev")
    cls = EVENT_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise CodecError("unknown_event", f"unknown ev {tag!r}", raw)
    try:
        event: Event = msgspec.convert(obj, cls)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "nan" in repr(obj).lower() or "inf" in repr(obj).lower():
            _check_raw_finite(obj, raw)
        raise CodecError(_reason(message), message, raw) from exc
    _check_finite([event])
    return event


def _check_raw_finite(obj: dict[str, object], raw: bytes) -> None:
    for key, value in obj.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecError("non_finite", f"non-finite value in field {key!r}", raw)


def _dump(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True, default=str).encode()


def _check_finite(events: Iterable[Event]) -> None:
    for event in events:
        if isinstance(event, Trade):
            values: tuple[float, ...] = (event.price,)
        elif isinstance(event, Quote):
            values = (event.bid_price, event.ask_price)
        elif isinstance(event, _Aggregate):
            values = (event.open, event.high, event.low, event.close, event.volume)
        else:
            continue
        if not all(math.isfinite(v) for v in values):
            raise CodecError("non_finite", f"non-finite value in {event!r}", encode_event(event))


def _reason(message: str) -> str:
    """Map msgspec's validation message to a short, countable reason label."""
    if message.startswith("Number out of range"):  # overflows to infinity
        return "non_finite"
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Expected") and _RANGE.search(message):
        return "out_of_range"
    if "Invalid value" in message or "tag" in message.lower():
        return "unknown_event"
    if message.startswith("Expected"):
        return "wrong_type"
    return "invalid"


def _as_bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def is_minute_bar(event: Event) -> bool:
    return isinstance(event, MinuteAgg)
