"""The whole market's tail: thousands of symbols from a light, vectorized model, second by second.

The configured symbols (NVDA, MSFT...) keep the full model of :mod:`.market`. The rest of the
market, ``whole_market_symbols`` more tickers, comes from this module, built to be cheap enough
for 120,000 trades/s on one core rather than to show every stylized fact:

- Activity is heavy-tailed across symbols: symbol ``k`` (rank 1 = busiest) gets a share of the
  market's trades proportional to ``1 / k**zipf`` (Zipf's law; ``zipf`` about 1 matches the
  trades/day of US stocks, where a few hundred names take most of the tape).
- The market's rate (trades/s) follows the regular session's U shape (busy open, busiest close)
  around the configured average, times a burst factor (``burst_rate`` during ``burst_s`` seconds
  every ``burst_every_s`` seconds), or a flat rate set at run time (:meth:`set_rate`, the
  simulator's ``/admin/market``; the end-to-end benchmark raises it step by step).
- Trades are a Poisson number per second, spread over the symbols by their shares, at uniform
  milliseconds. Prices follow a per-minute log random walk per symbol (lognormal price levels,
  annual volatility 20-80 %), interpolated within the minute, printed at the bid or ask of a
  one-cent spread; sizes are odd lots (condition 37) or Pareto round lots. No quotes, no late
  reports, no auctions, no REST history for these symbols.
- ``AM`` bars aggregate each minute's trades per symbol and are emitted at the minute's end.

Every draw comes from a ``SeedSequence`` keyed by (seed, day, second), so a second is the same
whichever step asks for it; sequence numbers and day volumes accumulate over the seconds
generated, from the first one this process generated (they start at an estimate when the
simulator starts mid-session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from its_common.events import MinuteAgg
from its_common.simmarket import sessions
from its_common.simmarket.wire import WireTrade

MINUTE_MS: Final = 60_000
ODD_LOT: Final = (37,)
NO_CONDITIONS: Final = ()
TAIL_EXCHANGES: Final = np.array([4, 12, 11, 8, 19, 21, 15, 7, 18, 17, 2, 20, 10, 1], np.int64)
TAIL_EXCHANGE_P: Final = np.array([40, 14, 7, 7, 6, 6, 3, 3, 3, 2, 3, 3, 2, 1], np.float64) / 100
_LETTERS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def tail_symbols(count: int, taken: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``count`` distinct tickers ``ZAAA, ZAAB, ...`` (four letters), none of ``taken``."""
    names: list[str] = []
    skip = set(taken)
    i = 0
    while len(names) < count:
        a, rest = divmod(i, 26 * 26 * 26)
        b, rest = divmod(rest, 26 * 26)
        c, d = divmod(rest, 26)
        name = "Z" + _LETTERS[b] + _LETTERS[c] + _LETTERS[d] + (str(a) if a else "")
        if name not in skip:
            names.append(name)
        i += 1
    return tuple(names)


@dataclass(frozen=True)
class TailConfig:
    """The tail's settings (see the module docstring)."""

    symbols: int
    rate: float = 2_000.0  # average trades/s over the regular session
    zipf: float = 0.9
    burst_rate: float = 0.0  # trades/s during a burst (0 = no bursts)
    burst_every_s: float = 600.0
    burst_s: float = 5.0
    seed: int = 42


@dataclass
class SecondTrades:
    """One second's tail trades in time order (symbol indices into :attr:`Tail.names`)."""

    t_ms: NDArray[np.int64]
    sym: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.int64]
    exchange: NDArray[np.int64]
    seq: NDArray[np.int64]


