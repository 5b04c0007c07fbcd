"""Event shapes against the reference: every field, millisecond timestamps, strict decoding."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from its_common.events import MinuteAgg, Quote, SecondAgg, Status, Trade, decode_frame
from its_common.simmarket.sessions import trading_day
from its_common.simmarket.wire import WireQuote, WireTrade
from its_marketsim.app import Simulator
from tests.marketsim.support import config, open_client, recv_frame

DAY_OPEN_MS = 1762180200000  # 2025-11-03 09:30 New York
DAY_CLOSE_MS = 1762203600000


def test_session_constants() -> None:
    from datetime import date

    session = trading_day(date(2025, 11, 3))
    assert session is not None
    assert (session.open_ms, session.close_ms) == (DAY_OPEN_MS, DAY_CLOSE_MS)


def test_wire_structs_encode_like_the_shared_ones() -> None:
    enc = msgspec.json.Encoder()
    wire = WireTrade("NVDA", 4, "123", 3, 181.25, 100, 1762180200000, 7, (14, 37), 201, 17)
    shared = Trade("NVDA", 4, "123", 3, 181.25, 100, 1762180200000, 7, (14, 37), 201, 17)
    assert enc.encode(wire) == enc.encode(shared)
    bare = WireTrade("NVDA", 12, "9", 3, 1.5, 1, 5, 6)
    assert enc.encode(bare) == enc.encode(Trade("NVDA", 12, "9", 3, 1.5, 1, 5, 6))
    q = WireQuote("NVDA", 11, 1.0, 100, 12, 1.01, 200, 5, 6, 3)
    assert enc.encode(q) == enc.encode(Quote("NVDA", 11, 1.0, 100, 12, 1.01, 200, 5, 6, 3))


async def test_every_event_type_has_every_field() -> None:
    async with Simulator(config(batch_size=50)) as sim:
        ws = await open_client(sim.ws_port, topics="T.*,Q.*,A.*,AM.*")
        seen: dict[str, dict[str, Any]] = {}
        frames = 0
        while not {"T", "Q", "A", "AM", "T_trf"} <= set(seen):
            raw = await recv_frame(ws)
            frames += 1
            events = decode_frame(raw)  # strict: every required field, right types
            assert 1 <= len(events) <= 50
            for obj in json.loads(raw):
                kind = obj["ev"]
                if kind == "T" and "trfi" in obj:
                    seen["T_trf"] = obj
                seen.setdefault(kind, obj)
            assert frames < 2000
        await ws.close()
    trade = seen["T"]
    assert set(trade) >= {"ev", "sym", "x", "i", "z", "p", "s", "t", "q"}
    assert trade["z"] == 3 and isinstance(trade["i"], str)
    trf = seen["T_trf"]
    assert trf["x"] == 4 and trf["trfi"] in (201, 202, 203)
    assert isinstance(trf["trft"], int) and trf["trft"] <= trf["t"]
    quote = seen["Q"]
    assert set(quote) >= {"ev", "sym", "bx", "bp", "bs", "ax", "ap", "as", "t", "q", "z"}
    assert quote["ap"] > quote["bp"]
    for kind, width in (("A", 1000), ("AM", 60000)):
        bar = seen[kind]
        assert set(bar) >= {
            "ev",
            "sym",
            "v",
            "av",
            "op",
            "vw",
            "o",
            "c",
            "h",
            "l",
            "a",
            "z",
            "s",
            "e",
        }
        assert "otc" not in bar
        assert bar["e"] - bar["s"] == width
    for obj in seen.values():  # Unix milliseconds in the session, not seconds or nanoseconds
        stamp = obj.get("t", obj.get("s"))
        assert isinstance(stamp, int)
        assert DAY_OPEN_MS <= stamp <= DAY_CLOSE_MS


async def test_only_subscribed_topics_are_sent() -> None:
    async with Simulator(config()) as sim:
        ws = await open_client(sim.ws_port, topics="T.MSFT,AM.NVDA")
        kinds: set[tuple[str, str]] = set()
        for _ in range(40):
            for event in decode_frame(await recv_frame(ws)):
                assert not isinstance(event, Status)
                kinds.add((type(event).__name__, event.symbol))
            if ("MinuteAgg", "NVDA") in kinds:
                break
        assert kinds == {("Trade", "MSFT"), ("MinuteAgg", "NVDA")}
        await ws.close()


async def test_minute_bars_at_end_of_minute_and_second_bars() -> None:
    async with Simulator(config()) as sim:
        ws = await open_client(sim.ws_port, topics="AM.NVDA,A.NVDA")
        minute: list[MinuteAgg] = []
        second: list[SecondAgg] = []
        while len(minute) < 5:
            for event in decode_frame(await recv_frame(ws)):
                if isinstance(event, MinuteAgg):
                    minute.append(event)
                elif isinstance(event, SecondAgg):
                    second.append(event)
        await ws.close()
    assert all(b.end - b.start == 60_000 and b.start % 60_000 == 0 for b in minute)
    assert all(b.end - b.start == 1_000 for b in second)
    assert [b.start for b in minute] == sorted(b.start for b in minute)
    # a minute bar comes after every second bar of its minute
    last_minute = minute[-1]
    inside = [b for b in second if last_minute.start <= b.start < last_minute.end]
    assert inside and sum(b.volume for b in inside) <= last_minute.volume
    for bar in minute:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.day_volume >= bar.volume > 0
        assert bar.day_open > 0 and bar.day_vwap > 0
