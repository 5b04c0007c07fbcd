"""The features service: minute completion, forward fill, late and re-sent bars, the cache and
the stream it writes (real Redis), the hit ratio, and the rebuild from stored bars (real
PostgreSQL) giving the same vectors as an uninterrupted run."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from its_common.calendar import session
from its_common.clock import FEED_CLOCK_KEY, MarketClock, feed_clock_mapping
from its_common.db.migrate import apply_migrations
from its_common.events import MinuteAgg
from its_common.features import Bar, BarArrays, batch_features
from its_common.featureset import cache_key, decode_cached, decode_feature_set
from its_common.settings import load_settings
from its_common.streams import Stream, encode_entry, ensure_group, read_group
from its_common.symbols import LiveSymbols, set_symbols
from its_features.app import (
    FeaturesMetrics,
    FeaturesProcessor,
    SymbolFollower,
    rebuild,
    wait_for_market_time,
)
from its_features.config import FeaturesSettings
from its_features.live import MinuteAssembler

DAY = date(2025, 3, 17)
SESSION = session(DAY)
assert SESSION is not None
OPEN = int(SESSION.open.timestamp() * 1000)
M = 60_000
PAIR = ("NVDA", "MSFT")


def bar(minute: int, close: float, volume: float = 100.0) -> Bar:
    ts = OPEN + minute * M
    return Bar(ts, close - 0.05, close + 0.1, close - 0.1, close, volume, None)


def series(n: int, seed: int, price: float) -> list[Bar]:
    rng = np.random.default_rng(seed)
    closes = price * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    volumes = rng.integers(1, 5000, n)
    return [
        bar(i, float(c), float(v)) for i, (c, v) in enumerate(zip(closes, volumes, strict=True))
    ]


def test_a_minute_completes_when_every_symbol_has_its_bar():
    a = MinuteAssembler(PAIR)
    assert a.add_bar("NVDA", bar(0, 100.0)) == []
    done = a.add_bar("MSFT", bar(0, 50.0))
    assert [m.ts_ms for m in done] == [OPEN] and done[0].filled == ()
    assert done[0].vectors["NVDA"] is not None and done[0].closes["MSFT"] == 50.0


def test_missing_bar_is_forward_filled_when_a_later_bar_or_the_grace_period_says_so():
    a = MinuteAssembler(PAIR, grace_ms=5_000)
    a.add_bar("NVDA", bar(0, 100.0))
    a.add_bar("MSFT", bar(0, 50.0))
    # Minute 1: MSFT's bar never comes; its minute-2 bar proves it is missing.
    assert a.add_bar("NVDA", bar(1, 101.0)) == []
    assert a.add_bar("NVDA", bar(2, 102.0)) == []
    done = a.add_bar("MSFT", bar(2, 51.0))
    assert [m.ts_ms for m in done] == [OPEN + M, OPEN + 2 * M]
    assert done[0].filled == ("MSFT",) and done[0].closes["MSFT"] == 50.0
    assert done[0].opens["MSFT"] == 50.0 and done[1].filled == ()
    # Minute 3: only NVDA; the grace period decides.
    a.add_bar("NVDA", bar(3, 103.0))
    assert a.flush(OPEN + 4 * M + 4_999) == []
    late = a.flush(OPEN + 4 * M + 5_000)
    assert [m.ts_ms for m in late] == [OPEN + 3 * M] and late[0].filled == ("MSFT",)
    assert a.counters.filled == {"MSFT": 2}
    assert a.counters.hits == {"NVDA": 4, "MSFT": 2} and a.counters.misses == {"MSFT": 2}
    assert a.hit_ratio() == pytest.approx(6 / 8)
    # Minutes with no bar at all are announced too (every symbol filled), in order.
    more = a.flush(OPEN + 7 * M + 5_000)
    assert [m.ts_ms for m in more] == [OPEN + 4 * M, OPEN + 5 * M, OPEN + 6 * M]
    assert all(m.filled == PAIR for m in more)


def test_late_corrected_and_resent_bars():
    a = MinuteAssembler(PAIR)
    a.add_bar("NVDA", bar(0, 100.0))
    a.add_bar("NVDA", bar(0, 100.5))  # re-sent before the minute completed: replaces
    done = a.add_bar("MSFT", bar(0, 50.0))
    assert done[0].closes["NVDA"] == 100.5 and a.counters.replaced == 1
    # A correction of an announced minute is refused, counted, and changes nothing.
    before = a.states["NVDA"].last_close
    assert a.add_bar("NVDA", bar(0, 99.0)) == []
    assert a.counters.dropped == {"late": 1} and a.states["NVDA"].last_close == before
    assert a.add_bar("AAPL", bar(1, 10.0)) == []
    closed = Bar(OPEN - 3_600_000, 1, 1, 1, 1, 1, None)
    a2 = MinuteAssembler(PAIR, not_before_ms=OPEN)
    assert a2.add_bar("NVDA", closed) == []
    assert a.counters.dropped["unknown_symbol"] == 1 and a2.counters.dropped == {"stale": 1}


def test_sessions_roll_over_and_the_last_minute_is_flagged():
    a = MinuteAssembler(PAIR)
    assert SESSION is not None
    last = SESSION.minutes - 1
    a.add_bar("NVDA", bar(last - 1, 100.0))
    a.add_bar("MSFT", bar(last - 1, 50.0))
    a.add_bar("NVDA", bar(last, 100.0))
    done = a.add_bar("MSFT", bar(last, 50.0))
    assert done[-1].session_last
    nxt = session(date(2025, 3, 18))
    assert nxt is not None
    open2 = int(nxt.open.timestamp() * 1000)
    out = a.flush(open2 + M + 5_000)  # overnight is skipped: the next minute is the next open
    assert [m.ts_ms for m in out] == [open2]
    assert out[0].session.open_ms == open2 and out[0].filled == PAIR


async def test_processor_publishes_stream_entries_and_the_cache(redis_client):
    await ensure_group(redis_client, Stream.BARS_1M, "features", start="0")
    metrics = FeaturesMetrics(CollectorRegistry())
    proc = FeaturesProcessor(redis_client, MinuteAssembler(PAIR), metrics, cache_ttl_s=120)
    events = [
        MinuteAgg(symbol=s, volume=10.0, open=p, close=p, high=p, low=p, start=OPEN, end=OPEN + M)
        for s, p in (("NVDA", 100.0), ("MSFT", 50.0))
    ]
    fields: dict[Any, Any] = encode_entry("AM", events, received_ms=OPEN + M + 50)
    await redis_client.xadd(Stream.BARS_1M, fields)
    entries = await read_group(redis_client, "features", "c", [Stream.BARS_1M], block_ms=None)
    published = await proc.handle(entries, now=OPEN + M + 100)
    assert len(published) == 1
    (entry_id, raw), *_ = await redis_client.xrange(Stream.FEATURES)
    fs = decode_feature_set(entry_id, raw)
    assert fs == published[0] and fs.ts_ms == OPEN and fs.ready and fs.received_ms == OPEN + M + 50
    cached = decode_cached(await redis_client.get(cache_key("NVDA")))
    assert cached.ts_ms == OPEN and cached.values == fs.symbols["NVDA"].values
    assert 0 < await redis_client.ttl(cache_key("NVDA")) <= 120
    assert metrics.hit_ratio._value.get() == 1.0


async def test_rebuild_from_stored_bars_continues_like_an_uninterrupted_run(database_url):
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    bars = {"NVDA": series(60, 1, 100.0), "MSFT": series(60, 2, 50.0)}
    del bars["MSFT"][17]  # a missing minute in the stored history
    # The previous session's close seeds the forward fill.
    before = datetime.fromtimestamp((OPEN - 86_400_000) / 1000, tz=UTC)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for symbol, rows in bars.items():
            for b in rows[:40]:
                await conn.execute(
                    "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source)"
                    " VALUES (%s, to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, 'test')",
                    (symbol, b.ts, b.open, b.high, b.low, b.close, b.volume),
                )
            await conn.execute(
                "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source)"
                " VALUES (%s, %s, 1, 1, 1, 1, 1, 'test')",
                (symbol, before),
            )
        restarted = MinuteAssembler(PAIR)
        now = OPEN + 40 * M + 2_000  # minute 40 is still in progress
        assert await rebuild(conn, restarted, now) == 40
    assert restarted.last_done == OPEN + 39 * M
    live = MinuteAssembler(PAIR)
    outputs: dict[str, list[Any]] = {"live": [], "restarted": []}
    for i in range(60):
        for symbol in PAIR:
            found = [b for b in bars[symbol] if b.ts == OPEN + i * M]
            if found:
                outputs["live"] += live.add_bar(symbol, found[0])
                if i >= 40:
                    outputs["restarted"] += restarted.add_bar(symbol, found[0])
    tail = [m for m in outputs["live"] if m.ts_ms >= OPEN + 40 * M]
    assert [m.ts_ms for m in tail] == [m.ts_ms for m in outputs["restarted"]]
    for a, b in zip(tail, outputs["restarted"], strict=True):
        for symbol in PAIR:
            assert np.array_equal(a.vectors[symbol], b.vectors[symbol])
    # And both equal the batch form over the same bars.
    ts = [b.ts for b in bars["MSFT"]]
    arrays = BarArrays.from_columns(
        ts,
        *[
            [getattr(b, f) for b in bars["MSFT"]]
            for f in ("open", "high", "low", "close", "volume")
        ],
    )
    assert SESSION is not None
    _, values = batch_features(arrays, [SESSION])
    assert np.max(np.abs(values[59] - outputs["restarted"][-1].vectors["MSFT"])) <= 1e-12


async def test_features_follow_the_live_symbol_list(redis_client, database_url):
    """A symbol added with `its-router set-symbols` reaches the features service: its assembler
    is rebuilt for the new list (and a minute then needs every listed symbol's bar)."""
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    settings = load_settings(
        FeaturesSettings, redis_url="redis://unused", database_url=database_url, symbols=PAIR
    )
    metrics = FeaturesMetrics(CollectorRegistry())
    proc = FeaturesProcessor(redis_client, MinuteAssembler(PAIR), metrics)
    follower = SymbolFollower(proc, LiveSymbols(redis_client, PAIR), settings, metrics, 0.0)
    await follower.check(OPEN + 5 * M)
    assert proc.assembler.symbols == PAIR
    await set_symbols(redis_client, ["NVDA", "MSFT", "AAPL"])
    await follower.check(OPEN + 5 * M)
    assert tuple(proc.assembler.symbols) == ("NVDA", "MSFT", "AAPL")
    assert proc.assembler.not_before_ms == OPEN


async def test_the_market_clock_is_awaited_before_assembling(redis_client):
    """Started before the feed's first event, the service waits for the feed's time instead of
    judging the session by the wall clock (which would make a replayed day's bars stale)."""
    clock = MarketClock(redis_client, "feed")
    stopping = asyncio.Event()
    waiting = asyncio.create_task(wait_for_market_time(clock, stopping))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(OPEN + 3 * M))
    assert await asyncio.wait_for(waiting, 10) == OPEN + 3 * M
    wall = await wait_for_market_time(MarketClock(redis_client, "wall"), stopping)
    assert wall is not None and wall > OPEN
