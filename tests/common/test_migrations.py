from __future__ import annotations

import psycopg
import pytest

from its_common.db.migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    discover,
    preloads_timescale,
)
from its_common.localstack.servers import PostgresServer

EXPECTED_TABLES = {
    "market_data",
    "trades",
    "sys_metrics",
    "signals",
    "orders",
    "fills",
    "positions",
    "portfolio_snapshots",
    "price_checks",
    "alerts",
    "gap_audit",
    "schema_migrations",
}


def tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchall()
    return {row[0] for row in rows}


def server_runs_timescale(admin_url: str) -> bool:
    """What the server actually has, asked as its superuser: TimescaleDB installed and
    preloaded."""
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
            "current_setting('shared_preload_libraries')"
        ).fetchone()
    assert row is not None
    return bool(row[0]) and "timescaledb" in str(row[1])


def test_migrations_apply_once_then_are_idempotent(
    database_url: str, postgres_server: PostgresServer
) -> None:
    with psycopg.connect(database_url) as conn:
        first = apply_migrations(conn)
        assert "0001_core_schema.sql" in first.applied
        timescale = server_runs_timescale(postgres_server.admin_url)
        assert first.timescale == timescale
        timescale_files = [m.name for m in discover() if m.timescale_only]
        assert first.skipped == ([] if timescale else timescale_files)
        assert tables(conn) >= EXPECTED_TABLES
        second = apply_migrations(conn)
        assert second.applied == []
        assert second.already == first.applied
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        expected = [m.version for m in discover() if timescale or not m.timescale_only]
        assert [v[0] for v in versions] == expected


@pytest.mark.parametrize(
    ("setting", "preloaded"),
    [
        ("", False),
        ("timescaledb", True),
        ("pg_stat_statements, timescaledb", True),
        ('"timescaledb",auto_explain', True),
        ("timescaledb_toolkit", False),
        ("pg_stat_statements", False),
    ],
)
def test_timescale_counts_only_when_preloaded(setting: str, preloaded: bool) -> None:
    assert preloads_timescale(setting) is preloaded


def test_a_failure_is_not_hidden_by_releasing_the_lock(database_url: str) -> None:
    """A migration that ends the session: the error is the server's, not "connection closed"
    from the advisory unlock that follows it."""
    kill_own_session = "SELECT pg_terminate_backend(pg_backend_pid())"
    fatal = Migration(9001, "9001_fatal.sql", kill_own_session, False)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.OperationalError, match="terminating connection") as caught:
            apply_migrations(conn, [fatal])
        assert "the connection is closed" not in str(caught.value)
        assert conn.closed
    with psycopg.connect(database_url) as conn:  # the lock went with the session
        assert apply_migrations(conn).applied


def test_market_data_primary_key_is_symbol_and_ts(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
        row = conn.execute(
            """SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
               FROM pg_index i JOIN pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = 'market_data'::regclass AND i.indisprimary"""
        ).fetchone()
        assert row is not None and row[0] == ["symbol", "ts"]
        insert = (
            "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source) "
            "VALUES ('NVDA', '2026-11-24 14:30Z', 1, 2, 1, 2, 10, 'test')"
        )
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


def test_an_edited_applied_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            apply_migrations(conn)


def test_migration_files_are_ordered_and_unique() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert any(m.timescale_only for m in migrations)


def test_migrate_cli_applies_schema(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from its_common.db import migrate

    monkeypatch.setenv("DATABASE_URL", database_url)
    assert migrate.main(["--wait", "5"]) == 0
    assert migrate.main(["--wait", "5"]) == 0
    with psycopg.connect(database_url) as conn:
        assert tables(conn) >= EXPECTED_TABLES


def test_migrate_cli_reports_unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from its_common.db import migrate
    from its_common.localstack.servers import free_port

    monkeypatch.setenv("DATABASE_URL", f"postgresql://its@127.0.0.1:{free_port()}/its")
    assert migrate.main(["--wait", "0.5"]) == 1
