"""The batch form of the features: numpy over a whole history (training and backtests).

Sessions are laid out as rows of a 2-D array (session x minute since the anchor), so every
running sum restarts at the session's first anchored minute exactly as the incremental form's
does, with the same additions in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from its_common.calendar import Session
from its_common.features.grid import F64, BarArrays, Grid, align
from its_common.features.spec import (
    EMA_ALPHA,
    EMA_BETA,
    INDEX,
    N_FEATURES,
    RSI_WINDOW,
    SMA_LONG,
    SMA_SHORT,
    VOLATILITY_WINDOW,
    VOLUME_WINDOW,
)


def window_sum(x: F64, window: int) -> F64:
    """Running sum over the last ``window`` columns of each row: S_k - S_{k-N} (S_{<0} = 0)."""
    cs = np.cumsum(x, axis=1)
    out = cs.copy()
    if x.shape[1] > window:
        out[:, window:] = cs[:, window:] - cs[:, :-window]
    return out


def _counts(width: int, window: int) -> F64:
    return np.minimum(np.arange(1, width + 1, dtype=np.float64), float(window))[None, :]


def features_2d(
    open_: F64, close: F64, volume: F64, price: F64, minute_of_day: NDArray[np.int32]
) -> NDArray[np.float64]:
    """Features of sessions laid out as rows (column 0 = the anchor minute); shape (S, M, 12).

    Cells past a row's end may hold anything (NaN): they never influence earlier columns.
    """
    s, m = close.shape
    out = np.empty((s, m, N_FEATURES))
    if m == 0:
        return out
    p0 = open_[:, :1]
    prev = np.concatenate([p0, close[:, :-1]], axis=1)
    ratio = close / prev
    ret = ratio - 1.0
    out[:, :, INDEX["returns"]] = ret
    out[:, :, INDEX["log_returns"]] = np.log(ratio)

    n5 = _counts(m, SMA_SHORT)
    n20 = _counts(m, SMA_LONG)
    out[:, :, INDEX["sma_5"]] = (window_sum(close, SMA_SHORT) / n5) / close - 1.0
    out[:, :, INDEX["sma_20"]] = (window_sum(close, SMA_LONG) / n20) / close - 1.0

    ema = np.empty_like(close)
    ema[:, 0] = close[:, 0]
    for k in range(1, m):
        ema[:, k] = EMA_ALPHA * close[:, k] + EMA_BETA * ema[:, k - 1]
    out[:, :, INDEX["ema_12"]] = ema / close - 1.0

    nv = _counts(m, VOLATILITY_WINDOW)
    mean = window_sum(ret, VOLATILITY_WINDOW) / nv
    var = window_sum(ret * ret, VOLATILITY_WINDOW) / nv - mean * mean
    out[:, :, INDEX["volatility"]] = np.sqrt(np.maximum(var, 0.0))

    diff = close - prev
    gains = window_sum(np.maximum(diff, 0.0), RSI_WINDOW)
    losses = window_sum(np.maximum(-diff, 0.0), RSI_WINDOW)
    total = gains + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(total > 0, gains / total - 0.5, 0.0)
    out[:, :, INDEX["rsi"]] = rsi

    nvol = _counts(m, VOLUME_WINDOW)
    mean_volume = window_sum(volume, VOLUME_WINDOW) / nvol
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, :, INDEX["volume_ratio"]] = np.where(mean_volume > 0, volume / mean_volume, 1.0)

    cum_pv = np.cumsum(price * volume, axis=1)
    cum_v = np.cumsum(volume, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        session_vwap = np.where(cum_v > 0, cum_pv / cum_v, close)
    out[:, :, INDEX["vwap"]] = session_vwap / close - 1.0

    out[:, :, INDEX["hour"]] = (minute_of_day // 60) / 24.0
    out[:, :, INDEX["minute"]] = (minute_of_day % 60) / 60.0
    out[:, :, INDEX["close"]] = np.log(close / p0)
    return out


def grid_features(grid: Grid) -> NDArray[np.float64]:
    """Feature vectors for every row of ``grid``; shape (len(grid), 12), NaN where not ready."""
    n = len(grid)
    result = np.full((n, N_FEATURES), np.nan)
    n_sessions = len(grid.sessions)
    if n == 0 or n_sessions == 0:
        return result
    starts = grid.session_start[:-1]
    ends = grid.session_start[1:]
    # The anchor of each session: its first ready row (normally the open).
    ready_idx = np.where(grid.ready, np.arange(n), n)
    anchor = np.minimum.accumulate(ready_idx[::-1])[::-1]  # next ready row at or after i
    anchors = np.where(starts < n, anchor[np.minimum(starts, n - 1)], n)
    anchors = np.minimum(anchors, ends)
    lengths = ends - anchors
    width = int(lengths.max(initial=0))
    if width == 0:
        return result
    rows_of = np.repeat(np.arange(n_sessions), lengths)
    col_of = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(anchors, lengths) + col_of

    def lay(values: NDArray[np.float64]) -> F64:
        arr = np.full((n_sessions, width), np.nan)
        arr[rows_of, col_of] = values[src]
        return arr

    mod = np.zeros((n_sessions, width), dtype=np.int32)
    mod[rows_of, col_of] = grid.ny_minute_of_day[src]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = features_2d(
            lay(grid.open), lay(grid.close), lay(grid.volume), lay(grid.price), mod
        )
    result[src] = values[rows_of, col_of]
    return result


def batch_features(
    bars: BarArrays, sessions: Sequence[Session], last_close: float | None = None
) -> tuple[Grid, NDArray[np.float64]]:
    """Align ``bars`` to ``sessions`` and compute every feature: (grid, values (n, 12))."""
    grid = align(bars, sessions, last_close)
    return grid, grid_features(grid)
