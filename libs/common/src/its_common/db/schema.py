"""Waiting for the schema: services that need tables start before migrations may have run.

In Kubernetes the migration Job is a post-install hook, which runs only once the Deployments are
ready; a service that crashed on a missing table would never get ready. So services wait here,
alive and ready (their dependencies are reachable), until ``its-migrate`` has applied what they
need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg

from its_common.db.connect import connection_kwargs
from its_common.settings import BaseServiceSettings

log = logging.getLogger("its.db.schema")


async def schema_version(settings: BaseServiceSettings) -> int:
    """The highest applied migration version; 0 when none (or the table does not exist yet)."""
    kwargs = connection_kwargs(settings)
    async with await psycopg.AsyncConnection.connect(**kwargs, autocommit=True) as conn:
        try:
            cursor = await conn.execute("SELECT max(version) FROM schema_migrations")
        except psycopg.errors.UndefinedTable:
            return 0
        row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


async def wait_for_schema(
    settings: BaseServiceSettings,
    stopping: asyncio.Event,
    min_version: int = 1,
    poll_s: float = 2.0,
) -> bool:
    """Return True once migration ``min_version`` is applied; False if stopping came first."""
    last_log = 0.0
    while not stopping.is_set():
        try:
            version = await schema_version(settings)
            reason = f"schema version {version}, need {min_version}: run its-migrate"
        except psycopg.OperationalError as exc:
            version, reason = 0, f"database unreachable: {exc}"
        if version >= min_version:
            return True
        if time.monotonic() - last_log > 30:
            log.warning("waiting for database migrations (%s)", reason)
            last_log = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), poll_s)
    return False
