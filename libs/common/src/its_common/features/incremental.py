"""The incremental form of the features: O(1) work and memory per new bar, per symbol (live).

Feed each symbol's regular-session minutes in time order with :meth:`SymbolFeatures.push`:
``push(minute_ms, bar)`` for a bar, ``push(minute_ms, None)`` for a minute known to be missing.
Minutes skipped between two pushes of the same session are forward-filled first (the same rule
as the batch form), so pushing only the bars that exist gives the batch values. A minute at or
before the last one pushed is refused (a late correction of a processed minute is not applied:
the live service decides when a minute is final). Minutes outside regular sessions are ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from its_common import calendar
from its_common.features.grid import bar_price, session_ms, usable, utc_offset_minutes
from its_common.features.spec import (
    BAR_MS,
    EMA_ALPHA,
    EMA_BETA,
    INDEX,
    MAX_WINDOW,
    N_FEATURES,
    RSI_WINDOW,
    SMA_LONG,
    SMA_SHORT,
    VOLATILITY_WINDOW,
    VOLUME_WINDOW,
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute bar (``ts`` = bar start, UTC ms)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None


@dataclass(frozen=True, slots=True)
class SessionWindow:
    open_ms: int
    close_ms: int
    utc_offset_min: int


@lru_cache(maxsize=64)
def _session_of_day(day: date) -> SessionWindow | None:
    found = calendar.session(day)
    if found is None:
        return None
    open_ms, close_ms = session_ms(found)
    return SessionWindow(open_ms, close_ms, utc_offset_minutes(found))


def session_window(minute_ms: int) -> SessionWindow | None:
    """The regular session containing ``minute_ms``, or None."""
    day = calendar.new_york_date(datetime.fromtimestamp(minute_ms / 1000, tz=UTC))
    found = _session_of_day(day)
    if found is None or not found.open_ms <= minute_ms < found.close_ms:
        return None
    return found


class _Window:
    """Running session sum of one series plus the last ``MAX_WINDOW`` values of that sum."""

    __slots__ = ("history", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.history: deque[float] = deque(maxlen=MAX_WINDOW)

    def add(self, x: float) -> None:
        self.history.append(self.total)  # S_{k-1}
        self.total += x  # S_k

    def sum(self, k: int, window: int) -> float:
        """S_k - S_{k-N} for the value just added at index ``k`` (S_{<0} = 0)."""
        if k < window:
            return self.total
        return self.total - self.history[-window]  # history[-N] = S_{k-N}


class SymbolFeatures:
    """Per-symbol incremental state; one instance per symbol."""

    def __init__(self, last_close: float | None = None) -> None:
        self.last_close = last_close if last_close and math.isfinite(last_close) else None
        self.filled_count = 0
        self.session: SessionWindow | None = None
        self.last_minute: int | None = None
        self._reset_session()

    def _reset_session(self) -> None:
        self.k = -1  # index of the last processed minute since the anchor
        self.p0 = math.nan
        self.prev = math.nan
        self.ema = math.nan
        self.close_sum = _Window()
        self.ret_sum = _Window()
        self.ret2_sum = _Window()
        self.gain_sum = _Window()
        self.loss_sum = _Window()
        self.volume_sum = _Window()
        self.pv_total = 0.0

    @property
    def anchored(self) -> bool:
        return self.k >= 0

    def push(self, minute_ms: int, bar: Bar | None) -> NDArray[np.float64] | None:
        """Process one minute; returns its feature vector (None when not ready or not a session
        minute). Skipped minutes of the same session are forward-filled first."""
        minute_ms -= minute_ms % BAR_MS
        if self.last_minute is not None and minute_ms <= self.last_minute:
            raise ValueError(
                f"minute {minute_ms} is not after the last one processed ({self.last_minute})"
            )
        window = session_window(minute_ms)
        if window is None:
            return None
        if self.session is None or window.open_ms != self.session.open_ms:
            self.session = window
            self._reset_session()
            fill_from = window.open_ms
        else:
            fill_from = (self.last_minute if self.last_minute is not None else minute_ms) + BAR_MS
        for gap in range(fill_from, minute_ms, BAR_MS):
            self._step(gap, None)
        self.last_minute = minute_ms
        return self._step(minute_ms, bar)

    def _step(self, minute_ms: int, bar: Bar | None) -> NDArray[np.float64] | None:
        if bar is not None and usable(bar.close, bar.volume):
            o, c, v = bar.open, bar.close, bar.volume
            p = bar_price(bar.high, bar.low, bar.close, bar.vwap)
        else:
            if self.last_close is None:
                return None  # nothing known yet: not ready, nothing counted
            self.filled_count += 1
            o = c = p = self.last_close
            v = 0.0
        self.last_close = c
        return self._advance(minute_ms, o, c, v, p)

    def _advance(
        self, minute_ms: int, o: float, c: float, v: float, p: float
    ) -> NDArray[np.float64]:
        self.k += 1
        k = self.k
        if k == 0:
            self.p0 = o
            self.prev = o
            self.ema = c
        else:
            self.ema = EMA_ALPHA * c + EMA_BETA * self.ema
        prev = self.prev
        ratio = c / prev
        ret = ratio - 1.0
        diff = c - prev
        self.close_sum.add(c)
        self.ret_sum.add(ret)
        self.ret2_sum.add(ret * ret)
        self.gain_sum.add(max(diff, 0.0))
        self.loss_sum.add(max(-diff, 0.0))
        self.volume_sum.add(v)
        self.pv_total += p * v
        self.prev = c

        out = np.empty(N_FEATURES)
        out[INDEX["returns"]] = ret
        out[INDEX["log_returns"]] = math.log(ratio)
        out[INDEX["sma_5"]] = (self.close_sum.sum(k, SMA_SHORT) / min(k + 1, SMA_SHORT)) / c - 1.0
        out[INDEX["sma_20"]] = (self.close_sum.sum(k, SMA_LONG) / min(k + 1, SMA_LONG)) / c - 1.0
        out[INDEX["ema_12"]] = self.ema / c - 1.0
        n = float(min(k + 1, VOLATILITY_WINDOW))
        mean = self.ret_sum.sum(k, VOLATILITY_WINDOW) / n
        var = self.ret2_sum.sum(k, VOLATILITY_WINDOW) / n - mean * mean
        out[INDEX["volatility"]] = math.sqrt(max(var, 0.0))
        gains = self.gain_sum.sum(k, RSI_WINDOW)
        total = gains + self.loss_sum.sum(k, RSI_WINDOW)
        out[INDEX["rsi"]] = gains / total - 0.5 if total > 0 else 0.0
        mean_volume = self.volume_sum.sum(k, VOLUME_WINDOW) / float(min(k + 1, VOLUME_WINDOW))
        out[INDEX["volume_ratio"]] = v / mean_volume if mean_volume > 0 else 1.0
        cum_v = self.volume_sum.total
        session_vwap = self.pv_total / cum_v if cum_v > 0 else c
        out[INDEX["vwap"]] = session_vwap / c - 1.0
        assert self.session is not None
        mod = ((minute_ms // BAR_MS) + self.session.utc_offset_min) % 1440
        out[INDEX["hour"]] = (mod // 60) / 24.0
        out[INDEX["minute"]] = (mod % 60) / 60.0
        out[INDEX["close"]] = math.log(c / self.p0)
        return out


class FeatureState:
    """Incremental features for several symbols (one :class:`SymbolFeatures` each)."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = list(symbols)
        self.states = {symbol: SymbolFeatures() for symbol in self.symbols}

    def push(self, symbol: str, minute_ms: int, bar: Bar | None) -> NDArray[np.float64] | None:
        return self.states[symbol].push(minute_ms, bar)

    def filled_counts(self) -> dict[str, int]:
        return {symbol: state.filled_count for symbol, state in self.states.items()}
