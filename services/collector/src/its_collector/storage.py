"""Writing samples into ``sys_metrics`` and the plain-PostgreSQL retention."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from its_collector.sampling import Sample


async def insert_samples(
    conn: psycopg.AsyncConnection[Any], ts: datetime, samples: Sequence[Sample]
) -> int:
    if not samples:
        return 0
    async with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY sys_metrics (ts, service, metric_name, metric_value, tags) FROM STDIN"
        ) as copy,
    ):
        for s in samples:
            await copy.write_row((ts, s.service, s.metric_name, s.metric_value, json.dumps(s.tags)))
    return len(samples)


async def has_timescale_retention(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when sys_metrics is a hypertable (0002 then added a retention policy)."""
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if await cur.fetchone() is None:
        return False
    cur = await conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'sys_metrics'"
    )
    return await cur.fetchone() is not None


async def apply_retention(conn: psycopg.AsyncConnection[Any], days: float) -> int:
    cur = await conn.execute(
        "DELETE FROM sys_metrics WHERE ts < now() - make_interval(secs => %s)", (days * 86400,)
    )
    return max(cur.rowcount, 0)
