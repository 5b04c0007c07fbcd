"""kill -9 of the trader process mid-session: same positions, no duplicate order, fills made
while it was down recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from its_common.localstack.servers import free_port
from tests.conditions import wait_until

from .conftest import Feed, decision, publish, query, scalar

REPO = Path(__file__).resolve().parents[2]


def spawn_trader(redis_url: str, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": db_url,
        "ITS_HTTP_PORT": str(free_port()),
        "ITS_TRADER_BLOCK_MS": "100",
        "ITS_TRADER_CONTROL_INTERVAL_S": "0.2",
        "ITS_TRADER_SNAPSHOT_INTERVAL_S": "0.5",
        "ITS_LOG_LEVEL": "INFO",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "its_trader"], cwd=REPO, env=env, stdout=out, stderr=out
        )


def order_rows(db_url: str) -> list[tuple[str, str, float, str]]:
    return [
        (str(r[0]), str(r[1]), float(r[2]), str(r[3]))
        for r in query(db_url, "SELECT symbol, side, quantity, status FROM orders ORDER BY 1, 2")
    ]


async def test_kill_9_mid_session_keeps_positions_and_never_duplicates_an_order(
    redis_server, redis_client, db_url, tmp_path
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    log = tmp_path / "trader.log"
    victim = spawn_trader(redis_server.url, db_url, log)
    try:
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM sim_accounts") == 1, 20, 0.1)
        await wait_until(lambda: redis_client.exists("its:stream:decisions"), 10)
        await publish(redis_client, decision(feed.t, 8))  # buy / buy
        await wait_until(lambda: len(order_rows(db_url)) == 2, 15)
        await feed.prices(NVDA=101.0, MSFT=402.0)
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM fills") == 2, 15)
        await wait_until(
            lambda: (
                sorted(query(db_url, "SELECT symbol, quantity FROM positions"))
                == [("MSFT", 25.0), ("NVDA", 100.0)]
            ),
            10,
        )
        # Market moves on; a second decision (sell NVDA) is sent but not filled yet: no trade.
        await feed.trade("MSFT", 402.0, step_ms=120_000)
        second = decision(feed.t, 2)  # sell NVDA / buy MSFT (120 s later: no cooldown)
        await publish(redis_client, second)
        # Both legs sent (not just recorded), so the trades below come after the orders: an
        # order still unsent at the kill would be sent on restart after them and never fill.
        await wait_until(lambda: [row[3] for row in order_rows(db_url)].count("submitted") == 2, 15)
        assert ("NVDA", "SELL", 100.0, "submitted") in order_rows(db_url)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    before = order_rows(db_url)
    assert len(before) == 4, before  # NVDA buy+sell, MSFT buy x2 (the second still open)
    msft = 25.0 + scalar(db_url, "SELECT min(quantity) FROM orders WHERE symbol = 'MSFT'")
    # While the trader is down: trades that fill the open orders, and the decision delivered
    # again (at-least-once delivery).
    await feed.prices(NVDA=105.0, MSFT=404.0)
    await publish(redis_client, second)

    survivor = spawn_trader(redis_server.url, db_url, log)
    try:
        await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM fills") == 4, 20, 0.1)
        await wait_until(
            lambda: (
                sorted(query(db_url, "SELECT symbol, quantity FROM positions"))
                == [("MSFT", msft), ("NVDA", 0.0)]
            ),
            10,
        )
        await wait_until(
            lambda: scalar(db_url, "SELECT count(*) FROM orders WHERE status = 'filled'") == 4, 10
        )
        await wait_until(
            lambda: (
                scalar(db_url, "SELECT count(*) FROM signals WHERE risk_outcome IS NOT NULL") == 2
            ),
            10,
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(20)
    after = order_rows(db_url)
    assert len(after) == 4, after  # no duplicate order from the replayed decision
    assert scalar(db_url, "SELECT count(*) FROM sim_orders") == 4
    assert scalar(db_url, "SELECT count(DISTINCT client_order_id) FROM fills") == 4
    sim = sorted(query(db_url, "SELECT symbol, quantity FROM sim_positions"))
    assert sim == [("MSFT", msft), ("NVDA", 0.0)]  # broker and database agree
    sell_price = scalar(db_url, "SELECT price FROM fills WHERE side = 'SELL'")
    assert abs(sell_price - 105.0 * 0.9999) < 1e-6  # the trade that came while it was down
    pending = await redis_client.xpending("its:stream:decisions", "trader")
    assert pending["pending"] == 0  # every decision acked, the replayed one included
    assert survivor.returncode == 0, log.read_text()[-3000:]
