"""A bar is final only once its minute closed on the market clock plus the settle delay.

Defect reproduced (zero-loss issue): at loader start the backfill read the minute in progress
from REST and stored it as final (REST wins over WebSocket), so the complete WebSocket bar that
came later was ignored (09:30 stored with 113,181 shares instead of 2,006,782). Every REST path
is checked: gap windows (start-up windows are gap windows too), the CLI backfill, the audit's
repair.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_common.gaps import GapWindow, encode_gap
from its_common.streams import Stream
from its_loader.__main__ import main as cli_main
from its_loader.backfill import startup_windows
from tests.conditions import wait_until

from .conftest import add_bars, make_settings, query, scalar
from .polygon_rest import PolygonRestServer, synthetic_bar
from .test_backfill_audit import DAY, MINUTES, as_ws, cli_env

IN_PROGRESS = 100  # index of the minute in progress on the market clock
NOW_MS = MINUTES[IN_PROGRESS] + 30_000  # 30 s into it
PARTIAL_VOLUME = 113_181.0
COMPLETE_VOLUME = 2_006_782.0


def rest_as_of_now(server: PolygonRestServer, symbol: str = "NVDA") -> list[dict[str, Any]]:
    """REST as Polygon answers at NOW_MS: every bar up to the minute in progress, that one
    partial (what has traded in its first 30 seconds); nothing later."""
    bars = [synthetic_bar(symbol, t) for t in MINUTES[: IN_PROGRESS + 1]]
    bars[-1] = {**bars[-1], "v": PARTIAL_VOLUME, "n": 300}
    for item in bars:
        server.add(symbol, item)
    return bars


def row(db_url: str, minute: int) -> tuple[Any, ...] | None:
    rows = query(
        db_url,
        "SELECT source, volume FROM market_data WHERE symbol = 'NVDA' "
        "AND ts = to_timestamp(%s / 1000.0)",
        MINUTES[minute],
    )
    return rows[0] if rows else None


async def set_market_clock(redis_client: Any, now_ms: int) -> None:
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(now_ms))


async def test_gap_window_into_the_minute_in_progress_then_the_websocket_bar_wins(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    bars = rest_as_of_now(rest_server)
    await set_market_clock(redis_client, NOW_MS)
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="bars,gaps")
    )
    # A start-up (or reconnect) window reaching the minute in progress.
    window = GapWindow(("NVDA",), MINUTES[IN_PROGRESS - 5], NOW_MS, reason="startup")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)

    # Final minutes (end + 60 s settle <= now) are REST's; the last closed minute (99) and the
    # minute in progress (100) are not final: never stored as polygon_rest.
    for minute in range(IN_PROGRESS - 5, IN_PROGRESS - 1):
        assert row(db_url, minute) == ("polygon_rest", bars[minute]["v"])
    for minute in (IN_PROGRESS - 1, IN_PROGRESS):
        stored = row(db_url, minute)
        assert stored is None or stored[0] == "polygon_rest_provisional", stored

    # The complete WebSocket bars arrive when the minutes end: they win.
    complete = {**bars[IN_PROGRESS], "v": COMPLETE_VOLUME}
    await add_bars(redis_client, [as_ws("NVDA", bars[IN_PROGRESS - 1]), as_ws("NVDA", complete)])
    await wait_until(
        lambda: loader.metric("its_loader_entries_total", stream="1m", outcome="loaded") == 1
    )
    assert row(db_url, IN_PROGRESS) == ("polygon_ws", COMPLETE_VOLUME)
    assert row(db_url, IN_PROGRESS - 1) == ("polygon_ws", bars[IN_PROGRESS - 1]["v"])
    await loader.stop()


async def test_a_later_rest_read_replaces_a_provisional_bar(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    bars = rest_as_of_now(rest_server)
    await set_market_clock(redis_client, NOW_MS)
    loader = start_loader(make_settings(redis_server.url, db_url, rest_server.url, streams="gaps"))
    window = GapWindow(("NVDA",), MINUTES[IN_PROGRESS - 2], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    assert row(db_url, IN_PROGRESS) == ("polygon_rest_provisional", PARTIAL_VOLUME)

    # Two minutes later the minute is final and REST has the whole of it (the WebSocket bar was
    # lost as well): the next read replaces the provisional row.
    rest_server.add("NVDA", {**bars[IN_PROGRESS], "v": COMPLETE_VOLUME})
    await set_market_clock(redis_client, MINUTES[IN_PROGRESS + 2] + 1_000)
    later = GapWindow(("NVDA",), MINUTES[IN_PROGRESS], MINUTES[IN_PROGRESS + 1], reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(later))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 2)
    assert row(db_url, IN_PROGRESS) == ("polygon_rest", COMPLETE_VOLUME)
    await loader.stop()


async def test_cli_backfill_of_today_stores_no_unfinished_minute_as_final(
    redis_server, redis_client, db_url, rest_server, monkeypatch
):
    rest_as_of_now(rest_server)
    await set_market_clock(redis_client, NOW_MS)
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)
    argv = ["backfill", "--symbol", "NVDA", "--from", DAY.isoformat(), "--to", DAY.isoformat()]
    assert await asyncio.to_thread(cli_main, [*argv, "--no-progress"]) == 0
    final = scalar(db_url, "SELECT count(*) FROM market_data WHERE source = 'polygon_rest'")
    assert final == IN_PROGRESS - 1  # minutes 0..98
    for minute in (IN_PROGRESS - 1, IN_PROGRESS):
        stored = row(db_url, minute)
        assert stored is None or stored[0] == "polygon_rest_provisional", stored


async def test_audit_repair_during_the_day_stores_only_final_bars_and_settles_provisional_ones(
    redis_server, redis_client, db_url, rest_server, monkeypatch, capfd
):
    bars = rest_as_of_now(rest_server)
    # Stored: a provisional row for minute 50 (read before it was final; values now equal).
    with psycopg.connect(db_url) as conn:
        item = bars[50]
        conn.execute(
            "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, vwap, "
            "trade_count, source) VALUES ('NVDA', to_timestamp(%s / 1000.0), %s, %s, %s, %s, "
            "%s, %s, %s, 'polygon_rest_provisional')",
            (item["t"], item["o"], item["h"], item["l"], item["c"], item["v"], item["vw"],
             item["n"]),
        )  # fmt: skip
    await set_market_clock(redis_client, NOW_MS)
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)
    argv = ["audit", "--date", DAY.isoformat(), "--symbol", "NVDA", "--no-event", "--repair"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    out = capfd.readouterr().out
    assert "missing 98, mismatch 1" in out  # 0..98 final; 50 stored, but provisional
    assert scalar(db_url, "SELECT count(*) FROM market_data WHERE source = 'polygon_rest'") == 99
    assert row(db_url, IN_PROGRESS - 1) is None and row(db_url, IN_PROGRESS) is None
    assert row(db_url, 50) == ("polygon_rest", bars[50]["v"])


async def test_startup_windows_read_provisional_bars_again(db_url):
    with psycopg.connect(db_url) as conn:
        for minute, source in ((10, "polygon_ws"), (11, "polygon_rest_provisional")):
            conn.execute(
                "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source) "
                "VALUES ('NVDA', to_timestamp(%s / 1000.0), 1, 1, 1, 1, 1, %s)",
                (MINUTES[minute], source),
            )
    from datetime import UTC, datetime

    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    async with await psycopg.AsyncConnection.connect(db_url) as aconn:
        windows = await startup_windows(aconn, ["NVDA"], initial_sessions=1, now=now)
    assert windows == [("NVDA", MINUTES[11], NOW_MS)]


async def test_a_gap_window_starting_inside_a_minute_backfills_that_minute_bar(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    """A window opens at the newest event seen, seconds into a minute; that minute's bar is sent
    when the minute ends, inside the window, so it was missed too (the chaos suite found 09:53
    missing after a reconnect window starting at 09:53:05.9)."""
    bars = rest_as_of_now(rest_server)
    await set_market_clock(redis_client, NOW_MS)
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="gaps", late_reports_s=0)
    )
    window = GapWindow(("NVDA",), MINUTES[10] + 5_900, MINUTES[13], reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    for minute in (10, 11, 12):
        assert row(db_url, minute) == ("polygon_rest", bars[minute]["v"]), minute
    assert row(db_url, 9) is None and row(db_url, 13) is None
    await loader.stop()


async def test_a_gap_window_also_reads_the_minutes_late_reports_may_have_corrected(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    """Late reports (trades printed minutes after they happened) re-send an earlier minute's
    bar; those sent during a gap are lost with it. The backfill reads the window from
    ``late_reports_s`` before its start, so the corrected bars (and late trades) come from REST
    (the chaos suite found 10:05 short of a late trade after a reconnect window at 10:08)."""
    bars = rest_as_of_now(rest_server)
    await set_market_clock(redis_client, NOW_MS)
    stale = {**bars[17], "v": bars[17]["v"] - 100}  # the bar as the WebSocket sent it first
    await add_bars(redis_client, [as_ws("NVDA", stale)])
    loader = start_loader(
        make_settings(
            redis_server.url, db_url, rest_server.url, streams="bars,gaps", late_reports_s=180
        )
    )
    await wait_until(lambda: row(db_url, 17) is not None)
    window = GapWindow(("NVDA",), MINUTES[20] + 5_000, MINUTES[22], reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    for minute in range(17, 22):  # 20:05 - 3 minutes = 17:05: from minute 17 on
        assert row(db_url, minute) == ("polygon_rest", bars[minute]["v"]), minute
    assert row(db_url, 16) is None
    await loader.stop()
