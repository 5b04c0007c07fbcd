"""Gap windows backfill trades too: ``/v3/trades`` pages, 429s, final minutes only, each once.

Defect reproduced (zero-loss issue): "every gap window is backfilled: bars from aggregates,
trades from /v3/trades with pagination" - gap windows filled minute bars only, so trades lost
with a reconnect or trimmed before the loader read them were never recovered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError

from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_common.events import Trade
from its_common.gaps import GapWindow, decode_gap, encode_gap
from its_common.streams import Stream
from its_loader.__main__ import main as cli_main
from tests.conditions import wait_until

from .conftest import add_trades, make_settings, query, scalar
from .polygon_rest import synthetic_trade
from .test_backfill_audit import DAY, MINUTES, cli_env

FIRST, IN_PROGRESS = 10, 13  # minutes 10..12 final on the market clock, 13 in progress
NOW_MS = MINUTES[IN_PROGRESS] + 70_000  # 13 has closed, but not settled
PER_MINUTE = 25


def rest_trades() -> list[dict[str, Any]]:
    """Trades of minutes FIRST..IN_PROGRESS; some share a millisecond (different ids)."""
    out = []
    i = 0
    for minute in range(FIRST, IN_PROGRESS + 1):
        for k in range(PER_MINUTE):
            i += 1
            sip_ns = (MINUTES[minute] + k * 2_000 + (k % 2)) * 1_000_000 + 123_456 * (k % 5)
            out.append(synthetic_trade("NVDA", sip_ns, i))
    return out


def as_ws(item: dict[str, Any]) -> Trade:
    """What the WebSocket carried for the same trade (``t`` = SIP time in ms)."""
    return Trade(
        symbol="NVDA", exchange=item["exchange"], trade_id=item["id"], tape=item["tape"],
        price=item["price"], size=item["size"], timestamp=item["sip_timestamp"] // 1_000_000,
        sequence=item["sequence_number"], conditions=tuple(item.get("conditions", ())),
    )  # fmt: skip


async def gap_entry_taken(redis_client: Any) -> bool:
    """The loader has read the gap entry and holds it pending (waiting on the market clock)."""
    try:
        return int((await redis_client.xpending(Stream.GAPS, "loader"))["pending"]) == 1
    except ResponseError:  # NOGROUP: the consumer has not created its group yet
        return False


def key(item: dict[str, Any]) -> tuple[int, int, str]:
    return (item["sip_timestamp"] // 1_000_000, item["exchange"], item["id"])


async def test_gap_window_stores_every_final_rest_trade_exactly_once(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    rest_server.page_size = 7  # many pages
    rest_server.rate_limited = 2  # and 429s on the way
    # Stored already from the WebSocket: every third trade (holes in between), including some of
    # the minute in progress.
    ws = [as_ws(t) for t in trades[::3]]
    await add_trades(redis_client, ws)
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="trades,gaps")
    )
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == len(ws))

    window = GapWindow(("NVDA",), MINUTES[FIRST], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)

    final = [t for t in trades if t["sip_timestamp"] < MINUTES[IN_PROGRESS] * 1_000_000]
    in_progress_ws = [t for t in trades[::3] if t not in final]
    rows = query(
        db_url,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, exchange, trade_id, tape, price, size, "
        "conditions, sequence FROM trades WHERE symbol = 'NVDA'",
    )
    stored_keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(stored_keys) == len(set(stored_keys))  # each once
    # Every final REST trade, and of the minute in progress only what the WebSocket brought.
    assert set(stored_keys) == {key(t) for t in final} | {key(t) for t in in_progress_ws}
    by_key = {(r[0], r[1], r[2]): r[3:] for r in rows}
    for item in final:
        tape, price, size, conditions, sequence = by_key[key(item)]
        assert (tape, price, size, sequence) == (
            item["tape"], item["price"], item["size"], item["sequence_number"],
        )  # fmt: skip
        assert (conditions or []) == item.get("conditions", [])
    new = len(final) - len([t for t in trades[::3] if t in final])
    assert loader.metric("its_loader_backfill_trades_total") == new
    assert loader.metric("its_loader_rows_total", table="trades") == len(ws) + new
    assert rest_server.unauthorized == 0  # the API key went back onto every next_url
    trade_requests = [r for r in rest_server.requests if r.startswith("/v3/trades")]
    assert sum("cursor=" in r for r in trade_requests) >= len(final) // 7

    # The same window again (a redelivery): nothing new.
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 2)
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(stored_keys)
    await loader.stop()


async def test_a_window_reaching_now_waits_for_its_minutes_to_be_final_then_gets_every_trade(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    """A reconnect's window ends near "now": the handler waits on the market clock until its last
    minute is final instead of leaving that minute's trades out."""
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    settings = make_settings(
        redis_server.url, db_url, rest_server.url, streams="trades,gaps", settle_wait_s=60
    )
    loader = start_loader(settings)
    window = GapWindow(("NVDA",), MINUTES[FIRST], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))

    await wait_until(lambda: gap_entry_taken(redis_client))
    assert rest_server.requests == []  # waiting for the market clock, not reading REST yet
    # The feed moves on: the window's last minute (14, NOW_MS is in it) is final at 16:00 + 60 s.
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(MINUTES[16] + 1_000))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(trades)
    assert loader.metric("its_loader_gap_windows_total", outcome="unsettled") == 0
    await loader.stop()


