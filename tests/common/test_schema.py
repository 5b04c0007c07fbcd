"""Waiting for the schema (its_common.db.schema): what a service that needs the database
waits for before its main starts."""

from __future__ import annotations

import asyncio

import psycopg

from its_common.db.migrate import apply_migrations
from its_common.db.schema import SchemaGate, SchemaNotReadyError
from its_common.settings import BaseServiceSettings, load_settings
from tests.conditions import wait_until


def settings_for(database_url: str) -> BaseServiceSettings:
    return load_settings(BaseServiceSettings, database_url=database_url)


async def check_problem(gate: SchemaGate) -> str:
    try:
        await gate.check()
    except SchemaNotReadyError as exc:
        return str(exc)
    return ""


async def test_an_empty_database_names_every_missing_migration(database_url: str) -> None:
    gate = SchemaGate(settings_for(database_url))
    assert await gate.probe() is False
    problem = await check_problem(gate)
    assert problem.startswith("migrations not applied: 0001_core_schema.sql")
    assert "0003_execution.sql" in problem
    # Plain PostgreSQL: the TimescaleDB-only migration is not required.
    assert "timescale" not in problem


async def test_a_partly_migrated_database_is_not_ready_then_a_current_one_is(
    database_url: str,
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
        row = conn.execute(
            "DELETE FROM schema_migrations WHERE version = 3 RETURNING version, name, checksum"
        ).fetchone()
        conn.commit()
    gate = SchemaGate(settings_for(database_url))
    assert await gate.probe() is False
    assert await check_problem(gate) == "migrations not applied: 0003_execution.sql"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s,%s,%s)", row
        )
        conn.commit()
    assert await gate.probe() is True
    assert await check_problem(gate) == ""


async def test_an_unreachable_database_is_a_problem_not_a_crash() -> None:
    gate = SchemaGate(settings_for("postgresql://its@127.0.0.1:1/its"))
    assert await gate.probe() is False
    assert (await check_problem(gate)).startswith("database unavailable: OperationalError")


async def test_wait_returns_once_migrated_or_when_stopping(database_url: str) -> None:
    gate = SchemaGate(settings_for(database_url), poll_s=0.05)
    stopping = asyncio.Event()
    waiting = asyncio.create_task(gate.wait(stopping))
    await wait_until(lambda: gate.problem.startswith("migrations not applied"), 20)
    assert not waiting.done()
    await asyncio.to_thread(_migrate, database_url)
    assert await asyncio.wait_for(waiting, 20) is True

    never = SchemaGate(settings_for("postgresql://its@127.0.0.1:1/its"), poll_s=0.05)
    stopped = asyncio.create_task(never.wait(stopping := asyncio.Event()))
    await wait_until(lambda: never.problem.startswith("database unavailable"), 20)
    stopping.set()
    assert await asyncio.wait_for(stopped, 20) is False


def _migrate(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
