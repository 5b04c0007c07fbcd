"""Pure parts of the router: backoff, subscriptions, batching, settings."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from its_common import streams
from its_common.backoff import Backoff
from its_common.events import MinuteAgg, Trade, convert_event, decode_frame, encode_frame
from its_common.settings import SettingsError, load_settings
from its_common.symbols import SymbolError, parse_symbols
from its_router.batching import Frame, build_batch, element_bodies
from its_router.config import RouterSettings
from its_router.feed import may_hold_status
from its_router.subscriptions import diff, feed_topics, subscribe_message, topics


def test_backoff_grows_capped_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    caps = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays[4:]}) > 1  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_topics_and_symbol_diff() -> None:
    assert topics(["NVDA", "MSFT"], ["T", "AM"]) == ["T.NVDA", "AM.NVDA", "T.MSFT", "AM.MSFT"]
    add, remove = diff(["NVDA", "MSFT"], ["NVDA", "AAPL"], ["T", "AM"])
    assert add == ["T.AAPL", "AM.AAPL"] and remove == ["T.MSFT", "AM.MSFT"]
    assert subscribe_message("subscribe", add) == {
        "action": "subscribe",
        "params": "T.AAPL,AM.AAPL",
    }


def test_whole_market_topics_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert feed_topics(["NVDA", "MSFT"], ["T", "AM"], every=True) == ["T.*", "AM.*"]
    assert feed_topics(["NVDA"], ["T"], every=False) == ["T.NVDA"]
    assert load_settings(RouterSettings).subscribe_all is False
    monkeypatch.setenv("ITS_SUBSCRIBE_ALL", "true")
    assert load_settings(RouterSettings).subscribe_all is True


def test_latest_trade_per_symbol_of_a_many_symbol_frame() -> None:
    trades = [trade(f"S{i % 300}", 1_000 + i, price=float(i)) for i in range(900)]
    trades += [trade("S5", 10)]  # older than S5's newest: not the latest
    batch = build_batch([Frame(1, encode_frame(trades))])
    assert len(batch.latest_trades) == 300
    assert batch.latest_trades["S5"].timestamp == 1_000 + 605
    later = build_batch([Frame(2, encode_frame([trade("S5", 1_000 + 605, price=7.0)]))])
    assert later.latest_trades["S5"].price == 7.0


def test_symbol_parsing() -> None:
    assert parse_symbols(" nvda, aapl ,NVDA") == ["NVDA", "AAPL"]
    with pytest.raises(SymbolError):
        parse_symbols("NVDA,bad ticker")


def trade(symbol: str, ts: int, price: float = 100.0) -> Trade:
    return Trade(symbol, 4, str(ts), 3, price, 100, ts, ts)


def test_batch_groups_by_type_keeps_latest_trade_and_isolates_bad_events() -> None:
    bar = MinuteAgg("NVDA", 10.0, 1.0, 1.0, 1.0, 1.0, 60_000, 120_000)
    good = encode_frame([trade("NVDA", 5), trade("MSFT", 3), bar, trade("NVDA", 4)])
    bad = b'[{"ev":"T","sym":"NVDA","x":4,"i":"9","z":3,"p":-2.0,"s":1,"t":9,"q":9}]'
    batch = build_batch([Frame(1_000, good), Frame(1_001, bad), Frame(1_002, b"{oops")])
    assert batch.counts_by_type() == {"T": 3, "AM": 1}
    ((data, count),) = batch.groups[("ws", "T", 0)].entries(100)
    symbols = [getattr(t, "symbol", None) for t in decode_frame(data)]
    assert count == 3 and symbols == ["NVDA", "MSFT", "NVDA"]
    assert batch.latest_trades["NVDA"].timestamp == 5 and batch.latest_trades["MSFT"].timestamp == 3
    assert [e.reason for _, e in batch.dead_letters] == ["out_of_range", "invalid_json"]
    assert batch.event_count == 4 and batch.symbols == {"NVDA", "MSFT"}
    assert (batch.min_event_ms, batch.max_event_ms) == (3, 60_000)
    assert batch.first_received_ms == 1_000


def test_router_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_CHANNELS", "T,AM,XX")
    monkeypatch.setenv("USE_POLYGON_WS", "maybe")
    with pytest.raises(SettingsError) as caught:
        load_settings(RouterSettings)
    assert "ITS_CHANNELS" in str(caught.value) and "XX" in str(caught.value)
    assert "USE_POLYGON_WS" in str(caught.value)
    monkeypatch.setenv("ITS_CHANNELS", "t, am, q")
    monkeypatch.setenv("USE_POLYGON_WS", "false")
    settings = load_settings(RouterSettings)
    assert settings.channels == ["T", "AM", "Q"] and settings.use_polygon_ws is False


def test_clean_single_type_frames_are_kept_raw_and_split_into_bounded_entries() -> None:
    frames = [
        Frame(i, encode_frame([trade("NVDA", i * 10 + j) for j in range(10)])) for i in range(5)
    ]
    frames.append(Frame(9, frames[0].payload.replace(b'"ds"', b'"ds"')[:-1] + b',{"ev":"T"}]'))
    batch = build_batch(frames)
    group = batch.groups[("ws", "T", 0)]
    entries = group.entries(25)
    # five clean frames kept raw, plus the good events of the sixth: frame granularity, <= 25
    assert [count for _, count in entries] == [20, 20, 20]
    decoded: list[Any] = [t for data, _ in entries for t in decode_frame(data)]
    assert [t.timestamp for t in decoded] == list(range(50)) + list(range(10))
    assert [e.reason for _, e in batch.dead_letters] == ["missing_field"]
    assert batch.latest_trades["NVDA"].timestamp == 49


def test_latest_trade_per_symbol_is_the_newest_and_the_later_one_on_a_tie() -> None:
    quote = (
        b'{"ev":"Q","sym":"MSFT","bx":1,"bp":1.0,"bs":1,"ax":1,"ap":1.1,"as":1,"t":8,"q":1,"z":3}'
    )
    tied_first, tied_last = (
        Trade("MSFT", 4, "a", 3, 1.0, 1, 7, 1),
        Trade("MSFT", 4, "b", 3, 2.0, 1, 7, 2),
    )
    trades = [trade("NVDA", 9), tied_first, trade("NVDA", 3), tied_last, trade("AAPL", 1)]
    mixed = encode_frame(trades)[:-1] + b"," + quote + b"]"
    batch = build_batch([Frame(1, encode_frame([trade("AAPL", 2)])), Frame(2, mixed)])
    assert {s: t.trade_id for s, t in batch.latest_trades.items()} == {
        "NVDA": "9", "MSFT": "b", "AAPL": "2",
    }  # fmt: skip
    ((data, _),) = batch.groups[("ws", "T", 0)].entries(100)
    assert [t.trade_id for t in decode_frame(data)] == ["2", "9", "a", "3", "b", "1"]  # type: ignore[union-attr]
    assert batch.counts_by_type() == {"T": 6, "Q": 1}


def entry_events(batch: Any, tag: str) -> list[Any]:
    """The events of ``tag``'s entries, decoded as consumers decode them (its_common.streams)."""
    out: list[Any] = []
    for data, count in batch.groups[("ws", tag, 0)].entries(10_000):
        fields = streams.encode_entry_raw(tag, data, count, 1)
        out += streams.decode_entry("1-0", fields).events
    return out


