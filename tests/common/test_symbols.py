"""The live symbol list (its_common.symbols) over a real Redis: one source, guarded by the model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from its_common.symbols import (
    SYMBOLS_KEY,
    LiveSymbols,
    SymbolError,
    publish_active_model,
    read_symbols,
    set_symbols,
)

BIN = Path(sys.executable).parent


async def test_the_key_wins_over_the_default_and_changes_are_seen(redis_client) -> None:
    live = LiveSymbols(redis_client, ("NVDA", "MSFT"))
    assert await live.refresh() == ("NVDA", "MSFT")
    await set_symbols(redis_client, ["nvda", "msft", "aapl"])
    assert await redis_client.get(SYMBOLS_KEY) == b"NVDA,MSFT,AAPL"
    assert await live.refresh() == ("NVDA", "MSFT", "AAPL")
    await redis_client.set(SYMBOLS_KEY, "not a list!")
    assert await live.refresh() == ("NVDA", "MSFT", "AAPL")  # invalid: logged, kept
    assert await read_symbols(redis_client, default=["X"]) == ["X"]


async def test_a_list_without_the_loaded_models_pair_is_refused(redis_client) -> None:
    await publish_active_model(redis_client, "demo", ["NVDA", "MSFT"], demo=True)
    await set_symbols(redis_client, ["NVDA", "MSFT", "AAPL"])
    with pytest.raises(SymbolError, match=r"loaded model demo trades NVDA,MSFT.*without MSFT"):
        await set_symbols(redis_client, ["NVDA", "AAPL"])
    assert await redis_client.get(SYMBOLS_KEY) == b"NVDA,MSFT,AAPL"


async def test_the_cli_says_why_it_refuses(redis_server, redis_client) -> None:
    await publish_active_model(redis_client, "demo", ["NVDA", "MSFT"])
    done = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "its-router"), "set-symbols", "AAPL,TSLA"],
        env={"REDIS_URL": redis_server.url, "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "symbols not changed" in done.stderr and "NVDA,MSFT" in done.stderr


@pytest.fixture(autouse=True)
async def _clean(redis_client):
    await redis_client.delete(SYMBOLS_KEY, "its:model:active")
    yield
    await redis_client.delete(SYMBOLS_KEY, "its:model:active")
