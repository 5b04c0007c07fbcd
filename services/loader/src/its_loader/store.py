"""Writing bars and trades: binary COPY straight into the table, a staging table only on conflict.

Each call is one transaction. New rows (the live case) go by ``COPY <table> FROM STDIN (FORMAT
BINARY)`` straight into the real table inside a savepoint. When that hits a unique violation (a
row already stored, or a key twice in the batch), the savepoint is rolled back and the same
payload goes the conflict path: ``COPY`` into a session-local temporary table (no WAL, emptied at
commit), then one ``INSERT ... SELECT ... ON CONFLICT`` into the real table. Batches known to
overlap (corrections after a conflict, REST backfill) go the conflict path directly. The caller
acks the stream entries only after this returns (the commit is durable).

Dedupe rules for ``market_data`` (primary key ``(symbol, ts)``):

* a bar from REST (``source = 'polygon_rest'``) of a *final* minute (closed on the market clock
  plus the settle delay, see :mod:`its_loader.finality`) is authoritative: it replaces whatever
  is stored;
* a REST bar of a minute not final yet is stored as ``polygon_rest_provisional``: it fills a
  hole and nothing more. It replaces only an older provisional row (a later REST read); any
  WebSocket bar and any final REST bar replace it; it never replaces either;
* a WebSocket bar (``polygon_ws``) replaces an older version of the same minute, "older" meaning
  an earlier receive time (``received_at``, the entry's ``rt``; for REST rows the time of the
  read), so a re-sent (corrected) bar wins even if a crashed consumer's older entry is loaded
  after it. A final REST row is replaced only by a bar received *after* the REST read: a
  correction for late reports (they come up to 15 minutes after the minute, past the settle
  delay), which holds everything REST had then and more;
* within one batch the newest version of a minute wins (final REST first, provisional REST last,
  then receive time, then stream order);
* an identical re-delivery changes nothing; a real change bumps ``revision``.

``trades`` (primary key ``(symbol, ts, exchange, trade_id)``): duplicates are ignored (the first
stored version stays), so storing a batch again changes nothing.

The binary COPY payload is built with precompiled ``struct`` formats (one per field-length shape),
which is several times faster than a per-row, per-field dumper.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import psycopg

from its_common.db.sources import SOURCE_REST, SOURCE_REST_PROVISIONAL, SOURCE_WS
from its_common.events import MinuteAgg, Trade

COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER: Final = struct.pack(">h", -1)
PG_EPOCH_US: Final = 946_684_800_000_000  # 2000-01-01 UTC in Unix microseconds (binary timestamptz)

STAGING_DDL: Final = (
    """CREATE TEMP TABLE IF NOT EXISTS stage_bars (
        symbol text, ts timestamptz, open double precision, high double precision,
        low double precision, close double precision, volume double precision,
        vwap double precision, trade_count integer, source text, received_at timestamptz,
        seq bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS""",
    """CREATE TEMP TABLE IF NOT EXISTS stage_trades (
        symbol text, ts timestamptz, trade_id text, exchange smallint, tape smallint,
        price double precision, size integer, conditions smallint[], sequence bigint,
        received_at timestamptz) ON COMMIT DELETE ROWS""",
)

_STAGED_BAR_VALUES: Final = (
    "symbol, ts, open, high, low, close, volume, vwap, trade_count, source, 1, received_at, now()"
)
# The newest version of each (symbol, minute) of the batch (see the dedupe rules above).
_NEWEST_STAGED_BARS: Final = f"""
SELECT DISTINCT ON (symbol, ts) {_STAGED_BAR_VALUES}
FROM stage_bars
ORDER BY symbol, ts, (source = '{SOURCE_REST}') DESC, (source = '{SOURCE_REST_PROVISIONAL}'),
         received_at DESC, seq DESC"""
# A batch known to hold each key once (BarPayload.unique) needs no sort.
_ALL_STAGED_BARS: Final = f"SELECT {_STAGED_BAR_VALUES} FROM stage_bars"

_UPSERT_BARS: Final = f"""
INSERT INTO market_data AS m
    (symbol, ts, open, high, low, close, volume, vwap, trade_count, source, revision,
     received_at, updated_at)
{{rows}}
ON CONFLICT (symbol, ts) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, vwap = EXCLUDED.vwap, trade_count = EXCLUDED.trade_count,
    source = EXCLUDED.source, revision = m.revision + 1,
    received_at = EXCLUDED.received_at, updated_at = now()
WHERE (EXCLUDED.source = '{SOURCE_REST}'
       OR (m.source = '{SOURCE_REST_PROVISIONAL}'
           AND (EXCLUDED.source <> '{SOURCE_REST_PROVISIONAL}'
                OR EXCLUDED.received_at >= m.received_at))
       OR (m.source = '{SOURCE_REST}'
           AND EXCLUDED.source <> '{SOURCE_REST_PROVISIONAL}'
           AND EXCLUDED.received_at > m.received_at)
       OR (m.source NOT IN ('{SOURCE_REST}', '{SOURCE_REST_PROVISIONAL}')
           AND EXCLUDED.source <> '{SOURCE_REST_PROVISIONAL}'
           AND EXCLUDED.received_at >= m.received_at))
  AND (m.open, m.high, m.low, m.close, m.volume, m.vwap, m.trade_count, m.source)
      IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
       EXCLUDED.vwap, EXCLUDED.trade_count, EXCLUDED.source)
