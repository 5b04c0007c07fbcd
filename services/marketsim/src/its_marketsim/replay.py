"""Replay of recorded trades from a CSV or Parquet file (format in the README).

Columns use the names of Polygon's ``/v3/trades`` results, plus the ticker, so a dump of that
endpoint replays as recorded: ``ticker``, ``sip_timestamp`` (Unix ns), ``price``, ``size``
(required) and ``exchange``, ``conditions``, ``id``, ``sequence_number``, ``tape``,
``participant_timestamp``, ``trf_id``, ``trf_timestamp`` (optional). Bars are aggregated from
the replayed trades; there are no quotes. Each New York date in the file is one window, from its
first trade to a minute after its last.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from its_common.simmarket import sessions
from its_common.simmarket.config import SimConfig, default_tape
from its_common.simmarket.daydata import DayData, TradeColumns

REQUIRED = ("ticker", "sip_timestamp", "price", "size")


def _read(path: Path) -> dict[str, list[Any]]:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        table = pq.read_table(path)
        return {name: table.column(name).to_pylist() for name in table.column_names}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns: dict[str, list[Any]] = {name: [] for name in reader.fieldnames or []}
        for row in reader:
            for name, values in columns.items():
                values.append(row.get(name))
    return columns


def _conditions(value: Any) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value)
    text = str(value).strip("[]() ")
    return tuple(int(p) for p in text.replace(";", ",").replace(" ", ",").split(",") if p)


def _ints(values: list[Any] | None, n: int, default: int = 0) -> np.ndarray[Any, Any]:
    if values is None:
        return np.full(n, default, dtype=np.int64)
    return np.array([default if v in (None, "") else int(v) for v in values], dtype=np.int64)


class ReplaySource:
    """A :class:`MarketSource` over a recorded file."""

    def __init__(self, path: str | Path, config: SimConfig) -> None:
        columns = _read(Path(path))
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"replay file {path}: missing column(s) {', '.join(missing)}")
        tickers = [str(t).upper() for t in columns["ticker"]]
        n = len(tickers)
        configured = [s for s in config.symbols if s in set(tickers)]
        extra = sorted(set(tickers) - set(configured))
        self.symbols: tuple[str, ...] = tuple(configured + extra)
        index = {s: k for k, s in enumerate(self.symbols)}
        self.tapes = tuple(int(config.tapes.get(s, default_tape(s))) for s in self.symbols)
        t_ns = _ints(columns["sip_timestamp"], n)
        conds = [_conditions(v) for v in columns.get("conditions", [None] * n)]
        table = sorted(set(conds))
        cond_index = {c: i for i, c in enumerate(table)}
        self.cond_table = tuple(table)
        part = _ints(columns.get("participant_timestamp"), n, 0)
        part = np.where(part > 0, t_ns - part, 0)
        trf_ts = _ints(columns.get("trf_timestamp"), n, 0)
        trf_delta = np.where(trf_ts > 0, t_ns - trf_ts, 0)
        seq = _ints(columns.get("sequence_number"), n, -1)
        ids = columns.get("id")
        self.columns = TradeColumns(
            sym=np.array([index[t] for t in tickers], dtype=np.int8),
            t_ns=t_ns,
            report_ms=t_ns // 1_000_000,
            price=np.array([float(p) for p in columns["price"]], dtype=np.float64),
            size=_ints(columns["size"], n).astype(np.int32),
            exchange=_ints(columns.get("exchange"), n, 4).astype(np.int16),
            cond=np.array([cond_index[c] for c in conds], dtype=np.int16),
            seq=np.where(seq >= 0, seq, np.arange(n)),
            trf_id=_ints(columns.get("trf_id"), n, 0).astype(np.int16),
            part_delta_ns=np.clip(part, 0, 2**31 - 1).astype(np.int32),
            trf_delta_ns=np.clip(trf_delta, 0, 2**31 - 1).astype(np.int32),
            idnum=None if ids is not None else np.where(seq >= 0, seq, np.arange(n)),
            ids=np.array([str(i) for i in ids], dtype=object) if ids is not None else None,
        )
        order = np.lexsort((self.columns.seq, self.columns.t_ns))
        self.columns = self.columns.take(order)
        t_ms = self.columns.t_ns // 1_000_000
        days = np.array([sessions.ny_date(int(ms)).toordinal() for ms in t_ms.tolist()])
        self._days: dict[date, tuple[int, int]] = {}
        self._windows: list[tuple[date, int, int]] = []
        for ordinal in np.unique(days).tolist():
            rows = np.flatnonzero(days == ordinal)
            day = date.fromordinal(int(ordinal))
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            self._days[day] = (lo, hi)
            start = int(t_ms[lo])
            end = (int(t_ms[hi - 1]) // 60_000) * 60_000 + 60_000 + 1
            self._windows.append((day, start, end))
        self._cache: dict[date, DayData] = {}

    def day(self, day: date) -> DayData | None:
        if day in self._cache:
            return self._cache[day]
        bounds = self._days.get(day)
        if bounds is None:
            return None
        session = sessions.trading_day(day)
        window = next(w for w in self._windows if w[0] == day)
        data = DayData(
            day=day,
            symbols=self.symbols,
            tapes=self.tapes,
            start_ms=window[1],
            end_ms=window[2],
            open_ms=session.open_ms if session else window[1],
            trades=self.columns.take(slice(*bounds)),
            cond_table=self.cond_table,
        )
        self._cache[day] = data
        return data

    def first_window_after(self, ms: int) -> tuple[date, int, int] | None:
        return next((w for w in self._windows if w[2] > ms), None)

    def last_window_before(self, ms: int) -> tuple[date, int, int] | None:
        found = [w for w in self._windows if w[1] <= ms]
        return found[-1] if found else None

    @property
    def first_trade_ms(self) -> int:
        return self._windows[0][1] if self._windows else 0
