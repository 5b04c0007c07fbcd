"""Random and simulated minute bars for the feature tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import numpy as np
from numpy.typing import NDArray

from its_common.calendar import Session, sessions_between
from its_common.features import Bar, BarArrays, SymbolFeatures
from its_common.features.grid import Grid


def session_minutes(sessions: Sequence[Session]) -> NDArray[np.int64]:
    out: list[int] = []
    for s in sessions:
        start = int(s.open.timestamp() * 1000)
        out += [start + 60_000 * i for i in range(s.minutes)]
    return np.asarray(out, dtype=np.int64)


def random_bars(
    sessions: Sequence[Session],
    seed: int,
    drop: float = 0.03,
    price: float = 100.0,
    drop_rows: Sequence[int] = (),
) -> BarArrays:
    """Random-walk bars on every session minute, some dropped (missing minutes), some with zero
    volume, half with a bar VWAP; ``drop_rows`` are dropped too (indices into the minute grid)."""
    rng = np.random.default_rng(seed)
    ts = session_minutes(sessions)
    n = len(ts)
    close = price * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = close * np.exp(rng.normal(0, 5e-4, n))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 1e-3)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 1e-3)
    volume = rng.integers(1, 20_000, n).astype(np.float64)
    volume[rng.random(n) < 0.03] = 0.0
    vwap = np.where(rng.random(n) < 0.5, (high + low) / 2, np.nan)
    keep = rng.random(n) >= drop
    keep[list(drop_rows)] = False
    return BarArrays.from_columns(
        ts[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep], vwap[keep]
    )


def scaled(bars: BarArrays, factor: float) -> BarArrays:
    return BarArrays(
        ts=bars.ts,
        open=bars.open * factor,
        high=bars.high * factor,
        low=bars.low * factor,
        close=bars.close * factor,
        volume=bars.volume,
        vwap=bars.vwap * factor,
    )


def bar_at(bars: BarArrays, i: int) -> Bar:
    vwap = float(bars.vwap[i])
    return Bar(
        ts=int(bars.ts[i]),
        open=float(bars.open[i]),
        high=float(bars.high[i]),
        low=float(bars.low[i]),
        close=float(bars.close[i]),
        volume=float(bars.volume[i]),
        vwap=None if np.isnan(vwap) else vwap,
    )


def replay(
    bars: BarArrays, grid: Grid, explicit_missing: bool = False, last_close: float | None = None
) -> tuple[NDArray[np.float64], SymbolFeatures]:
    """Push the bars one by one through the incremental form; rows of ``grid`` it returned a
    vector for are filled, the rest NaN. With ``explicit_missing`` every grid minute is pushed
    (None for a missing one), so every ready row gets a vector."""
    state = SymbolFeatures(last_close=last_close)
    out = np.full((len(grid), 12), np.nan)
    by_minute = {int(t): i for i, t in enumerate(bars.ts)}
    if explicit_missing:
        for row, minute in enumerate(grid.ts):
            i = by_minute.get(int(minute))
            vec = state.push(int(minute), None if i is None else bar_at(bars, i))
            if vec is not None:
                out[row] = vec
    else:
        row_of = {int(t): r for r, t in enumerate(grid.ts)}
        for i in range(len(bars)):
            vec = state.push(int(bars.ts[i]), bar_at(bars, i))
            if vec is not None:
                out[row_of[int(bars.ts[i])]] = vec
    return out, state


def simulated_bars(first: date, last: date, seed: int = 5) -> dict[str, BarArrays]:
    """Minute bars of NVDA and MSFT from the market simulator (small trade rate: fast)."""
    from its_trainer.simdata import simulator_bars

    frame = simulator_bars(("NVDA", "MSFT"), first, last, seed=seed, trades_per_day=15_000)
    out = {}
    for symbol in ("NVDA", "MSFT"):
        sub = frame[frame["symbol"] == symbol]
        out[symbol] = BarArrays.from_columns(
            sub["ts"].to_numpy(), sub["open"].to_numpy(), sub["high"].to_numpy(),
            sub["low"].to_numpy(), sub["close"].to_numpy(), sub["volume"].to_numpy(),
            sub["vwap"].to_numpy(),
        )  # fmt: skip
    return out


THANKSGIVING_WEEK = (date(2025, 11, 25), date(2025, 12, 2))  # a holiday and an early close


def week_sessions() -> list[Session]:
    return sessions_between(*THANKSGIVING_WEEK)
