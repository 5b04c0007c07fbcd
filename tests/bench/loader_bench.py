"""Loader throughput on its four paths, each against the same run's raw COPY ceiling.

Starts its own Redis and PostgreSQL (``fast_unsafe=False``: fsync and synchronous commit on, as
in production) and measures, one after the other, one loader consumer (XREADGROUP, decode,
binary COPY payload, store, commit, XACK) draining a filled stream:

* ``new_bars``: ``ROWS`` bars of distinct (symbol, minute) keys into an empty ``market_data``
  (the fast path: binary COPY straight into the table);
* ``corrected_bars``: the same keys again, every bar changed and received later (the
  correction path: staging table + one ``INSERT ... ON CONFLICT DO UPDATE``); every row is
  replaced (revision 2);
* ``new_trades``: ``ROWS`` trades of distinct keys into an empty ``trades`` (fast path);
* ``duplicate_trades``: the same trades again (every row conflicts: the conflict path), nothing
  new is stored.

Each scenario's ceiling is measured right before it, in the same run: a raw binary COPY of the
same rows (pre-encoded, no Python work in the timing) into an empty table created ``LIKE`` the
real one (same columns, same primary key), committed in the loader's transaction size. Printed:
rows/s, ceiling rows/s and their ratio; the correction path also as a ratio of the new-bars path
(target >= 0.5). The machine is shared: the ratios are the figures to compare across runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis as sync_redis
from prometheus_client import CollectorRegistry

from its_common.db.migrate import apply_migrations
from its_common.events import MinuteAgg, Trade
from its_common.localstack.servers import PostgresServer, RedisServer
from its_common.settings import BaseServiceSettings
from its_common.streams import Stream, connect, encode_entry, ensure_group
from its_loader.consumer import ConsumerSettings, Handler, loader_consumer
from its_loader.database import Database
from its_loader.handlers import BarsHandler, TradesHandler
from its_loader.metrics import LoaderMetrics
from tests.bench.report import Figure

ROWS = int(os.environ.get("ITS_BENCH_LOADER_ROWS", "300000"))
EVENTS_PER_ENTRY = 100
BATCH_ENTRIES = 100  # 10,000 rows per transaction
SYMBOLS = 500
T0 = 1_795_000_000_000
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
TARGET_TRADES_ROWS_PER_S = 150_000
TARGET_CORRECTION_OF_NEW = 0.5
REPLICAS = int(os.environ.get("ITS_BENCH_LOADER_REPLICAS", "2"))
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
BAR_CEILING_COLUMNS = (
    "symbol, ts, open, high, low, close, volume, vwap, trade_count, source, revision,"
    " received_at, updated_at"
)
TRADE_CEILING_COLUMNS = (
    "symbol, ts, trade_id, exchange, tape, price, size, conditions, sequence, received_at"
)


def make_bars(correction: float = 0.0) -> list[MinuteAgg]:
    bars = []
    for i in range(ROWS):
        start = T0 + (i // SYMBOLS) * 60_000
        price = 100.0 + (i % 97) * 0.01 + correction
        bars.append(
            MinuteAgg(
                symbol=f"S{i % SYMBOLS:03d}", volume=1000.0 + i % 13 + correction * 100,
                open=price, close=price + 0.02, high=price + 0.05, low=price - 0.05, start=start,
                end=start + 60_000, vwap=price + 0.01,
            )
        )  # fmt: skip
    return bars


def make_trades() -> list[Trade]:
    """Trades of SYMBOLS symbols interleaved, a few ms apart, half with conditions (as Polygon)."""
    conditions: tuple[tuple[int, ...], ...] = ((), (12,), (12, 37), (), (14, 41), ())
    return [
        Trade(
            symbol=f"S{i % SYMBOLS:03d}", exchange=4 + i % 12, trade_id=str(52983525029461 + i),
            tape=1 + i % 3, price=100.0 + (i % 97) * 0.01, size=1 + i % 300,
            timestamp=T0 + i // 4, sequence=1000 + i, conditions=conditions[i % len(conditions)],
        )
        for i in range(ROWS)
    ]  # fmt: skip


def bar_ceiling_rows(bars: Sequence[MinuteAgg]) -> list[bytes]:
    source = b"polygon_ws"
    now_us = int(time.time() * 1e6) - PG_EPOCH_US
    rows = []
    for b in bars:
        sym = b.symbol.encode()
        ts_us = b.start * 1000 - PG_EPOCH_US
        rows.append(
            struct.pack(
                f">h i{len(sym)}s iq idididididid i i{len(source)}s ii iq iq",
                13, len(sym), sym, 8, ts_us, 8, b.open, 8, b.high, 8, b.low, 8, b.close,
                8, float(b.volume), 8, b.vwap, -1, len(source), source, 4, 1, 8, now_us,
                8, now_us,
            )
        )  # fmt: skip
    return rows


def trade_ceiling_rows(trades: Sequence[Trade]) -> list[bytes]:
    now_us = int(time.time() * 1e6) - PG_EPOCH_US
    rows = []
    for t in trades:
        sym = t.symbol.encode()
        tid = t.trade_id.encode()
        n = len(t.conditions)
        if n:
            cond = struct.pack(
                f">iiiii{'ih' * n}", 1, 0, 21, n, 1, *[v for c in t.conditions for v in (2, c)]
            )
            cond_field = struct.pack(">i", len(cond)) + cond
        else:
            cond_field = struct.pack(">i", -1)
        rows.append(
            struct.pack(
                f">h i{len(sym)}s iq i{len(tid)}s ih ih id ii",
                10, len(sym), sym, 8, t.timestamp * 1000 - PG_EPOCH_US, len(tid), tid,
                2, t.exchange, 2, t.tape, 8, t.price, 4, t.size,
            )
            + cond_field
            + struct.pack(">iq iq", 8, t.sequence, 8, now_us)
        )  # fmt: skip
    return rows


def payloads(rows: list[bytes], batch: int) -> list[bytes]:
    return [HEADER + b"".join(rows[lo : lo + batch]) + TRAILER for lo in range(0, len(rows), batch)]


def measure_ceiling(url: str, table: str, columns: str, data: list[bytes]) -> float:
    """Raw binary COPY of ``data`` into an empty ``LIKE table INCLUDING ALL`` with the table's
    storage parameters (fillfactor): rows/s."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ceiling")
        conn.execute(f"CREATE TABLE ceiling (LIKE {table} INCLUDING ALL)")
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)
        ).fetchone()
        if options and options[0]:
            conn.execute(f"ALTER TABLE ceiling SET ({', '.join(options[0])})")
        started = time.perf_counter()
        for payload in data:
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY ceiling ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(payload)
        elapsed = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM ceiling").fetchone()
        assert count is not None and count[0] == ROWS, count
        conn.execute("DROP TABLE ceiling")
    return ROWS / elapsed


