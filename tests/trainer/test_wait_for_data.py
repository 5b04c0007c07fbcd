"""The trainer Job of a fresh install waits for its bars instead of failing."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import psycopg
import pytest

from its_common.db.migrate import apply_migrations
from its_trainer.data import DataError, bars_present, wait_for_bars

FIRST, LAST = date(2025, 1, 2), date(2025, 1, 3)
BAR_TS = datetime(2025, 1, 2, 15, 0, tzinfo=UTC)  # 10:00 New York


def insert_bar(database_url: str, symbol: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO market_data (symbol, ts, open, high, low, close, volume, source)"
            " VALUES (%s, %s, 1, 1, 1, 1, 10, 'marketsim')",
            (symbol, BAR_TS),
        )


def test_gives_up_on_an_unmigrated_database_with_a_clear_error(database_url: str) -> None:
    with pytest.raises(DataError, match="database not ready: UndefinedTable"):
        wait_for_bars({"conninfo": database_url}, ["NVDA", "MSFT"], FIRST, LAST, 0)


def test_names_the_symbols_without_bars(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    insert_bar(database_url, "NVDA")
    assert bars_present({"conninfo": database_url}, ["NVDA", "MSFT"], FIRST, LAST) == (
        "no bars of MSFT from 2025-01-02 to 2025-01-03"
    )


def test_waits_through_migrations_and_data_then_returns(database_url: str) -> None:
    said: list[str] = []
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            wait_for_bars(
                {"conninfo": database_url}, ["NVDA", "MSFT"], FIRST, LAST, 120,
                poll_s=0.05, log=said.append,
            )  # fmt: skip
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        with psycopg.connect(database_url) as conn:
            apply_migrations(conn)
        insert_bar(database_url, "NVDA")
        insert_bar(database_url, "MSFT")
    finally:
        waiter.join(150)
    assert outcome == [None]
    assert said and said[0].startswith("waiting for training data:")
