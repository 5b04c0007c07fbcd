"""Waiting for the schema: a service that needs the database waits for the migrations, alive.

In Kubernetes every Deployment starts together with the migration Job (and on an upgrade the new
pods may start before the Job has applied the new migrations). A service that used the database
at once would crash on a missing table and crash-loop; instead the runtime
(``run_service(needs_schema=True)``) starts the health endpoint, keeps ``/healthz`` at 200,
reports ``/readyz`` 503 with the ``schema`` check naming what is missing, and starts the
service's main only once every migration this code knows is recorded in ``schema_migrations``
(a newer schema is fine: migrations only add).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from its_common.backoff import Backoff
from its_common.db.connect import connection_kwargs
from its_common.db.migrate import TIMESCALE_PROBE_SQL, required_migrations, timescale_usable
from its_common.settings import BaseServiceSettings

log = logging.getLogger("its.schema")


class SchemaNotReadyError(RuntimeError):
    """The database is unreachable or lacks migrations (the message says which)."""


async def missing_migrations(conn: psycopg.AsyncConnection) -> list[str]:
    """Names of the migrations this code needs that the database has not recorded."""
    table = await (await conn.execute("SELECT to_regclass('schema_migrations')")).fetchone()
    applied: set[int] = set()
    if table is not None and table[0] is not None:
        rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
        applied = {int(row[0]) for row in rows}
    probe = await (await conn.execute(TIMESCALE_PROBE_SQL)).fetchone()
    timescale = bool(timescale_usable(probe))
    return [m.name for m in required_migrations(timescale) if m.version not in applied]


class SchemaGate:
    """Polls the database until the schema is current; ``check`` is a readiness check."""

    def __init__(self, settings: BaseServiceSettings, poll_s: float = 1.0) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.ready = False
        self.problem = "not checked yet"

    async def check(self) -> None:
        """Readiness: passes once the schema was found current (never fails again after)."""
        if not self.ready:
            raise SchemaNotReadyError(self.problem)

    async def probe(self) -> bool:
        """One look at the database; updates ``ready`` and ``problem``."""
        try:
            conn = await psycopg.AsyncConnection.connect(**connection_kwargs(self.settings))
            async with conn:
                missing = await missing_migrations(conn)
        except (psycopg.Error, OSError) as exc:
            self.problem = f"database unavailable: {type(exc).__name__}: {exc}"
            return False
        if missing:
            self.problem = f"migrations not applied: {', '.join(missing)}"
            return False
        self.ready = True
        self.problem = ""
        return True

    async def wait(self, stopping: asyncio.Event) -> bool:
        """Wait until the schema is current (True) or ``stopping`` is set (False)."""
        backoff = Backoff(self.poll_s, max(self.poll_s, 5.0))
        last = ""
        while not stopping.is_set():
            if await self.probe():
                log.info("database schema is current")
                return True
            if self.problem != last:
                log.warning("waiting for the database schema: %s", self.problem)
                last = self.problem
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=backoff.next_delay())
        return False
