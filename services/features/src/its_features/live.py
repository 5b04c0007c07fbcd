"""The live assembly of minutes: bars of every configured symbol in, one completed minute out.

Pure logic (no I/O, time passed in), so the service, the parity test and the benchmark drive the
same code. Per symbol it keeps the incremental feature state
(:class:`its_common.features.SymbolFeatures`).

When is minute t complete (announced)?

1. Every configured symbol has its bar of t; or
2. every symbol has a bar of t **or of a later minute** (the feed sends a symbol's minute bars in
   order, so a later bar means t's is not coming); or
3. ``flush(now)``: t ended more than ``grace_ms`` ago (now >= t + 60 s + grace).

Minutes are announced in order, every regular-session minute (exchange calendar), none skipped.
A symbol without a bar of t is **forward-filled** (the spec's missing-bar rule:
o = h = l = c = its last close, volume 0), counted in ``filled[symbol]``.

Bars that arrive for a minute already announced (late, or a re-sent corrected bar) are **not
applied**: the incremental state cannot go back. They are counted (``late``) and logged; the
stored, corrected bar is what a rebuild after a restart and training (batch form) use. A re-sent
bar for a minute not yet announced replaces the earlier version (``replaced``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from its_common import calendar
from its_common.features import Bar, SymbolFeatures
from its_common.features.grid import usable
from its_common.features.incremental import SessionWindow, session_window
from its_common.features.spec import BAR_MS

log = logging.getLogger("its.features.live")


@dataclass(frozen=True)
class CompletedMinute:
    ts_ms: int
    session: SessionWindow
    vectors: dict[str, NDArray[np.float64] | None]
    opens: dict[str, float | None]
    closes: dict[str, float | None]
    filled: tuple[str, ...]  # symbols forward-filled this minute
    received_ms: int  # newest receive time of the minute's bars (0 when none arrived)

    @property
    def session_last(self) -> bool:
        return self.ts_ms + BAR_MS >= self.session.close_ms


@dataclass
class Counters:
    bars: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    replaced: int = 0
    minutes: int = 0


def next_session_minute(minute_ms: int) -> int:
    """The regular-session minute after ``minute_ms`` (the next session's open across closes)."""
    candidate = minute_ms + BAR_MS
    if session_window(candidate) is not None:
        return candidate
    upcoming = calendar.next_session(datetime.fromtimestamp(candidate / 1000, tz=UTC))
    return int(upcoming.open.timestamp() * 1000)


class MinuteAssembler:
    """See the module docstring. ``not_before_ms``: bars of earlier minutes are ignored
    (``dropped["stale"]``); the service sets it to the current session's open."""

    def __init__(
        self, symbols: Sequence[str], grace_ms: int = 5_000, not_before_ms: int | None = None
    ) -> None:
        self.symbols = tuple(symbols)
        self.grace_ms = grace_ms
        self.not_before_ms = not_before_ms
        self.states = {s: SymbolFeatures() for s in self.symbols}
        self.pending: dict[int, dict[str, tuple[Bar, int]]] = {}
        self.latest: dict[str, int] = {}  # newest pending minute per symbol
        self.last_done: int | None = None
        self.counters = Counters()

    # ---- input -----------------------------------------------------------------------------
    def add_bar(self, symbol: str, bar: Bar, received_ms: int = 0) -> list[CompletedMinute]:
        minute = bar.ts - bar.ts % BAR_MS
        if symbol not in self.states:
            return self._drop("unknown_symbol")
        if self.not_before_ms is not None and minute < self.not_before_ms:
            return self._drop("stale")
        if self.last_done is not None and minute <= self.last_done:
            log.warning(
                "bar of %s for minute %d arrived after the minute was announced (late or "
                "corrected): not applied live",
                symbol,
                minute,
            )
            return self._drop("late")
        if session_window(minute) is None:
            return self._drop("outside_session")
        self.counters.bars[symbol] = self.counters.bars.get(symbol, 0) + 1
        slot = self.pending.setdefault(minute, {})
        if symbol in slot:
            self.counters.replaced += 1
        slot[symbol] = (bar, received_ms)
        if minute > self.latest.get(symbol, -1):
            self.latest[symbol] = minute
        if len(self.latest) < len(self.symbols):
            return []
        return self._complete_through(min(self.latest.values()))

    def flush(self, now_ms: int) -> list[CompletedMinute]:
        """Announce every minute that ended more than ``grace_ms`` before ``now_ms``."""
        horizon = now_ms - BAR_MS - self.grace_ms  # minutes starting at or before are complete
        if self.last_done is None:
            if not self.pending:
                return []
            first = min(self.pending)
            if first > horizon:
                return []
        return self._complete_through(horizon)

    def restore(
        self,
        bars: Mapping[str, Sequence[Bar]],
        last_close: Mapping[str, float | None],
        through_ms: int,
    ) -> int:
        """Rebuild the state from stored bars (one session, sorted by ts; ``last_close`` = each
        symbol's close before it): every session minute up to ``through_ms`` is pushed, missing
        bars as None. Nothing is announced. Returns the minutes replayed."""
        self.states = {s: SymbolFeatures(last_close.get(s)) for s in self.symbols}
        by_minute: dict[int, dict[str, Bar]] = {}
        for symbol, rows in bars.items():
            if symbol in self.states:
                for bar in rows:
                    by_minute.setdefault(bar.ts - bar.ts % BAR_MS, {})[symbol] = bar
        minutes = sorted(m for m in by_minute if m <= through_ms and session_window(m))
        if not minutes:
            return 0
        window = session_window(minutes[0])
        assert window is not None
        minute, count = window.open_ms, 0
        while minute <= minutes[-1]:
            slot = by_minute.get(minute, {})
            for symbol in self.symbols:
                self.states[symbol].push(minute, slot.get(symbol))
            self.last_done = minute
            count += 1
            minute = next_session_minute(minute)
        self.pending = {m: v for m, v in self.pending.items() if m > minutes[-1]}
        self.latest = {s: m for s, m in self.latest.items() if m > minutes[-1]}
        return count

    # ---- internals -------------------------------------------------------------------------
    def _drop(self, reason: str) -> list[CompletedMinute]:
        self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + 1
        return []

    def _complete_through(self, target: int) -> list[CompletedMinute]:
        out: list[CompletedMinute] = []
        if self.last_done is None:
            if not self.pending:
                return out
            minute = min(self.pending)
        else:
            minute = next_session_minute(self.last_done)
        while minute <= target:
            out.append(self._process(minute))
            self.last_done = minute
            minute = next_session_minute(minute)
        if out:
            self.latest = {s: m for s, m in self.latest.items() if m > target}
        return out

    def _process(self, minute: int) -> CompletedMinute:
        slot = self.pending.pop(minute, {})
        window = session_window(minute)
        assert window is not None
        vectors: dict[str, NDArray[np.float64] | None] = {}
        opens: dict[str, float | None] = {}
        closes: dict[str, float | None] = {}
        filled: list[str] = []
        received = 0
        c = self.counters
        for symbol in self.symbols:
            state = self.states[symbol]
            item = slot.get(symbol)
            bar = item[0] if item else None
            if item:
                received = max(received, item[1])
            vector = state.push(minute, bar)
            vectors[symbol] = vector
            own = bar is not None and usable(bar.close, bar.volume)
            if vector is None:
                opens[symbol] = closes[symbol] = None
            elif own:
                assert bar is not None
                opens[symbol], closes[symbol] = bar.open, bar.close
            else:
                opens[symbol] = closes[symbol] = state.last_close
                filled.append(symbol)
                c.filled[symbol] = c.filled.get(symbol, 0) + 1
            if own and vector is not None:
                c.hits[symbol] = c.hits.get(symbol, 0) + 1
            else:
                c.misses[symbol] = c.misses.get(symbol, 0) + 1
        c.minutes += 1
        return CompletedMinute(
            ts_ms=minute,
            session=window,
            vectors=vectors,
            opens=opens,
            closes=closes,
            filled=tuple(filled),
            received_ms=received,
        )

    def hit_ratio(self) -> float:
        hits = sum(self.counters.hits.values())
        total = hits + sum(self.counters.misses.values())
        return hits / total if total else 1.0