"""
UPSERT_BARS: Final = _UPSERT_BARS.format(rows=_NEWEST_STAGED_BARS)
UPSERT_UNIQUE_BARS: Final = _UPSERT_BARS.format(rows=_ALL_STAGED_BARS)

# The columns of a bar payload, in order. The same payload is COPYed into market_data directly
# (fast path) or into stage_bars, whose ``seq`` identity then numbers the rows in stream order.
BAR_COLUMNS: Final = (
    "symbol, ts, open, high, low, close, volume, vwap, trade_count, source, received_at"
)
# Fast path for a batch without duplicate keys (the normal live case: each minute's new bars):
# COPY straight into market_data inside a savepoint. Any existing or concurrently inserted key
# raises unique_violation, the savepoint is rolled back and the batch goes through staging and
# UPSERT_BARS instead: the result is the same, the common case skips the staging table.
COPY_NEW_BARS: Final = f"COPY market_data ({BAR_COLUMNS}) FROM STDIN (FORMAT BINARY)"
COPY_STAGE_BARS: Final = f"COPY stage_bars ({BAR_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# The columns of a trade payload: exactly the table's types (smallint exchange and tape, integer
# size, binary smallint[] conditions), so the same payload COPYs into trades or stage_trades.
TRADE_COLUMNS: Final = (
    "symbol, ts, trade_id, exchange, tape, price, size, conditions, sequence, received_at"
)
COPY_NEW_TRADES: Final = f"COPY trades ({TRADE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
COPY_STAGE_TRADES: Final = f"COPY stage_trades ({TRADE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
INSERT_STAGED_TRADES: Final = f"""
INSERT INTO trades ({TRADE_COLUMNS})
SELECT {TRADE_COLUMNS} FROM stage_trades
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class BarRow:
    """One minute bar to store (``ts_ms`` = bar start)."""

    symbol: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int | None
    source: str
    received_ms: int


@lru_cache(maxsize=256)
def _bar_struct(symbol_len: int, source_len: int, has_count: bool) -> struct.Struct:
    count = "ii" if has_count else "i"
    return struct.Struct(f">h i{symbol_len}s iq idididididid {count} i{source_len}s iq")


@lru_cache(maxsize=1024)
def _trade_struct(symbol_len: int, id_len: int, cond_len: int) -> struct.Struct:
    """One trade row; ``cond_len`` is the length of the conditions field *including* its length
    word (a NULL is the 4-byte word -1)."""
    return struct.Struct(f">h i{symbol_len}s iq i{id_len}s ih ih id ii {cond_len}s iq iq")


_CONDITIONS_NULL: Final = struct.pack(">i", -1)
INT2_OID: Final = 21


