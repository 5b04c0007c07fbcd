"""Whole-market mode: ``T.*`` brings thousands of symbols with a heavy-tailed activity, their
minute bars agree with their trades, and the stream does not stop while a day or a table is
prepared (conditions, not timings: frames arrive while the preparation is held)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import date
from typing import Any

import aiohttp
import numpy as np

from its_common.events import MinuteAgg, Quote, Status, Trade, decode_frame
from its_common.simmarket.daydata import DayData, MarketSource, QuoteColumns
from its_common.simmarket.wholemarket import Tail, TailConfig, tail_symbols
from its_marketsim.app import Simulator
from tests.conditions import wait_until
from tests.marketsim.support import collect, config, open_client, recv_events

WHOLE = {"whole_market_symbols": 2_000, "whole_market_rate": 40_000.0}


async def test_star_subscription_brings_thousands_of_symbols_with_a_heavy_tail() -> None:
    async with Simulator(config(**WHOLE)) as sim:
        ws = await open_client(sim.ws_port, topics="T.*")
        events = await collect(ws, 60_000, within_s=60)
        await ws.close()
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == len(events)  # decoded by the shared codec: the wire is Polygon's
    counts = Counter(t.symbol for t in trades)
    assert len(counts) > 500
    ranked = sorted(counts.values(), reverse=True)
    median = ranked[len(ranked) // 2]
    top_share = sum(ranked[: len(ranked) // 100]) / len(trades)
    assert ranked[0] > 50 * median  # Zipf-like: the busiest name dwarfs the typical one
    assert top_share > 0.15  # the busiest 1 % of names take a large share of the tape
    # per symbol, sequence numbers increase and ids are unique
    by_symbol: dict[str, list[Trade]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade)
    for rows in by_symbol.values():
        seqs = [t.sequence for t in rows if t.sequence is not None]
        assert seqs == sorted(seqs)
        assert len({t.trade_id for t in rows}) == len(rows)


async def test_one_tail_ticker_and_its_minute_bars_agree_with_its_trades() -> None:
    # a low rate: a market minute passes in a few steps at max speed
    async with Simulator(config(whole_market_symbols=50, whole_market_rate=300.0)) as sim:
        ws = await open_client(sim.ws_port, topics="T.ZAAA,AM.ZAAA")
        trades: list[Trade] = []
        bars: list[MinuteAgg] = []

        async def a_bar_after_trades() -> bool:
            for event in await recv_events(ws, 20):
                assert not isinstance(event, Status)
                assert event.symbol == "ZAAA"
                if isinstance(event, Trade):
                    trades.append(event)
                elif isinstance(event, MinuteAgg):
                    bars.append(event)
            return len(bars) >= 2

        await wait_until(a_bar_after_trades, timeout_s=60, interval_s=0)
        await ws.close()
    bar = bars[1]  # the first may cover a minute the subscription joined halfway
    inside = [t for t in trades if bar.start <= t.timestamp < bar.end]
    assert bar.volume == sum(t.size for t in inside)
    priced = [t.price for t in inside]
    assert (bar.high, bar.low) == (max(priced), min(priced))
    assert bar.open == inside[0].price and bar.close == inside[-1].price


def test_tail_is_deterministic_per_second_and_follows_the_rate() -> None:
    a = Tail(TailConfig(symbols=300, rate=5_000.0, seed=3))
    b = Tail(TailConfig(symbols=300, rate=5_000.0, seed=3))
    open_ms = _open_ms(date(2025, 11, 3))
    second = open_ms // 1000 + 3_600
    first, again = a.second(second), b.second(second)
    assert np.array_equal(first.sym, again.sym) and np.array_equal(first.price, again.price)
    a.set_rate(20_000.0)
    assert 19_000 < len(a.second(second + 1).t_ms) < 21_000
    a.set_rate(None)
    assert a.rate_at(open_ms - 1) == 0.0  # no tail trading outside the regular session
    assert a.rate_at(open_ms + 60_000) > a.rate_at(open_ms + 3 * 3_600_000)  # busy open
    names = tail_symbols(30, taken=("ZAAB",))
    assert "ZAAB" not in names and len(set(names)) == 30


def test_a_tail_day_prepared_ahead_trades_exactly_as_one_computed_on_the_spot() -> None:
    ahead = Tail(TailConfig(symbols=300, rate=5_000.0, seed=3))
    on_the_spot = Tail(TailConfig(symbols=300, rate=5_000.0, seed=3))
    day = date(2025, 11, 4)
    ahead.prepare(day)
    second = _open_ms(day) // 1000 + 600
    first, again = ahead.second(second), on_the_spot.second(second)
    assert ahead.days_prepared_ahead == 1 and on_the_spot.days_prepared_ahead == 0
    assert len(first.t_ms) > 0
    for field in ("t_ms", "sym", "price", "size", "exchange", "seq"):
        assert np.array_equal(getattr(first, field), getattr(again, field)), field


async def test_the_stream_prepares_the_tail_s_next_day_before_it_gets_there() -> None:
    # ten minutes before the close, a slow tail: the next day comes after a few steps
    late = config(whole_market_symbols=50, whole_market_rate=5.0, start="2025-11-03T15:50:00")
    async with Simulator(late) as sim:
        tail = sim.tail
        assert tail is not None
        ws = await open_client(sim.ws_port, topics="T.*")
        days: set[date] = set()

        async def second_tail_day() -> bool:
            events = await recv_events(ws, 30)
            days.update(
                _ny_day(e.timestamp)
                for e in events
                if isinstance(e, Trade) and e.symbol in tail.names
            )
            return len(days) >= 2

        await wait_until(second_tail_day, timeout_s=240, interval_s=0)
        await ws.close()
        assert tail.days_prepared_ahead >= 1  # its paths were not computed on the loop


def test_bursts_raise_the_rate_for_their_length() -> None:
    tail = Tail(TailConfig(symbols=10, rate=1_000.0, burst_rate=120_000.0, burst_every_s=600))
    open_ms = _open_ms(date(2025, 11, 3))
    assert tail.rate_at(open_ms + 600_000 + 1_000) == 120_000.0
    assert tail.rate_at(open_ms + 600_000 + 10_000) < 10_000


async def test_admin_sets_the_whole_market_rate() -> None:
    async with Simulator(config(**WHOLE)) as sim, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{sim.rest_port}/admin/market"
        async with http.post(url, json={"rate": 120_000}) as response:
            assert response.status == 200
            body = await response.json()
        assert body["rate_override"] == 120_000 and body["symbols"] == 2_000
        async with http.post(url, json={"rate": "fast"}) as response:
            assert response.status == 400
        assert sim.tail is not None and sim.tail.override == 120_000
    async with Simulator(config()) as sim, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{sim.rest_port}/admin/market"
        async with http.post(url, json={"rate": 1}) as response:
            assert response.status == 409


class HeldSource:
    """A market source whose later days, and whose quotes, are prepared only when released."""

    def __init__(self, inner: MarketSource) -> None:
        self.inner = inner
        self.symbols = inner.symbols
        self.first_day: date | None = None
        self.release_day = threading.Event()
        self.release_quotes = threading.Event()
        self.waiting_for_day = threading.Event()
        self.waiting_for_quotes = threading.Event()

    def day(self, day: date) -> DayData | None:
        if self.first_day is None:
            self.first_day = day
        if day != self.first_day:
            self.waiting_for_day.set()
            self.release_day.wait(60)
        data = self.inner.day(day)
        if data is not None and data.quote_factory is not None:
            factory = data.quote_factory
            data.quote_factory = lambda: self._held(factory)
        return data

    def _held(self, factory: Any) -> QuoteColumns:
        self.waiting_for_quotes.set()
        self.release_quotes.wait(60)
        quotes: QuoteColumns = factory()
        return quotes

    def first_window_after(self, ms: int) -> tuple[date, int, int] | None:
        return self.inner.first_window_after(ms)

    def last_window_before(self, ms: int) -> tuple[date, int, int] | None:
        return self.inner.last_window_before(ms)


async def test_frames_keep_flowing_while_the_next_day_and_the_quotes_are_prepared() -> None:
    # paced (a session in about 16 s): the day cannot run out while the test holds things
    sim = Simulator(config(speed=1_500.0))
    held = HeldSource(sim.source)
    sim.stream.source = held
    try:
        async with sim:
            ws = await open_client(sim.ws_port, topics="T.NVDA")
            # the next day is being prepared (held) while today's trades keep arriving
            await wait_until(held.waiting_for_day.is_set, timeout_s=30)
            seen_while_held: list[Trade] = []

            async def trades_arrive() -> bool:
                seen_while_held.extend(e for e in await recv_events(ws, 20) if isinstance(e, Trade))
                return len(seen_while_held) >= 1_000

            await wait_until(trades_arrive, timeout_s=60, interval_s=0)
            assert not held.release_day.is_set()
            # a first quote subscription: its table is built (held) while trades keep coming
            await ws.send(json.dumps({"action": "subscribe", "params": "Q.NVDA"}))
            await wait_until(held.waiting_for_quotes.is_set, timeout_s=30)
            kinds: Counter[type] = Counter()

            async def more_trades_without_quotes() -> bool:
                kinds.update(type(e) for e in await recv_events(ws, 20))
                return kinds[Trade] >= 500

            await wait_until(more_trades_without_quotes, timeout_s=60, interval_s=0)
            assert kinds[Quote] == 0
            held.release_quotes.set()

            async def quotes_follow() -> bool:
                kinds.update(type(e) for e in await recv_events(ws, 20))
                return kinds[Quote] > 0

            await wait_until(quotes_follow, timeout_s=60, interval_s=0)
            held.release_day.set()
            first_day = held.first_day

            async def next_day_arrives() -> bool:
                events = await recv_events(ws, 30)
                return any(
                    isinstance(e, Trade) and _ny_day(e.timestamp) != first_day for e in events
                )

            await wait_until(next_day_arrives, timeout_s=120, interval_s=0)
            await ws.close()
    finally:
        held.release_day.set()
        held.release_quotes.set()


def _ny_day(ms: int) -> date:
    from its_common.simmarket import sessions

    return sessions.ny_date(ms)


def _open_ms(day: date) -> int:
    from its_common.simmarket import sessions

    session = sessions.trading_day(day)
    assert session is not None
    return session.open_ms


def test_frames_decode_with_the_shared_codec() -> None:
    tail = Tail(TailConfig(symbols=20, rate=2_000.0))
    open_ms = _open_ms(date(2025, 11, 3))
    events, times, syms = tail.span(open_ms + 1_000, open_ms + 3_000)
    from its_common.events import encode_frame

    decoded = decode_frame(encode_frame(events))
    assert [e.timestamp for e in decoded if isinstance(e, Trade)] == times.tolist()
    assert all(isinstance(e, Trade) for e in decoded) and len(set(syms.tolist())) > 5
