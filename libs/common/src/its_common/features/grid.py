"""Minute bars of one symbol laid on the regular-session minute grid, with the missing-bar rule.

The grid holds every regular-session minute of the sessions asked for (exchange calendar, early
closes included). A minute without a usable bar is forward-filled from the last known close
(o = h = l = c = that close, v = 0) and flagged in ``filled``; minutes before the first bar
ever seen have no price (NaN) and ``ready`` False. Both feature forms use exactly this rule (the
incremental form applies it bar by bar).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from its_common.calendar import NEW_YORK, Session
from its_common.features.spec import BAR_MS

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class BarArrays:
    """Minute bars of one symbol, as columns (any order; ``ts`` = bar start, UTC ms)."""

    ts: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64  # NaN where unknown

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def from_columns(
        ts: Sequence[int] | I64,
        open: Sequence[float] | F64,
        high: Sequence[float] | F64,
        low: Sequence[float] | F64,
        close: Sequence[float] | F64,
        volume: Sequence[float] | F64,
        vwap: Sequence[float] | F64 | None = None,
    ) -> BarArrays:
        n = len(ts)
        vw = np.full(n, np.nan) if vwap is None else np.asarray(vwap, dtype=np.float64)
        return BarArrays(
            ts=np.asarray(ts, dtype=np.int64),
            open=np.asarray(open, dtype=np.float64),
            high=np.asarray(high, dtype=np.float64),
            low=np.asarray(low, dtype=np.float64),
            close=np.asarray(close, dtype=np.float64),
            volume=np.asarray(volume, dtype=np.float64),
            vwap=vw,
        )


def bar_price(high: float, low: float, close: float, vwap: float | None) -> float:
    """The price a bar contributes to the session VWAP (see the spec's ``p_k``)."""
    if vwap is not None and math.isfinite(vwap) and vwap > 0:
        return vwap
    return (high + low + close) / 3.0


def usable(close: float, volume: float) -> bool:
    """A bar is used when its close is finite and positive and its volume finite and >= 0."""
    return math.isfinite(close) and close > 0 and math.isfinite(volume) and volume >= 0


def session_ms(session: Session) -> tuple[int, int]:
    return _ms(session.open), _ms(session.close)


def utc_offset_minutes(session: Session) -> int:
    """New York's offset from UTC during the session (constant within a regular session)."""
    offset = session.open.astimezone(NEW_YORK).utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) // 60


def _ms(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Grid:
    """One symbol on the minute grid of ``sessions``: one row per regular-session minute."""

    sessions: tuple[Session, ...]
    ts: I64  # minute start, UTC ms
    session_id: NDArray[np.int32]  # index into sessions
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    price: F64  # p_k: the bar's VWAP contribution price
    filled: NDArray[np.bool_]  # forward-filled (missing or unusable bar)
    ready: NDArray[np.bool_]  # a price is known (False before the first bar ever seen)
    ny_minute_of_day: NDArray[np.int32]  # New York minute of day of the minute start
    session_start: NDArray[np.int64]  # first row of each session (len(sessions) + 1 entries)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def filled_count(self) -> int:
        """Minutes forward-filled (only those with a price; not-ready minutes are not counted)."""
        return int(np.count_nonzero(self.filled & self.ready))


def session_grid(
    sessions: Sequence[Session],
) -> tuple[I64, NDArray[np.int32], I64, NDArray[np.int32]]:
    """(minute starts, session id per row, session start rows, NY minute of day per row)."""
    ts_parts: list[I64] = []
    sid_parts: list[NDArray[np.int32]] = []
    mod_parts: list[NDArray[np.int32]] = []
    starts = [0]
    for i, session in enumerate(sessions):
        open_ms, close_ms = session_ms(session)
        minutes = (close_ms - open_ms) // BAR_MS
        ts = open_ms + BAR_MS * np.arange(minutes, dtype=np.int64)
        offset = utc_offset_minutes(session)
        ts_parts.append(ts)
        sid_parts.append(np.full(minutes, i, dtype=np.int32))
        mod_parts.append((((ts // BAR_MS) + offset) % 1440).astype(np.int32))
        starts.append(starts[-1] + int(minutes))
    if not ts_parts:
        empty_i = np.zeros(0, dtype=np.int64)
        return empty_i, np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int32)
    return (
        np.concatenate(ts_parts),
        np.concatenate(sid_parts),
        np.asarray(starts, dtype=np.int64),
        np.concatenate(mod_parts),
    )


def align(bars: BarArrays, sessions: Sequence[Session], last_close: float | None = None) -> Grid:
    """Lay ``bars`` on the minute grid of ``sessions`` and apply the missing-bar rule.

    ``last_close`` is a close known from before the first session (it lets the first minutes be
    filled when their bars are missing). Bars outside the sessions are ignored; for a minute with
    several bars the last one in input order wins (callers pass the newest version last).
    """
    sessions = tuple(sessions)
    ts, sid, starts, mod = session_grid(sessions)
    n = len(ts)
    close = np.full(n, np.nan)
    open_ = np.full(n, np.nan)
    high = np.full(n, np.nan)
    low = np.full(n, np.nan)
    volume = np.zeros(n)
    vwap = np.full(n, np.nan)
    if n and len(bars):
        minute = bars.ts - np.mod(bars.ts, BAR_MS)  # floor to the minute
        pos = np.searchsorted(ts, minute)
        pos_clip = np.minimum(pos, n - 1)
        hit = (pos < n) & (ts[pos_clip] == minute)
        ok = (
            hit
            & np.isfinite(bars.close)
            & (bars.close > 0)
            & np.isfinite(bars.volume)
            & (bars.volume >= 0)
        )
        rows = pos_clip[ok]
        # Assigning in input order: the last bar of a minute wins.
        close[rows] = bars.close[ok]
        open_[rows] = bars.open[ok]
        high[rows] = bars.high[ok]
        low[rows] = bars.low[ok]
        volume[rows] = bars.volume[ok]
        vwap[rows] = bars.vwap[ok]
    has_bar = np.isfinite(close)
    # Forward fill the close over missing minutes (across sessions), seeded by last_close.
    idx = np.where(has_bar, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    carried = np.where(idx >= 0, close[np.maximum(idx, 0)], np.nan)
    if last_close is not None and math.isfinite(last_close) and last_close > 0:
        carried = np.where(idx >= 0, carried, last_close)
    filled = ~has_bar
    ready = np.isfinite(carried)
    close = np.where(has_bar, close, carried)
    open_ = np.where(has_bar, open_, carried)
    high = np.where(has_bar, high, carried)
    low = np.where(has_bar, low, carried)
    typical = (high + low + close) / 3.0
    price = np.where(np.isfinite(vwap) & (vwap > 0), vwap, typical)
    price = np.where(has_bar, price, carried)
    return Grid(
        sessions=sessions,
        ts=ts,
        session_id=sid,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        price=price,
        filled=filled,
        ready=ready,
        ny_minute_of_day=mod,
        session_start=starts,
    )