MIXED = [
    {"ev": "T", "sym": "NVDA", "i": "1", "x": 4, "p": 10.5, "s": 5, "t": 3, "q": 1, "z": 3,
     "c": [12, 37], "trfi": 202, "trft": 2},
    {"ev": "Q", "sym": "MSFT", "bx": 11, "bp": 1.0, "bs": 1, "ax": 12, "ap": 1.1, "as": 2,
     "c": 0, "i": [604], "t": 4, "q": 2, "z": 3},
    {"ev": "T", "sym": "MSFT", "i": "2", "x": 11, "p": 20.25, "s": 100, "t": 5, "q": 3, "z": 1},
    {"ev": "AM", "sym": "NVDA", "v": 10, "av": 99, "op": 1.0, "vw": 1.0, "o": 1.0, "c": 1.0,
     "h": 1.1, "l": 0.9, "a": 1.0, "z": 3, "s": 0, "e": 60_000},
    {"ev": "Q", "sym": "NVDA", "bx": 11, "bp": 2.0, "bs": 1, "ax": 12, "ap": 2.1, "as": 2,
     "t": 6, "q": 4, "z": 3},
]  # fmt: skip


@pytest.mark.parametrize(
    "separators", [(", ", ": "), (",", ":"), (",\n  ", ": ")], ids=["spaced", "compact", "lines"]
)
def test_a_mixed_frame_is_split_by_type_into_its_own_element_bytes(
    separators: tuple[str, str],
) -> None:
    """Polygon mixes types in a frame: each type's entry holds the events exactly as they
    arrived (not re-encoded), in frame order, and decodes as consumers decode entries."""
    text = json.dumps(MIXED, separators=separators)
    payload = f" \n{text}\n ".encode()
    batch = build_batch([Frame(1, payload)])
    assert batch.counts_by_type() == {"T": 2, "Q": 2, "AM": 1}
    elements = [json.dumps(e, separators=separators).encode() for e in MIXED]
    ((trades, _),) = batch.groups[("ws", "T", 0)].entries(100)
    gap = separators[0].encode()
    assert trades == b"[" + elements[0] + gap + elements[2] + b"]"  # the bytes as received
    ((quotes, _),) = batch.groups[("ws", "Q", 0)].entries(100)
    assert quotes == b"[" + elements[1] + gap + elements[4] + b"]"
    assert entry_events(batch, "T") == [convert_event(MIXED[0]), convert_event(MIXED[2])]
    assert entry_events(batch, "Q") == [convert_event(MIXED[1]), convert_event(MIXED[4])]
    assert entry_events(batch, "AM") == [convert_event(MIXED[3])]
    assert batch.latest_trades["NVDA"].trade_id == "1"
    assert batch.latest_trades["MSFT"].price == 20.25
    assert (batch.min_event_ms, batch.max_event_ms, batch.reach_ms) == (0, 6, 60_000)
    assert batch.frame_newest_exchange_ms == [5] and not batch.dead_letters


