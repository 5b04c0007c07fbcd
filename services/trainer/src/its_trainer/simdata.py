"""Minute bars from ITS's synthetic market (its_common.simmarket, which the market simulator
serves): demo and test data.

The bars are exactly what the simulator's REST API serves for the same seed and days (each
day's trades aggregated by Polygon's sale-condition rules), so a model trained on them matches
``make run``'s feed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from its_common.calendar import sessions_between
from its_common.simmarket.config import SimConfig
from its_common.simmarket.market import MarketGenerator


def simulator_bars(
    symbols: Sequence[str],
    first: date,
    last: date,
    seed: int = 42,
    trades_per_day: int | None = None,
) -> pd.DataFrame:
    """A bars table (symbol, ts [UTC ms], open, high, low, close, volume, vwap) for the
    regular sessions from ``first`` to ``last``. ``trades_per_day`` lowers the simulator's trade
    rate (faster generation; prices follow the same model)."""
    per_day = {s: float(trades_per_day) for s in symbols} if trades_per_day else {}
    config = SimConfig(
        symbols=tuple(symbols),
        seed=seed,
        trades_per_day=per_day,
        quotes_per_trade=0.0,
        late_bar_rate=0.0,
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
