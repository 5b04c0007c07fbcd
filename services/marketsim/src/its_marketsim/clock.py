"""The simulation clock: real time, accelerated, or as fast as possible; where it starts.

The clock's position is the end of what the stream has emitted so far (Unix ms); REST answers
only with trades reported by then, so REST never shows the future the WebSocket has not sent.
Paced clocks map wall time to market time by ``speed``; the as-fast-as-possible clock advances
only while someone is subscribed, as fast as the readers take the data.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from its_common.simmarket import sessions
from its_common.simmarket.daydata import MarketSource


class SimClock:
    def __init__(self, start_ms: int, speed: float) -> None:
        self.speed = speed
        self.pos_ms = start_ms
        self._anchor_sim = float(start_ms)
        self._anchor_wall = time.monotonic()

    @property
    def max_speed(self) -> bool:
        return math.isinf(self.speed)

    def target_ms(self) -> float:
        """Market time that wall time has reached (paced clocks only)."""
        return self._anchor_sim + (time.monotonic() - self._anchor_wall) * self.speed * 1000.0

    def jump(self, to_ms: int) -> None:
        """Move to ``to_ms`` and re-anchor wall time there (closed periods are skipped)."""
        self.pos_ms = to_ms
        self._anchor_sim = float(to_ms)
        self._anchor_wall = time.monotonic()

    def now_ms(self) -> int:
        return self.pos_ms


def parse_start(text: str, source: MarketSource, wall_ms: int | None = None) -> int:
    """Resolve ``auto``, ``now``, ``YYYY-MM-DD`` or an ISO date-time to a start time (ms).

    ``auto``: now if the market is open now, else the start of the latest session (so a day is
    produced at once, even at night or on a weekend). A date starts at that day's first window;
    a naive date-time is New York time.
    """
    now = wall_ms if wall_ms is not None else int(time.time() * 1000)
    value = text.strip().lower()
    if value == "now":
        return now
    if value == "auto":
        current = source.last_window_before(now)
        if current is not None and current[1] <= now < current[2]:
            return now
        if current is not None:
            return current[1]
        upcoming = source.first_window_after(now)
        return upcoming[1] if upcoming is not None else now
    if len(value) == 10:
        day = datetime.fromisoformat(text.strip()).date()
        window = source.first_window_after(sessions.ny_midnight_ms(day))
        if window is None:
            raise ValueError(f"no trading on or after {day.isoformat()}")
        return window[1]
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=sessions.NEW_YORK)
    return sessions.to_ms(moment)