class _Minute:
    """Running OHLCV per symbol over the current minute and the day."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.day_volume = np.zeros(n, np.int64)
        self.day_value = np.zeros(n, np.float64)
        self.day_open = np.zeros(n, np.float64)
        self.reset(-1)

    def reset(self, minute: int) -> None:
        n = self.n
        self.minute = minute
        self.open = np.zeros(n, np.float64)
        self.high = np.full(n, -np.inf)
        self.low = np.full(n, np.inf)
        self.close = np.zeros(n, np.float64)
        self.volume = np.zeros(n, np.int64)
        self.value = np.zeros(n, np.float64)
        self.count = np.zeros(n, np.int64)

    def add(self, sec: SecondTrades) -> None:
        if len(sec.sym) == 0:
            return
        order = np.argsort(sec.sym, kind="stable")
        sym, price, size = sec.sym[order], sec.price[order], sec.size[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sym)) + 1))
        ends = np.concatenate((starts[1:], [len(sym)])) - 1
        who = sym[starts]
        fresh = self.count[who] == 0
        self.open[who[fresh]] = price[starts][fresh]
        new_day = self.day_open[who] == 0
        self.day_open[who[new_day]] = price[starts][new_day]
        self.high[who] = np.maximum(self.high[who], np.maximum.reduceat(price, starts))
        self.low[who] = np.minimum(self.low[who], np.minimum.reduceat(price, starts))
        self.close[who] = price[ends]
        vol = np.add.reduceat(size, starts)
        val = np.add.reduceat(price * size, starts)
        self.volume[who] += vol
        self.value[who] += val
        self.count[who] += np.diff(np.concatenate((starts, [len(sym)])))
        self.day_volume[who] += vol
        self.day_value[who] += val

    def bars(self, names: NDArray[Any]) -> tuple[list[MinuteAgg], NDArray[np.int64]]:
        who = np.flatnonzero(self.count > 0).astype(np.int64)
        if len(who) == 0:
            return [], who
        start = self.minute * MINUTE_MS
        vol = self.volume[who]
        vwap = np.round(self.value[who] / np.maximum(vol, 1), 4)
        day_vwap = np.round(self.day_value[who] / np.maximum(self.day_volume[who], 1), 4)
        avg = np.round(vol / self.count[who]).astype(np.int64)
        n = len(who)
        bars = list(
            map(
                MinuteAgg,
                names[who].tolist(),
                vol.tolist(),
                self.open[who].tolist(),
                self.close[who].tolist(),
                self.high[who].tolist(),
                self.low[who].tolist(),
                [start] * n,
                [start + MINUTE_MS] * n,
                vwap.tolist(),
                self.day_volume[who].tolist(),
                self.day_open[who].tolist(),
                day_vwap.tolist(),
                avg.tolist(),
            )
        )
        return bars, who


class _DayPaths(NamedTuple):
    session: sessions.TradingDay | None
    level: NDArray[np.float64]  # each ticker's price at the open
    path: NDArray[np.float64]  # log-price moves from the open, minute by minute


class Tail:
    """Generates the tail's trades and minute bars for any span of one day's regular session."""

    def __init__(self, config: TailConfig, taken: tuple[str, ...] = ()) -> None:
        self.config = config
        self.names: tuple[str, ...] = tail_symbols(config.symbols, taken)
        self._names = np.array(self.names, dtype=object)
        n = config.symbols
        ranks = np.arange(1, n + 1, dtype=np.float64)
        weights = ranks ** (-config.zipf)
        self.share = weights / weights.sum()
        self._cum = np.cumsum(self.share)
        rng = np.random.default_rng(np.random.SeedSequence([config.seed & 0xFFFFFFFF, 7_177]))
        self._base_price = np.round(np.exp(rng.normal(math.log(40.0), 1.0, n)).clip(1.0, 2_000), 2)
        self._vol = rng.uniform(0.2, 0.8, n) / math.sqrt(252 * 390)  # per minute
        self._tapes = rng.choice(np.array([1, 2, 3]), n, p=[0.4, 0.2, 0.4])
        self.override: float | None = None  # a flat rate set at run time
        self._day: date | None = None
        self._session: sessions.TradingDay | None = None
        self._path = np.zeros((1, n))
        self._level = self._base_price.copy()
        self._seq = np.zeros(n, np.int64)
        self._minute = _Minute(n)
        self._ready_bars: list[tuple[int, list[MinuteAgg], NDArray[np.int64]]] = []
        self._seconds: dict[int, SecondTrades] = {}
        self._prepared: tuple[date, _DayPaths] | None = None  # the next day's, set by a thread
        self.trades_generated = 0
        self.days_prepared_ahead = 0  # days whose paths were ready when the stream reached them

    # ---- rate ---------------------------------------------------------------------------
    def set_rate(self, rate: float | None) -> None:
        """A flat rate (trades/s) from now on, or None for the configured U shape and bursts."""
        if rate is not None and not (rate >= 0 and math.isfinite(rate)):
            raise ValueError("rate must be a non-negative number of trades/s")
        self.override = rate

    def rate_at(self, ms: int) -> float:
        """The market's tail rate (trades/s) at ``ms``; 0 outside the regular session."""
        session = self._session_of(ms)
        if session is None or not session.open_ms <= ms < session.close_ms:
            return 0.0
        if self.override is not None:
            return self.override
        c = self.config
        u = (ms - session.open_ms) / (session.close_ms - session.open_ms)
        # the same U shape as the full model, normalised to mean 1 over the session
        shape = (1.0 + 3.2 * math.exp(-u / 0.05) + 3.0 * math.exp(-(1.0 - u) / 0.06)) / _U_MEAN
        rate = c.rate * shape
        if c.burst_rate > 0 and c.burst_every_s > 0:
            since = (ms - session.open_ms) / 1000 % c.burst_every_s
            if since < c.burst_s:
                rate = max(rate, c.burst_rate)
        return rate

    def _session_of(self, ms: int) -> sessions.TradingDay | None:
        day = sessions.ny_date(ms)
        if day != self._day:
            self._start_day(day, ms)
        return self._session

    # ---- days ---------------------------------------------------------------------------
    def prepare(self, day: date) -> None:
        """Compute ``day``'s price paths ahead, in a worker thread (for 8,000 tickers about 0.1 s
        of numpy that would otherwise hold the stream's event loop at the day change)."""
        prepared = self._prepared
        if prepared is None or prepared[0] != day:
            self._prepared = (day, self._paths(day))  # one assignment: safe across threads

    def _paths(self, day: date) -> _DayPaths:
        session = sessions.trading_day(day)
        if session is None:
            return _DayPaths(None, self._base_price, np.zeros((1, self.config.symbols)))
        n = self.config.symbols
        rng = self._rng(day, 1)
        minutes = (session.close_ms - session.open_ms) // MINUTE_MS + 1
        gap = rng.normal(0.0, 0.02, n)
        steps = rng.standard_normal((minutes, n)) * self._vol[None, :]
        path = np.vstack([np.zeros((1, n)), np.cumsum(steps, axis=0)])
        return _DayPaths(session, self._base_price * np.exp(gap), path)

    def _start_day(self, day: date, ms: int) -> None:
        self._day = day
        prepared = self._prepared
        if prepared is not None and prepared[0] == day:
            paths = prepared[1]
            self.days_prepared_ahead += 1
        else:
            paths = self._paths(day)
        self._session, self._level, self._path = paths
        n = self.config.symbols
        self._seq = np.zeros(n, np.int64)
        self._minute = _Minute(n)
        self._ready_bars = []
        self._seconds = {}
        if self._session is None:
            return
        # sequence numbers as if the session had run from the open (starting mid-session)
        elapsed = max(0, ms - self._session.open_ms) / 1000
        self._seq = 1000 + (self.share * self.config.rate * elapsed * 1.3).astype(np.int64)

    def _rng(self, day: date, *key: int) -> np.random.Generator:
        words = [self.config.seed & 0xFFFFFFFF, day.toordinal(), 9_901, *key]
        return np.random.default_rng(np.random.SeedSequence(words))

    def second(self, second: int) -> SecondTrades:
        """The trades of one second (``second`` = Unix ms // 1000), in time order."""
        ms = second * 1000
        session = self._session_of(ms)
        assert self._day is not None
        rate = self.rate_at(ms)
        if session is None or rate <= 0:
            z = np.zeros(0, np.int64)
            return SecondTrades(z, z, z.astype(np.float64), z, z, z)
        rng = self._rng(self._day, 2, second)
        count = int(rng.poisson(rate))
        sym = np.searchsorted(self._cum, rng.random(count) * self._cum[-1]).astype(np.int64)
        sym = np.minimum(sym, self.config.symbols - 1)
        t_ms = ms + np.sort(rng.integers(0, 1000, count))
        since = (t_ms - session.open_ms) / MINUTE_MS
        m = since.astype(np.int64)
        frac = since - m
        path = self._path[m, sym] + frac * (self._path[m + 1, sym] - self._path[m, sym])
        mid = self._level[sym] * np.exp(path)
        bid = np.maximum(np.floor(mid * 100) / 100, 0.01)
        price = np.round(np.where(rng.random(count) < 0.5, bid, bid + 0.01), 2)
        odd = rng.random(count) < 0.3
        lots = np.floor((1.0 - rng.random(count)) ** (-1 / 1.5)).astype(np.int64) * 100
        size = np.where(odd, rng.integers(1, 100, count), np.minimum(lots, 1_000_000))
        exchange = rng.choice(TAIL_EXCHANGES, count, p=TAIL_EXCHANGE_P)
        # per-symbol sequence numbers, increasing in time order
        order = np.argsort(sym, kind="stable")
        sorted_sym = sym[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_sym)) + 1))
        run_start = np.repeat(starts, np.diff(np.concatenate((starts, [count]))))
        rank = np.empty(count, np.int64)
        rank[order] = np.arange(count) - run_start
        seq = self._seq[sym] + 1 + rank
        np.add.at(self._seq, sym, 1)
        self.trades_generated += count
        return SecondTrades(t_ms, sym, price, size, exchange, seq)

    # ---- spans --------------------------------------------------------------------------
    def _get(self, second: int) -> SecondTrades:
        sec = self._seconds.get(second)
        if sec is None:
            sec = self.second(second)
            self._note_minute(second, sec)
            self._seconds[second] = sec
            for old in [s for s in self._seconds if s < second - 1]:
                del self._seconds[old]
        return sec

    def span(
        self, lo: int, hi: int, build: bool = True
    ) -> tuple[list[Any], NDArray[np.int64], NDArray[np.int64]]:
        """Trades with time in ``[lo, hi)`` as wire structs (none unless ``build``), their
        times and symbol indices. Spans move forward: each second is generated once, when
        first asked for."""
        events: list[Any] = []
        times: list[NDArray[np.int64]] = []
        syms: list[NDArray[np.int64]] = []
        for second in range(lo // 1000, (hi - 1) // 1000 + 1):
            sec = self._get(second)
            a, b = np.searchsorted(sec.t_ms, [lo, hi], side="left").tolist()
            if b > a:
                if build:
                    events.extend(self._build(sec, a, b))
                times.append(sec.t_ms[a:b])
                syms.append(sec.sym[a:b])
        if not times:
            z = np.zeros(0, np.int64)
            return events, z, z
        return events, np.concatenate(times), np.concatenate(syms)

    def _note_minute(self, second: int, sec: SecondTrades) -> None:
        minute = second * 1000 // MINUTE_MS
        if minute != self._minute.minute:
            if self._minute.minute >= 0:
                bars, who = self._minute.bars(self._names)
                if bars:
                    self._ready_bars.append(((self._minute.minute + 1) * MINUTE_MS, bars, who))
            self._minute.reset(minute)
        self._minute.add(sec)

    def bars(self, hi: int) -> tuple[list[MinuteAgg], NDArray[np.int64], NDArray[np.int64]]:
        """Minute bars due before ``hi``, their emission times and symbol indices (call after
        :meth:`span` of the same step: a minute closes when the first second after it is
        generated, and is due at its end)."""
        due = [ready for ready in self._ready_bars if ready[0] < hi]
        if not due:
            z = np.zeros(0, np.int64)
            return [], z, z
        self._ready_bars = [ready for ready in self._ready_bars if ready[0] >= hi]
        events = [bar for _, bars, _ in due for bar in bars]
        times = np.concatenate([np.full(len(bars), at, np.int64) for at, bars, _ in due])
        return events, times, np.concatenate([who for _, _, who in due])

    def _build(self, sec: SecondTrades, a: int, b: int) -> list[Any]:
        sym = sec.sym[a:b]
        size = sec.size[a:b]
        seq = sec.seq[a:b].tolist()
        conds = [ODD_LOT if s < 100 else NO_CONDITIONS for s in size.tolist()]
        return list(
            map(
                WireTrade,
                self._names[sym].tolist(),
                sec.exchange[a:b].tolist(),
                map(str, seq),
                self._tapes[sym].tolist(),
                sec.price[a:b].tolist(),
                size.tolist(),
                sec.t_ms[a:b].tolist(),
                seq,
                conds,
            )
        )


def _u_mean() -> float:
    u = (np.arange(23_400) + 0.5) / 23_400
    shape = 1.0 + 3.2 * np.exp(-u / 0.05) + 3.0 * np.exp(-(1.0 - u) / 0.06)
    return float(shape.mean())


_U_MEAN: Final = _u_mean()
