"""Replay of recorded trades (CSV and Parquet) with original or accelerated timing."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from its_common.events import MinuteAgg, Trade, decode_frame
from its_marketsim.app import Simulator
from tests.marketsim.support import KEY, collect, config, open_client, recv_frame

OPEN_NS = 1762180200000 * 1_000_000
COLUMNS = [
    "ticker", "sip_timestamp", "price", "size", "exchange", "conditions", "id",
    "sequence_number", "tape", "participant_timestamp", "trf_id", "trf_timestamp",
]  # fmt: skip


def recorded(step_ms: int = 700, count: int = 200) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        t = OPEN_NS + i * step_ms * 1_000_000 + 123
        sym = "NVDA" if i % 3 else "MSFT"
        trf = i % 5 == 0
        rows.append(
            {
                "ticker": sym,
                "sip_timestamp": t,
                "price": round(180 + (i % 17) * 0.01, 2) if sym == "NVDA" else 500.25,
                "size": 100 if i % 2 else 7,
                "exchange": 4 if trf else 12,
                "conditions": "" if i % 2 else "37",
                "id": f"R{i}",
                "sequence_number": 1000 + i * 3,
                "tape": 3,
                "participant_timestamp": t - 5000,
                "trf_id": 202 if trf else "",
                "trf_timestamp": t - 1_000_000 if trf else "",
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    table = pa.table(
        {
            "ticker": [r["ticker"] for r in rows],
            "sip_timestamp": pa.array([r["sip_timestamp"] for r in rows], pa.int64()),
            "price": [r["price"] for r in rows],
            "size": [r["size"] for r in rows],
            "exchange": [r["exchange"] for r in rows],
            "conditions": [[37] if r["conditions"] else [] for r in rows],
            "id": [r["id"] for r in rows],
            "sequence_number": [r["sequence_number"] for r in rows],
        }
    )
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_replay_streams_the_file_and_serves_it_over_rest(tmp_path: Path, fmt: str) -> None:
    rows = recorded()
    writer = write_csv if fmt == "csv" else write_parquet
    path = writer(tmp_path / f"day.{fmt}", rows)
    async with Simulator(config(replay_file=str(path), start="auto")) as sim:
        ws = await open_client(sim.ws_port, topics="T.*,AM.NVDA")
        events = await collect(ws, len(rows) + 2)
        await ws.close()
        trades = [e for e in events if isinstance(e, Trade)]
        assert [t.trade_id for t in trades] == [r["id"] for r in rows]
        assert [t.timestamp for t in trades] == [r["sip_timestamp"] // 1_000_000 for r in rows]
        assert [t.price for t in trades] == [r["price"] for r in rows]
        assert trades[1].conditions == () and trades[0].conditions == (37,)
        if fmt == "csv":
            assert trades[0].trf_id == 202 and trades[0].exchange == 4
        first_bar = next(e for e in events if isinstance(e, MinuteAgg))
        minute = [r for r in rows if r["ticker"] == "NVDA" and r["sip_timestamp"] < OPEN_NS + 60e9]
        assert first_bar.volume == sum(r["size"] for r in minute)
        assert first_bar.open == minute[0]["price"] and first_bar.close == minute[-1]["price"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{sim.rest_port}/v3/trades/MSFT",
                params={"apiKey": KEY, "timestamp.gte": "2025-11-03", "order": "asc"},
            ) as response,
        ):
            body = await response.json()
        msft = [r for r in rows if r["ticker"] == "MSFT"]
        assert [r["id"] for r in body["results"]] == [r["id"] for r in msft]


async def test_replay_keeps_original_timing(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "slow.csv", recorded(step_ms=250, count=8))
    async with Simulator(config(replay_file=str(path), speed=1.0)) as sim:
        ws = await open_client(sim.ws_port, topics="T.*")
        arrivals: list[tuple[float, int]] = []
        while len(arrivals) < 6:
            for event in decode_frame(await recv_frame(ws)):
                if isinstance(event, Trade):
                    arrivals.append((time.monotonic(), event.timestamp))
        await ws.close()
    wall = arrivals[-1][0] - arrivals[1][0]
    market = (arrivals[-1][1] - arrivals[1][1]) / 1000
    assert market == pytest.approx(1.0)
    assert 0.8 < wall < 1.4
