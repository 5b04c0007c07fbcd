"""``its-loader audit --trades``: stored trades per minute (count, volume) against REST; repair."""

from __future__ import annotations

import asyncio

import psycopg

from its_common.clock import FEED_CLOCK_KEY, feed_clock_mapping
from its_loader.__main__ import main as cli_main
from its_loader.store import prepare_session, store_trades, trade_payload

from .conftest import query, scalar
from .polygon_rest import synthetic_trade
from .test_backfill_audit import DAY, MINUTES, cli_env
from .test_trades_backfill import IN_PROGRESS, NOW_MS, as_ws, rest_trades


async def test_trades_audit_finds_missing_minutes_and_repair_fills_them(
    redis_server, redis_client, db_url, rest_server, monkeypatch, capfd
):
    trades = rest_trades()  # minutes 10..13; 13 is not final on the market clock
    rest_server.add_trades("NVDA", trades)
    rest_server.page_size = 10
    rest_server.rate_limited = 1
    stored = [as_ws(t) for t in trades[::3]]
    extra = as_ws(synthetic_trade("NVDA", MINUTES[5] * 1_000_000 + 5, 999))  # REST has none
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await prepare_session(conn)
        await store_trades(conn, trade_payload([(NOW_MS, [*stored, extra])])[0], insert_first=False)
    await redis_client.hset(FEED_CLOCK_KEY, mapping=feed_clock_mapping(NOW_MS))
    cli_env(monkeypatch, redis_server.url, db_url, rest_server.url)
    argv = ["audit", "--date", DAY.isoformat(), "--symbol", "NVDA", "--trades", "--no-event"]

    assert await asyncio.to_thread(cli_main, argv) == 0
    out = capfd.readouterr().out
    assert "TRADES MISSING (minutes missing 3, mismatch 0, extra 1)" in out
    # Written to gap_audit, apart from the bars audit's rows (subject).
    assert audit_rows(db_url, "trades") == {"missing": 3, "extra": 1}

    assert await asyncio.to_thread(cli_main, [*argv, "--repair", "--fail-on-gaps"]) == 1
    assert await asyncio.to_thread(cli_main, [*argv, "--fail-on-gaps"]) == 0
    out = capfd.readouterr().out
    assert "OK: no missing trades (minutes missing 0, mismatch 0, extra 1)" in out
    assert audit_rows(db_url, "trades") == {"extra": 1}  # the day's rows replaced
    detail = query(db_url, "SELECT detail FROM gap_audit WHERE subject = 'trades'")[0][0]
    assert detail["stored_trades"] == 1 and detail["rest_trades"] == 0
    final = [t for t in trades if t["sip_timestamp"] < MINUTES[IN_PROGRESS] * 1_000_000]
    unfinal_stored = [t for t in trades[::3] if t not in final]
    total = len(final) + len(unfinal_stored) + 1
    assert scalar(db_url, "SELECT count(*) FROM trades") == total
    assert (
        scalar(db_url, "SELECT count(DISTINCT (symbol, ts, exchange, trade_id)) FROM trades")
        == total
    )


def audit_rows(db_url: str, subject: str) -> dict[str, int]:
    rows = query(
        db_url, "SELECT kind, count(*) FROM gap_audit WHERE subject = %s GROUP BY kind", subject
    )
    return {str(kind): int(count) for kind, count in rows}