def measure_parallel_ceiling(url: str, data: list[bytes], writers: int) -> float:
    """``writers`` connections COPYing their share of ``data`` into one empty ``LIKE trades``
    table at once (what N loader replicas do, without the Python work): rows/s."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ceiling")
        conn.execute("CREATE TABLE ceiling (LIKE trades INCLUDING ALL)")
    connections = [psycopg.connect(url, autocommit=True) for _ in range(writers)]

    def write(index: int) -> None:
        conn = connections[index]
        for payload in data[index::writers]:
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY ceiling ({TRADE_CEILING_COLUMNS}) FROM STDIN (FORMAT BINARY)") as c,
            ):
                c.write(payload)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    with psycopg.connect(url, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM ceiling").fetchone()
        assert count is not None and count[0] == ROWS, count
        conn.execute("DROP TABLE ceiling")
    return ROWS / elapsed


def _replica(redis_url: str, db_url: str, name: str, start: Any, stop: Any) -> None:
    """One loader replica in its own process: connect, wait at ``start``, consume until
    ``stop``."""
    asyncio.run(_replica_main(redis_url, db_url, name, start, stop))


async def _replica_main(redis_url: str, db_url: str, name: str, start: Any, stop: Any) -> None:
    client = connect(redis_url)
    registry = CollectorRegistry()
    stopping = asyncio.Event()
    database = Database(BaseServiceSettings(database_url=db_url, redis_url=redis_url))
    consumer, _ = loader_consumer(
        TradesHandler(),
        client,
        database,
        ConsumerSettings(group="loader", consumer=name, batch_entries=BATCH_ENTRIES, block_ms=50),
        LoaderMetrics(registry),
        stopping,
        registry,
    )
    await database.connection()
    await asyncio.to_thread(start.wait)
    task = asyncio.create_task(consumer.run())
    try:
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.01)
    finally:
        stopping.set()
        await task
        await database.close()
        await client.aclose()


def measure_replicas(redis_url: str, db_url: str, replicas: int) -> float:
    """Rows/s of ``replicas`` loader processes of one consumer group draining the trades
    stream's new entries: from their common start until the group has delivered and
    acknowledged (stored) every entry."""
    context = multiprocessing.get_context("spawn")
    start, stop = context.Barrier(replicas + 1), context.Event()
    client = sync_redis.Redis.from_url(redis_url)
    newest: Any = client.xrevrange(Stream.TRADES, count=1)
    last = newest[0][0]
    processes = [
        context.Process(target=_replica, args=(redis_url, db_url, f"r{i}", start, stop))
        for i in range(replicas)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(timeout=120)
        started = time.perf_counter()
        while True:
            group = next(g for g in client.xinfo_groups(Stream.TRADES) if g["name"] == b"loader")
            if group["last-delivered-id"] == last and group["pending"] == 0:
                break
            if not all(p.is_alive() for p in processes):
                raise RuntimeError("a loader replica ended early")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=60)
        client.close()
    return ROWS / elapsed


async def fill_stream(redis_url: str, stream: Stream, kind: str, events: Sequence[Any]) -> int:
    client = connect(redis_url)
    try:
        await ensure_group(client, stream, "loader")
        pipe = client.pipeline(transaction=False)
        entries = 0
        for lo in range(0, len(events), EVENTS_PER_ENTRY):
            fields: dict[Any, Any] = encode_entry(kind, events[lo : lo + EVENTS_PER_ENTRY])
            pipe.xadd(stream, fields)
            entries += 1
        await pipe.execute()
        return entries
    finally:
        await client.aclose()


async def measure_loader(redis_url: str, db_url: str, handler: Handler[Any], entries: int) -> float:
    """Rows/s of one consumer draining ``entries`` new entries of ``handler``'s stream."""
    client = connect(redis_url)
    settings = BaseServiceSettings(database_url=db_url, redis_url=redis_url)
    registry = CollectorRegistry()
    metrics = LoaderMetrics(registry)
    stopping = asyncio.Event()
    database = Database(settings)
    consumer, store = loader_consumer(
        handler,
        client,
        database,
        ConsumerSettings(
            group="loader", consumer="bench", batch_entries=BATCH_ENTRIES, block_ms=50
        ),
        metrics,
        stopping,
        registry,
    )
    labels = {"stream": store.label, "outcome": "loaded"}

    def loaded() -> float:
        return registry.get_sample_value("its_loader_entries_total", labels) or 0.0

    await database.connection()  # connect outside the timing
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        while loaded() < entries:
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
    return ROWS / elapsed


