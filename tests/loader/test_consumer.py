"""The loader against real Redis and PostgreSQL: dedupe, REST authority, poison, replicas."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from its_common.db.sources import SOURCE_REST
from its_common.streams import Stream, ensure_group
from its_loader.store import BarRow, bar_payload_rows, prepare_session, store_bars
from tests.conditions import wait_until

from .conftest import (
    T0,
    add_bars,
    add_trades,
    bar,
    make_settings,
    query,
    scalar,
    trade,
)


async def test_bars_and_trades_are_stored_and_acked(
    redis_server, redis_client, db_url, start_loader
):
    await add_bars(redis_client, [bar("NVDA", m) for m in range(10)])
    await add_bars(redis_client, [bar("MSFT", m) for m in range(5)])
    await add_trades(redis_client, [trade("NVDA", i) for i in range(300)])
    loader = start_loader(make_settings(redis_server.url, db_url, streams="bars,trades"))
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == 15)
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == 300)
    row = query(
        db_url,
        "SELECT open, high, low, close, volume, vwap, source, revision FROM market_data "
        "WHERE symbol = 'NVDA' AND ts = to_timestamp(%s / 1000.0)",
        T0 + 3 * 60_000,
    )
    assert row == [(10.0, 11.0, 9.0, 10.0, 100.0, 10.2, "polygon_ws", 1)]
    conds = query(db_url, "SELECT conditions FROM trades WHERE trade_id IN ('0', '1') ORDER BY 1")
    assert sorted(conds, key=str) == sorted([(None,), ([12, 37],)], key=str)

    async def all_acked():
        bars = await redis_client.xpending(Stream.BARS_1M, "loader")
        trades = await redis_client.xpending(Stream.TRADES, "loader")
        return bars["pending"] == 0 and trades["pending"] == 0

    await wait_until(all_acked)
    await wait_until(lambda: loader.metric("its_loader_rows_total", table="trades") == 300)
    await loader.stop()


async def test_duplicate_and_resent_bars_keep_one_row_with_the_newest_values(
    redis_server, redis_client, db_url, start_loader
):
    # The same minute three times: a duplicate and two corrections, the last one received last.
    await add_bars(redis_client, [bar("NVDA", 0, close=10.0)], received_ms=T0 + 61_000)
    await add_bars(redis_client, [bar("NVDA", 0, close=10.0)], received_ms=T0 + 61_000)
    await add_bars(
        redis_client,
        [bar("NVDA", 0, close=10.5, volume=150.0), bar("NVDA", 0, close=10.7, volume=170.0)],
        received_ms=T0 + 300_000,
    )
    # An older version arriving after the newer one (a crashed consumer's entry) loses.
    await add_bars(redis_client, [bar("NVDA", 0, close=9.5)], received_ms=T0 + 62_000)
    # Duplicate trades, within an entry and across entries.
    await add_trades(redis_client, [trade("NVDA", 1), trade("NVDA", 1), trade("NVDA", 2)])
    await add_trades(redis_client, [trade("NVDA", 2), trade("NVDA", 3)])
    # One entry per batch: every version meets the stored row (within a batch the newest wins).
    settings = make_settings(redis_server.url, db_url, streams="bars,trades", batch_entries=1)
    loader = start_loader(settings)
    await wait_until(
        lambda: loader.metric("its_loader_entries_total", stream="1m", outcome="loaded") == 4
    )
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == 3)
    rows = query(db_url, "SELECT close, volume, revision, source FROM market_data")
    assert rows == [(10.7, 170.0, 2, "polygon_ws")]
    await loader.stop()


async def test_rest_rows_win_over_older_websocket_bars_not_over_corrections(
    redis_server, redis_client, db_url, start_loader
):
    loader = start_loader(make_settings(redis_server.url, db_url, streams="bars"))
    await add_bars(redis_client, [bar("NVDA", 0, close=10.0)], received_ms=T0 + 61_000)
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == 1)
    rest = BarRow("NVDA", T0, 10.0, 12.0, 9.0, 11.0, 500.0, 10.6, 42, SOURCE_REST, T0 + 90_000)
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await prepare_session(conn)
        assert await store_bars(conn, bar_payload_rows([rest])) == (1, False)  # REST replaces WS
        assert await store_bars(conn, bar_payload_rows([rest])) == (0, False)  # identical
    # A WebSocket bar received before the REST read (a late delivery) never replaces it.
    await add_bars(redis_client, [bar("NVDA", 0, close=10.9)], received_ms=T0 + 80_000)
    await wait_until(
        lambda: loader.metric("its_loader_entries_total", stream="1m", outcome="loaded") == 2
    )
    rows = query(db_url, "SELECT close, volume, trade_count, source, revision FROM market_data")
    assert rows == [(11.0, 500.0, 42, "polygon_rest", 2)]
    # One received after it is a correction (late reports re-sent as a corrected bar, up to
    # 15 minutes later): newer than what REST said then, it replaces the REST row.
    await add_bars(redis_client, [bar("NVDA", 0, close=10.7)], received_ms=T0 + 999_000)
    await wait_until(
        lambda: loader.metric("its_loader_entries_total", stream="1m", outcome="loaded") == 3
    )
    rows = query(db_url, "SELECT close, source, revision FROM market_data")
    assert rows == [(10.7, "polygon_ws", 3)]
    await loader.stop()


async def test_poison_entries_go_to_dead_letter_and_the_rest_flows(
    redis_server, redis_client, db_url, start_loader
):
    await add_bars(redis_client, [bar("NVDA", 0)])
    await redis_client.xadd(Stream.BARS_1M, {b"v": b"9", b"type": b"AM", b"data": b"[]"})
    await redis_client.xadd(
        Stream.BARS_1M,
        {b"v": b"1", b"type": b"AM", b"n": b"1", b"data": b"[{not json", b"rt": b"1"},
    )
    # Decodes, but violates CHECK (high >= low): fails in the database on every attempt.
    bad_id = await add_bars(redis_client, [bar("NVDA", 1, high=5.0, low=9.0), bar("NVDA", 2)])
    await add_bars(redis_client, [bar("NVDA", m) for m in range(3, 8)])
    loader = start_loader(make_settings(redis_server.url, db_url, streams="bars", max_deliveries=3))
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == 6)

    async def dead_letters():
        entries = await redis_client.xrange(Stream.DEAD_LETTER)
        return entries if len(entries) == 3 else []

    entries = await wait_until(dead_letters)
    reasons = sorted(fields[b"reason"].decode() for _, fields in entries)
    assert reasons == ["EntryFormatError", "EntryFormatError", "store_failed"]
    failed = next(f for _, f in entries if f[b"reason"] == b"store_failed")
    assert failed[b"entry_id"].decode() == bad_id
    assert '"h":5.0' in json.loads(failed[b"fields"])["data"]

    async def nothing_pending():
        return (await redis_client.xpending(Stream.BARS_1M, "loader"))["pending"] == 0

    await wait_until(nothing_pending)
    # Minute 2 shared the bad entry: an entry is the unit of dead-lettering, so it went along.
    minutes = [
        r[0]
        for r in query(
            db_url, "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM market_data ORDER BY ts"
        )
    ]
    assert minutes == [T0 + m * 60_000 for m in (0, 3, 4, 5, 6, 7)]
    assert (
        loader.metric(
            "its_consumer_entries_total",
            stream=Stream.BARS_1M.value,
            group="loader",
            outcome="dead_lettered",
        )
        == 3
    )
    await loader.stop()


async def test_replicas_share_the_work(redis_server, redis_client, db_url, start_loader):
    await ensure_group(redis_client, Stream.TRADES, "loader")
    first = start_loader(
        make_settings(redis_server.url, db_url, streams="trades", consumer="r1", batch_entries=5)
    )
    second = start_loader(
        make_settings(redis_server.url, db_url, streams="trades", consumer="r2", batch_entries=5)
    )

    async def both_waiting():
        return len(await redis_client.xinfo_consumers(Stream.TRADES, "loader")) == 2

    await wait_until(both_waiting)
    for i in range(400):
        await add_trades(redis_client, [trade("NVDA", i * 10 + k) for k in range(10)])
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == 4000)

    def loaded(loader: Any) -> Any:
        return loader.metric("its_loader_entries_total", stream="trades", outcome="loaded")

    await wait_until(lambda: loaded(first) + loaded(second) == 400)  # counted after the ack
    one = first.metric("its_loader_entries_total", stream="trades", outcome="loaded")
    two = second.metric("its_loader_entries_total", stream="trades", outcome="loaded")
    assert one > 0 and two > 0
    assert one + two == 400
    await first.stop()
    await second.stop()


async def test_two_replicas_in_one_group_store_every_entry_exactly_once(
    redis_server, redis_client, db_url, start_loader
):
    """Loaders scale as consumer-group replicas: bars (with re-sent versions) and trades (with
    duplicates) split between two loaders; each entry is loaded by exactly one of them, each
    minute keeps its newest version (received_at decides, not which replica wrote last) and each
    trade is stored once."""
    for stream in (Stream.TRADES, Stream.BARS_1M):
        await ensure_group(redis_client, stream, "loader")
    replicas = [
        start_loader(
            make_settings(
                redis_server.url, db_url, streams="bars,trades", consumer=name, batch_entries=3
            )
        )
        for name in ("r1", "r2")
    ]

    async def both_waiting():
        groups = [await redis_client.xinfo_consumers(s, "loader") for s in (Stream.TRADES,)]
        return all(len(g) == 2 for g in groups)

    await wait_until(both_waiting)
    entries = 0
    for minute in range(60):
        for version in range(3):  # the newest version is received last
            close = 10.0 + minute + version / 10
            received = T0 + (minute + 1) * 60_000 + version * 1_000
            await add_bars(redis_client, [bar("NVDA", minute, close=close)], received)
            entries += 1
    for i in range(300):  # every trade twice, in different entries
        await add_trades(redis_client, [trade("MSFT", i * 5 + k) for k in range(5)])
        await add_trades(redis_client, [trade("MSFT", i * 5 + k) for k in range(5)])

    def loaded(stream: str) -> float:
        return float(
            sum(
                r.metric("its_loader_entries_total", stream=stream, outcome="loaded")
                for r in replicas
            )
        )

    await wait_until(lambda: loaded("1m") == entries and loaded("trades") == 600, 60)
    assert scalar(db_url, "SELECT count(*) FROM trades") == 1_500
    rows = query(db_url, "SELECT close FROM market_data WHERE symbol = 'NVDA' ORDER BY ts")
    assert [round(c, 2) for (c,) in rows] == [round(10.2 + m, 2) for m in range(60)]
    per_replica = [
        r.metric("its_loader_entries_total", stream="trades", outcome="loaded") for r in replicas
    ]
    assert all(count > 0 for count in per_replica)  # both did part of the work

    # "loaded" is counted when a batch is stored, its XACK follows: wait for the acks
    async def nothing_pending() -> bool:
        for stream in (Stream.TRADES, Stream.BARS_1M):
            if (await redis_client.xpending(stream, "loader"))["pending"] != 0:
                return False
        return True

    await wait_until(nothing_pending, 30)
    assert await redis_client.xlen(Stream.DEAD_LETTER) == 0
    for replica in replicas:
        await replica.stop()


async def test_pending_entries_of_a_dead_consumer_are_claimed(
    redis_server, redis_client, db_url, start_loader
):
    await ensure_group(redis_client, Stream.TRADES, "loader")
    for i in range(10):
        await add_trades(redis_client, [trade("NVDA", i * 10 + k) for k in range(10)])
    # A consumer that read everything and died before storing or acking anything.
    taken = await redis_client.xreadgroup("loader", "dead", {Stream.TRADES: ">"}, count=100)
    assert len(taken[0][1]) == 10
    loader = start_loader(
        make_settings(redis_server.url, db_url, streams="trades", consumer="alive")
    )
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == 100)
    claimed = loader.metric(
        "its_consumer_entries_total", stream=Stream.TRADES.value, group="loader", outcome="claimed"
    )
    assert claimed == 10

    async def nothing_pending():  # acked right after the commit that made the rows visible
        return (await redis_client.xpending(Stream.TRADES, "loader"))["pending"] == 0

    await wait_until(nothing_pending)
    await loader.stop()


async def test_lag_metrics(redis_server, redis_client, db_url, start_loader):
    await ensure_group(redis_client, Stream.TRADES, "loader")
    await add_trades(redis_client, [trade("NVDA", 1)])
    await redis_client.xreadgroup("loader", "dead", {Stream.TRADES: ">"}, count=10)
    await add_trades(redis_client, [trade("NVDA", 2)])
    settings = make_settings(
        redis_server.url, db_url, streams="bars", metrics_interval_s=0.1, claim_idle_ms=600_000
    )
    loader = start_loader(settings)
    # The loader consumes bars only: it reports but does not touch the trades stream.
    from its_loader.lag import sample_lag

    lag = await sample_lag(redis_client, Stream.TRADES, "loader")
    assert lag.pending == 1
    assert lag.oldest_pending_age_s >= 0
    assert lag.backlog_age_s >= 0
    await wait_until(lambda: loader.metric("its_loader_redis_used_memory_bytes") > 0)
    await loader.stop()
