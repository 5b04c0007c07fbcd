"""Apply the versioned SQL migrations, idempotently.

Migrations are files ``NNNN_name.sql`` in :mod:`its_common.db.migrations`, applied in order, each
in its own transaction, and recorded in ``schema_migrations`` with a checksum (editing an applied
migration is an error). Files named ``NNNN_name.timescale.sql`` are applied only when the
``timescaledb`` extension can be used: installed on the server *and* loaded at its start
(``shared_preload_libraries``; ``CREATE EXTENSION`` fails with "must be preloaded" otherwise). On
plain PostgreSQL (or TimescaleDB installed but not preloaded) they are reported as skipped and
are applied by a later run once the extension is usable. A session advisory lock serializes
concurrent migrators (several pods starting at once); releasing it never hides the error that
ended the run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import psycopg

from its_common.backoff import Backoff
from its_common.settings import BaseServiceSettings, SettingsError, load_settings

log = logging.getLogger("its.migrate")
ADVISORY_LOCK_ID = 0x175_0001
TIMESCALE_SUFFIX = ".timescale.sql"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    timescale_only: bool

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationReport:
    applied: list[str]
    skipped: list[str]
    already: list[str]
    timescale: bool


class MigrationError(RuntimeError):
    pass


def discover() -> list[Migration]:
    migrations = []
    for item in resources.files("its_common.db.migrations").iterdir():
        name = item.name
        if not name.endswith(".sql"):
            continue
        prefix = name.split("_", 1)[0]
        if not prefix.isdigit():
            raise MigrationError(f"migration {name}: the name must start with its NNNN version")
        migrations.append(
            Migration(int(prefix), name, item.read_text("utf-8"), name.endswith(TIMESCALE_SUFFIX))
        )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return migrations


def preloads_timescale(shared_preload_libraries: str) -> bool:
    """Whether a ``shared_preload_libraries`` value (comma-separated, maybe quoted) loads
    TimescaleDB."""
    names = (n.strip().strip('"').strip() for n in shared_preload_libraries.split(","))
    return "timescaledb" in names


# ``shared_preload_libraries`` is readable only by superusers (and pg_read_all_settings); for
# other roles pg_settings hides it, and the ``timescaledb.*`` settings, which exist only once the
# library is loaded (pg_settings never lists placeholders), tell instead.
TIMESCALE_PROBE_SQL = """SELECT
    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
    (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
    EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%%')"""


def timescale_usable(probe: tuple[object, ...] | None) -> bool | None:
    """From the :data:`TIMESCALE_PROBE_SQL` row: True when TimescaleDB is installed and
    preloaded, False when not installed, None when installed but not preloaded."""
    assert probe is not None
    installed, preload, loaded = bool(probe[0]), probe[1], bool(probe[2])
    if not installed:
        return False
    if preloads_timescale(str(preload)) if preload is not None else loaded:
        return True
    return None


def timescale_available(conn: psycopg.Connection) -> bool:
    """TimescaleDB can be used: the extension is installed and the server preloads it."""
    usable = timescale_usable(conn.execute(TIMESCALE_PROBE_SQL).fetchone())
    if usable is None:
        log.warning(
            "timescaledb is installed but not in shared_preload_libraries: the TimescaleDB "
            "migrations are skipped until the server preloads it"
        )
    return bool(usable)


def required_migrations(timescale: bool) -> list[Migration]:
    """What a fully migrated database holds: every migration, the TimescaleDB-only ones only
    where the extension is usable (plain PostgreSQL skips them)."""
    return [m for m in discover() if timescale or not m.timescale_only]


@contextmanager
def _advisory_lock(conn: psycopg.Connection) -> Iterator[None]:
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
    try:
        yield
    except BaseException:
        # The error that got us here is what matters: a failed unlock (the connection may be
        # gone, which releases the lock anyway) is logged, never raised in its place.
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
        except psycopg.Error as cleanup:
            log.warning("migration lock not released after the failure (%s)", cleanup)
        raise
    conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))


def apply_migrations(
    conn: psycopg.Connection, migrations: Sequence[Migration] | None = None
) -> MigrationReport:
    """Apply what is missing on an autocommit connection; safe to run any number of times.
    ``migrations`` defaults to the package's files (:func:`discover`)."""
    conn.autocommit = True
    with _advisory_lock(conn):
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            row[0]: (row[1], row[2])
            for row in conn.execute("SELECT version, name, checksum FROM schema_migrations")
        }
        timescale = timescale_available(conn)
        applied: list[str] = []
        skipped: list[str] = []
        already: list[str] = []
        for migration in discover() if migrations is None else migrations:
            if migration.version in done:
                name, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} changed after it was applied as {name}; "
                        "add a new migration instead of editing an applied one"
                    )
                already.append(migration.name)
                continue
            if migration.timescale_only and not timescale:
                skipped.append(migration.name)
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied.append(migration.name)
        return MigrationReport(applied, skipped, already, timescale)


def connect_with_retry(settings: BaseServiceSettings, wait_s: float) -> psycopg.Connection:
    from its_common.db.connect import connection_kwargs

    deadline = time.monotonic() + wait_s
    backoff = Backoff(0.5, 5.0)
    while True:
        try:
            return psycopg.connect(**connection_kwargs(settings))
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise MigrationError(f"database unreachable after {wait_s:.0f}s: {exc}") from exc
            delay = min(backoff.next_delay(), max(0.0, deadline - time.monotonic()))
            log.warning("database not reachable yet (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-migrate", description="Apply ITS database migrations (DATABASE_URL)."
    )
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the DB")
    args = parser.parse_args(argv)
    from its_common.logs import setup_logging

    try:
        settings = load_settings(BaseServiceSettings, service_name="migrate")
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging("migrate", settings.log_level)
    try:
        with connect_with_retry(settings, args.wait) as conn:
            report = apply_migrations(conn)
    except (MigrationError, psycopg.Error) as exc:
        log.error("migration failed: %s", exc)
        return 1
    log.info(
        "migrations done",
        extra={
            "applied": report.applied,
            "skipped": report.skipped,
            "already_applied": len(report.already),
            "timescaledb": report.timescale,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
