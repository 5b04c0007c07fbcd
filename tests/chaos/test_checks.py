"""The chaos suite's checks against planted faults: the order check must catch what the demo
model's run cannot show while it places no orders (a decision ordered twice, an over-fill, a
fill recorded twice or never made by the broker, a lost execution); the memory bound and
"nothing left running" must see a real process, child and port."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import psycopg

from its_common.db.migrate import apply_migrations
from tests.chaos.checks import check_memory, check_nothing_left, check_orders, descendants
from tests.chaos.memory import MemorySampler
from tests.chaos.stack import start_time
from tests.router.harness import wait_until

DECISION = datetime(2025, 11, 4, 15, 0, tzinfo=UTC)


class Db:
    def __init__(self, url: str) -> None:
        self.url = url

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(query.encode(), params).fetchall())

    def scalar(self, query: str, *params: Any) -> Any:
        rows = self.sql(query, *params)
        return rows[0][0] if rows else None


def _order(conn: Any, order_id: str, quantity: int, decision: datetime | None = DECISION) -> int:
    conn.execute(
        "INSERT INTO orders (client_order_id, account, broker, symbol, side, quantity, status,"
        " decision_ts) VALUES (%s, 'sim', 'sim', 'NVDA', 'BUY', %s, 'submitted', %s)",
        (order_id, quantity, decision),
    )
    row = conn.execute(
        "INSERT INTO sim_orders (account, client_order_id, symbol, side, quantity, status,"
        " after_entry_id, not_before_ms) VALUES ('sim', %s, 'NVDA', 'BUY', %s, 'open', '0-0', 0)"
        " RETURNING broker_order_id",
        (order_id, quantity),
    ).fetchone()
    return int(row[0])


def _fill(
    conn: Any, order_id: str, broker_id: int | None, execution_id: str, quantity: int
) -> None:
    """A fill of ``quantity`` at 100.0: made by the broker when ``broker_id`` is given, and
    recorded by the trader."""
    if broker_id is not None:
        conn.execute(
            "INSERT INTO sim_executions (execution_id, account, broker_order_id,"
            " client_order_id, symbol, side, quantity, price, trade_price, trade_entry_id,"
            " commission, ts_ms, recorded_at) VALUES (%s, 'sim', %s, %s, 'NVDA', 'BUY', %s,"
            " 100.0, 100.0, '1-0', 0, 0, now() - interval '1 minute')",
            (execution_id, broker_id, order_id, quantity),
        )
    conn.execute(
        "INSERT INTO fills (execution_id, client_order_id, ts, account, symbol, side, quantity,"
        " price) VALUES (%s, %s, %s, 'sim', 'NVDA', 'BUY', %s, 100.0)",
        (execution_id, order_id, DECISION, quantity),
    )


def _database(url: str) -> Db:
    with psycopg.connect(url) as conn:
        apply_migrations(conn)
        conn.execute(
            "INSERT INTO sim_accounts (account, cash, initial_cash) VALUES ('sim', 1e6, 1e6)"
        )
    return Db(url)


def test_partial_fills_alike_are_not_reported(database_url: str) -> None:
    db = _database(database_url)
    with psycopg.connect(database_url) as conn:
        broker_id = _order(conn, "a", 100)
        _fill(conn, "a", broker_id, "e1", 50)  # two partial fills, same time, size and price
        _fill(conn, "a", broker_id, "e2", 50)
    check = check_orders(db)
    assert check.ok and check.compared == 3, check.notes


def test_every_planted_fault_is_reported(database_url: str) -> None:
    db = _database(database_url)
    with psycopg.connect(database_url) as conn:
        _order(conn, "twice-1", 10)
        _order(conn, "twice-2", 10)  # the same decision ordered again
        over = _order(conn, "over", 100, None)
        _fill(conn, "over", over, "o1", 100)
        _fill(conn, "over", over, "o2", 100)  # filled beyond its quantity
        dup = _order(conn, "dup", 100, None)
        _fill(conn, "dup", dup, "d1", 50)
        _fill(conn, "dup", None, "d1-again", 50)  # the broker's d1 recorded a second time
        lost = _order(conn, "lost", 100, None)
        _fill(conn, "lost", lost, "l1", 40)
        conn.execute("DELETE FROM fills WHERE execution_id = 'l1'")  # never recorded
    check = check_orders(db)
    text = " | ".join(check.notes)
    assert check.differences == 4, text
    assert "NVDA decision" in text and "2 orders" in text
    assert "order over: filled 200.0 of 100.0" in text
    assert "order dup: fill d1-again the broker never made" in text
    assert "order lost: execution l1 never recorded as a fill" in text


def test_a_process_or_port_left_behind_is_reported() -> None:
    """The "nothing left running" check sees a started pid, a new child and a bound port."""
    before = set(descendants())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stack = SimpleNamespace(pids={child.pid: start_time(child.pid), 1: -2}, ports={port})
    try:
        check = check_nothing_left(cast(Any, stack), before)
        text = " | ".join(check.notes)
        assert f"pid {child.pid} still running" in text
        assert f"child pid {child.pid} still running" in text
        assert f"port {port} still in use" in text
        assert "pid 1 " not in text  # pid 1 started at another time: not the process started
    finally:
        child.kill()
        child.wait()
        listener.close()
    assert check_nothing_left(cast(Any, stack), before).ok


def test_memory_over_its_bound_is_reported() -> None:
    """The sampler reads the resident memory of the real service process (peak across samples)."""
    hog = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = bytearray(160 << 20); print(1, flush=True)"
         "; time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == b"1"
        sampler = MemorySampler(cast(Any, SimpleNamespace(services={"hog": SimpleNamespace(
            process=hog)})), interval_s=0.05).start()  # fmt: skip
        wait_until(lambda: sampler.peaks.get("hog", 0) > 150 << 20, 20, "a sample of the hog")
        peaks = sampler.stop()
    finally:
        hog.kill()
        hog.wait()
    assert not check_memory(peaks, {"default": 100}).ok
    assert check_memory(peaks, {"default": 400}).ok
