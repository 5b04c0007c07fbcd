"""The loader over sharded streams (ITS_STREAM_SHARDS > 1): every shard read, every row stored."""

from __future__ import annotations

from its_common.streams import Stream, StreamLayout, encode_entry
from tests.conditions import wait_until

from .conftest import bar, make_settings, query, scalar, trade

SYMBOLS = ("NVDA", "MSFT", "AAPL", "AMZN", "TSLA", "GOOG", "INTC", "IBM")


async def test_two_loaders_read_every_shard_and_store_each_row_once(
    redis_server, redis_client, db_url, start_loader
):
    layout = StreamLayout(3)
    assert {layout.shard_of(s) for s in SYMBOLS} == {0, 1, 2}
    for n, symbol in enumerate(SYMBOLS):
        trades = layout.for_symbol(Stream.TRADES, symbol)
        bars = layout.for_symbol(Stream.BARS_1M, symbol)
        for i in range(20):
            batch = [trade(symbol, n * 10_000 + i * 10 + k) for k in range(10)]
            await redis_client.xadd(trades, encode_entry("T", batch))
        await redis_client.xadd(bars, encode_entry("AM", [bar(symbol, m) for m in range(5)]))
    replicas = [
        start_loader(
            make_settings(
                redis_server.url, db_url, streams="bars,trades", consumer=name, stream_shards=3
            )
        )
        for name in ("s1", "s2")
    ]
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM trades") == 8 * 200)
    await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM market_data") == 8 * 5)
    stored = query(db_url, "SELECT symbol, count(*) FROM trades GROUP BY symbol ORDER BY 1")
    assert stored == sorted((s, 200) for s in SYMBOLS)

    async def all_acked() -> bool:
        for stream in (Stream.TRADES, Stream.BARS_1M):
            for name in layout.names(stream):
                if (await redis_client.xpending(name, "loader"))["pending"]:
                    return False
        return True

    await wait_until(all_acked)
    loaded = sum(
        r.metric("its_loader_entries_total", stream="trades", outcome="loaded") for r in replicas
    )
    await wait_until(
        lambda: (
            sum(
                r.metric("its_loader_entries_total", stream="trades", outcome="loaded")
                for r in replicas
            )
            == 160
        )
    )
    assert loaded <= 160
    assert await redis_client.xlen(Stream.TRADES) == 0  # the unsharded stream is not used
    for replica in replicas:
        await replica.stop()
