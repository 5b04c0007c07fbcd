"""Simulator -> router -> Redis -> loader -> PostgreSQL, with faults, then the gap audit.

The seed's acceptance criterion, end to end with the real processes: the simulator skips minute
bars on the WebSocket and duplicates events; storage ends with every trade exactly once, and
after the audit's repair (REST backfill) no missing minutes against REST history.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis

from its_common.db.migrate import apply_migrations
from its_common.gaps import GapWindow, encode_gap
from its_common.localstack.servers import free_port
from its_common.streams import Stream
from tests.router.harness import (
    BIN,
    SIM_KEY,
    Sim,
    http,
    rest_trade_count,
    router,
    simulator,
    wait_until,
)

DAY = "2025-11-03"
AFTER_CLOSE_MS = 1_762_205_400_000  # 2025-11-03 21:30 UTC
DAY_START_UTC, DAY_END_UTC = "2025-11-03 05:00+00", "2025-11-04 05:00+00"  # the New York day


@contextmanager
def loader(log_dir: Path, redis_url: str, database_url: str, sim: Sim) -> Iterator[Any]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ITS_POLYGON_REST_URL": sim.rest_url,
        "POLYGON_API_KEY": SIM_KEY,
        "ITS_HTTP_PORT": str(free_port()),
        "ITS_LOADER_BACKFILL_ON_START": "false",  # the WebSocket path alone, then the audit
    }
    with (log_dir / "loader.log").open("wb") as log:
        process = subprocess.Popen([str(BIN / "its-loader")], env=env, stdout=log, stderr=log)
    try:
        yield env
    finally:
        process.terminate()
        process.wait(timeout=30)


def audit(env: dict[str, str], *flags: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "its-loader"), "audit", "--date", DAY, "--json", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_no_missing_minutes_and_every_trade_once(
    tmp_path: Path, redis_server, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    faults = json.dumps({"skip_next_bars": 3, "duplicate_rate": 0.05, "seed": 7})
    with simulator(
        tmp_path,
        "--speed", "3000",
        # Start two simulated hours before the open, so the router is subscribed at the bell.
        "--start", "2025-11-03T12:30:00Z",
        "--no-skip-closed",
        "--trades-per-day", "NVDA=20000,MSFT=10000",
        "--quotes-per-trade", "0",
        "--faults", faults,
    ) as sim, router(tmp_path, redis_server.url, sim), loader(
        tmp_path, redis_server.url, database_url, sim
    ) as env:  # fmt: skip
        with psycopg.connect(database_url, autocommit=True) as conn:

            def simulated_past(ms: int) -> bool:
                return int(http("GET", f"{sim.rest_url}/admin/status")[1]["clock_ms"]) > ms

            # The close plus 30 minutes: every late re-sent bar (up to ~15 min) has been sent.
            wait_until(lambda: simulated_past(AFTER_CLOSE_MS), 120, "the simulated day to end")

            def day_trades() -> dict[str, int]:
                rows = conn.execute(
                    "SELECT symbol, count(*), count(DISTINCT (ts, exchange, trade_id)) "
                    "FROM trades WHERE ts >= %s AND ts < %s GROUP BY symbol",
                    (DAY_START_UTC, DAY_END_UTC),
                ).fetchall()
                assert all(total == distinct for _, total, distinct in rows)
                return {symbol: total for symbol, total, _ in rows}

            expected = {
                symbol: rest_trade_count(sim, symbol, f"timestamp.gte={DAY}&timestamp.lte={DAY}")
                for symbol in ("NVDA", "MSFT")
            }
            try:
                wait_until(lambda: day_trades() == expected, 30, "trades == REST")
            except AssertionError as exc:
                raise AssertionError(f"stored {day_trades()} != REST {expected}") from exc

        before = audit(env, "--no-event")
        assert before["trading_day"] is True
        assert before["missing"] == 3  # the three bars the simulator skipped on the WebSocket
        assert before["mismatch"] == 0  # re-sent (corrected) bars: the newest version was kept
        after_repair = audit(env, "--repair", "--no-event")
        assert (
            after_repair["symbols"]["NVDA"]["repaired"]
            + after_repair["symbols"]["MSFT"]["repaired"]
            == 3
        )
        final = audit(env, "--trades")
        assert final["ok"] is True and final["missing"] == 0 and final["mismatch"] == 0
        for symbol in ("NVDA", "MSFT"):
            stats = final["symbols"][symbol]
            assert stats["stored"] + stats["empty"] == stats["session_minutes"] == 390
        # Trades per minute agree with the simulator's /v3/trades (mapping: SIP ns -> ms).
        assert final["trades"]["ok"] is True and final["trades"]["extra"] == 0
        assert final["trades"]["symbols"]["NVDA"]["rest_trades"] == expected["NVDA"]

        # Trades lost after the fact: a gap window refills NVDA's (REST /v3/trades, pages), the
        # trades audit's repair MSFT's; every trade ends stored exactly once.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "DELETE FROM trades WHERE symbol = 'NVDA' AND ts >= %s AND ts < %s",
                ("2025-11-03 15:00+00", "2025-11-03 15:30+00"),
            )
            conn.execute(
                "DELETE FROM trades WHERE symbol = 'MSFT' AND ts >= %s AND ts < %s",
                ("2025-11-03 17:00+00", "2025-11-03 17:20+00"),
            )
            holes = audit(env, "--trades", "--no-event", "--no-write")["trades"]
            assert holes["symbols"]["NVDA"]["missing"] > 0
            assert holes["symbols"]["MSFT"]["missing"] > 0
            window = GapWindow(("NVDA",), 1_762_182_000_000, 1_762_183_800_000, "reconnect")
            client = Redis.from_url(redis_server.url)
            try:
                client.xadd(Stream.GAPS, encode_gap(window))  # type: ignore[arg-type]
            finally:
                client.close()

            def nvda_refilled() -> bool:
                return day_trades().get("NVDA") == expected["NVDA"]

            wait_until(nvda_refilled, 60, "the gap window's trades")
            repaired = audit(env, "--trades", "--repair", "--no-event", "--no-write")["trades"]
            assert repaired["symbols"]["NVDA"]["missing"] == 0
            assert repaired["symbols"]["MSFT"]["repaired"] > 0
            assert day_trades() == expected
            assert audit(env, "--trades", "--no-event", "--no-write")["trades"]["ok"] is True
