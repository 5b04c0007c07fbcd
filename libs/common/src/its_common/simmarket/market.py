"""The synthetic market: a deterministic function of (seed, symbols, anchor day, day).

Model, per trading day (New York date), built to show the stylized facts of real large-cap
stocks (``its-marketsim facts`` measures them; the simulator's README lists the ranges):

- Volatility is stochastic: a day level (lognormal, partly common to all symbols) times a
  per-minute multiplier from two Ornstein-Uhlenbeck log-volatility components (about 10
  minutes and 2 hours, partly common), times the intraday U shape. This gives fat tails of
  1-minute returns, volatility clustering that decays slowly, and days of different volatility.
  A few jumps a day (per symbol and common) fatten the tails further.
- Mid prices follow a correlated (Cholesky, constant correlation) log random walk on a
  one-second grid over the extended session (04:00 to close + 4 h). The level of each day chains
  from the anchor day (where the configured start prices hold) through each day's path and an
  overnight gap, forward and backward.
- Trade activity is a Poisson process per second whose intensity follows the U shape (busy open,
  busiest close) and the volatility multiplier (busy when volatile), a small flat rate in
  extended hours, and a random per-day level.
- The NBBO changes only at quote times (Poisson, ``quotes_per_trade`` per trade): each quote
  shows the mid price then with a spread of one or more ticks (wider for dearer stocks and in
  extended hours). Trades print against the prevailing quote: at the bid, the ask or the
  midpoint, and about 1.5 % one or more ticks outside (stale or sweeping prints), so about 98 %
  of trades are inside the quote. Without emitted quotes the same NBBO is used internally, so
  trade prices do not depend on whether quotes are sent.
- Trade sizes depend on the price: odd lots (more of them for dearer stocks) and round or
  mixed lots with a Pareto tail (exponent 1.5), fewer shares for dearer stocks.
- Auctions: the listing market's opening cross (condition 17) in the first second of the
  regular session (continuous trading starts after it) and closing cross (19) in the last
  millisecond of the regular session (so a regular-hours feed carries it; real Nasdaq closing
  crosses print at 16:00:00.0x), each followed by its official open/close re-print (16/15,
  which update no bar field); the closing cross is about 6-13 % of the continuous volume.
- Conditions: 37 odd lot, 14 intermarket sweep, 12 Form T (extended hours), 32 sold out of
  sequence (a late report), 15/16/17/19 auctions. A few regular-hours minutes get late reports:
  trades printed up to 15 minutes after their minute ended, which makes the ``AM`` bar be
  re-sent.
- Sequence numbers increase per ticker with gaps over trades and quotes together, in time order
  (a late report keeps the number of its execution time); trade ids are unique per ticker and
  day.

With ``SimConfig.demo_pattern`` (off by default; the demo market of ``make run``) a planted,
documented pattern is added to the mid-price path (:mod:`.pattern`): nothing random changes.

Every random draw comes from a numpy ``SeedSequence`` keyed by (seed, day, stream, symbol), so
any day can be generated on its own, in any order, by the WebSocket stream or by REST.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
from numpy.typing import NDArray

from its_common.simmarket import pattern, sessions
from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import F64, I64, DayData, QuoteColumns, TradeColumns

TICK: Final = 0.01
SECONDS_PER_YEAR: Final = 252 * 23_400
# Exchange ids (Polygon's ids) and their share of a Nasdaq-listed stock's trades.
EXCHANGES: Final = np.array([4, 12, 11, 8, 19, 21, 15, 7, 18, 17, 2, 20, 10, 1], dtype=np.int16)
EXCHANGE_WEIGHTS: Final = np.array([40, 14, 7, 7, 6, 6, 3, 3, 3, 2, 3, 3, 2, 1], dtype=np.float64)
LIT_EXCHANGES: Final = EXCHANGES[1:]
LIT_WEIGHTS: Final = EXCHANGE_WEIGHTS[1:] / EXCHANGE_WEIGHTS[1:].sum()
TRF_IDS: Final = np.array([201, 202, 203], dtype=np.int16)
TRF_WEIGHTS: Final = np.array([0.3, 0.45, 0.25])
# The listing exchange (where the auctions print) by tape: NYSE, NYSE Arca, Nasdaq.
LISTING_EXCHANGE: Final = {1: 10, 2: 11, 3: 12}
# Odd-lot sizes: 1-99 shares, small and round numbers favoured.
ODD_SIZES: Final = np.arange(1, 100, dtype=np.int32)
ODD_WEIGHTS: Final = (
    1.0
    / np.sqrt(ODD_SIZES)
    * np.where(ODD_SIZES % 10 == 0, 4.0, np.where(ODD_SIZES % 5 == 0, 2.5, 1.0))
    * np.where(ODD_SIZES == 1, 3.0, 1.0)
)
LOT_TAIL: Final = 1.5  # Pareto exponent of round/mixed lot sizes
MAX_SIZE: Final = 2_000_000
QUOTE_SIZES: Final = np.array([100, 200, 300, 400, 500, 800, 1000, 2000], dtype=np.int32)
QUOTE_SIZE_WEIGHTS: Final = np.array([40, 20, 12, 8, 8, 5, 5, 2], dtype=np.float64)

# Stochastic volatility: log-volatility components (time constant in minutes, share of the
# variance common to all symbols) and the total standard deviation of the log multiplier.
VOL_COMPONENTS: Final = ((10.0, 0.45), (120.0, 0.55))
VOL_COMMON: Final = 0.6
VOL_SD: Final = 0.5
DAY_VOL_SD: Final = 0.35  # log-sd of a day's volatility level
JUMPS_PER_DAY: Final = 1.5  # per symbol, regular hours, plus as many common ones
JUMP_SIZE: Final = 5.0  # in standard deviations of a 1-minute return
OUTSIDE_QUOTE: Final = 0.015  # share of trades printed outside the prevailing quote

COND_FORM_T, COND_ISO, COND_OFFICIAL_CLOSE, COND_OFFICIAL_OPEN = 1, 2, 4, 8
COND_OPENING_TRADE, COND_CLOSING_TRADE, COND_LATE, COND_ODD_LOT = 16, 32, 64, 128
_COND_CODES: Final = (
    (COND_FORM_T, 12),
    (COND_ISO, 14),
    (COND_OFFICIAL_CLOSE, 15),
    (COND_OFFICIAL_OPEN, 16),
    (COND_OPENING_TRADE, 17),
    (COND_CLOSING_TRADE, 19),
    (COND_LATE, 32),
    (COND_ODD_LOT, 37),
)
COND_TABLE: Final = tuple(
    tuple(code for bit, code in _COND_CODES if mask & bit) for mask in range(256)
)
# Auction prints appended to each day: (condition bits, share of the day's volume range).
_OPEN, _OFFICIAL_OPEN, _CLOSE, _OFFICIAL_CLOSE = range(1, 5)

_TRADE_FIELDS: Final = (
    "sym", "t_ns", "report_ms", "price", "size", "exchange", "cond", "seq",
    "trf_id", "part_delta_ns", "trf_delta_ns",
)  # fmt: skip

# Random streams
_PATH, _GAP, _ACTIVITY, _TRADES, _QCOUNT, _QUOTES, _LATE, _SEQGAP = range(1, 9)
_VOL, _JUMPS, _QPRICE, _AUCTION = range(9, 13)


def _symbol_key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


@dataclass
class _Nbbo:
    """One symbol's quote times and prices (the NBBO changes only at these times)."""

    t_ns: I64
    bid: F64
    ask: F64
    seq: I64


