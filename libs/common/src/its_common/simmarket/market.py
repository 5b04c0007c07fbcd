"""The synthetic market: a deterministic function of (seed, symbols, anchor day, day).

Model, per trading day (New York date):

- Mid prices follow a correlated geometric Brownian motion on a one-second grid covering the
  extended session (04:00 to close + 4 h); the correlation is applied with the Cholesky factor
  of a constant-correlation matrix; volatility scales with the U-shaped activity curve. The
  level of each day chains from the anchor day (where the configured start prices hold) through
  each day's path and an overnight gap, forward and backward.
- Trades arrive as a Poisson process per second whose intensity follows a U shape over the
  regular session (busy open, busier close), a small flat rate in extended hours, and a random
  per-day activity level. Each trade prints at the bid, the ask or the midpoint of a 1-3 tick
  spread around the mid; sizes come from a discrete distribution of round and odd lots;
  exchanges from realistic weights (FINRA TRF ``4`` about 40 %, with a TRF id and timestamp).
- Conditions: 37 odd lot, 14 intermarket sweep, 12 Form T (extended hours), 32 sold out of
  sequence (a late report). A few regular-hours minutes get late reports: trades printed up to
  15 minutes after their minute ended, which makes the ``AM`` bar be re-sent.
- Sequence numbers increase per ticker with gaps (trades and quotes draw from one counter);
  trade ids are unique per ticker and day.

Every random draw comes from a numpy ``SeedSequence`` keyed by (seed, day, stream, symbol), so
any day can be generated on its own, in any order, by the WebSocket stream or by REST.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from datetime import date
from typing import Final

import numpy as np
from numpy.typing import NDArray

from its_common.simmarket import sessions
from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import I64, DayData, QuoteColumns, TradeColumns

TICK: Final = 0.01
SECONDS_PER_YEAR: Final = 252 * 23_400
# Exchange ids (Polygon's ids) and their share of a Nasdaq-listed stock's trades.
EXCHANGES: Final = np.array([4, 12, 11, 8, 19, 21, 15, 7, 18, 17, 2, 20, 10, 1], dtype=np.int16)
EXCHANGE_WEIGHTS: Final = np.array([40, 14, 7, 7, 6, 6, 3, 3, 3, 2, 3, 3, 2, 1], dtype=np.float64)
LIT_EXCHANGES: Final = EXCHANGES[1:]
LIT_WEIGHTS: Final = EXCHANGE_WEIGHTS[1:] / EXCHANGE_WEIGHTS[1:].sum()
TRF_IDS: Final = np.array([201, 202, 203], dtype=np.int16)
TRF_WEIGHTS: Final = np.array([0.3, 0.45, 0.25])
SIZES: Final = np.array(
    [1, 2, 3, 5, 7, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 80, 90,
     100, 150, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 5000, 10000],
    dtype=np.int32,
)  # fmt: skip
SIZE_WEIGHTS: Final = np.array(
    [12, 8, 5, 6, 3, 7, 2, 4, 5, 3, 3, 2, 3, 2, 1, 1, 1,
     16, 1, 5, 3, 2, 2, 1, 1, 1.5, 0.4, 0.5, 0.2, 0.05],
    dtype=np.float64,
)  # fmt: skip
QUOTE_SIZES: Final = np.array([100, 200, 300, 400, 500, 800, 1000, 2000], dtype=np.int32)
QUOTE_SIZE_WEIGHTS: Final = np.array([40, 20, 12, 8, 8, 5, 5, 2], dtype=np.float64)

COND_ISO, COND_FORM_T, COND_ODD_LOT, COND_LATE = 1, 2, 4, 8
_COND_CODES: Final = ((COND_FORM_T, 12), (COND_ISO, 14), (COND_LATE, 32), (COND_ODD_LOT, 37))
COND_TABLE: Final = tuple(
    tuple(code for bit, code in _COND_CODES if mask & bit) for mask in range(16)
)

# Random streams
_PATH, _GAP, _ACTIVITY, _TRADES, _QCOUNT, _QUOTES, _LATE, _SEQGAP = range(1, 9)


def _symbol_key(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


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
        self._path_cache: dict[date, NDArray[np.float64]] = {}
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

    def _rng(self, day: date, stream: int, symbol: str | None = None) -> np.random.Generator:
        key = [self.config.seed & 0xFFFFFFFF, day.toordinal(), stream, self._set_key]
        if symbol is not None:
            key.append(_symbol_key(symbol))
        return np.random.default_rng(np.random.SeedSequence(key))

    def _grid(self, session: sessions.TradingDay) -> tuple[int, int, NDArray[np.float64]]:
        """(grid start ms, seconds, activity shape per second) over the extended session."""
        start = session.pre_open_ms
        n = (session.post_close_ms - start) // 1000
        secs = np.arange(n, dtype=np.float64)
        reg0 = (session.open_ms - start) / 1000
        reg_n = (session.close_ms - session.open_ms) / 1000
        u = (secs - reg0) / reg_n
        regular = (u >= 0) & (u < 1)
        shape = np.where(
            regular,
            1.0 + 3.0 * np.exp(-u / 0.04) + 2.0 * np.exp(-(1.0 - u) / 0.03),
            0.0,
        )
        shape[regular] /= shape[regular].mean()
        return start, int(n), shape

    def _path(self, day: date) -> NDArray[np.float64]:
        """Log mid-price path relative to the day's level, shape (seconds + 1, symbols)."""
        with self._lock:
            cached = self._path_cache.get(day)
        if cached is not None:
            return cached
        session = sessions.trading_day(day)
        assert session is not None
        _, n, shape = self._grid(session)
        rng = self._rng(day, _PATH)
        z = rng.standard_normal((n, len(self.symbols)))
        z = z @ self._chol.T
        z = z[:, np.argsort(self._path_order)]  # sorted-symbol draws back to configured order
        vol_scale = np.where(shape > 0, np.sqrt(np.maximum(shape, 0.05)), 0.5)
        steps = z * self._sigma[None, :] * vol_scale[:, None]
        path = np.vstack([np.zeros((1, len(self.symbols))), np.cumsum(steps, axis=0)])
        with self._lock:
            self._path_cache[day] = path
            if len(self._path_cache) > 4:
                self._path_cache.pop(next(iter(self._path_cache)))
        return path

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
        total: NDArray[np.float64] = self._path(day)[-1]
        return total

    # ---- generation -------------------------------------------------------------------
    def _generate(self, session: sessions.TradingDay) -> DayData:
        day = session.day
        grid_start, n, shape = self._grid(session)
        path = self._path(day)
        level = self.level(day)
        win_start, win_end = self.window(session)
        regular_secs = shape > 0
        per_symbol: list[TradeColumns] = []
        quote_counts: list[I64] = []
        quote_bases: list[I64] = []
        for k, symbol in enumerate(self.symbols):
            activity = float(np.exp(self._rng(day, _ACTIVITY, symbol).normal(0.0, 0.2)))
            per_day = self.config.daily_trades(symbol) * activity
            reg_seconds = max(int(regular_secs.sum()), 1)
            ext_seconds = max(n - reg_seconds, 1)
            lam = np.where(
                regular_secs,
                shape * per_day * (1 - self.config.extended_activity) / reg_seconds,
                per_day * self.config.extended_activity / ext_seconds,
            )
            rng = self._rng(day, _TRADES, symbol)
            counts = rng.poisson(lam).astype(np.int64)
            q_counts = self._rng(day, _QCOUNT, symbol).poisson(lam * self.config.quotes_per_trade)
            gaps = self._rng(day, _SEQGAP, symbol).poisson(0.3, n)
            seq_base = 1000 + np.concatenate(([0], np.cumsum(counts + q_counts + gaps)[:-1]))
            quote_counts.append(q_counts.astype(np.int64))
            quote_bases.append(seq_base + counts)
            cols = self._trades(
                rng, session, grid_start, counts, seq_base, path[:, k], float(level[k]), shape
            )
            cols = self._late_reports(day, symbol, session, cols)
            cols.sym = np.full(len(cols), k, dtype=np.int8)
            cols.idnum = cols.seq + (52_983_525_000_000 + (_symbol_key(symbol) % 1000) * 10**9)
            # Keep only the trades of the window the market is configured for.
            keep = (cols.t_ns // 1_000_000 >= win_start) & (cols.t_ns // 1_000_000 < win_end - 1)
            per_symbol.append(cols.take(np.flatnonzero(keep)))
        merged = _concat(per_symbol)
        order = np.lexsort((merged.t_ns, merged.report_ms))
        trades = merged.take(order)

        def quotes() -> QuoteColumns:
            return self._quotes(
                session, grid_start, path, level, quote_counts, quote_bases, (win_start, win_end)
            )

        return DayData(
            day=day,
            symbols=self.symbols,
            tapes=tuple(self.config.tape(s) for s in self.symbols),
            start_ms=win_start,
            end_ms=win_end,
            open_ms=session.open_ms,
            trades=trades,
            cond_table=COND_TABLE,
            quote_factory=quotes if self.config.quotes_per_trade > 0 else None,
        )

    def _trades(
        self,
        rng: np.random.Generator,
        session: sessions.TradingDay,
        grid_start: int,
        counts: I64,
        seq_base: I64,
        logpath: NDArray[np.float64],
        level: float,
        shape: NDArray[np.float64],
    ) -> TradeColumns:
        total = int(counts.sum())
        sec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        offset = np.sort(
            sec * 1_000_000_000 + rng.integers(0, 1_000_000_000, total, dtype=np.int64)
        )
        frac = (offset % 1_000_000_000) / 1e9
        logmid = logpath[sec] + frac * (logpath[sec + 1] - logpath[sec])
        mid = level * np.exp(logmid)
        regular = shape[sec] > 0
        spread = 1 + rng.poisson(np.where(regular, 0.25, 3.0))
        bid = np.floor((mid - spread * TICK / 2) / TICK + 1e-9) * TICK
        bid = np.maximum(bid, TICK)
        ask = bid + spread * TICK
        side = rng.random(total)
        price = np.where(side < 0.46, bid, np.where(side < 0.92, ask, (bid + ask) / 2))
        price = np.round(price, 4).astype(np.float64)
        size = rng.choice(SIZES, total, p=SIZE_WEIGHTS / SIZE_WEIGHTS.sum())
        exchange = rng.choice(EXCHANGES, total, p=EXCHANGE_WEIGHTS / EXCHANGE_WEIGHTS.sum())
        trf = exchange == 4
        trf_id = np.where(trf, rng.choice(TRF_IDS, total, p=TRF_WEIGHTS), 0).astype(np.int16)
        trf_delta = np.where(trf, rng.integers(100_000, 3_000_000, total), 0).astype(np.int32)
        part_delta = rng.integers(20_000, 2_000_000, total).astype(np.int32)
        cond = np.zeros(total, dtype=np.int16)
        cond[size < 100] |= COND_ODD_LOT
        cond[(~trf) & (rng.random(total) < 0.12)] |= COND_ISO
        cond[~regular] |= COND_FORM_T
        first_of_sec = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(total, dtype=np.int64) - np.repeat(first_of_sec, counts)
        t_ns = grid_start * 1_000_000 + offset
        return TradeColumns(
            sym=np.zeros(total, dtype=np.int8),
            t_ns=t_ns,
            report_ms=t_ns // 1_000_000,
            price=price,
            size=size.astype(np.int32),
            exchange=exchange.astype(np.int16),
            cond=cond,
            seq=seq_base[sec] + rank,
            trf_id=trf_id,
            part_delta_ns=part_delta,
            trf_delta_ns=trf_delta,
        )

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
        for i in range(len(chosen)):
            if hi[i] <= lo[i]:
                continue
            rows = np.unique(rng.integers(lo[i], hi[i], int(picks[i])))
            end = int(starts[i]) + 60_000
            cols.report_ms[rows] = end + int(delays[i]) + np.arange(len(rows))
            cols.cond[rows] |= COND_LATE
        return cols

    def _quotes(
        self,
        session: sessions.TradingDay,
        grid_start: int,
        path: NDArray[np.float64],
        level: NDArray[np.float64],
        quote_counts: list[I64],
        quote_bases: list[I64],
        window: tuple[int, int],
    ) -> QuoteColumns:
        win_start, win_end = window
        parts: list[QuoteColumns] = []
        _, _, shape = self._grid(session)
        for k, symbol in enumerate(self.symbols):
            counts = quote_counts[k]
            rng = self._rng(session.day, _QUOTES, symbol)
            total = int(counts.sum())
            sec = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            offset = np.sort(sec * 1000 + rng.integers(0, 1000, total, dtype=np.int64))
            frac = (offset % 1000) / 1000
            logmid = path[sec, k] + frac * (path[sec + 1, k] - path[sec, k])
            mid = level[k] * np.exp(logmid)
            regular = shape[sec] > 0
            spread = 1 + rng.poisson(np.where(regular, 0.25, 3.0))
            bid = np.maximum(np.floor((mid - spread * TICK / 2) / TICK + 1e-9) * TICK, TICK)
            ask = bid + spread * TICK
            first_of_sec = np.concatenate(([0], np.cumsum(counts)[:-1]))
            rank = np.arange(total, dtype=np.int64) - np.repeat(first_of_sec, counts)
            base = quote_bases[k]  # quotes take the sequence numbers after the second's trades
            t_ms = grid_start + offset
            keep = (t_ms >= win_start) & (t_ms < win_end - 1)
            q = QuoteColumns(
                sym=np.full(total, k, dtype=np.int8),
                t_ms=t_ms,
                bid=np.round(bid, 4),
                ask=np.round(ask, 4),
                bid_size=rng.choice(QUOTE_SIZES, total, p=QUOTE_SIZE_WEIGHTS / 100),
                ask_size=rng.choice(QUOTE_SIZES, total, p=QUOTE_SIZE_WEIGHTS / 100),
                bid_exchange=rng.choice(LIT_EXCHANGES, total, p=LIT_WEIGHTS),
                ask_exchange=rng.choice(LIT_EXCHANGES, total, p=LIT_WEIGHTS),
                seq=base[sec] + rank,
            )
            parts.append(_take_quotes(q, np.flatnonzero(keep)))
        merged = QuoteColumns(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in QuoteColumns.__dataclass_fields__
            )
        )
        return _take_quotes(merged, np.argsort(merged.t_ms, kind="stable"))


def _take_quotes(q: QuoteColumns, index: NDArray[np.intp]) -> QuoteColumns:
    return QuoteColumns(*(getattr(q, f)[index] for f in QuoteColumns.__dataclass_fields__))


def _concat(parts: list[TradeColumns]) -> TradeColumns:
    fields = [
        "sym", "t_ns", "report_ms", "price", "size", "exchange", "cond", "seq",
        "trf_id", "part_delta_ns", "trf_delta_ns", "idnum",
    ]  # fmt: skip
    values = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    return TradeColumns(**values)
