"""One trading day of market data, shared by the generator, the replay, the WebSocket and REST.

A :class:`DayData` holds every trade of one day for every symbol in columnar numpy arrays, in
*emission order* (the time each trade is reported, then its SIP time). The WebSocket stream
slices these columns by emission time; REST reads them per symbol in SIP-time order. Bars (``A``
per second, ``AM`` per minute, REST aggregates) are computed from the same trades, so every
view agrees.

Bar rules (Polygon's, documented in the simulator's README): each trade's sale conditions decide
which fields it updates (:mod:`its_common.conditions`): an odd lot counts in volume, VWAP and
count but sets no price; an official open/close re-print updates nothing; a bucket without a
price-setting trade has no bar. A trade reported late (after its minute ended) makes the
minute's ``AM`` bar be re-sent at the report time with the corrected values; ``A`` bars count
only trades reported in time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from its_common import conditions
from its_common.events import MinuteAgg, SecondAgg
from its_common.simmarket.wire import WireQuote, WireTrade

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
MINUTE_MS = 60_000
SECOND_MS = 1_000
NS_PER_MS = 1_000_000

# Event type ranks: at one emission time, trades come before quotes, then bars.
RANK_T, RANK_Q, RANK_A, RANK_AM = 0, 1, 2, 3
EVENT_TYPES = ("T", "Q", "A", "AM")
MarketEvent = Any  # a wire struct or an its_common aggregate; all encode with msgspec


@dataclass
class TradeColumns:
    """Trades of one day, all symbols, in emission order."""

    sym: NDArray[np.int8]
    t_ns: I64
    report_ms: I64
    price: F64
    size: NDArray[np.int32]
    exchange: NDArray[np.int16]
    cond: NDArray[np.int16]
    seq: I64
    trf_id: NDArray[np.int16]
    part_delta_ns: NDArray[np.int32]
    trf_delta_ns: NDArray[np.int32]
    idnum: I64 | None = None
    ids: NDArray[np.object_] | None = None

    def __len__(self) -> int:
        return len(self.t_ns)

    def take(self, index: NDArray[np.intp] | slice) -> TradeColumns:
        return TradeColumns(
            sym=self.sym[index],
            t_ns=self.t_ns[index],
            report_ms=self.report_ms[index],
            price=self.price[index],
            size=self.size[index],
            exchange=self.exchange[index],
            cond=self.cond[index],
            seq=self.seq[index],
            trf_id=self.trf_id[index],
            part_delta_ns=self.part_delta_ns[index],
            trf_delta_ns=self.trf_delta_ns[index],
            idnum=None if self.idnum is None else self.idnum[index],
            ids=None if self.ids is None else self.ids[index],
        )

    def trade_ids(self) -> list[str]:
        if self.ids is not None:
            return [str(v) for v in self.ids.tolist()]
        assert self.idnum is not None
        return list(map(str, self.idnum.tolist()))


@dataclass
class QuoteColumns:
    """Quotes of one day, all symbols, in time order."""

    sym: NDArray[np.int8]
    t_ms: I64
    bid: F64
    ask: F64
    bid_size: NDArray[np.int32]
    ask_size: NDArray[np.int32]
    bid_exchange: NDArray[np.int16]
    ask_exchange: NDArray[np.int16]
    seq: I64


@dataclass
class Bars:
    """Aggregates over buckets: one row per bucket that has trades."""

    start: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: I64
    value: F64
    count: I64

    def __len__(self) -> int:
        return len(self.start)

    @property
    def vwap(self) -> F64:
        return np.divide(self.value, np.maximum(self.volume, 1))

    @staticmethod
    def empty() -> Bars:
        z = np.zeros(0, np.int64)
        f = np.zeros(0, np.float64)
        return Bars(z, f, f, f, f, z, f, z)


U8 = NDArray[np.uint8]
ALL_UPDATES = conditions.HIGH_LOW | conditions.OPEN_CLOSE | conditions.VOLUME


def update_bits(cond_table: Sequence[Sequence[int]]) -> U8:
    """Per entry of a day's condition table, the fields its trades update (conditions' bits)."""
    return np.array([conditions.update_bits(c) for c in cond_table] or [ALL_UPDATES], np.uint8)


def aggregate(
    t_ms: I64,
    price: F64,
    size: NDArray[Any],
    width_ms: int,
    origin_ms: int = 0,
    updates: U8 | None = None,
) -> Bars:
    """Bucket trades (sorted by time) into bars of ``width_ms`` aligned at ``origin_ms``.

    ``updates`` holds each trade's update bits (:mod:`its_common.conditions`); without it every
    trade is a regular sale. Open/close come from the trades that may set them (falling back to
    those that set high/low), high/low from those that may set them, volume, VWAP and count from
    those that update volume; a bucket with no price-setting trade has no bar.
    """
    if len(t_ms) == 0:
        return Bars.empty()
    key = (t_ms - origin_ms) // width_ms
    starts = np.concatenate(([0], np.flatnonzero(np.diff(key)) + 1))
    vol = size.astype(np.int64)
    if updates is None or bool(np.all(updates == ALL_UPDATES)):
        ends = np.concatenate((starts[1:], [len(key)])) - 1
        return Bars(
            start=key[starts] * width_ms + origin_ms,
            open=price[starts],
            high=np.maximum.reduceat(price, starts),
            low=np.minimum.reduceat(price, starts),
            close=price[ends],
            volume=np.add.reduceat(vol, starts),
            value=np.add.reduceat(price * vol, starts),
            count=np.diff(np.concatenate((starts, [len(key)]))).astype(np.int64),
        )
    n = len(key)
    index = np.arange(n, dtype=np.int64)
    sets_oc = (updates & conditions.OPEN_CLOSE) != 0
    priced = sets_oc | ((updates & conditions.HIGH_LOW) != 0)
    counted = (updates & conditions.VOLUME) != 0
    first_oc = np.minimum.reduceat(np.where(sets_oc, index, n), starts)
    last_oc = np.maximum.reduceat(np.where(sets_oc, index, -1), starts)
    first_p = np.minimum.reduceat(np.where(priced, index, n), starts)
    last_p = np.maximum.reduceat(np.where(priced, index, -1), starts)
    keep = np.flatnonzero(first_p < n)
    opens = np.where(first_oc < n, first_oc, first_p)[keep]
    closes = np.where(last_oc >= 0, last_oc, last_p)[keep]
    counted_vol = np.where(counted, vol, 0)
    return Bars(
        start=key[starts[keep]] * width_ms + origin_ms,
        open=price[opens],
        high=np.maximum.reduceat(np.where(priced, price, -np.inf), starts)[keep],
        low=np.minimum.reduceat(np.where(priced, price, np.inf), starts)[keep],
        close=price[closes],
        volume=np.add.reduceat(counted_vol, starts)[keep],
        value=np.add.reduceat(price * counted_vol, starts)[keep],
        count=np.add.reduceat(counted.astype(np.int64), starts)[keep],
    )


def merge_bars(bars: Bars, width_ms: int, origin_ms: int = 0) -> Bars:
    """Combine finer bars (sorted by start) into coarser buckets."""
    if len(bars) == 0:
        return bars
    key = (bars.start - origin_ms) // width_ms
    starts = np.concatenate(([0], np.flatnonzero(np.diff(key)) + 1))
    ends = np.concatenate((starts[1:], [len(key)])) - 1
    return Bars(
        start=key[starts] * width_ms + origin_ms,
        open=bars.open[starts],
        high=np.maximum.reduceat(bars.high, starts),
        low=np.minimum.reduceat(bars.low, starts),
        close=bars.close[ends],
        volume=np.add.reduceat(bars.volume, starts),
        value=np.add.reduceat(bars.value, starts),
        count=np.add.reduceat(bars.count, starts),
    )


def concat_bars(parts: Sequence[Bars]) -> Bars:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Bars.empty()
    return Bars(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Bars.__dataclass_fields__)
    )


class EmitTable(Protocol):
    """Events of one type in emission order: their times, symbols and a builder for a slice."""

    emit_ms: I64
    sym: NDArray[np.int8]

    def build(self, lo: int, hi: int) -> list[MarketEvent]: ...


@dataclass
class ListEmit:
    """Prebuilt events (bars: few per day)."""

    emit_ms: I64
    sym: NDArray[np.int8]
    events: list[MarketEvent]

    def build(self, lo: int, hi: int) -> list[MarketEvent]:
        return self.events[lo:hi]


class TradeEmit:
    """Trades built into :class:`Trade` structs lazily, one slice at a time."""

    def __init__(self, day: DayData) -> None:
        cols = day.trades
        self.cols = cols
        self.emit_ms = cols.report_ms
        self.sym = cols.sym
        self.names = np.array(day.symbols, dtype=object)
        self.tapes = np.array(day.tapes, dtype=np.int64)
        self.cond_table = day.cond_table

    def build(self, lo: int, hi: int) -> list[MarketEvent]:
        c = self.cols
        sym = c.sym[lo:hi]
        ctab = self.cond_table
        t_ns = c.t_ns[lo:hi]  # times in ms per slice: no day-long copies of the column
        t_ms = (t_ns // NS_PER_MS).tolist()
        trf = c.trf_id[lo:hi].tolist()
        trft = ((t_ns - c.trf_delta_ns[lo:hi]) // NS_PER_MS).tolist()
        trf_ids = [v or None for v in trf]
        trf_ts = [t if f else None for f, t in zip(trf, trft, strict=True)]
        conds = [ctab[i] for i in c.cond[lo:hi].tolist()]
        if c.ids is not None:
            ids = [str(v) for v in c.ids[lo:hi].tolist()]
        else:
            assert c.idnum is not None
            ids = list(map(str, c.idnum[lo:hi].tolist()))
        return list(
            map(
                WireTrade,
                self.names[sym].tolist(),
                c.exchange[lo:hi].tolist(),
                ids,
                self.tapes[sym].tolist(),
                c.price[lo:hi].tolist(),
                c.size[lo:hi].tolist(),
                t_ms,
                c.seq[lo:hi].tolist(),
                conds,
                trf_ids,
                trf_ts,
            )
        )


class QuoteEmit:
    def __init__(self, day: DayData, quotes: QuoteColumns) -> None:
        self.q = quotes
        self.emit_ms = quotes.t_ms
        self.sym = quotes.sym
        self.names = np.array(day.symbols, dtype=object)
        self.tapes = np.array(day.tapes, dtype=np.int64)

    def build(self, lo: int, hi: int) -> list[MarketEvent]:
        q = self.q
        sym = q.sym[lo:hi]
        return list(
            map(
                WireQuote,
                self.names[sym].tolist(),
                q.bid_exchange[lo:hi].tolist(),
                q.bid[lo:hi].tolist(),
                q.bid_size[lo:hi].tolist(),
                q.ask_exchange[lo:hi].tolist(),
                q.ask[lo:hi].tolist(),
                q.ask_size[lo:hi].tolist(),
                q.t_ms[lo:hi].tolist(),
                q.seq[lo:hi].tolist(),
                self.tapes[sym].tolist(),
            )
        )


@dataclass
class DayData:
    """Every trade of one day (all symbols) plus lazily built views."""

    day: date
    symbols: tuple[str, ...]
    tapes: tuple[int, ...]
    start_ms: int  # emission window [start_ms, end_ms)
    end_ms: int
    open_ms: int  # regular-session open (the official open is the first trade from here)
    trades: TradeColumns
    cond_table: tuple[tuple[int, ...], ...]
    quote_factory: Callable[[], QuoteColumns] | None = None
    # what the quotes are made from, picklable (market.QuoteMaker; None for a replay)
    quote_maker: Any = None
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _by_symbol: dict[int, NDArray[np.intp]] = field(default_factory=dict, repr=False)
    _tables: dict[str, EmitTable] = field(default_factory=dict, repr=False)
    _updates: U8 | None = field(default=None, repr=False)
    _quotes: QuoteColumns | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a day generated in another process): without the lock and the quote
        factory (bound to the generator); quotes already built, or what they are made from
        (``quote_maker``), travel with the day."""
        state = dict(self.__dict__)
        state["_lock"] = None
        state["quote_factory"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def symbol_index(self, symbol: str) -> int | None:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            return None

    def symbol_rows(self, k: int) -> NDArray[np.intp]:
        """Row indices of symbol ``k``'s trades in SIP-time order."""
        with self._lock:
            rows = self._by_symbol.get(k)
            if rows is None:
                mine = np.flatnonzero(self.trades.sym == k)
                order = np.argsort(self.trades.t_ns[mine], kind="stable")
                rows = mine[order]
                self._by_symbol[k] = rows
            return rows

    def symbol_trades(self, symbol: str, now_ms: int | None = None) -> TradeColumns | None:
        """One symbol's trades in SIP-time order, only those reported by ``now_ms``."""
        k = self.symbol_index(symbol)
        if k is None:
            return None
        rows = self.symbol_rows(k)
        if now_ms is not None and now_ms < self.end_ms:
            rows = rows[self.trades.report_ms[rows] <= now_ms]
        return self.trades.take(rows)

    @property
    def updates(self) -> U8:
        """Update bits per entry of :attr:`cond_table` (index them with a ``cond`` column)."""
        with self._lock:
            if self._updates is None:
                self._updates = update_bits(self.cond_table)
            return self._updates

    def bars(self, trades: TradeColumns, width_ms: int, origin_ms: int = 0) -> Bars:
        """Bars of some of this day's trades (one symbol, SIP-time order) by Polygon's rules."""
        t = trades.t_ns // NS_PER_MS
        return aggregate(
            t, trades.price, trades.size, width_ms, origin_ms, self.updates[trades.cond]
        )

    def quotes(self) -> QuoteColumns:
        """Every quote of the day (all symbols, time order); empty without a quote factory."""
        with self._lock:
            if self._quotes is None:
                if self.quote_factory is None:
                    z = np.zeros(0, np.int64)
                    f, i32, i16 = z.astype(np.float64), z.astype(np.int32), z.astype(np.int16)
                    self._quotes = QuoteColumns(z.astype(np.int8), z, f, f, i32, i32, i16, i16, z)
                else:
                    self._quotes = self.quote_factory()
            return self._quotes

    def has_table(self, kind: str) -> bool:
        return kind in self._tables

    def quotes_built(self) -> bool:
        return self._quotes is not None

    def table(self, kind: str) -> EmitTable:
        built = self._tables.get(kind)  # without the lock: another table may be building
        if built is not None:
            return built
        with self._lock:
            table = self._tables.get(kind)
            if table is None:
                table = self._build_table(kind)
                self._tables[kind] = table
            return table

    def _build_table(self, kind: str) -> EmitTable:
        if kind == "T":
            return TradeEmit(self)
        if kind == "Q":
            if self.quote_factory is None:
                z = np.zeros(0, np.int64)
                return ListEmit(z, z.astype(np.int8), [])
            return QuoteEmit(self, self.quotes())
        if kind == "A":
            return self._bar_table(SECOND_MS, SecondAgg, resend=False)
        if kind == "AM":
            return self._bar_table(MINUTE_MS, MinuteAgg, resend=True)
        raise ValueError(kind)

    def _bar_table(
        self, width: int, cls: type[SecondAgg] | type[MinuteAgg], resend: bool
    ) -> ListEmit:
        emit: list[int] = []
        syms: list[int] = []
        events: list[MarketEvent] = []
        for k, symbol in enumerate(self.symbols):
            rows = self.symbol_rows(k)
            t = self.trades.t_ns[rows] // NS_PER_MS
            price = self.trades.price[rows]
            size = self.trades.size[rows].astype(np.int64)
            report = self.trades.report_ms[rows]
            upd = self.updates[self.trades.cond[rows]]
            bucket_end = (t // width) * width + width
            on_time = report <= bucket_end
            day = _DayRunning(t, price, size, report, upd, self.open_ms)
            first = aggregate(t[on_time], price[on_time], size[on_time], width, 0, upd[on_time])
            for i in range(len(first)):
                end = int(first.start[i]) + width
                events.append(_bar(cls, symbol, first, i, width, day.at(end)))
                emit.append(end)
                syms.append(k)
            if not resend:
                continue
            late = np.flatnonzero(~on_time)
            for j in late[np.argsort(report[late], kind="stable")]:
                start = int(bucket_end[j]) - width
                r = int(report[j])
                inb = (t >= start) & (t < start + width) & (report <= r)
                bars = aggregate(t[inb], price[inb], size[inb], width, 0, upd[inb])
                if len(bars) == 0:  # nothing in the minute may set a price: no bar to re-send
                    continue
                events.append(_bar(cls, symbol, bars, 0, width, day.at(r)))
                emit.append(r)
                syms.append(k)
        order = np.argsort(np.asarray(emit, dtype=np.int64), kind="stable")
        return ListEmit(
            emit_ms=np.asarray(emit, dtype=np.int64)[order],
            sym=np.asarray(syms, dtype=np.int8)[order],
            events=[events[i] for i in order.tolist()],
        )


class _DayRunning:
    """Day-level running values (volume, VWAP, official open) as known at a given time."""

    def __init__(
        self, t: I64, price: F64, size: I64, report: I64, updates: U8, open_ms: int
    ) -> None:
        order = np.argsort(report, kind="stable")
        counted = np.where((updates[order] & conditions.VOLUME) != 0, size[order], 0)
        self.report = report[order]
        self.cum_volume = np.cumsum(counted)
        self.cum_value = np.cumsum(price[order] * counted)
        sets_open = (updates & conditions.OPEN_CLOSE) != 0
        regular = np.flatnonzero((t >= open_ms) & sets_open)
        priced = np.flatnonzero(sets_open)
        self.open_ms = open_ms
        self.official_open = float(price[regular[0]]) if len(regular) else 0.0
        self.first_price = float(price[priced[0]]) if len(priced) else 0.0

    def at(self, when: int) -> tuple[int, float, float]:
        """(day volume, day open, day VWAP) counting trades reported up to ``when``."""
        n = int(np.searchsorted(self.report, when, side="right"))
        if n == 0:
            return 0, 0.0, 0.0
        volume = int(self.cum_volume[n - 1])
        vwap = float(self.cum_value[n - 1]) / volume if volume else 0.0
        day_open = self.official_open if when > self.open_ms else self.first_price
        return volume, day_open, round(vwap, 4)


def _bar(
    cls: type[SecondAgg] | type[MinuteAgg],
    symbol: str,
    bars: Bars,
    i: int,
    width: int,
    day: tuple[int, float, float],
) -> SecondAgg | MinuteAgg:
    volume = int(bars.volume[i])
    start = int(bars.start[i])
    count = int(bars.count[i])
    return cls(
        symbol,
        volume,
        float(bars.open[i]),
        float(bars.close[i]),
        float(bars.high[i]),
        float(bars.low[i]),
        start,
        start + width,
        round(float(bars.value[i]) / volume, 4) if volume else 0.0,
        day[0],
        day[1],
        day[2],
        round(volume / count) if count else 0,
    )


class MarketSource(Protocol):
    """Where market data comes from: the synthetic generator or a replay file."""

    symbols: tuple[str, ...]

    def day(self, day: date) -> DayData | None:
        """The data of one New York date, or None when there is no trading that day."""
        ...

    def first_window_after(self, ms: int) -> tuple[date, int, int] | None:
        """The first emission window ``(day, start, end)`` whose end is after ``ms``."""
        ...

    def last_window_before(self, ms: int) -> tuple[date, int, int] | None:
        """The last emission window that starts at or before ``ms``."""
        ...
