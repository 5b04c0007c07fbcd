"""REST backfill (pages, 429, CLI), gap windows, start-up windows and the gap audit."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from its_common import calendar
from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_common.events import MinuteAgg
from its_common.gaps import GapWindow, encode_gap
from its_common.streams import Stream
from its_loader.__main__ import main as cli_main
from its_loader.audit import audit_day
from its_loader.backfill import startup_windows
from its_loader.rest import PolygonRest, RestConfig
from its_loader.store import prepare_session
from tests.conditions import wait_until

from .conftest import add_bars, make_settings, query, scalar
from .polygon_rest import API_KEY, PolygonRestServer, synthetic_bar

DAY = date(2026, 11, 20)  # a Friday, regular session 14:30-21:00 UTC
SESSION = calendar.session(DAY)
assert SESSION is not None
MINUTES = [int(m.timestamp() * 1000) for m in SESSION.minute_starts()]
NO_TRADES = {MINUTES[i] for i in (7, 8, 200, 388)}  # minutes without a single trade


def fill_rest(server: PolygonRestServer, symbol: str = "NVDA") -> list[dict[str, Any]]:
    bars = [synthetic_bar(symbol, t) for t in MINUTES if t not in NO_TRADES]
    for item in bars:
        server.add(symbol, item)
    return bars


def as_ws(symbol: str, item: dict[str, Any]) -> MinuteAgg:
    return MinuteAgg(
        symbol=symbol, volume=item["v"], open=item["o"], close=item["c"], high=item["h"],
        low=item["l"], start=item["t"], end=item["t"] + 60_000, vwap=item["vw"],
    )  # fmt: skip


def cli_env(monkeypatch, redis_url: str, db_url: str, rest_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("ITS_POLYGON_REST_URL", rest_url)
    monkeypatch.setenv("POLYGON_API_KEY", API_KEY)
    monkeypatch.setenv("ITS_LOADER_REST_BACKOFF_S", "0.05")


async def test_backfill_cli_follows_pages_and_survives_429(
    redis_server, redis_client, db_url, rest_server, monkeypatch, capfd
):
    # redis_client: a clean Redis, no feed clock left by another test (finality is judged by it)
    fill_rest(rest_server)
    rest_server.page_size = 100
    rest_server.rate_limited = 2
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)
    argv = ["backfill", "--symbol", "NVDA", "--from", "2026-11-19", "--to", "2026-11-22"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    expected = len(MINUTES) - len(NO_TRADES)
    assert (
        scalar(db_url, "SELECT count(*) FROM market_data WHERE source = 'polygon_rest'") == expected
    )
    assert scalar(db_url, "SELECT count(*) FROM market_data WHERE trade_count IS NULL") == 0
    assert rest_server.unauthorized == 0  # the key was added again to every next_url
    pages = [r for r in rest_server.requests if "cursor=" in r]
    assert len(pages) >= 3
    err = capfd.readouterr().err
    assert "2/2" in err and "100.0%" in err  # two sessions (19th, 20th); weekend skipped
    # Running it again changes nothing.
    assert await asyncio.to_thread(cli_main, argv) == 0
    assert scalar(db_url, "SELECT max(revision) FROM market_data") == 1


async def test_rest_gives_up_after_retries(rest_server):
    rest_server.rate_limited = 100
    config = RestConfig(rest_server.url, API_KEY, max_retries=2, backoff_s=0.01, backoff_max_s=0.02)
    async with PolygonRest(config) as rest:
        try:
            await rest.minute_bars("NVDA", MINUTES[0], MINUTES[-1])
        except RuntimeError as exc:
            assert "429" in str(exc)
        else:
            raise AssertionError("expected a BackfillError")
    assert len(rest_server.requests) == 3


async def test_skipped_minute_is_backfilled_and_the_audit_finds_no_gap(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    bars = fill_rest(rest_server)
    skipped = bars[100]["t"]
    # The WebSocket delivered every bar except one; the router published the gap window.
    ws = [as_ws("NVDA", b) for b in bars if b["t"] != skipped]
    for i in range(0, len(ws), 50):
        await add_bars(redis_client, ws[i : i + 50])
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="bars,gaps")
    )
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == len(ws))

    config = RestConfig(rest_server.url, API_KEY)
    async with PolygonRest(config) as rest, await psycopg.AsyncConnection.connect(db_url) as conn:
        await prepare_session(conn)
        before = await audit_day(conn, rest, DAY, ["NVDA"])
        assert before.missing == 1 and before.mismatches == 0 and before.extra == 0
        assert before.symbols[0].empty == len(NO_TRADES)

        window = GapWindow(("NVDA",), skipped - 120_000, skipped + 60_000, reason="reconnect")
        await redis_client.xadd(Stream.GAPS, encode_gap(window))
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == len(bars))
        source = scalar(
            db_url, "SELECT source FROM market_data WHERE ts = to_timestamp(%s / 1000.0)", skipped
        )
        assert source == "polygon_rest"
        after = await audit_day(conn, rest, DAY, ["NVDA"])
    assert after.ok and after.missing == 0 and after.extra == 0
    assert loader.metric("its_loader_gap_windows_total", outcome="filled") == 1
    await loader.stop()


async def test_audit_cli_reports_writes_rows_publishes_and_repairs(
    redis_server, redis_client, db_url, rest_server, start_loader, monkeypatch, capfd
):
    bars = fill_rest(rest_server)
    missing, wrong = bars[10]["t"], bars[20]["t"]
    extra = sorted(NO_TRADES)[0]  # a bar REST does not have
    ws = [as_ws("NVDA", b) for b in bars if b["t"] != missing]
    ws = [
        w if w.start != wrong else as_ws("NVDA", {**bars[20], "c": bars[20]["c"] + 1}) for w in ws
    ]
    ws.append(as_ws("NVDA", synthetic_bar("NVDA", extra)))
    await add_bars(redis_client, ws)
    loader = start_loader(make_settings(redis_server.url, db_url, streams="bars"))
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == len(ws))
    await loader.stop()
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)

    assert (
        await asyncio.to_thread(cli_main, ["audit", "--date", DAY.isoformat(), "--symbol", "NVDA"])
        == 0
    )
    out = capfd.readouterr().out
    assert "GAPS FOUND (missing 1, mismatch 1, extra 1)" in out
    rows = query(
        db_url,
        "SELECT kind, (extract(epoch FROM minute_ts) * 1000)::bigint, detail "
        "FROM gap_audit ORDER BY kind",
    )
    assert [(r[0], r[1]) for r in rows] == [
        ("extra", extra),
        ("mismatch", wrong),
        ("missing", missing),
    ]
    assert "close" in rows[1][2]["fields"]
    events = await redis_client.xrange(Stream.ALERT_EVENTS)
    assert len(events) == 1 and events[0][1][b"type"] == b"gap_audit"
    summary = json.loads(events[0][1][b"data"])
    assert summary["missing"] == 1 and summary["ok"] is False
    assert summary["symbols"]["NVDA"]["empty"] == len(NO_TRADES) - 1

    argv = ["audit", "--date", DAY.isoformat(), "--symbol", "NVDA", "--repair", "--fail-on-gaps"]
    assert await asyncio.to_thread(cli_main, argv) == 1  # it found gaps (and repaired them)
    assert await asyncio.to_thread(cli_main, argv) == 0  # nothing left to find
    out = capfd.readouterr().out
    assert out.strip().endswith("OK: no missing minutes (missing 0, mismatch 0, extra 1)")
    assert [r[0] for r in query(db_url, "SELECT kind FROM gap_audit")] == ["extra"]

    # A weekend is not a trading day: nothing to audit, no event.
    assert await asyncio.to_thread(cli_main, ["audit", "--date", "2026-11-21"]) == 0
    assert "not a trading day" in capfd.readouterr().out


async def test_startup_windows_follow_the_calendar(db_url):
    assert SESSION is not None
    last = SESSION.open + timedelta(minutes=300)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source) "
            "VALUES ('NVDA', %s, 1, 1, 1, 1, 1, 'polygon_ws')",
            (last,),
        )
    now = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # Tuesday, 12:00 New York
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        windows = await startup_windows(aconn, ["NVDA", "MSFT"], initial_sessions=1, now=now)
    nvda = [(w[1], w[2]) for w in windows if w[0] == "NVDA"]
    monday = calendar.session(date(2026, 11, 23))
    tuesday = calendar.session(date(2026, 11, 24))
    assert monday is not None and tuesday is not None

    def ms(moment: datetime) -> int:
        return int(moment.timestamp() * 1000)

    assert nvda == [
        (ms(last + timedelta(minutes=1)), ms(SESSION.close)),
        (ms(monday.open), ms(monday.close)),
        (ms(tuesday.open), ms(now)),
    ]
    msft = [(w[1], w[2]) for w in windows if w[0] == "MSFT"]
    assert msft == [(ms(tuesday.open), ms(now))]  # no data yet: the current session


async def test_loader_publishes_startup_gaps_once(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    settings = make_settings(
        redis_server.url, db_url, rest_server.url, streams="gaps", backfill_on_start=True,
        symbols=["NVDA", "MSFT"],
    )  # fmt: skip
    first = start_loader(settings)
    second = start_loader(settings.model_copy(update={"consumer": "c2"}))

    async def handled():
        entries = await redis_client.xrange(Stream.GAPS)
        groups = await redis_client.xinfo_groups(Stream.GAPS) if entries else []
        if not groups:
            return False
        pending = await redis_client.xpending(Stream.GAPS, "loader")
        return (
            len(entries) == 2
            and pending["pending"] == 0
            and groups[0]["last-delivered-id"] != b"0-0"
        )

    await wait_until(handled)
    entries = await redis_client.xrange(Stream.GAPS)
    reasons = {json.loads(f[b"data"])["reason"] for _, f in entries}
    symbols = sorted({json.loads(f[b"data"])["symbols"][0] for _, f in entries})
    assert reasons == {"startup"} and symbols == ["MSFT", "NVDA"]
    assert len(entries) == 2  # one replica published (lock); one window per symbol
    await first.stop()
    await second.stop()


async def test_audit_during_the_session_skips_minutes_not_closed_on_the_market_clock(
    redis_server, redis_client, db_url, rest_server, start_loader, monkeypatch, capfd
):
    """The minute in progress (and the settle minute before it) is not missing yet: the audit
    judges by the feed's clock (a replayed day included), not by the machine's date."""
    bars = fill_rest(rest_server)
    in_progress = 100
    now_ms = MINUTES[in_progress] + 30_000
    settled = [b for b in bars if b["t"] + 60_000 <= now_ms - 60_000]
    await add_bars(redis_client, [as_ws("NVDA", b) for b in settled])
    loader = start_loader(make_settings(redis_server.url, db_url, streams="bars"))
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == len(settled))
    await loader.stop()
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(now_ms))
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)

    argv = ["audit", "--symbol", "NVDA", "--no-event", "--fail-on-gaps"]
    assert await asyncio.to_thread(cli_main, [*argv, "--date", DAY.isoformat()]) == 0
    assert "OK: no missing minutes (missing 0, mismatch 0, extra 0)" in capfd.readouterr().out
