"""Minute bars from ITS's synthetic market (its_common.simmarket, which the market simulator
serves): demo and test data.

The bars are exactly what the simulator's REST API serves for the same seed and days (each
day's trades aggregated by Polygon's sale-condition rules), so a model trained on them matches
``make run``'s feed.

``its-trainer sim-bars`` writes beside the bars file a description of the market that made them
(``<file>.market.json``: the simulator, its seed, trade rate and planted pattern, if any);
``train`` and ``evaluate`` record it in the bundle (``data.market``) and its model card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from its_common.calendar import sessions_between
from its_common.simmarket import pattern
from its_common.simmarket.config import SimConfig
from its_common.simmarket.market import MarketGenerator

MARKET_SUFFIX = ".market.json"


def market_file(bars_file: Path) -> Path:
    """Where the description of a bars file's market is kept."""
    return bars_file.with_name(bars_file.name + MARKET_SUFFIX)


def describe_market(seed: int, trades_per_day: int | None, demo_pattern: bool) -> dict[str, Any]:
    return {
        "simulator": "its_common.simmarket",
        "seed": seed,
        "trades_per_day": trades_per_day,
        "demo_pattern": pattern.describe() if demo_pattern else None,
    }


def read_market(bars_file: Path) -> dict[str, Any] | None:
    """The description written by ``sim-bars`` beside ``bars_file``; None when there is none."""
    path = market_file(bars_file)
    if not path.is_file():
        return None
    value = json.loads(path.read_text())
    return value if isinstance(value, dict) else None


def simulator_bars(
    symbols: Sequence[str],
    first: date,
    last: date,
    seed: int = 42,
    trades_per_day: int | None = None,
    demo_pattern: bool = False,
) -> pd.DataFrame:
    """A bars table (symbol, ts [UTC ms], open, high, low, close, volume, vwap) for the
    regular sessions from ``first`` to ``last``. ``trades_per_day`` lowers the simulator's trade
    rate (faster generation; prices follow the same model). ``demo_pattern``: the demo market's
    planted pattern (:mod:`its_common.simmarket.pattern`), as ``make run``'s simulator serves it."""
    per_day = {s: float(trades_per_day) for s in symbols} if trades_per_day else {}
    config = SimConfig(
        symbols=tuple(symbols),
        seed=seed,
        trades_per_day=per_day,
        quotes_per_trade=0.0,
        late_bar_rate=0.0,
        demo_pattern=demo_pattern,
    )
    sessions = sessions_between(first, last)
    if not sessions:
        raise ValueError(f"no trading session between {first} and {last}")
    generator = MarketGenerator(config, sessions[0].day, cache_days=1)
    frames = []
    for session in sessions:
        day = generator.day(session.day)
        if day is None:
            continue
        open_ms = int(session.open.timestamp() * 1000)
        close_ms = int(session.close.timestamp() * 1000)
        for symbol in symbols:
            trades = day.symbol_trades(symbol)
            if trades is None or len(trades) == 0:
                continue
            bars = day.bars(trades, 60_000)
            inside = (bars.start >= open_ms) & (bars.start < close_ms)
            frames.append(
                pd.DataFrame(
                    {
                        "symbol": symbol,
                        "ts": bars.start[inside],
                        "open": bars.open[inside],
                        "high": bars.high[inside],
                        "low": bars.low[inside],
                        "close": bars.close[inside],
                        "volume": bars.volume[inside].astype(np.float64),
                        "vwap": bars.vwap[inside],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).sort_values(["symbol", "ts"], kind="stable")
