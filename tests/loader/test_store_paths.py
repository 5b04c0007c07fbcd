"""Every write path of the loader's store against the real PostgreSQL: the binary COPY fast path
straight into the table, the conflict path it falls back to, and the correction upsert."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from msgspec.structs import replace

from its_common.db.sources import SOURCE_WS
from its_common.events import Trade
from its_common.streams import Stream
from its_loader.handlers import FAST_PATH_PAUSE, BarsHandler, TradesHandler
from its_loader.store import (
    bar_payload_ws,
    prepare_session,
    store_bars,
    store_trades,
    trade_payload,
)
from tests.conditions import wait_until

from .conftest import T0, add_trades, bar, make_settings, query, scalar, trade

RECEIVED_MS = T0 + 5_000


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(db_url) as connection:
        await prepare_session(connection)
        yield connection


def trades_payload(trades: list[Trade]) -> bytes:
    return trade_payload([(RECEIVED_MS, trades)])[0]


def stored_trades(db_url: str) -> list[tuple[Any, ...]]:
    return query(
        db_url,
        "SELECT symbol, (extract(epoch FROM ts) * 1000)::bigint, trade_id, exchange, tape, price,"
        " size, conditions, sequence, (extract(epoch FROM received_at) * 1000)::bigint"
        " FROM trades ORDER BY sequence",
    )


def expected_row(t: Trade) -> tuple[Any, ...]:
    conditions = list(t.conditions) if t.conditions else None
    return (
        t.symbol, t.timestamp, t.trade_id, t.exchange, t.tape, t.price, t.size, conditions,
        t.sequence, RECEIVED_MS,
    )  # fmt: skip


async def test_new_trades_go_by_copy_straight_into_the_table_with_every_column(conn, db_url):
    trades = [trade("NVDA", i) for i in range(50)]
    trades.append(replace(trade("NVDA", 50), conditions=(12, 37, 41, 53), tape=1, size=0))
    assert await store_trades(conn, trades_payload(trades)) == (51, True)
    assert stored_trades(db_url) == [expected_row(t) for t in trades]


async def test_a_trade_twice_in_one_batch_is_stored_once_by_the_conflict_path(conn, db_url):
    trades = [trade("NVDA", i) for i in range(10)]
    batch = [*trades, trades[3], trades[7], trades[3]]
    assert await store_trades(conn, trades_payload(batch)) == (10, False)
    assert stored_trades(db_url) == [expected_row(t) for t in trades]


async def test_a_batch_overlapping_stored_trades_adds_only_the_new_ones(conn, db_url):
    first = [trade("NVDA", i) for i in range(10)]
    assert await store_trades(conn, trades_payload(first)) == (10, True)
    # The same keys again with other values (a replay seen differently) and five new trades:
    # the stored versions stay, the new trades are added.
    replay = [replace(t, price=1.0, size=1) for t in first[5:]]
    new = [trade("NVDA", i) for i in range(10, 15)]
    assert await store_trades(conn, trades_payload([*replay, *new])) == (5, False)
    assert stored_trades(db_url) == [expected_row(t) for t in [*first, *new]]
    # Stored again as a whole: nothing changes.
    assert await store_trades(conn, trades_payload([*first, *new])) == (0, False)
    assert scalar(db_url, "SELECT count(*) FROM trades") == 15


async def test_a_batch_known_to_overlap_goes_the_conflict_path_directly(conn, db_url):
    trades = [trade("MSFT", i) for i in range(20)]
    assert await store_trades(conn, trades_payload(trades), insert_first=False) == (20, False)
    assert await store_trades(conn, trades_payload(trades), insert_first=False) == (0, False)
    assert stored_trades(db_url) == [expected_row(t) for t in trades]


async def test_a_failed_fast_copy_leaves_nothing_behind_when_the_batch_then_fails(conn, db_url):
    """The savepoint of the fast path is rolled back: a batch failing both paths (a CHECK
    violation) stores none of its rows, then the store goes on."""
    stored = trade("NVDA", 0)
    assert await store_trades(conn, trades_payload([stored])) == (1, True)
    bad = replace(trade("NVDA", 2), price=-1.0)  # msgspec checks the wire; the table does too
    with pytest.raises(psycopg.errors.CheckViolation):
        await store_trades(conn, trades_payload([trade("NVDA", 1), stored, bad]))
    assert await store_trades(conn, trades_payload([trade("NVDA", 3)])) == (1, True)
    assert [r[2] for r in stored_trades(db_url)] == ["0", "3"]


async def test_a_trade_out_of_the_columns_range_fails_building_the_payload() -> None:
    with pytest.raises(struct.error, match="format requires"):
        trades_payload([replace(trade("NVDA", 1), size=2**31)])


async def test_the_trades_handler_pauses_the_fast_path_after_a_conflict_then_resumes(conn, db_url):
    handler = TradesHandler()
    trades = [trade("NVDA", i) for i in range(100)]

    def prepared(items: list[Trade]) -> tuple[bytes, int]:
        return handler.prepare([(RECEIVED_MS, items)])

    assert await handler.write(conn, prepared(trades[:10])) == 10
    assert await handler.write(conn, prepared(trades[5:20])) == 10  # conflict: 10 new
    for n in range(FAST_PATH_PAUSE):  # the pause: new batches stored by the conflict path
        assert await handler.write(conn, prepared([trades[20 + n]])) == 1
    assert await handler.write(conn, prepared(trades[40:50])) == 10
    assert scalar(db_url, "SELECT count(*) FROM trades") == 50
    assert stored_trades(db_url) == [expected_row(t) for t in trades[:50]]


async def test_duplicate_trades_across_and_within_entries_through_the_loader(
    redis_server, redis_client, db_url, start_loader
):
    trades = [trade("NVDA", i) for i in range(30)]
    await add_trades(redis_client, trades[:10])
    await add_trades(redis_client, [*trades[5:20], trades[12]])  # across and within entries
    await add_trades(redis_client, trades[20:])
    await add_trades(redis_client, trades)  # a replay of everything
    loader = start_loader(make_settings(redis_server.url, db_url, streams="trades"))
    await wait_until(
        lambda: loader.metric("its_loader_entries_total", stream="trades", outcome="loaded") == 4
    )
    assert scalar(db_url, "SELECT count(*) FROM trades") == 30
    assert loader.metric("its_loader_rows_total", table="trades") == 30
    pending = await redis_client.xpending(Stream.TRADES, "loader")
    assert pending["pending"] == 0
    await loader.stop()


async def test_new_bars_by_copy_then_a_corrected_batch_replaces_them(conn, db_url):
    bars = [bar("NVDA", m) for m in range(5)] + [bar("MSFT", m) for m in range(5)]
    new = bar_payload_ws([(T0 + 61_000, bars)])
    assert new.unique
    assert await store_bars(conn, new.data, insert_first=True) == (10, True)
    corrected = [replace(b, close=10.5, volume=250.0) for b in bars]
    later = bar_payload_ws([(T0 + 120_000, corrected)])
    # A unique batch of stored keys: the fast COPY conflicts and the upsert replaces every row.
    assert await store_bars(conn, later.data, insert_first=True, unique=True) == (10, False)
    rows = query(db_url, "SELECT DISTINCT close, volume, revision, source FROM market_data")
    assert rows == [(10.5, 250.0, 2, SOURCE_WS)]
    # The identical correction again changes nothing; an older version never wins.
    assert await store_bars(conn, later.data, insert_first=True, unique=True) == (0, False)
    older = bar_payload_ws([(T0 + 90_000, [replace(b, close=9.9) for b in bars])])
    assert await store_bars(conn, older.data, unique=True) == (0, False)
    assert await store_bars(conn, older.data) == (0, False)
    assert scalar(db_url, "SELECT count(*) FROM market_data WHERE revision = 2") == 10


async def test_the_bars_handler_stores_new_and_corrected_batches(conn, db_url):
    handler = BarsHandler()
    first = [(T0 + 61_000, [bar("NVDA", m) for m in range(3)])]
    assert await handler.write(conn, handler.prepare(first)) == 3
    second = [
        (T0 + 121_000, [bar("NVDA", 2, close=10.4), bar("NVDA", 3)]),
        (T0 + 122_000, [bar("NVDA", 2, close=10.6)]),  # within the batch, the newest wins
    ]
    prepared = handler.prepare(second)
    assert not prepared.unique
    assert await handler.write(conn, prepared) == 2
    assert query(db_url, "SELECT close, revision FROM market_data ORDER BY ts") == [
        (10.0, 1),
        (10.0, 1),
        (10.6, 2),
        (10.0, 1),
    ]
