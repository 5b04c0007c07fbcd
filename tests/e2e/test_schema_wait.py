"""Every long-running service waits for the database schema alive and not ready.

In Kubernetes the Deployments start together with the migration Job, so each service may meet an
empty database. Here every service that uses the database runs as a real process against a fresh,
empty database: each stays alive (/healthz 200) and reports not ready (/readyz 503, the `schema`
check naming the missing migrations); once the migrations are applied, each becomes ready. The
services without a database (marketsim, router, ibsim) do not take part: nothing of theirs waits.
"""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import RedisServer, free_port
from tests.processes import REPO, service
from tests.router.harness import http, wait_until

# Every long-running service with `needs.database` in the chart, and the settings it needs here.
DATABASE_SERVICES: dict[str, dict[str, str]] = {
    "loader": {"ITS_LOADER_BACKFILL_ON_START": "false"},
    "collector": {"ITS_COLLECTOR_TARGETS": f"none=http://127.0.0.1:{free_port()}/m"},
    "features": {},
    "inference": {"ITS_INFERENCE_BUNDLE_DIR": str(REPO / "models" / "demo")},
    "alerter": {"ITS_ALERTER_EXPECTED_SERVICES": "loader"},
    "trader": {},
    "validator": {},
    "dashboard": {},
}


def readyz(port: int) -> tuple[int, Any]:
    return http("GET", f"http://127.0.0.1:{port}/readyz", timeout=5)


def waiting_for_schema(port: int) -> bool:
    status, body = readyz(port)
    schema = body.get("checks", {}).get("schema", "") if isinstance(body, dict) else ""
    return status == 503 and "migrations not applied: 0001_core_schema.sql" in schema


@pytest.mark.slow
def test_services_wait_for_the_schema_then_become_ready(
    tmp_path: Path, database_url: str, redis_server: RedisServer
) -> None:
    common = {"REDIS_URL": redis_server.url, "DATABASE_URL": database_url}
    processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    with ExitStack() as stack:
        for name, env in DATABASE_SERVICES.items():
            port = free_port()
            process = stack.enter_context(service(name, tmp_path, {**common, **env}, port=port))
            processes[name] = (process, port)

        # Each has looked at the empty database and says what is missing, alive.
        for name, (_, port) in processes.items():
            wait_until(lambda port=port: waiting_for_schema(port), 60, f"{name} waiting")
        for name, (_, port) in processes.items():
            status, body = http("GET", f"http://127.0.0.1:{port}/healthz")
            assert status == 200, (name, body)
        dead = {n: p.poll() for n, (p, _) in processes.items() if p.poll() is not None}
        assert dead == {}, f"services ended on an empty database: {dead}"

        with psycopg.connect(database_url) as conn:
            report = apply_migrations(conn)
        assert "0001_core_schema.sql" in report.applied

        for name, (_, port) in processes.items():
            wait_until(lambda port=port: readyz(port)[0] == 200, 60, f"{name} ready")
        dead = {n: p.poll() for n, (p, _) in processes.items() if p.poll() is not None}
        assert dead == {}, f"services ended after the migrations: {dead}"
        for name, (_, port) in processes.items():
            _, body = readyz(port)
            assert body["checks"]["schema"] == "ok", (name, body)
