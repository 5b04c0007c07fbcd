"""Minute bars for training and backtests: from the database (``market_data``) or a file, and the
precomputed arrays the environment steps through (features, prices, episode bounds)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from numpy.typing import NDArray

from its_common.calendar import NEW_YORK, Session, sessions_between
from its_common.db.sources import SOURCE_REST_PROVISIONAL
from its_common.features import N_FEATURES, BarArrays, batch_features

F64 = NDArray[np.float64]
COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")


class DataError(ValueError):
    """Bars that cannot be used (missing file, columns, symbols, or no session in range)."""


@dataclass(frozen=True)
class SymbolBars:
    bars: BarArrays
    last_close: float | None  # the last close before the range (fills a missing first minute)


def _utc_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    start = datetime.combine(first, datetime.min.time(), tzinfo=NEW_YORK).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=NEW_YORK)
    return start, end.astimezone(UTC)


def _to_ms(column: pd.Series) -> NDArray[np.int64]:
    if pd.api.types.is_numeric_dtype(column):
        return np.asarray(column.to_numpy(dtype=np.int64), dtype=np.int64)
    parsed = pd.to_datetime(column, utc=True)
    ms = parsed.astype("datetime64[ms, UTC]").astype("int64")
    return np.asarray(ms.to_numpy(dtype=np.int64), dtype=np.int64)


def frame_to_bars(
    frame: pd.DataFrame, symbols: Sequence[str], first: date, last: date
) -> dict[str, SymbolBars]:
    """Split a bars table (columns symbol, ts, open, high, low, close, volume[, vwap])."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"bars need the columns {', '.join(COLUMNS)}; missing {', '.join(missing)}")
    start, end = _utc_bounds(first, last)
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    ts_all = _to_ms(frame["ts"])
    symbol_col = frame["symbol"].astype(str).str.upper().to_numpy()
    out: dict[str, SymbolBars] = {}
    for symbol in symbols:
        mine = symbol_col == symbol
        ts = ts_all[mine]
        order = np.argsort(ts, kind="stable")
        sub = frame.loc[mine].iloc[order]
        ts = ts[order]
        inside = (ts >= start_ms) & (ts < end_ms)
        before = np.flatnonzero(ts < start_ms)
        last_close = float(sub["close"].iloc[before[-1]]) if len(before) else None
        vwap = sub["vwap"].to_numpy(dtype=np.float64) if "vwap" in sub.columns else None
        out[symbol] = SymbolBars(
            bars=BarArrays.from_columns(
                ts[inside],
                sub["open"].to_numpy(dtype=np.float64)[inside],
                sub["high"].to_numpy(dtype=np.float64)[inside],
                sub["low"].to_numpy(dtype=np.float64)[inside],
                sub["close"].to_numpy(dtype=np.float64)[inside],
                sub["volume"].to_numpy(dtype=np.float64)[inside],
                None if vwap is None else vwap[inside],
            ),
            last_close=last_close,
        )
    return out