@pytest.mark.parametrize(
    "odd",
    [
        {"i": "x}, {y"},  # a brace inside a string
        {"ds": {"a": [1, {"b": 2}]}},  # an unknown field holding objects
    ],
    ids=["brace-in-string", "unknown-object-field"],
)
def test_a_mixed_frame_with_braces_besides_its_events_is_re_encoded(odd: dict[str, Any]) -> None:
    """Only a frame whose closing braces are its events' own is cut at them; any other brace
    (in a string, in an unknown field) makes the writer re-encode the decoded events."""
    events = [dict(MIXED[0], **odd), *MIXED[1:]]
    payload = json.dumps(events).encode()
    assert element_bodies(payload, len(events)) is None
    batch = build_batch([Frame(1, payload)])
    expected = [convert_event(events[0]), convert_event(events[2])]
    assert entry_events(batch, "T") == expected
    assert entry_events(batch, "Q") == [convert_event(MIXED[1]), convert_event(MIXED[4])]
    assert batch.counts_by_type() == {"T": 2, "Q": 2, "AM": 1} and not batch.dead_letters


def test_statuses_mixed_with_events_are_kept_apart_from_the_entries() -> None:
    status = {"ev": "status", "status": "success", "message": "subscribed to: T.*, {all}"}
    payload = json.dumps([MIXED[0], status, MIXED[1], status]).encode()
    batch = build_batch([Frame(1, payload)])
    assert [s.status for s in batch.statuses] == ["success", "success"]
    assert entry_events(batch, "T") == [convert_event(MIXED[0])]
    assert entry_events(batch, "Q") == [convert_event(MIXED[1])]
    only_status = build_batch([Frame(2, json.dumps([status]).encode())])
    assert len(only_status.statuses) == 1 and only_status.event_count == 0
    assert only_status.groups == {}


def test_a_mixed_frame_with_a_non_finite_value_keeps_its_good_events_of_each_type() -> None:
    """Lenient path (unchanged): NaN is not JSON; the good events of every type flow, the bad
    one is a non_finite dead letter with its raw payload."""
    bad = json.dumps(dict(MIXED[0], p=float("nan"), i="bad"))
    payload = "[" + ", ".join([*map(json.dumps, MIXED[1:3]), bad, json.dumps(MIXED[4])]) + "]"
    batch = build_batch([Frame(7, payload.encode())])
    assert entry_events(batch, "T") == [convert_event(MIXED[2])]
    assert entry_events(batch, "Q") == [convert_event(MIXED[1]), convert_event(MIXED[4])]
    ((received, error),) = batch.dead_letters
    assert (received, error.reason) == (7, "non_finite") and b'"bad"' in error.raw
    assert batch.latest_trades["MSFT"].trade_id == "2" and "NVDA" not in batch.latest_trades


def test_a_frame_that_may_hold_a_status_is_told_apart_from_market_data() -> None:
    status = {"ev": "status", "status": "max_connections", "message": "Maximum number"}
    compact = (",", ":")
    assert may_hold_status(json.dumps([status], separators=compact).encode())
    mixed = json.dumps([*MIXED, status, MIXED[0]], separators=compact).encode()
    assert may_hold_status(mixed)  # a status among events
    assert not may_hold_status(json.dumps(MIXED, separators=compact).encode())
    unusual = dict(MIXED[0], ds="unusual")  # a "u" in a new field: the full search says no
    assert not may_hold_status(json.dumps([unusual], separators=compact).encode())