async def test_a_window_that_does_not_settle_in_time_is_filled_as_far_as_it_is_final(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))  # a still feed
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="gaps", settle_wait_s=0.3)
    )
    window = GapWindow(("NVDA",), MINUTES[FIRST], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    assert loader.metric("its_loader_gap_windows_total", outcome="unsettled") == 1
    final = [t for t in trades if t["sip_timestamp"] < MINUTES[IN_PROGRESS] * 1_000_000]
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(final)
    await loader.stop()


async def test_a_window_waiting_when_the_loader_stops_is_published_again_for_its_unfinal_part(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="gaps", settle_wait_s=60)
    )
    window = GapWindow(("NVDA",), MINUTES[FIRST], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))

    await wait_until(lambda: gap_entry_taken(redis_client))
    await loader.stop()
    entries = await redis_client.xrange(Stream.GAPS)
    # NOW_MS is 10 s into minute 14: final up to the end of minute 12 (13 ended 10 s ago). (The
    # consumer may have prefetched the new entry while stopping: handled the same way, it is
    # published once more; the last one is left for the next loader.)
    tail = GapWindow(("NVDA",), MINUTES[IN_PROGRESS], NOW_MS, "reconnect", "loader")
    assert len(entries) >= 2 and all(decode_gap(f) == tail for _, f in entries[1:])
    assert int((await redis_client.xpending(Stream.GAPS, "loader"))["pending"]) == 0
    groups = await redis_client.xinfo_groups(Stream.GAPS)

    def stream_id(raw: bytes) -> tuple[int, ...]:
        return tuple(int(part) for part in raw.split(b"-"))

    assert stream_id(groups[0]["last-delivered-id"]) < stream_id(entries[-1][0])  # unread
    final = [t for t in trades if t["sip_timestamp"] < MINUTES[IN_PROGRESS] * 1_000_000]
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(final)
    await redis_client.delete(Stream.GAPS)  # the window left for the next loader: not for others


async def test_a_window_ahead_of_the_market_clock_does_not_wait(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    """A window in the clock's future (wall-clock bounds during a replay) is not "now": waiting
    would not settle it, so it is filled as far as it is final at once."""
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="gaps", settle_wait_s=600)
    )
    day_ms = 86_400_000
    window = GapWindow(("NVDA",), NOW_MS + day_ms, NOW_MS + day_ms + 60_000, "trimmed_unread")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    assert loader.metric("its_loader_gap_windows_total", outcome="unsettled") == 1
    await loader.stop()


async def test_a_long_window_waits_while_an_accelerated_clock_catches_up(
    redis_server, redis_client, db_url, rest_server, start_loader
):
    """A long outage at an accelerated feed (a 30 s Redis pause at 60x is 30 market minutes):
    when the window arrives, the stored clock is still near its start, far more than the usual
    horizon behind its end. The clock is moving fast enough to settle it within the wait, so
    the handler waits and gets every trade (it used to give up at once: trades lost)."""
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    clock_ms = MINUTES[FIRST] + 10_000
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(clock_ms))
    loader = start_loader(
        make_settings(redis_server.url, db_url, rest_server.url, streams="gaps", settle_wait_s=120)
    )
    window = GapWindow(("NVDA",), MINUTES[FIRST], NOW_MS, reason="reconnect")
    await redis_client.xadd(Stream.GAPS, encode_gap(window))

    async def feed() -> None:  # the replay moves on: 15 market seconds per 0.1 s of wall time
        nonlocal clock_ms
        while clock_ms < MINUTES[16] + 1_000:
            await asyncio.sleep(0.1)
            clock_ms += 15_000
            await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(clock_ms))

    feeding = asyncio.create_task(feed())
    await wait_until(lambda: loader.metric("its_loader_gap_windows_total", outcome="filled") == 1)
    await feeding
    assert loader.metric("its_loader_gap_windows_total", outcome="unsettled") == 0
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(trades)
    await loader.stop()


async def test_cli_backfill_with_trades_stores_the_final_minutes_trades(
    redis_server, redis_client, db_url, rest_server, monkeypatch
):
    trades = rest_trades()
    rest_server.add_trades("NVDA", trades)
    rest_server.page_size = 20
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)
    argv = ["backfill", "--symbol", "NVDA", "--from", DAY.isoformat(), "--to", DAY.isoformat()]
    assert await asyncio.to_thread(cli_main, [*argv, "--no-progress", "--trades"]) == 0
    final = [t for t in trades if t["sip_timestamp"] < MINUTES[IN_PROGRESS] * 1_000_000]
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(final)
    assert await asyncio.to_thread(cli_main, [*argv, "--no-progress", "--trades"]) == 0
    assert scalar(db_url, "SELECT count(*) FROM trades") == len(final)  # each once
