"""Codec round trips on the examples of shared/reference/polygon.md."""

from __future__ import annotations

import math

import msgspec
import pytest

from its_common.events import (
    CodecError,
    MinuteAgg,
    Quote,
    SecondAgg,
    Status,
    Trade,
    decode_frame,
    decode_frame_lenient,
    encode_frame,
)

CONNECTED = b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]'
AUTH_OK = b'[{"ev":"status","status":"auth_success","message":"authenticated"}]'
SUBSCRIBED = b'[{"ev":"status","status":"success","message":"subscribed to: T.NVDA"}]'
TRADE = (
    b'{"ev":"T","sym":"NVDA","x":4,"i":"52983525029461","z":3,"p":181.52,"s":100,'
    b'"c":[12,37],"t":1764081000123,"q":1063,"trfi":202,"trft":1764081000120,"ds":"new-field"}'
)
QUOTE = (
    b'{"ev":"Q","sym":"MSFT","bx":11,"bp":476.1,"bs":3,"ax":12,"ap":476.14,"as":2,"c":0,'
    b'"i":[604],"t":1764081000456,"q":50322,"z":3}'
)
MINUTE = (
    b'{"ev":"AM","sym":"NVDA","v":412345,"av":21000000,"op":180.02,"vw":181.4821,"o":181.4,'
    b'"c":181.52,"h":181.6,"l":181.31,"a":180.9912,"z":87,"s":1764081000000,"e":1764081060000}'
)
SECOND = (
    b'{"ev":"A","sym":"NVDA","v":3100,"av":21000000,"op":180.02,"vw":181.5,"o":181.49,'
    b'"c":181.52,"h":181.52,"l":181.49,"a":180.9912,"z":90,"s":1764081000000,"e":1764081001000,'
    b'"otc":false}'
)


@pytest.mark.parametrize("frame", [CONNECTED, AUTH_OK, SUBSCRIBED])
def test_status_frames_round_trip(frame: bytes) -> None:
    events = decode_frame(frame)
    assert len(events) == 1 and isinstance(events[0], Status)
    assert msgspec.json.decode(encode_frame(events)) == msgspec.json.decode(frame)


def test_mixed_frame_decodes_every_type_with_unknown_fields_tolerated() -> None:
    frame = b"[" + b",".join([TRADE, QUOTE, MINUTE, SECOND]) + b"]"
    trade, quote, minute, second = decode_frame(frame)
    assert isinstance(trade, Trade) and trade.price == 181.52 and trade.conditions == (12, 37)
    assert trade.timestamp == 1764081000123 and trade.sequence == 1063 and trade.tape == 3
    assert isinstance(quote, Quote) and quote.ask_size == 2 and quote.indicators == (604,)
    assert isinstance(minute, MinuteAgg) and minute.end - minute.start == 60_000
    assert isinstance(second, SecondAgg) and second.end - second.start == 1_000
    assert minute.vwap == 181.4821 and minute.day_open == 180.02


@pytest.mark.parametrize("raw", [TRADE, QUOTE, MINUTE, SECOND])
def test_event_round_trip_preserves_every_reference_field(raw: bytes) -> None:
    original = msgspec.json.decode(raw)
    original.pop("ds", None)  # unknown field: tolerated, not kept
    original.pop("otc", None)  # omitted when false, like Polygon
    (event,) = decode_frame(b"[" + raw + b"]")
    again = msgspec.json.decode(encode_frame([event]))[0]
    assert again == original  # integer volumes stay integers (v, av, z)


@pytest.mark.parametrize("raw", [MINUTE, SECOND])
def test_aggregate_share_counts_are_integers_on_the_wire(raw: bytes) -> None:
    (bar,) = decode_frame(b"[" + raw + b"]")
    assert isinstance(bar, MinuteAgg | SecondAgg)
    for value in (bar.volume, bar.day_volume, bar.avg_trade_size):
        assert isinstance(value, int)
    encoded = encode_frame([bar])
    assert b'"v":' + str(bar.volume).encode() + b"," in encoded
    assert b".0," not in encoded.split(b'"v":')[1][:12]


def test_float_share_counts_are_still_accepted_on_decode() -> None:
    """Older recordings and stream entries carry ``"v":1029603.0``: they still decode."""
    raw = MINUTE.replace(b'"v":412345', b'"v":412345.0').replace(b'"z":87', b'"z":87.5')
    (bar,) = decode_frame(b"[" + raw + b"]")
    assert isinstance(bar, MinuteAgg) and bar.volume == 412345 and bar.avg_trade_size == 87.5
    negative = MINUTE.replace(b'"v":412345', b'"v":-1')
    events, errors = decode_frame_lenient(b"[" + negative + b"]")
    assert events == [] and [e.reason for e in errors] == ["out_of_range"]


def test_trade_without_conditions_is_valid() -> None:
    (trade,) = decode_frame(
        b'[{"ev":"T","sym":"MSFT","x":1,"i":"7","z":3,"p":1.5,"s":1,"t":1,"q":2}]'
    )
    assert isinstance(trade, Trade) and trade.conditions == ()
    assert b'"c"' not in encode_frame([trade])


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b'{"ev":"T","sym":"NVDA","x":4,"i":"1","z":3,"p":-1.0,"s":1,"t":1,"q":1}', "out_of_range"),
        (b'{"ev":"T","sym":"NVDA","x":4,"i":"1","z":3,"p":1.0,"s":-5,"t":1,"q":1}', "out_of_range"),
        (b'{"ev":"T","sym":"NVDA","x":4,"i":"1","z":3,"p":"1.0","s":1,"t":1,"q":1}', "wrong_type"),
        (b'{"ev":"T","sym":"NVDA","x":4,"i":"1","z":3,"s":1,"t":1,"q":1}', "missing_field"),
        (b'{"ev":"T","sym":"NVDA","x":4,"i":"1","z":3,"p":NaN,"s":1,"t":1,"q":1}', "non_finite"),
        (b'{"ev":"XX","sym":"NVDA"}', "unknown_event"),
        (b"17", "not_an_object"),
    ],
)
def test_bad_events_are_isolated_with_a_reason(event: bytes, reason: str) -> None:
    good = b'{"ev":"status","status":"success","message":"subscribed to: T.NVDA"}'
    events, errors = decode_frame_lenient(b"[" + good + b"," + event + b"]")
    assert events == [Status("success", "subscribed to: T.NVDA")]
    assert [error.reason for error in errors] == [reason]
    assert errors[0].raw  # raw payload kept for the dead-letter stream


def test_invalid_json_frame_is_one_error_with_its_payload() -> None:
    events, errors = decode_frame_lenient(b'[{"ev":"T",')
    assert events == []
    assert errors[0].reason == "invalid_json" and errors[0].raw == b'[{"ev":"T",'
    with pytest.raises(CodecError):
        decode_frame(b"not json")


def test_non_finite_values_never_pass_strict_decode() -> None:
    trade = Trade("NVDA", 4, "1", 3, math.inf, 1, 1, 1)
    with pytest.raises(CodecError, match="non_finite"):
        decode_frame(encode_frame([trade]).replace(b"null", b"1e999"))
