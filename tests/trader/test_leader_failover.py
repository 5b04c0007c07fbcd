"""Two trader processes under a Redis lease: the standby waits hot, takes over when the leader is
paused (SIGSTOP) in the middle of a decision, and the old leader, resumed (SIGCONT), records and
sends nothing: its lease is gone (the local deadline passed while it was stopped) and the
database fence has moved on to the new leader's token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from its_common.leader.redis_lease import lease_key
from its_common.localstack.servers import free_port
from tests.conditions import wait_until

from .conftest import Feed, decision, publish, query, scalar

REPO = Path(__file__).resolve().parents[2]
# Lease 2 s, renewed every 0.3 s, a leader stops acting 1.2 s after its last renewal.
LEASE_ENV = {
    "ITS_LEADER_ELECTION": "redis",
    "ITS_LEADER_LEASE_S": "2",
    "ITS_LEADER_RENEW_S": "0.3",
    "ITS_LEADER_RENEW_DEADLINE_S": "1.2",
    "ITS_LEADER_RETRY_S": "0.2",
}


class TraderProcess:
    def __init__(self, name: str, redis_url: str, db_url: str, log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = log
        env = {
            **os.environ,
            **LEASE_ENV,
            "REDIS_URL": redis_url,
            "DATABASE_URL": db_url,
            "ITS_HTTP_PORT": str(self.port),
            # A long block: the leader spends its time inside XREADGROUP, so an entry added while
            # it is stopped is delivered to its socket and handled the moment it resumes.
            "ITS_TRADER_BLOCK_MS": "5000",
            "ITS_TRADER_CONSUMER": name,
            "ITS_TRADER_CONTROL_INTERVAL_S": "0.2",
            "ITS_TRADER_SNAPSHOT_INTERVAL_S": "0.5",
            "ITS_LOG_LEVEL": "INFO",
        }
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "its_trader"], cwd=REPO, env=env, stdout=out, stderr=out
            )

    def readiness(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None

    def role(self) -> str | None:
        ready = self.readiness()
        return None if ready is None else ready.get("role")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)


async def test_a_paused_leader_loses_the_lease_and_never_records_an_order_after_it(
    redis_server, redis_client, db_url, tmp_path
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    a = TraderProcess("trader-a", redis_server.url, db_url, tmp_path / "a.log")
    b: TraderProcess | None = None
    blocker = psycopg.connect(db_url)
    try:
        await wait_until(lambda: a.role() == "leader", 30, 0.1)
        a_token = int((await redis_client.get(lease_key("trader"))).decode().split("|")[1])
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM sim_accounts") == 1, 20)
        await wait_until(lambda: redis_client.exists("its:stream:decisions"), 10)
        b = TraderProcess("trader-b", redis_server.url, db_url, tmp_path / "b.log")
        # The standby is up and ready, and does nothing.
        standby = await wait_until(b.readiness, 30, 0.1)
        assert standby["status"] == "ready" and standby["role"] == "standby", standby

        # The leader takes a decision and is caught in the middle of it: its first read of the
        # orders table waits on a lock the test holds; then it is paused (SIGSTOP).
        blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        await publish(redis_client, decision(feed.t, 8))  # buy / buy
        await wait_until(lambda: waiting_on_orders(db_url) == 1, 20, 0.1)
        a.process.send_signal(signal.SIGSTOP)

        # The standby takes over (lease 2 s) and raises the fence before anything else.
        await wait_until(lambda: b.role() == "leader", 20, 0.1)
        b_token = int((await redis_client.get(lease_key("trader"))).decode().split("|")[1])
        assert b_token > a_token
        await wait_until(lambda: fence(db_url) == b_token, 20, 0.1)

        # The old leader resumes, still inside its decision, and the lock goes away: it must
        # neither record nor send the order it was about to place.
        a.process.send_signal(signal.SIGCONT)
        blocker.rollback()
        assert await wait_until(lambda: a.process.poll() is not None, 20, 0.1)
        assert a.process.returncode != 0
        a_log = a.log.read_text(errors="replace")
        assert "lost the lease trader" in a_log or "not the leader of trader" in a_log, a_log[
            -3000:
        ]
        assert query(db_url, "SELECT count(*) FROM orders WHERE fence_token = %s", a_token) == [
            (0,)
        ]

        # The new leader trades: a later decision is recorded under its token.
        await feed.trade("MSFT", 401.0, step_ms=120_000)
        await feed.trade("NVDA", 101.0)
        await publish(redis_client, decision(feed.t, 8))
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM orders") >= 2, 20, 0.1)
    finally:
        blocker.close()
        a.stop()
        if b is not None:
            b.stop()
    rows = query(db_url, "SELECT client_order_id, fence_token FROM orders")
    assert rows and all(token == b_token for _, token in rows), rows
    sim = scalar(db_url, "SELECT count(*) FROM sim_orders")
    assert sim == len(rows)


def waiting_on_orders(db_url: str) -> int:
    """Sessions of this database waiting on a lock in a query on the orders table."""
    return int(
        scalar(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query ILIKE '%%FROM orders%%'",
        )
    )


def fence(db_url: str) -> int | None:
    rows = query(db_url, "SELECT token FROM leader_fence WHERE name = 'trader'")
    return int(rows[0][0]) if rows else None
