"""The stream: walks the clock through the market and fans frames out to subscribers.

Each step takes the events whose emission time falls in ``[pos, hi)``, builds them once per
event type, then once per distinct subscription set (select, merge by time, apply frame faults,
cut into frames of ``batch_size`` events, encode), and hands the same bytes to every connection
with that subscription set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np

from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import EVENT_TYPES, DayData, MarketSource
from its_common.simmarket.wholemarket import Tail
from its_marketsim.clock import SimClock
from its_marketsim.faults import FaultState

log = logging.getLogger("its.marketsim.stream")
PACED_TICK_S = 0.02
MAX_LAG_S = 0.5
MAX_MODE_EVENTS_PER_STEP = 20_000
RANKS = {kind: rank for rank, kind in enumerate(EVENT_TYPES)}
TAIL_KINDS = ("T", "AM")
# kinds whose first use of a day is built while the others keep flowing (the quotes: 1-4 s)
BACKGROUND_KINDS = frozenset({"Q"})
Chunk = tuple[list[Any], Any, Any]  # events, their emission times, their symbol indices
# a day with the tables of some kinds built, or None when there is no trading that day
DayGetter = Callable[[date, frozenset[str]], Coroutine[Any, Any, DayData | None]]


@dataclass
class Subscriptions:
    """Topics of one connection: per event type, every symbol (``*``) or a set of symbols."""

    every: set[str] = field(default_factory=set)
    symbols: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, symbol: str) -> None:
        if symbol == "*":
            self.every.add(kind)
        else:
            self.symbols.setdefault(kind, set()).add(symbol)

    def remove(self, kind: str, symbol: str) -> None:
        if symbol == "*":
            self.every.discard(kind)
        else:
            self.symbols.get(kind, set()).discard(symbol)

    def key(self) -> tuple[tuple[str, bool, frozenset[str]], ...]:
        parts = []
        for kind in EVENT_TYPES:
            syms = frozenset(self.symbols.get(kind, ()))
            if kind in self.every or syms:
                parts.append((kind, kind in self.every, syms))
        return tuple(parts)

    def __bool__(self) -> bool:
        return bool(self.key())


class Subscriber(Protocol):
    subs: Subscriptions

    @property
    def active(self) -> bool: ...

    def enqueue(self, frame: bytes, control: bool = False, bounded: bool = True) -> None: ...

    @property
    def buffered(self) -> int: ...

    async def wait_buffered_below(self, limit: int, within_s: float) -> bool: ...

    def overflow(self) -> None: ...


class Stream:
    def __init__(
        self,
        source: MarketSource,
        config: SimConfig,
        faults: FaultState,
        clock: SimClock,
        tail: Tail | None = None,
        days: DayGetter | None = None,
    ) -> None:
        """``tail``: the whole market's other symbols (:mod:`its_common.simmarket.wholemarket`),
        streamed beside the source's to subscribers of ``T.*``/``AM.*`` or of their tickers.
        ``days``: where days come from (the generator process of
        :mod:`its_marketsim.dayworker`); by default the source in a worker thread."""
        self.source = source
        self.days: DayGetter = days or self._prepare_in_thread
        self.prefetch_failures = 0
        self.stopped = False  # set when the simulator stops: jobs cut short are no failures
        self.tail = tail
        self._tail_names = frozenset(tail.names) if tail else frozenset()
        self._index: dict[tuple[str, ...], dict[str, int]] = {}
        # kinds whose table is being built off the event loop, and the time from which their
        # events are owed to subscribers once it is ready (nothing is skipped, only delayed)
        self._building: dict[str, tuple[DayData, asyncio.Task[Any], int]] = {}
        # kinds whose events since a time are still owed after their table was built: a
        # backlog sent in steps (MAX_MODE_EVENTS_PER_STEP), not in one step that stops the stream
        self._owed: dict[str, tuple[DayData, int]] = {}
        self._prefetches: set[asyncio.Task[DayData | None]] = set()
        self.config = config
        self.faults = faults
        self.clock = clock
        self.subscribers: set[Subscriber] = set()
        self.changed = asyncio.Event()
        self.events_sent = 0
        self.frames_sent = 0
        self.current_day: DayData | None = None

    def subscriptions_changed(self) -> None:
        self.changed.set()

    def _active(self) -> list[Subscriber]:
        return [s for s in self.subscribers if s.active and s.subs]

    async def run(self, stopping: asyncio.Event) -> None:
        clock = self.clock
        prefetching: date | None = None
        while not stopping.is_set():
            window = self.source.first_window_after(clock.pos_ms)
            if window is None:  # a replay that has ended: nothing more to send
                await _wait(stopping, 1.0)
                continue
            day, start, end = window
            if clock.pos_ms < start:
                if self.config.skip_closed or clock.max_speed:
                    clock.jump(start)
                else:
                    while clock.target_ms() < start and not stopping.is_set():
                        await _wait(stopping, min(1.0, (start - clock.target_ms()) / 1000))
                    clock.pos_ms = start
            data = await self.days(day, self._kinds_in_use())
            if data is None:
                clock.pos_ms = end
                continue
            self.current_day = data
            following = self.source.first_window_after(end)
            if following is not None and following[0] != prefetching:
                # the next day is generated while this one streams, whatever state the
                # previous preparation is in (a day is never waited for twice)
                prefetching = following[0]
                prefetch = asyncio.create_task(self._prefetch(following[0]))
                self._prefetches.add(prefetch)
                prefetch.add_done_callback(self._prefetched)
            await self._run_window(data, end, stopping)

    async def _prefetch(self, day: date) -> DayData | None:
        """The next day, and the whole market tail's paths for it, prepared off the loop."""
        if self.tail is None:
            return await self.days(day, self._kinds_in_use())
        data, _ = await asyncio.gather(
            self.days(day, self._kinds_in_use()), asyncio.to_thread(self.tail.prepare, day)
        )
        return data

    def _kinds_in_use(self) -> frozenset[str]:
        return frozenset({kind for s in self._active() for kind, _, _ in s.subs.key()} | {"T"})

    def _prefetched(self, task: asyncio.Task[DayData | None]) -> None:
        self._prefetches.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.stopped:
            # the stream raises it when it reaches that day (and retries it then)
            self.prefetch_failures += 1
            log.error("preparing the next day failed: %r", task.exception())

    async def _prepare_in_thread(self, day: date, kinds: frozenset[str]) -> DayData | None:
        return await asyncio.to_thread(self._prepare, day, kinds)

    def _prepare(self, day: date, kinds: frozenset[str]) -> DayData | None:
        """Generate a day (in a worker thread), with the tables in use now."""
        data = self.source.day(day)
        if data is None:
            return None
        for kind in EVENT_TYPES:
            if kind in kinds:
                data.table(kind)
        return data

    async def _run_window(self, data: DayData, end: int, stopping: asyncio.Event) -> None:
        clock = self.clock
        trades = data.table("T").emit_ms
        while clock.pos_ms < end and not stopping.is_set():
            pos = clock.pos_ms
            if clock.max_speed:
                if not self._active():
                    self.changed.clear()
                    await _wait_any(stopping, self.changed, 1.0)
                    continue
                i = int(np.searchsorted(trades, pos, side="left")) + MAX_MODE_EVENTS_PER_STEP
                hi = int(trades[i]) if i < len(trades) else end
                if self.tail is not None:  # about as many of the tail's trades per step
                    rate = max(self.tail.rate_at(pos), 1.0)
                    hi = min(hi, pos + max(int(MAX_MODE_EVENTS_PER_STEP / rate * 1000), 1))
                hi = min(max(hi, pos + 1), end)
            else:
                target = clock.target_ms()
                if target < pos + 1:
                    await _wait(stopping, PACED_TICK_S)
                    continue
                if target - pos > MAX_LAG_S * 1000 * clock.speed:
                    # we fell behind (a busy host): shift the clock
                    # rather than bursting a backlog that would overflow every reader
                    clock.jump(pos)
                    continue
                hi = min(int(target), end)
            await self.emit(data, pos, hi)
            clock.pos_ms = hi
            await asyncio.sleep(0)
        await self._flush_builds(data, end)

    async def _flush_builds(self, data: DayData, end: int) -> None:
        """Tables of this day still being built at its end: wait and send what they owe."""
        if any(pending[0] is data for pending in self._building.values()):
            for _, task, _ in list(self._building.values()):
                await asyncio.wait([task])
            await self.emit(data, end, end, tail=False)
        while any(owed[0] is data for owed in self._owed.values()):
            await self.emit(data, end, end, tail=False)
            await asyncio.sleep(0)
        self._owed.clear()

    def _table_ready(self, data: DayData, kind: str, lo: int) -> int | None:
        """Where this kind's events start in this step: ``lo``, or earlier when its table was
        being built (its events owed since then); None while it is still being built.

        Building the day's quotes (1-4 s) runs in a worker thread while the other kinds keep
        flowing, rather than pausing the whole stream; they follow in their own order."""
        owed = self._owed.pop(kind, None)
        if owed is not None and owed[0] is data:
            return owed[1]
        pending = self._building.get(kind)
        if pending is not None:
            owner, task, since = pending
            if owner is data:
                if not task.done():
                    return None
                del self._building[kind]
                task.result()  # a failed build raises here, as a failed inline build did
                return since
            del self._building[kind]  # a previous day's: nothing owed any more
        if data.has_table(kind):
            return lo
        task = asyncio.create_task(asyncio.to_thread(data.table, kind))
        task.add_done_callback(_retrieved)  # raised to the stream when it looks (below)
        self._building[kind] = (data, task, lo)
        log.info("building the %s events of %s; they follow when ready", kind, data.day)
        return None

    def _wants_tail(self, keys: list[tuple[tuple[str, bool, frozenset[str]], ...]]) -> bool:
        return any(
            kind in TAIL_KINDS and (every or not symbols.isdisjoint(self._tail_names))
            for key in keys
            for kind, every, symbols in key
        )

    async def emit(self, data: DayData, lo: int, hi: int, tail: bool = True) -> None:
        subscribers = self._active()
        if not subscribers:
            return
        keys = [s.subs.key() for s in subscribers]
        wanted = {kind for key in keys for kind, _, _ in key}
        built: dict[str, list[Chunk]] = {}
        for kind in EVENT_TYPES:
            if kind not in wanted:
                continue
            if kind in BACKGROUND_KINDS:
                since = self._table_ready(data, kind, lo)
                if since is None:
                    continue
            else:  # bars: quick to build, and their order after the trades is kept
                since = lo
                if not data.has_table(kind):
                    await asyncio.to_thread(data.table, kind)
            table = data.table(kind)
            a, b = np.searchsorted(table.emit_ms, [since, hi], side="left").tolist()
            if since < lo and b - a > MAX_MODE_EVENTS_PER_STEP:  # a backlog: the rest next step
                cut = int(table.emit_ms[a + MAX_MODE_EVENTS_PER_STEP])
                cut_at = int(np.searchsorted(table.emit_ms, cut, side="left"))
                if cut_at > a:  # cut between two emission times: nothing sent twice
                    b = cut_at
                    self._owed[kind] = (data, cut)
            if b <= a:
                continue
            events = table.build(a, b)
            emit_ms, sym = table.emit_ms[a:b], table.sym[a:b]
            if kind == "AM" and (self.faults.skip_bar_rate > 0 or self.faults.skip_next_bars > 0):
                keep = [not self.faults.skip_bar() for _ in events]
                events = list(itertools.compress(events, keep))
                mask = np.asarray(keep, dtype=bool)
                emit_ms, sym = emit_ms[mask], sym[mask]
            built[kind] = [(events, emit_ms, sym)]
        if tail and self.tail is not None and self._wants_tail(keys):
            offset = len(data.symbols)
            events, times, syms = self.tail.span(lo, hi, build="T" in wanted)
            if "T" in wanted and events:
                built.setdefault("T", []).append((events, times, syms + offset))
            bars, bar_ms, bar_syms = self.tail.bars(hi)
            if "AM" in wanted and bars:
                built.setdefault("AM", []).append((bars, bar_ms, bar_syms + offset))
        if not built:
            return
        cache: dict[Any, list[bytes]] = {}
        paced = not self.clock.max_speed
        limit = self.config.send_buffer_bytes // 2
        for sub, key in zip(subscribers, keys, strict=True):
            frames = cache.get(key)
            if frames is None:
                frames = self._frames(data, built, key)
                cache[key] = frames
            for frame in frames:
                sub.enqueue(frame, bounded=paced)
                # as fast as possible, but no faster than this reader (dropped if stuck)
                if (
                    not paced
                    and sub.buffered > limit
                    and not await sub.wait_buffered_below(limit, self.config.slow_reader_timeout_s)
                ):
                    sub.overflow()
                    break

    def _symbol_index(self, data: DayData) -> dict[str, int]:
        names = data.symbols + (self.tail.names if self.tail else ())
        index = self._index.get(data.symbols)
        if index is None:
            index = {name: i for i, name in enumerate(names)}
            self._index = {data.symbols: index}
        return index

    def _frames(
        self,
        data: DayData,
        built: dict[str, list[Chunk]],
        key: Iterable[tuple[str, bool, frozenset[str]]],
    ) -> list[bytes]:
        parts: list[tuple[list[Any], Any, int]] = []
        for kind, every, symbols in key:
            for chunk, chunk_ms, sym in built.get(kind, ()):
                events, emit_ms = chunk, chunk_ms
                if not every:
                    index = self._symbol_index(data)
                    idx = [index[s] for s in symbols if s in index]
                    mask = np.isin(sym, idx)
                    if not mask.any():
                        continue
                    if not mask.all():
                        events = list(itertools.compress(chunk, mask.tolist()))
                        emit_ms = chunk_ms[mask]
                parts.append((events, emit_ms, RANKS[kind]))
        if not parts:
            return []
        if len(parts) == 1:
            merged = parts[0][0]
        else:
            times = np.concatenate([p[1] for p in parts])
            ranks = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
            order = np.lexsort((ranks, times))
            everything = list(itertools.chain.from_iterable(p[0] for p in parts))
            merged = [everything[i] for i in order.tolist()]
        faults = self.faults
        if faults.frame_faults:
            merged = faults.mangle(merged)
        size = self.config.batch_size
        self.events_sent += len(merged)
        frames = [faults.encode(merged[i : i + size]) for i in range(0, len(merged), size)]
        self.frames_sent += len(frames)
        return frames


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=max(seconds, 0.0))


async def _wait_any(stopping: asyncio.Event, other: asyncio.Event, seconds: float) -> None:
    tasks = [asyncio.create_task(stopping.wait()), asyncio.create_task(other.wait())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
