"""One long-lived database connection per consumer loop, reconnected with backoff after failures.

A dedicated connection (rather than a pool) keeps the session's temporary staging tables.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from its_common.db.connect import connection_kwargs
from its_common.settings import BaseServiceSettings
from its_loader.store import prepare_session

log = logging.getLogger("its.loader.db")

# Errors that say "the database or the connection is unavailable": retry, never dead-letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
)


class Database:
    def __init__(self, settings: BaseServiceSettings, name: str = "loader") -> None:
        self._kwargs: dict[str, Any] = connection_kwargs(settings)
        self._kwargs["application_name"] = f"{self._kwargs.get('application_name', name)}"
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The open connection, connecting (and creating the staging tables) when needed."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        await self.reset()
        conn = await psycopg.AsyncConnection.connect(**self._kwargs, autocommit=True)
        try:
            await prepare_session(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()
            except Exception as exc:  # closing a broken connection may fail; it is gone anyway
                log.debug("closing a broken connection: %s", exc)

    async def close(self) -> None:
        await self.reset()


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True when ``stopping`` was set meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True
