"""Loader throughput: minute bars from a filled Redis stream into ``market_data``.

Starts its own Redis and PostgreSQL (``fast_unsafe=False``: fsync and synchronous commit on, as
in production), fills ``its:stream:bars:1m`` with ``ROWS`` bars in entries of ``BARS_PER_ENTRY``
(distinct (symbol, minute) keys, so every row is an insert), then runs one loader consumer
(XREADGROUP, decode, binary COPY into staging, upsert, commit, XACK) until the stream is drained.

The ceiling is the same PostgreSQL's raw binary COPY of the same rows straight into an empty copy
of ``market_data`` (same primary key), pre-encoded (no Python work inside the timing), committed
in the same batch size. Printed: loader rows/s, ceiling rows/s and the ratio.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.events import MinuteAgg
from its_common.localstack.servers import PostgresServer, RedisServer
from its_common.settings import BaseServiceSettings
from its_common.streams import Stream, connect, encode_entry, ensure_group
from its_loader.consumer import ConsumerSettings, loader_consumer
from its_loader.database import Database
from its_loader.handlers import BarsHandler
from its_loader.metrics import LoaderMetrics

ROWS = 300_000
BARS_PER_ENTRY = 100
BATCH_ENTRIES = 100  # 10,000 rows per transaction
SYMBOLS = 500
T0 = 1_795_000_000_000
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


def make_bars() -> list[MinuteAgg]:
    bars = []
    for i in range(ROWS):
        start = T0 + (i // SYMBOLS) * 60_000
        price = 100.0 + (i % 97) * 0.01
        bars.append(
            MinuteAgg(
                symbol=f"S{i % SYMBOLS:03d}", volume=1000.0 + i % 13, open=price,
                close=price + 0.02, high=price + 0.05, low=price - 0.05, start=start,
                end=start + 60_000, vwap=price + 0.01,
            )
        )  # fmt: skip
    return bars


def ceiling_payloads(bars: list[MinuteAgg], batch: int) -> list[bytes]:
    """Binary COPY data for market_data's own columns, pre-encoded, one per batch."""
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    source = b"polygon_ws"
    now_us = int(time.time() * 1e6) - PG_EPOCH_US
    payloads = []
    for lo in range(0, len(bars), batch):
        parts = [header]
        for b in bars[lo : lo + batch]:
            sym = b.symbol.encode()
            ts_us = b.start * 1000 - PG_EPOCH_US
            parts.append(
                struct.pack(
                    f">h i{len(sym)}s iq idididididid i i{len(source)}s ii iq iq",
                    13, len(sym), sym, 8, ts_us, 8, b.open, 8, b.high, 8, b.low, 8, b.close,
                    8, b.volume, 8, b.vwap, -1, len(source), source, 4, 1, 8, now_us, 8, now_us,
                )
            )  # fmt: skip
        parts.append(struct.pack(">h", -1))
        payloads.append(b"".join(parts))
    return payloads


def measure_ceiling(url: str, payloads: list[bytes]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ceiling")
        conn.execute("CREATE TABLE ceiling (LIKE market_data INCLUDING ALL)")
        started = time.perf_counter()
        for payload in payloads:
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY ceiling (symbol, ts, open, high, low, close, volume, vwap, trade_count,"
                    " source, revision, received_at, updated_at) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.write(payload)
        elapsed = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM ceiling").fetchone()
        assert count is not None and count[0] == ROWS
        conn.execute("DROP TABLE ceiling")
    return ROWS / elapsed


async def fill_stream(redis_url: str, bars: list[MinuteAgg]) -> None:
    client = connect(redis_url)
    try:
        await ensure_group(client, Stream.BARS_1M, "loader")
        pipe = client.pipeline(transaction=False)
        for lo in range(0, len(bars), BARS_PER_ENTRY):
            fields: dict[Any, Any] = encode_entry("AM", bars[lo : lo + BARS_PER_ENTRY])
            pipe.xadd(Stream.BARS_1M, fields)
        await pipe.execute()
    finally:
        await client.aclose()


async def measure_loader(redis_url: str, db_url: str) -> tuple[float, int]:
    client = connect(redis_url)
    settings = BaseServiceSettings(database_url=db_url, redis_url=redis_url)
    registry = CollectorRegistry()
    metrics = LoaderMetrics(registry)
    stopping = asyncio.Event()
    counters: dict[str, float] = {}
    database = Database(settings)
    consumer, _ = loader_consumer(
        BarsHandler(),
        client,
        database,
        ConsumerSettings(
            group="loader", consumer="bench", batch_entries=BATCH_ENTRIES, block_ms=50
        ),
        metrics,
        stopping,
        registry,
        counters,
    )
    await database.connection()  # connect outside the timing
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        while counters.get("rows_1m", 0) < ROWS:
            if task.done():
                task.result()
                raise RuntimeError("the consumer stopped early")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        stopping.set()
        await task
        await database.close()
        await client.aclose()
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM market_data").fetchone()
    stored = int(row[0]) if row else 0
    return ROWS / elapsed, stored


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="its-bench-loader-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        redis = RedisServer(base / "redis", maxmemory="1gb").start()
        postgres = PostgresServer(base / "pg", fast_unsafe=False).start()
        try:
            with psycopg.connect(postgres.url) as conn:
                apply_migrations(conn)
            bars = make_bars()
            payloads = ceiling_payloads(bars, BARS_PER_ENTRY * BATCH_ENTRIES)
            ceiling = measure_ceiling(postgres.url, payloads)
            asyncio.run(fill_stream(redis.url, bars))
            loader_rate, stored = asyncio.run(measure_loader(redis.url, postgres.url))
        finally:
            redis.stop()
            postgres.discard()
    ratio = loader_rate / ceiling
    result = {
        "rows": ROWS,
        "rows_per_entry": BARS_PER_ENTRY,
        "rows_per_transaction": BARS_PER_ENTRY * BATCH_ENTRIES,
        "durable_postgres": True,
        "loader_rows_per_s": round(loader_rate),
        "copy_ceiling_rows_per_s": round(ceiling),
        "ratio": round(ratio, 3),
        "stored": stored,
        "target_rows_per_s": 150_000,
        "target_ratio": 0.5,
        "meets_targets": loader_rate >= 150_000 and ratio >= 0.5 and stored == ROWS,
    }
    print(
        f"   loader {loader_rate:,.0f} bar rows/s; raw binary COPY ceiling {ceiling:,.0f} rows/s; "
        f"ratio {ratio:.2f} (targets: >= 150,000 rows/s and >= 0.50)",
        flush=True,
    )
    return result


if __name__ == "__main__":
    print(run())
