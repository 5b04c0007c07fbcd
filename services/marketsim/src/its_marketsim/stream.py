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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np

from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import EVENT_TYPES, DayData, MarketSource
from its_marketsim.clock import SimClock
from its_marketsim.faults import FaultState

log = logging.getLogger("its.marketsim.stream")
PACED_TICK_S = 0.02
MAX_LAG_S = 0.5
MAX_MODE_EVENTS_PER_STEP = 20_000
RANKS = {kind: rank for rank, kind in enumerate(EVENT_TYPES)}


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
        self, source: MarketSource, config: SimConfig, faults: FaultState, clock: SimClock
    ) -> None:
        self.source = source
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
        prefetch: asyncio.Task[Any] | None = None
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
            data = await asyncio.to_thread(self.source.day, day)
            if data is None:
                clock.pos_ms = end
                continue
            self.current_day = data
            await asyncio.to_thread(data.table, "T")
            if prefetch is None or prefetch.done():
                following = self.source.first_window_after(end)
                if following is not None:
                    kinds = {kind for s in self._active() for kind, _, _ in s.subs.key()}
                    prefetch = asyncio.create_task(
                        asyncio.to_thread(self._prepare, following[0], kinds | {"T"})
                    )
            await self._run_window(data, end, stopping)

    def _prepare(self, day: date, kinds: set[str]) -> None:
        """Generate a day ahead of time (in a worker thread), with the tables in use now."""
        data = self.source.day(day)
        if data is None:
            return
        for kind in EVENT_TYPES:
            if kind in kinds:
                data.table(kind)

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
                hi = min(max(hi, pos + 1), end)
            else:
                target = clock.target_ms()
                if target < pos + 1:
                    await _wait(stopping, PACED_TICK_S)
                    continue
                if target - pos > MAX_LAG_S * 1000 * clock.speed:
                    # we fell behind (a day being generated, a busy host): shift the clock
                    # rather than bursting a backlog that would overflow every reader
                    clock.jump(pos)
                    continue
                hi = min(int(target), end)
            await self.emit(data, pos, hi)
            clock.pos_ms = hi
            await asyncio.sleep(0)

    async def emit(self, data: DayData, lo: int, hi: int) -> None:
        subscribers = self._active()
        if not subscribers:
            return
        wanted = {kind for s in subscribers for kind, _, _ in s.subs.key()}
        built: dict[str, tuple[list[Any], Any, Any]] = {}
        for kind in EVENT_TYPES:
            if kind not in wanted:
                continue
            if not data.has_table(kind):  # first use today: build it off the event loop
                await asyncio.to_thread(data.table, kind)
            table = data.table(kind)
            a, b = np.searchsorted(table.emit_ms, [lo, hi], side="left").tolist()
            if b <= a:
                continue
            events = table.build(a, b)
            emit_ms, sym = table.emit_ms[a:b], table.sym[a:b]
            if kind == "AM" and (self.faults.skip_bar_rate > 0 or self.faults.skip_next_bars > 0):
                keep = [not self.faults.skip_bar() for _ in events]
                events = list(itertools.compress(events, keep))
                mask = np.asarray(keep, dtype=bool)
                emit_ms, sym = emit_ms[mask], sym[mask]
            built[kind] = (events, emit_ms, sym)
        if not built:
            return
        cache: dict[Any, list[bytes]] = {}
        paced = not self.clock.max_speed
        limit = self.config.send_buffer_bytes // 2
        for sub in subscribers:
            key = sub.subs.key()
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

    def _frames(
        self,
        data: DayData,
        built: dict[str, tuple[list[Any], Any, Any]],
        key: Iterable[tuple[str, bool, frozenset[str]]],
    ) -> list[bytes]:
        parts: list[tuple[list[Any], Any, int]] = []
        for kind, every, symbols in key:
            if kind not in built:
                continue
            events, emit_ms, sym = built[kind]
            if not every:
                idx = [i for i, s in enumerate(data.symbols) if s in symbols]
                mask = np.isin(sym, idx)
                if not mask.any():
                    continue
                if not mask.all():
                    events = list(itertools.compress(events, mask.tolist()))
                    emit_ms = emit_ms[mask]
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
