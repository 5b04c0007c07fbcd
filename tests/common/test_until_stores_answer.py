"""A service's start-up waits through a Redis or PostgreSQL outage instead of ending."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from its_common.backoff import until_stores_answer
from its_common.localstack.servers import free_port


async def test_a_database_refusing_at_start_is_waited_through(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The chaos suite: features restarted during a PostgreSQL restart ended with exit 1 (its
    start-up rebuild connected once, outside any retry)."""
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    urls = [closed, closed, database_url]
    answered: list[int] = []

    async def start_up() -> None:
        url = urls.pop(0)
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            answered.append(int((await (await conn.execute("SELECT 1")).fetchone() or [0])[0]))

    with caplog.at_level(logging.WARNING, logger="its.backoff"):
        assert await until_stores_answer(start_up, "start-up", asyncio.Event())
    assert answered == [1] and not urls
    warnings = [
        r.getMessage() for r in caplog.records if "PostgreSQL unavailable" in r.getMessage()
    ]
    assert len(warnings) == 2


async def test_stopping_ends_the_wait() -> None:
    stopping = asyncio.Event()
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"

    async def start_up() -> None:
        stopping.set()  # asked to stop while the database is down
        await psycopg.AsyncConnection.connect(closed, connect_timeout=5)

    assert await until_stores_answer(start_up, "start-up", stopping) is False