def scalar(url: str, sql: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


@dataclass
class Scenario:
    name: str
    table: str
    ceiling_columns: str
    ceiling_rows: list[bytes]
    stream: Stream
    kind: str
    events: Sequence[Any]
    handler: Callable[[], Handler[Any]]
    check_sql: str
    expected: int


def scenarios() -> list[Scenario]:
    bars, corrected, trades = make_bars(), make_bars(correction=0.5), make_trades()
    trade_rows = trade_ceiling_rows(trades)
    return [
        Scenario(
            "new_bars", "market_data", BAR_CEILING_COLUMNS, bar_ceiling_rows(bars),
            Stream.BARS_1M, "AM", bars, BarsHandler,
            "SELECT count(*) FROM market_data WHERE revision = 1", ROWS,
        ),
        Scenario(
            "corrected_bars", "market_data", BAR_CEILING_COLUMNS, bar_ceiling_rows(corrected),
            Stream.BARS_1M, "AM", corrected, BarsHandler,
            "SELECT count(*) FROM market_data WHERE revision = 2", ROWS,
        ),
        Scenario(
            "new_trades", "trades", TRADE_CEILING_COLUMNS, trade_rows,
            Stream.TRADES, "T", trades, TradesHandler, "SELECT count(*) FROM trades", ROWS,
        ),
        Scenario(
            "duplicate_trades", "trades", TRADE_CEILING_COLUMNS, trade_rows,
            Stream.TRADES, "T", trades, TradesHandler, "SELECT count(*) FROM trades", ROWS,
        ),
    ]  # fmt: skip


def run_scenario(redis_url: str, db_url: str, s: Scenario) -> dict[str, Any]:
    batch = EVENTS_PER_ENTRY * BATCH_ENTRIES
    ceiling = measure_ceiling(db_url, s.table, s.ceiling_columns, payloads(s.ceiling_rows, batch))
    entries = asyncio.run(fill_stream(redis_url, s.stream, s.kind, s.events))
    rate = asyncio.run(measure_loader(redis_url, db_url, s.handler(), entries))
    stored = int(scalar(db_url, s.check_sql))
    ratio = rate / ceiling
    print(
        f"   {s.name:<17} loader {rate:>9,.0f} rows/s; COPY ceiling {ceiling:>9,.0f} rows/s; "
        f"ratio {ratio:.2f}"
        + ("" if stored == s.expected else f"; STORED {stored} != {s.expected}"),
        flush=True,
    )
    return {
        "loader_rows_per_s": round(rate),
        "copy_ceiling_rows_per_s": round(ceiling),
        "ratio": round(ratio, 3),
        "stored_ok": stored == s.expected,
    }


def run_replicas(redis_url: str, db_url: str) -> dict[str, Any]:
    """New trades again (table emptied) stored by REPLICAS loader processes of one group,
    against REPLICAS raw COPY connections writing the same rows at once."""
    trades = make_trades()
    batch = EVENTS_PER_ENTRY * BATCH_ENTRIES
    data = payloads(trade_ceiling_rows(trades), batch)
    ceiling = measure_parallel_ceiling(db_url, data, REPLICAS)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE trades")
    asyncio.run(fill_stream(redis_url, Stream.TRADES, "T", trades))
    rate = measure_replicas(redis_url, db_url, REPLICAS)
    stored = int(scalar(db_url, "SELECT count(*) FROM trades"))
    print(
        f"   new trades, {REPLICAS} replicas: {rate:>9,.0f} rows/s; {REPLICAS} parallel COPY "
        f"ceiling {ceiling:>9,.0f} rows/s; ratio {rate / ceiling:.2f}"
        + ("" if stored == ROWS else f"; STORED {stored} != {ROWS}"),
        flush=True,
    )
    return {
        "loader_rows_per_s": round(rate),
        "copy_ceiling_rows_per_s": round(ceiling),
        "ratio": round(rate / ceiling, 3),
        "stored_ok": stored == ROWS,
        "replicas": REPLICAS,
    }


def run() -> dict[str, Any]:
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="its-bench-loader-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        redis = RedisServer(base / "redis", maxmemory="2gb").start()
        postgres = PostgresServer(base / "pg", fast_unsafe=False).start()
        try:
            with psycopg.connect(postgres.url) as conn:
                apply_migrations(conn)
            figures = {s.name: run_scenario(redis.url, postgres.url, s) for s in scenarios()}
            figures["new_trades_replicas"] = run_replicas(redis.url, postgres.url)
        finally:
            redis.stop()
            postgres.discard()
    new_bars = figures["new_bars"]["loader_rows_per_s"]
    correction_of_new = figures["corrected_bars"]["loader_rows_per_s"] / new_bars
    trades = figures["new_trades"]["loader_rows_per_s"]
    print(
        f"   corrected bars / new bars {correction_of_new:.2f} (target >= "
        f"{TARGET_CORRECTION_OF_NEW}); new trades {trades:,} rows/s (target >= "
        f"{TARGET_TRADES_ROWS_PER_S:,})",
        flush=True,
    )
    return {
        "rows": ROWS,
        "rows_per_entry": EVENTS_PER_ENTRY,
        "rows_per_transaction": EVENTS_PER_ENTRY * BATCH_ENTRIES,
        "durable_postgres": True,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "paths": figures,
        "corrected_of_new_bars": round(correction_of_new, 3),
        "targets": {
            "new_trades_rows_per_s": TARGET_TRADES_ROWS_PER_S,
            "corrected_of_new_bars": TARGET_CORRECTION_OF_NEW,
        },
        "meets_targets": trades >= TARGET_TRADES_ROWS_PER_S
        and correction_of_new >= TARGET_CORRECTION_OF_NEW
        and all(f["stored_ok"] for f in figures.values()),
    }


LABELS = {
    "new_bars": "new bars (COPY straight into market_data)",
    "corrected_bars": "corrected bars (staging + upsert)",
    "new_trades": "new trades (COPY straight into trades)",
    "duplicate_trades": "duplicate trades (staging + ON CONFLICT DO NOTHING)",
    "new_trades_replicas": f"new trades, {REPLICAS} replicas (processes) of one consumer group",
}
CEILING_LABELS = {
    "new_trades_replicas": f"{REPLICAS} raw binary COPY connections at once, same rows, same run",
}


def figures(result: dict[str, Any]) -> list[Figure]:
    """The rows of BENCHMARKS.md: each path against its same-run COPY ceiling, then the
    correction path against the new-rows path."""
    paths = result["paths"]
    out = [
        Figure(
            f"loader {LABELS[name]}, {result['rows']:,} rows, {result['rows_per_transaction']:,}"
            " per transaction",
            p["loader_rows_per_s"],
            "rows/s",
            p["copy_ceiling_rows_per_s"],
            CEILING_LABELS.get(name, "raw binary COPY of the same rows, same run"),
            f">= {TARGET_TRADES_ROWS_PER_S:,} rows/s" if name == "new_trades" else "",
        )
        for name, p in paths.items()
    ]
    out.append(
        Figure(
            "loader corrected bars against loader new bars",
            paths["corrected_bars"]["loader_rows_per_s"],
            "rows/s",
            paths["new_bars"]["loader_rows_per_s"],
            "loader new bars, same run",
            f">= {TARGET_CORRECTION_OF_NEW:.2f}",
        )
    )
    return out


if __name__ == "__main__":
    print(run())