def read_file(path: Path, symbols: Sequence[str], first: date, last: date) -> dict[str, SymbolBars]:
    """Bars from a Parquet or CSV file (``ts`` as an ISO date-time or Unix milliseconds)."""
    if not path.exists():
        raise DataError(f"no such bars file: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".gz"):
        frame = pd.read_csv(path)
    else:
        raise DataError(f"bars file must be .parquet or .csv, not {path.name}")
    return frame_to_bars(frame, symbols, first, last)


def read_database(
    conn_kwargs: dict[str, Any], symbols: Sequence[str], first: date, last: date
) -> dict[str, SymbolBars]:
    """Bars from ``market_data`` (newest revision per minute: the table keeps one row per key;
    provisional REST bars, possibly partial, are left out)."""
    start, end = _utc_bounds(first, last)
    out: dict[str, SymbolBars] = {}
    with psycopg.connect(**conn_kwargs) as conn:
        for symbol in symbols:
            rows = conn.execute(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume,"
                " vwap FROM market_data WHERE symbol = %s AND ts >= %s AND ts < %s"
                " AND source <> %s ORDER BY ts",
                (symbol, start, end, SOURCE_REST_PROVISIONAL),
            ).fetchall()
            before = conn.execute(
                "SELECT close FROM market_data WHERE symbol = %s AND ts < %s AND source <> %s"
                " ORDER BY ts DESC LIMIT 1",
                (symbol, start, SOURCE_REST_PROVISIONAL),
            ).fetchone()
            arr = np.array(
                [[r[0], r[1], r[2], r[3], r[4], r[5], np.nan if r[6] is None else r[6]]
                 for r in rows],
                dtype=np.float64,
            ).reshape(-1, 7)  # fmt: skip
            out[symbol] = SymbolBars(
                bars=BarArrays.from_columns(
                    arr[:, 0].astype(np.int64),
                    arr[:, 1],
                    arr[:, 2],
                    arr[:, 3],
                    arr[:, 4],
                    arr[:, 5],
                    arr[:, 6],
                ),
                last_close=None if before is None else float(before[0]),
            )
    return out


def bars_present(
    conn_kwargs: dict[str, Any], symbols: Sequence[str], first: date, last: date
) -> str:
    """What is missing for training on [first, last] ("" = every symbol has bars there)."""
    start, end = _utc_bounds(first, last)
    with psycopg.connect(**conn_kwargs) as conn:
        missing = [
            symbol
            for symbol in symbols
            if conn.execute(
                "SELECT 1 FROM market_data WHERE symbol = %s AND ts >= %s AND ts < %s"
                " AND source <> %s LIMIT 1",
                (symbol, start, end, SOURCE_REST_PROVISIONAL),
            ).fetchone()
            is None
        ]
    return f"no bars of {', '.join(missing)} from {first} to {last}" if missing else ""


def wait_for_bars(
    conn_kwargs: dict[str, Any],
    symbols: Sequence[str],
    first: date,
    last: date,
    timeout_s: float,
    *,
    poll_s: float = 30.0,
    log: Callable[[str], None] = print,
) -> None:
    """Wait until the database holds bars of every symbol in the range (a fresh install: the
    schema and the data arrive after the trainer Job starts). DataError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_problem = ""
    while True:
        try:
            problem = bars_present(conn_kwargs, symbols, first, last)
        except psycopg.Error as exc:  # unreachable, or the schema not migrated yet
            problem = f"database not ready: {type(exc).__name__}: {exc}"
        if not problem:
            return
        if time.monotonic() >= deadline:
            raise DataError(f"gave up after {timeout_s:.0f}s: {problem}")
        if problem != last_problem:
            log(f"waiting for training data: {problem}")
            last_problem = problem
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class PairData:
    """Two symbols on one minute grid, restricted to the rows the environment can use.

    Rows are grouped in episodes (one per session); ``bounds[e]:bounds[e+1]`` are episode e's
    rows. ``features[t, i]`` is symbol i's feature vector of bar t (known at t's close).
    """

    symbols: tuple[str, str]
    sessions: tuple[Session, ...]  # one per episode
    ts: NDArray[np.int64]
    features: NDArray[np.float64]  # (n, 2, 12)
    open: F64  # (n, 2)
    close: F64  # (n, 2)
    filled: NDArray[np.bool_]  # (n, 2)
    bounds: NDArray[np.int64]  # (episodes + 1,)

    @property
    def episodes(self) -> int:
        return len(self.bounds) - 1

    @property
    def first_day(self) -> date:
        return self.sessions[0].day

    @property
    def last_day(self) -> date:
        return self.sessions[-1].day

    def episodes_slice(self, start: int, stop: int) -> PairData:
        """Episodes ``start .. stop - 1`` alone (features are session-local: the values are
        those of the whole)."""
        if not 0 <= start < stop <= self.episodes:
            raise ValueError(f"episodes {start}..{stop} outside 0..{self.episodes}")
        lo, hi = int(self.bounds[start]), int(self.bounds[stop])
        return PairData(
            symbols=self.symbols,
            sessions=self.sessions[start:stop],
            ts=self.ts[lo:hi],
            features=self.features[lo:hi],
            open=self.open[lo:hi],
            close=self.close[lo:hi],
            filled=self.filled[lo:hi],
            bounds=self.bounds[start : stop + 1] - lo,
        )


def build_pair(
    bars: dict[str, SymbolBars], symbols: tuple[str, str], first: date, last: date
) -> PairData:
    """Features for both symbols over the sessions from ``first`` to ``last``; an episode is a
    session's rows from the first minute both symbols have a price (at least two rows)."""
    sessions = sessions_between(first, last)
    if not sessions:
        raise DataError(f"no trading session between {first} and {last}")
    grids = []
    values = []
    for symbol in symbols:
        if symbol not in bars or len(bars[symbol].bars) == 0:
            raise DataError(f"no bars for {symbol} between {first} and {last}")
        grid, feats = batch_features(bars[symbol].bars, sessions, bars[symbol].last_close)
        grids.append(grid)
        values.append(feats)
    ready = grids[0].ready & grids[1].ready
    keep_rows: list[NDArray[np.int64]] = []
    kept_sessions: list[Session] = []
    starts = grids[0].session_start
    for s, session in enumerate(sessions):
        rows = np.arange(starts[s], starts[s + 1])
        rows = rows[ready[rows]]
        if len(rows) >= 2:
            keep_rows.append(rows)
            kept_sessions.append(session)
    if not keep_rows:
        raise DataError(f"no session between {first} and {last} has bars for both symbols")
    index = np.concatenate(keep_rows)
    bounds = np.concatenate([[0], np.cumsum([len(r) for r in keep_rows])]).astype(np.int64)
    features = np.stack([values[0][index], values[1][index]], axis=1)
    assert features.shape[2] == N_FEATURES
    return PairData(
        symbols=symbols,
        sessions=tuple(kept_sessions),
        ts=grids[0].ts[index],
        features=features,
        open=np.stack([grids[0].open[index], grids[1].open[index]], axis=1),
        close=np.stack([grids[0].close[index], grids[1].close[index]], axis=1),
        filled=np.stack([grids[0].filled[index], grids[1].filled[index]], axis=1),
        bounds=bounds,
    )
