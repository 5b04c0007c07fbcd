"""Trading windows from the NYSE calendar: regular hours, extended hours, holidays, early closes.

All times are Unix milliseconds (UTC). Extended hours are 04:00-09:30 and close-to-close+4h
New York time (16:00-20:00 on a normal day, 13:00-17:00 on an early close).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from its_common import calendar

NEW_YORK = calendar.NEW_YORK
PRE_MARKET_MS = 5 * 3_600_000 + 30 * 60_000  # 04:00 to 09:30
POST_MARKET_MS = 4 * 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TradingDay:
    """One session: regular open/close and the extended-hours bounds, in Unix ms."""

    day: date
    open_ms: int
    close_ms: int

    @property
    def pre_open_ms(self) -> int:
        return self.open_ms - PRE_MARKET_MS

    @property
    def post_close_ms(self) -> int:
        return self.close_ms + POST_MARKET_MS

    @property
    def early_close(self) -> bool:
        return self.close_ms - self.open_ms < 390 * 60_000

    def window(self, extended: bool) -> tuple[int, int]:
        """[start, end) of the time the market produces trades."""
        if extended:
            return self.pre_open_ms, self.post_close_ms
        return self.open_ms, self.close_ms


def to_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ny_date(ms: int) -> date:
    return from_ms(ms).astimezone(NEW_YORK).date()


def ny_midnight_ms(day: date) -> int:
    return to_ms(datetime.combine(day, time(0, 0), tzinfo=NEW_YORK))


@lru_cache(maxsize=64)
def _year(year: int) -> tuple[TradingDay, ...]:
    try:
        sessions = calendar.sessions_between(date(year, 1, 1), date(year, 12, 31))
    except Exception:  # outside the calendar's bounds: no sessions known
        return ()
    return tuple(TradingDay(s.day, to_ms(s.open), to_ms(s.close)) for s in sessions)


def trading_day(day: date) -> TradingDay | None:
    """The session on ``day`` (New York date), or None on weekends, holidays, unknown years."""
    for session in _year(day.year):
        if session.day == day:
            return session
    return None


def sessions_between(first: date, last: date) -> list[TradingDay]:
    """Every session from ``first`` to ``last`` inclusive."""
    result: list[TradingDay] = []
    for year in range(first.year, last.year + 1):
        result.extend(s for s in _year(year) if first <= s.day <= last)
    return result


def next_trading_day(after: date, max_days: int = 20) -> TradingDay | None:
    """The first session strictly after ``after``."""
    for offset in range(1, max_days + 1):
        found = trading_day(after + timedelta(days=offset))
        if found is not None:
            return found
    return None


def previous_trading_day(before: date, max_days: int = 20) -> TradingDay | None:
    """The last session strictly before ``before``."""
    for offset in range(1, max_days + 1):
        found = trading_day(before - timedelta(days=offset))
        if found is not None:
            return found
    return None