@dataclass
class QuoteMaker:
    """What a day's quotes are made from (:meth:`MarketGenerator.make_quotes`): picklable, so
    another process can make them without generating the day again."""

    session: sessions.TradingDay
    nbbos: list[_Nbbo]
    window: tuple[int, int]


class MarketGenerator:
    """Generates (and caches) :class:`DayData` for any trading day."""

    def __init__(self, config: SimConfig, anchor: date, cache_days: int = 2) -> None:
        self.config = config
        self.symbols: tuple[str, ...] = config.symbols
        self.anchor = anchor
        # The price path is generated for the symbols in sorted order, so the configured order
        # does not change any value.
        self._path_order = sorted(range(len(self.symbols)), key=lambda i: self.symbols[i])
        n = len(self.symbols)
        corr = np.full((n, n), config.correlation) + np.eye(n) * (1 - config.correlation)
        self._chol = np.linalg.cholesky(corr)
        self._set_key = _symbol_key(",".join(sorted(self.symbols)))
        self._sigma = np.array(
            [config.annual_volatility(s) / np.sqrt(SECONDS_PER_YEAR) for s in self.symbols]
        )
        self._levels: dict[date, NDArray[np.float64]] = {}
        self._path_cache: dict[date, tuple[F64, F64]] = {}
        self._cache: OrderedDict[date, DayData | None] = OrderedDict()
        self._cache_days = cache_days
        self._lock = threading.RLock()
        self._day_locks: dict[date, threading.Lock] = {}

    # ---- windows -----------------------------------------------------------------------
    def window(self, day: sessions.TradingDay) -> tuple[int, int]:
        start, end = day.window(self.config.extended_hours)
        return start, end + 1  # the last minute's bar is emitted at the close itself

    def first_window_after(self, ms: int) -> tuple[date, int, int] | None:
        current = sessions.ny_date(ms)
        found = sessions.trading_day(current)
        for _ in range(30):
            if found is not None:
                start, end = self.window(found)
                if end > ms:
                    return found.day, start, end
            found = sessions.next_trading_day(found.day if found else current)
            if found is None:
                return None
        return None

    def last_window_before(self, ms: int) -> tuple[date, int, int] | None:
        current = sessions.ny_date(ms)
        found = sessions.trading_day(current)
        for _ in range(30):
            if found is not None:
                start, end = self.window(found)
                if start <= ms:
                    return found.day, start, end
            found = sessions.previous_trading_day(found.day if found else current)
            if found is None:
                return None
        return None

    # ---- days --------------------------------------------------------------------------
    def day(self, day: date) -> DayData | None:
        with self._lock:
            if day in self._cache:
                self._cache.move_to_end(day)
                return self._cache[day]
            lock = self._day_locks.setdefault(day, threading.Lock())
        with lock:
            with self._lock:
                if day in self._cache:
                    return self._cache[day]
            session = sessions.trading_day(day)
            data = self._generate(session) if session is not None else None
            with self._lock:
                self._cache[day] = data
                while len(self._cache) > self._cache_days:
                    self._cache.popitem(last=False)
                self._day_locks.pop(day, None)
            return data

    def cached(self, day: date) -> tuple[bool, DayData | None]:
        """(True, the day) when it is in the cache, else (False, None); never generates."""
        with self._lock:
            if day in self._cache:
                self._cache.move_to_end(day)
                return True, self._cache[day]
            return False, None

    def adopt(self, day: date, data: DayData | None) -> DayData | None:
        """Cache a day generated elsewhere (another process, same config and anchor: the same
        values); the day already cached wins, so every reader sees one object per day."""
        with self._lock:
            if day in self._cache:
                self._cache.move_to_end(day)
                return self._cache[day]
            self._cache[day] = data
            while len(self._cache) > self._cache_days:
                self._cache.popitem(last=False)
            return data

    def _rng(self, day: date, stream: int, symbol: str | None = None) -> np.random.Generator:
        key = [self.config.seed & 0xFFFFFFFF, day.toordinal(), stream, self._set_key]
        if symbol is not None:
            key.append(_symbol_key(symbol))
        return np.random.default_rng(np.random.SeedSequence(key))

    def _grid(self, session: sessions.TradingDay) -> tuple[int, int, NDArray[np.float64]]:
        """(grid start ms, seconds, activity shape per second) over the extended session.

        The regular session's shape (mean 1): a busy open decaying over about 20 minutes and a
        busier close building over the last 30 minutes (the closing cross comes on top)."""
        start = session.pre_open_ms
        n = (session.post_close_ms - start) // 1000
        secs = np.arange(n, dtype=np.float64)
        reg0 = (session.open_ms - start) / 1000
        reg_n = (session.close_ms - session.open_ms) / 1000
        u = (secs - reg0) / reg_n
        regular = (u >= 0) & (u < 1)
        shape = np.where(
            regular,
            1.0 + 3.2 * np.exp(-u / 0.05) + 3.0 * np.exp(-(1.0 - u) / 0.06),
            0.0,
        )
        shape[regular] /= shape[regular].mean()
        return start, int(n), shape

    def _volatility(self, day: date, n: int) -> F64:
        """Per-second volatility multiplier of each symbol, shape (seconds, symbols).

        A day level times a per-minute stochastic multiplier ``exp(x - VOL_SD**2)`` (mean
        square 1), ``x`` a sum of Ornstein-Uhlenbeck components partly common to all symbols."""
        k = len(self.symbols)
        rng = self._rng(day, _VOL)
        minutes = n // 60 + 1
        x = np.zeros((minutes, k))
        for tau, share in VOL_COMPONENTS:
            phi = float(np.exp(-1.0 / tau))
            scale = VOL_SD * np.sqrt(share)
            shocks = rng.standard_normal((minutes, 1 + k))
            state = shocks[0].copy()
            out = np.empty((minutes, 1 + k))
            out[0] = state
            innovation = np.sqrt(1 - phi * phi)
            for m in range(1, minutes):
                state = phi * state + innovation * shocks[m]
                out[m] = state
            common, own = out[:, :1], out[:, 1:][:, np.argsort(self._path_order)]
            x += scale * (np.sqrt(VOL_COMMON) * common + np.sqrt(1 - VOL_COMMON) * own)
        level = rng.standard_normal(1 + k)
        day_x = DAY_VOL_SD * (
            np.sqrt(VOL_COMMON) * level[0]
            + np.sqrt(1 - VOL_COMMON) * level[1:][np.argsort(self._path_order)]
        )
        per_minute = np.exp(x - VOL_SD**2 + day_x[None, :] - DAY_VOL_SD**2)
        result: F64 = np.repeat(per_minute, 60, axis=0)[:n]
        return result

    def _path(self, day: date) -> tuple[F64, F64]:
        """(log mid-price path relative to the day's level, shape (seconds + 1, symbols);
        volatility multiplier per second, shape (seconds, symbols))."""
        with self._lock:
            cached = self._path_cache.get(day)
        if cached is not None:
            return cached
        session = sessions.trading_day(day)
        assert session is not None
        _, n, shape = self._grid(session)
        k = len(self.symbols)
        vol = self._volatility(day, n)
        rng = self._rng(day, _PATH)
        z = rng.standard_normal((n, k))
        z = z @ self._chol.T
        z = z[:, np.argsort(self._path_order)]  # sorted-symbol draws back to configured order
        vol_scale = np.where(shape > 0, np.sqrt(np.maximum(shape, 0.05)), 0.5)
        steps = z * self._sigma[None, :] * vol_scale[:, None] * vol
        # Jumps: a few per day in regular hours, per symbol and common to all.
        jumps = self._rng(day, _JUMPS)
        regular = np.flatnonzero(shape > 0)
        minute_sd = self._sigma * np.sqrt(60.0)
        for own in [None, *self._path_order]:  # draws in sorted-symbol order
            count = int(jumps.poisson(JUMPS_PER_DAY))
            at = regular[jumps.integers(0, len(regular), count)]
            size = jumps.standard_normal(count) * JUMP_SIZE
            for second, jump in zip(at.tolist(), size.tolist(), strict=True):
                cols = slice(None) if own is None else slice(own, own + 1)
                steps[second, cols] += jump * minute_sd[cols] * vol[second, cols]
        if self.config.demo_pattern:  # the demo market's planted, documented pattern
            open_second = (session.open_ms - session.pre_open_ms) // 1000
            regular_seconds = (session.close_ms - session.open_ms) // 1000
            steps += pattern.drift(self.symbols, n, open_second, regular_seconds)
        path = np.vstack([np.zeros((1, k)), np.cumsum(steps, axis=0)])
        with self._lock:
            self._path_cache[day] = (path, vol)
            if len(self._path_cache) > 4:
                self._path_cache.pop(next(iter(self._path_cache)))
        return path, vol

    def _gap(self, day: date) -> NDArray[np.float64]:
        rng = self._rng(day, _GAP)
        daily = np.array([self.config.annual_volatility(s) for s in self.symbols]) / np.sqrt(252)
        gap: NDArray[np.float64] = rng.standard_normal(len(self.symbols)) * daily * 0.3
        return gap

    def level(self, day: date) -> NDArray[np.float64]:
        """Mid price of each symbol at the start of ``day``'s extended session."""
        with self._lock:
            if day in self._levels:
                return self._levels[day]
        anchor = sessions.trading_day(self.anchor) or sessions.next_trading_day(self.anchor)
        assert anchor is not None
        start = np.array([self.config.start_price(s) for s in self.symbols])
        levels = {anchor.day: start}
        current = anchor.day
        if day > current:
            value = start
            while current < day:
                nxt = sessions.next_trading_day(current)
                assert nxt is not None
                with self._lock:
                    known = self._levels.get(nxt.day)
                if known is None:
                    path = self._path_total(current)
                    known = value * np.exp(path + self._gap(nxt.day))
                value = known
                current = nxt.day
                levels[current] = value
        elif day < current:
            value = start
            while current > day:
                prev = sessions.previous_trading_day(current)
                assert prev is not None
                with self._lock:
                    known = self._levels.get(prev.day)
                if known is None:
                    known = value / np.exp(self._path_total(prev.day) + self._gap(current))
                value = known
                current = prev.day
                levels[current] = value
        with self._lock:
            self._levels.update(levels)
            return self._levels[day]

    def _path_total(self, day: date) -> NDArray[np.float64]:
        total: NDArray[np.float64] = self._path(day)[0][-1]
        return total

    # ---- generation -------------------------------------------------------------------
    def _generate(self, session: sessions.TradingDay) -> DayData:
        day = session.day
        grid_start, n, shape = self._grid(session)
        path, vol = self._path(day)
        level = self.level(day)
        win_start, win_end = self.window(session)
        regular_secs = shape > 0
        reg_seconds = max(int(regular_secs.sum()), 1)
        ext_seconds = max(n - reg_seconds, 1)
        per_symbol: list[TradeColumns] = []
        nbbos: list[_Nbbo] = []
        quotes_per_trade = self.config.quotes_per_trade or 1.0  # the NBBO exists regardless
        for k, symbol in enumerate(self.symbols):
            activity = float(np.exp(self._rng(day, _ACTIVITY, symbol).normal(0.0, 0.2)))
            per_day = self.config.daily_trades(symbol) * activity
            busy = shape * vol[:, k]
            busy = busy / max(float(busy[regular_secs].mean()), 1e-12)
            lam = np.where(
                regular_secs,
                busy * per_day * (1 - self.config.extended_activity) / reg_seconds,
                per_day * self.config.extended_activity / ext_seconds,
            )
            rng = self._rng(day, _TRADES, symbol)
            counts = rng.poisson(lam).astype(np.int64)
            q_counts = self._rng(day, _QCOUNT, symbol).poisson(lam * quotes_per_trade)
            nbbo = self._nbbo(day, symbol, grid_start, q_counts, path[:, k], float(level[k]), shape)
            cols = self._trades(
                rng, session, grid_start, counts, path[:, k], float(level[k]), shape, nbbo
            )
            cols = self._auctions(day, symbol, session, cols, nbbo)
            self._sequence(day, symbol, n, grid_start, cols, nbbo)
            cols = self._late_reports(day, symbol, session, cols)
            cols.sym = np.full(len(cols), k, dtype=np.int8)
            cols.idnum = cols.seq + (52_983_525_000_000 + (_symbol_key(symbol) % 1000) * 10**9)
            # Keep only the trades of the window the market is configured for.
            # (SIP times are sorted: the window is one slice.)
            first, last = np.searchsorted(
                cols.t_ns, [win_start * 1_000_000, (win_end - 1) * 1_000_000]
            ).tolist()
            per_symbol.append(cols.take(slice(first, last)))
            nbbos.append(nbbo)
        merged = _concat(per_symbol)
        order = np.lexsort((merged.t_ns, merged.report_ms))
        trades = merged.take(order)

        maker = QuoteMaker(session, nbbos, (win_start, win_end))
        with_quotes = self.config.quotes_per_trade > 0
        return DayData(
            day=day,
            symbols=self.symbols,
            tapes=tuple(self.config.tape(s) for s in self.symbols),
            start_ms=win_start,
            end_ms=win_end,
            open_ms=session.open_ms,
            trades=trades,
            cond_table=COND_TABLE,
            quote_factory=functools.partial(self.make_quotes, maker) if with_quotes else None,
            quote_maker=maker if with_quotes else None,
        )

    def make_quotes(self, maker: QuoteMaker) -> QuoteColumns:
        """A day's quotes from its NBBO (any generator of the same config makes the same)."""
        return self._quotes(maker.session, maker.nbbos, maker.window)

    def _nbbo(
        self,
        day: date,
        symbol: str,
        grid_start: int,
        counts: I64,
        logpath: F64,
        level: float,
        shape: F64,
    ) -> _Nbbo:
        """Quote times and prices: the mid price at each quote time, a spread of ticks."""
        rng = self._rng(day, _QPRICE, symbol)
        total = int(counts.sum())
        sec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        offset = np.sort(
            sec * 1_000_000_000 + rng.integers(0, 1_000_000_000, total, dtype=np.int64)
        )
        frac = (offset % 1_000_000_000) / 1e9
        mid = level * np.exp(logpath[sec] + frac * (logpath[sec + 1] - logpath[sec]))
        regular = shape[sec] > 0
        extra = np.where(regular, 0.15 + 0.25 * level / 100.0, 3.0)
        spread = 1 + rng.poisson(extra)
        bid = np.maximum(np.floor((mid - spread * TICK / 2) / TICK + 1e-9) * TICK, TICK)
        ask = bid + spread * TICK
        return _Nbbo(
            t_ns=grid_start * 1_000_000 + offset,
            bid=np.round(bid, 4).astype(np.float64),
            ask=np.round(ask, 4).astype(np.float64),
            seq=np.zeros(total, dtype=np.int64),
        )

    def _trades(
        self,
        rng: np.random.Generator,
        session: sessions.TradingDay,
        grid_start: int,
        counts: I64,
        logpath: F64,
        level: float,
        shape: F64,
        nbbo: _Nbbo,
    ) -> TradeColumns:
        total = int(counts.sum())
        sec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        offset = np.sort(
            sec * 1_000_000_000 + rng.integers(0, 1_000_000_000, total, dtype=np.int64)
        )
        t_ns = grid_start * 1_000_000 + offset
        regular = shape[sec] > 0
        # Against the prevailing quote (the first one for trades before any quote).
        if len(nbbo.t_ns):
            prevailing = np.maximum(np.searchsorted(nbbo.t_ns, t_ns, side="right") - 1, 0)
            bid, ask = nbbo.bid[prevailing], nbbo.ask[prevailing]
        else:
            frac = (offset % 1_000_000_000) / 1e9
            mid = level * np.exp(logpath[sec] + frac * (logpath[sec + 1] - logpath[sec]))
            bid = np.maximum(np.floor((mid - TICK / 2) / TICK + 1e-9) * TICK, TICK)
            ask = bid + TICK
        side = rng.random(total)
        price = np.where(side < 0.465, bid, np.where(side < 0.93, ask, (bid + ask) / 2))
        outside = np.flatnonzero(rng.random(total) < OUTSIDE_QUOTE)
        away = (1 + rng.poisson(0.5, len(outside))) * TICK
        price[outside] = np.where(
            side[outside] < 0.5,
            np.maximum(bid[outside] - away, TICK),
            ask[outside] + away,
        )
        price = np.round(price, 4).astype(np.float64)
        size = _sizes(rng, total, level)
        exchange = rng.choice(EXCHANGES, total, p=EXCHANGE_WEIGHTS / EXCHANGE_WEIGHTS.sum())
        trf = exchange == 4
        trf_id = np.where(trf, rng.choice(TRF_IDS, total, p=TRF_WEIGHTS), 0).astype(np.int16)
        trf_delta = np.where(trf, rng.integers(100_000, 3_000_000, total), 0).astype(np.int32)
        part_delta = rng.integers(20_000, 2_000_000, total).astype(np.int32)
        cond = np.zeros(total, dtype=np.int16)
        cond[size < 100] |= COND_ODD_LOT
        cond[(~trf) & (rng.random(total) < 0.12)] |= COND_ISO
        cond[~regular] |= COND_FORM_T
        return TradeColumns(
            sym=np.zeros(total, dtype=np.int8),
            t_ns=t_ns,
            report_ms=t_ns // 1_000_000,
            price=price,
            size=size,
            exchange=exchange.astype(np.int16),
            cond=cond,
            seq=np.zeros(total, dtype=np.int64),
            trf_id=trf_id,
            part_delta_ns=part_delta,
            trf_delta_ns=trf_delta,
        )

    def _auctions(
        self,
        day: date,
        symbol: str,
        session: sessions.TradingDay,
        cols: TradeColumns,
        nbbo: _Nbbo,
    ) -> TradeColumns:
        """Insert the opening and closing crosses and their official re-prints."""
        rng = self._rng(day, _AUCTION, symbol)
        open_ns = session.open_ms * 1_000_000 + int(rng.integers(20_000_000, 900_000_000))
        close_ns = session.close_ms * 1_000_000 - 1_000_000 + int(rng.integers(0, 900_000))
        # Continuous trading of the regular session starts with the opening cross: the trades
        # of [open, cross) are dropped.
        lo, hi, close_at, reg_end = np.searchsorted(
            cols.t_ns,
            [session.open_ms * 1_000_000, open_ns, close_ns, session.close_ms * 1_000_000],
        ).tolist()
        continuous = int(cols.size[hi:reg_end].sum())
        sizes = [
            max(int(continuous * rng.uniform(0.01, 0.025)), 100),
            max(int(continuous * rng.uniform(0.06, 0.13)), 100),
        ]
        exchange = LISTING_EXCHANGE.get(self.config.tape(symbol), 12)
        rows: list[tuple[int, float, int, int]] = []
        for when, size, cross, official in (
            (open_ns, sizes[0], COND_OPENING_TRADE, COND_OFFICIAL_OPEN),
            (close_ns, sizes[1], COND_CLOSING_TRADE, COND_OFFICIAL_CLOSE),
        ):
            if len(nbbo.t_ns):
                i = max(int(np.searchsorted(nbbo.t_ns, when, side="right")) - 1, 0)
                price = round(round((nbbo.bid[i] + nbbo.ask[i]) / 2 / TICK) * TICK, 4)
            else:
                near = min(hi if when == open_ns else close_at, len(cols) - 1)
                price = float(cols.price[near]) if len(cols) else TICK
            rows.append((when, price, size, cross))
            rows.append((when + 1, price, size, official))
        t_ns = np.array([r[0] for r in rows], dtype=np.int64)
        extra = TradeColumns(
            sym=np.zeros(4, dtype=np.int8),
            t_ns=t_ns,
            report_ms=t_ns // 1_000_000,
            price=np.array([r[1] for r in rows]),
            size=np.array([r[2] for r in rows], dtype=np.int32),
            exchange=np.full(4, exchange, dtype=np.int16),
            cond=np.array([r[3] for r in rows], dtype=np.int16),
            seq=np.zeros(4, dtype=np.int64),
            trf_id=np.zeros(4, dtype=np.int16),
            part_delta_ns=rng.integers(20_000, 200_000, 4).astype(np.int32),
            trf_delta_ns=np.zeros(4, dtype=np.int32),
        )
        pieces = ((0, lo), (hi, close_at), (close_at, len(cols)))
        values = {}
        for name in _TRADE_FIELDS:
            column, add = getattr(cols, name), getattr(extra, name)
            (a, b), (c, d), (e, f) = pieces
            values[name] = np.concatenate((column[a:b], add[:2], column[c:d], add[2:], column[e:f]))
        return TradeColumns(**values)

    def _sequence(
        self, day: date, symbol: str, n: int, grid_start: int, cols: TradeColumns, nbbo: _Nbbo
    ) -> None:
        """Sequence numbers over trades and quotes together, in time order, with gaps."""
        gaps = self._rng(day, _SEQGAP, symbol).poisson(0.6, n + 1)
        before = np.concatenate(([0], np.cumsum(gaps)))
        t_rank = np.arange(len(cols), dtype=np.int64) + np.searchsorted(
            nbbo.t_ns, cols.t_ns, side="left"
        )
        q_rank = np.arange(len(nbbo.t_ns), dtype=np.int64) + np.searchsorted(
            cols.t_ns, nbbo.t_ns, side="right"
        )
        t_sec = np.clip((cols.t_ns // 1_000_000 - grid_start) // 1000, 0, n)
        q_sec = np.clip((nbbo.t_ns // 1_000_000 - grid_start) // 1000, 0, n)
        cols.seq = 1000 + t_rank + before[t_sec]
        nbbo.seq = 1000 + q_rank + before[q_sec]

    def _late_reports(
        self, day: date, symbol: str, session: sessions.TradingDay, cols: TradeColumns
    ) -> TradeColumns:
        """Mark a few trades of some regular-hours minutes as reported up to 15 minutes late."""
        rate = self.config.late_bar_rate
        if rate <= 0 or len(cols) == 0:
            return cols
        rng = self._rng(day, _LATE, symbol)
        t_ms = cols.t_ns // 1_000_000
        minutes = (session.close_ms - session.open_ms) // 60_000
        last_ok = minutes - 16  # late reports land before the close
        chosen = np.flatnonzero(rng.random(minutes) < rate)
        chosen = chosen[chosen < last_ok]
        starts = session.open_ms + chosen * 60_000
        lo = np.searchsorted(t_ms, starts)
        hi = np.searchsorted(t_ms, starts + 60_000)
        delays = rng.integers(1_000, 15 * 60_000, len(chosen))
        picks = rng.integers(1, 4, len(chosen))
        auction = COND_OPENING_TRADE | COND_OFFICIAL_OPEN
        for i in range(len(chosen)):
            if hi[i] <= lo[i]:
                continue
            rows = np.unique(rng.integers(lo[i], hi[i], int(picks[i])))
            rows = rows[(cols.cond[rows] & auction) == 0]
            end = int(starts[i]) + 60_000
            cols.report_ms[rows] = end + int(delays[i]) + np.arange(len(rows))
            cols.cond[rows] |= COND_LATE
        return cols

    def _quotes(
        self,
        session: sessions.TradingDay,
        nbbos: list[_Nbbo],
        window: tuple[int, int],
    ) -> QuoteColumns:
        win_start, win_end = window
        parts: list[QuoteColumns] = []
        for k, symbol in enumerate(self.symbols):
            nbbo = nbbos[k]
            rng = self._rng(session.day, _QUOTES, symbol)
            total = len(nbbo.t_ns)
            t_ms = nbbo.t_ns // 1_000_000
            keep = (t_ms >= win_start) & (t_ms < win_end - 1)
            q = QuoteColumns(
                sym=np.full(total, k, dtype=np.int8),
                t_ms=t_ms,
                bid=nbbo.bid,
                ask=nbbo.ask,
                bid_size=rng.choice(QUOTE_SIZES, total, p=QUOTE_SIZE_WEIGHTS / 100),
                ask_size=rng.choice(QUOTE_SIZES, total, p=QUOTE_SIZE_WEIGHTS / 100),
                bid_exchange=rng.choice(LIT_EXCHANGES, total, p=LIT_WEIGHTS),
                ask_exchange=rng.choice(LIT_EXCHANGES, total, p=LIT_WEIGHTS),
                seq=nbbo.seq,
            )
            parts.append(_take_quotes(q, np.flatnonzero(keep)))
        merged = QuoteColumns(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in QuoteColumns.__dataclass_fields__
            )
        )
        return _take_quotes(merged, np.argsort(merged.t_ms, kind="stable"))


def _sizes(rng: np.random.Generator, total: int, price: float) -> NDArray[np.int32]:
    """Trade sizes for a stock at ``price``: odd lots (more for dearer stocks) and round or
    mixed lots with a Pareto tail, fewer shares the dearer the stock."""
    odd_share = float(np.clip(0.22 + 0.3 * np.log10(max(price, 1.0) / 20.0), 0.1, 0.75))
    odd = rng.random(total) < odd_share
    n_odd = int(odd.sum())
    n_lots = total - n_odd
    scale = float(np.clip((150.0 / max(price, 1.0)) ** 0.5, 0.3, 4.0))
    pareto = (1.0 - rng.random(n_lots)) ** (-1.0 / LOT_TAIL)
    lots = np.maximum(np.floor(pareto * scale), 1.0) * 100
    mixed = rng.integers(1, 100, n_lots) * (rng.random(n_lots) < 0.3)
    size = np.empty(total, dtype=np.int32)
    size[odd] = rng.choice(ODD_SIZES, n_odd, p=ODD_WEIGHTS / ODD_WEIGHTS.sum())
    size[~odd] = np.minimum(lots + mixed, MAX_SIZE)
    return size


def _take_quotes(q: QuoteColumns, index: NDArray[np.intp]) -> QuoteColumns:
    return QuoteColumns(*(getattr(q, f)[index] for f in QuoteColumns.__dataclass_fields__))


def _concat(parts: list[TradeColumns]) -> TradeColumns:
    fields = [
        "sym", "t_ns", "report_ms", "price", "size", "exchange", "cond", "seq",
        "trf_id", "part_delta_ns", "trf_delta_ns", "idnum",
    ]  # fmt: skip
    values = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    return TradeColumns(**values)