@lru_cache(maxsize=4096)
def conditions_field(conditions: tuple[int, ...]) -> bytes:
    """The binary COPY field of a ``smallint[]``: length word, then the array (one dimension,
    no NULLs, element type int2, lower bound 1, each element as length 2 + value). No
    conditions is NULL, as before. A trade's conditions are one of a few dozen lists, so the
    field is built once per distinct list."""
    if not conditions:
        return _CONDITIONS_NULL
    n = len(conditions)
    body = struct.pack(f">iiiii{'ih' * n}", 1, 0, INT2_OID, n, 1, *_pairs(conditions))
    return struct.pack(">i", len(body)) + body


def _pairs(conditions: tuple[int, ...]) -> list[int]:
    out: list[int] = []
    for value in conditions:
        out += (2, value)
    return out


def encode_bar(
    out: list[bytes],
    symbol: bytes,
    ts_ms: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    v: float,
    vw: float,
    n: int | None,
    source: bytes,
    received_ms: int,
) -> None:
    fmt = _bar_struct(len(symbol), len(source), n is not None)
    ts_pg = ts_ms * 1000 - PG_EPOCH_US
    received_pg = received_ms * 1000 - PG_EPOCH_US
    if n is None:
        out.append(
            fmt.pack(
                11, len(symbol), symbol, 8, ts_pg, 8, o, 8, h, 8, lo, 8, c, 8, v, 8, vw,
                -1, len(source), source, 8, received_pg,
            )
        )  # fmt: skip
    else:
        out.append(
            fmt.pack(
                11, len(symbol), symbol, 8, ts_pg, 8, o, 8, h, 8, lo, 8, c, 8, v, 8, vw,
                4, n, len(source), source, 8, received_pg,
            )
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BarPayload:
    data: bytes
    rows: int
    unique: bool  # no (symbol, minute) twice in the batch


def bar_payload_ws(batches: Iterable[tuple[int, Sequence[MinuteAgg]]]) -> BarPayload:
    """Binary COPY payload for WebSocket bars: ``[(received_ms, bars), ...]`` in stream order.

    As in :func:`trade_payload`, one lookup and one ``pack`` per row: the encoded symbol and the
    row's struct are built once per symbol and batch (the same rows as :func:`encode_bar`)."""
    out: list[bytes] = [COPY_HEADER]
    append = out.append
    source = SOURCE_WS.encode()
    shapes: dict[str, tuple[Callable[..., bytes], int, bytes]] = {}
    keys: set[tuple[str, int]] = set()
    rows = 0
    for received_ms, bars in batches:
        received_pg = received_ms * 1000 - PG_EPOCH_US
        for bar in bars:
            keys.add((bar.symbol, bar.start))
            shape = shapes.get(bar.symbol)
            if shape is None:
                sym = bar.symbol.encode()
                pack = _bar_struct(len(sym), len(source), False).pack
                shape = shapes[bar.symbol] = (pack, len(sym), sym)
            pack, sym_len, sym = shape
            append(
                pack(
                    11, sym_len, sym, 8, bar.start * 1000 - PG_EPOCH_US, 8, bar.open, 8, bar.high,
                    8, bar.low, 8, bar.close, 8, bar.volume, 8, bar.vwap, -1, len(source), source,
                    8, received_pg,
                )
            )  # fmt: skip
        rows += len(bars)
    out.append(COPY_TRAILER)
    return BarPayload(b"".join(out), rows, len(keys) == rows)


def bar_payload_rows(rows: Sequence[BarRow]) -> bytes:
    out: list[bytes] = [COPY_HEADER]
    for row in rows:
        encode_bar(
            out, row.symbol.encode(), row.ts_ms, row.open, row.high, row.low, row.close,
            row.volume, row.vwap if row.vwap is not None else 0.0, row.trade_count,
            row.source.encode(), row.received_ms,
        )  # fmt: skip
    out.append(COPY_TRAILER)
    return b"".join(out)


def trade_payload(batches: Iterable[tuple[int, Sequence[Trade]]]) -> tuple[bytes, int]:
    """Binary COPY payload (columns TRADE_COLUMNS) for ``[(received_ms, trades), ...]``.

    The per-row work is one dict lookup and one ``pack``: what depends only on the symbol, the
    trade id's length and the conditions (the encoded symbol, the conditions field, the row's
    struct) is built once per batch for each such combination. A value out of its column's range
    (a size past 2**31, an exchange past 2**15) raises ``struct.error`` here: the batch fails
    and its entries are retried one by one."""
    out: list[bytes] = [COPY_HEADER]
    append = out.append
    shapes: dict[
        tuple[str, int, tuple[int, ...]], tuple[Callable[..., bytes], int, bytes, bytes]
    ] = {}
    count = 0
    for received_ms, trades in batches:
        received_pg = received_ms * 1000 - PG_EPOCH_US
        for t in trades:
            tid = t.trade_id.encode()
            key = (t.symbol, len(tid), t.conditions)
            shape = shapes.get(key)
            if shape is None:
                sym = t.symbol.encode()
                cond = conditions_field(t.conditions)
                pack = _trade_struct(len(sym), len(tid), len(cond)).pack
                shape = shapes[key] = (pack, len(sym), sym, cond)
            pack, sym_len, sym, cond = shape
            append(
                pack(
                    10, sym_len, sym, 8, t.timestamp * 1000 - PG_EPOCH_US, len(tid), tid,
                    2, t.exchange, 2, t.tape, 8, t.price, 4, t.size, cond, 8, t.sequence,
                    8, received_pg,
                )
            )  # fmt: skip
        count += len(trades)
    out.append(COPY_TRAILER)
    return b"".join(out), count


async def prepare_session(conn: psycopg.AsyncConnection[object]) -> None:
    """Per-connection setup: room for the temp tables, then the staging tables."""
    await conn.set_autocommit(True)
    await conn.execute("SET temp_buffers = '64MB'")
    for ddl in STAGING_DDL:
        await conn.execute(ddl)


async def store_bars(
    conn: psycopg.AsyncConnection[object],
    payload: bytes,
    insert_first: bool = False,
    unique: bool = False,
) -> tuple[int, bool]:
    """Store a bar payload in one transaction; returns (rows inserted or changed, fast path used).

    ``insert_first`` (only for a batch without duplicate keys) tries COPY_NEW_BARS in a savepoint
    before staging + upsert; ``unique`` (the batch holds each key once) skips the upsert's sort.
    """
    async with conn.transaction(), conn.cursor() as cur:
        if insert_first:
            try:
                async with conn.transaction(), cur.copy(COPY_NEW_BARS) as copy:
                    await copy.write(payload)
                return max(cur.rowcount, 0), True
            except psycopg.errors.UniqueViolation:
                pass  # some key exists: the savepoint is rolled back, upsert instead
        async with cur.copy(COPY_STAGE_BARS) as copy:
            await copy.write(payload)
        await cur.execute(UPSERT_UNIQUE_BARS if unique else UPSERT_BARS)
        return max(cur.rowcount, 0), False


async def store_trades(
    conn: psycopg.AsyncConnection[object], payload: bytes, insert_first: bool = True
) -> tuple[int, bool]:
    """Store a trade payload in one transaction; returns (rows inserted, fast path used).

    ``insert_first`` tries COPY_NEW_TRADES in a savepoint; a unique violation (a stored trade,
    or one trade twice in the batch) rolls it back and the batch goes through stage_trades and
    INSERT_STAGED_TRADES (duplicates ignored). Pass False for a batch known to overlap."""
    async with conn.transaction(), conn.cursor() as cur:
        if insert_first:
            try:
                async with conn.transaction(), cur.copy(COPY_NEW_TRADES) as copy:
                    await copy.write(payload)
                return max(cur.rowcount, 0), True
            except psycopg.errors.UniqueViolation:
                pass  # some key exists: the savepoint is rolled back, insert what is new
        async with cur.copy(COPY_STAGE_TRADES) as copy:
            await copy.write(payload)
        await cur.execute(INSERT_STAGED_TRADES)
        return max(cur.rowcount, 0), False
