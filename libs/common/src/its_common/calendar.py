"""The NYSE exchange calendar (regular hours, holidays, early closes), from exchange_calendars.

Session logic is in America/New_York; every value returned is an aware UTC datetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
EXCHANGE = "XNYS"
REGULAR_SESSION_MINUTES = 390


@dataclass(frozen=True, slots=True)
class Session:
    """One regular trading session."""

    day: date
    open: datetime
    close: datetime

    @property
    def early_close(self) -> bool:
        return self.minutes < REGULAR_SESSION_MINUTES

    @property
    def minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)

    def contains(self, ts: datetime) -> bool:
        return self.open <= ts < self.close

    def minute_starts(self) -> list[datetime]:
        """UTC start of every regular-hours minute of the session."""
        return [self.open + timedelta(minutes=i) for i in range(self.minutes)]


@lru_cache(maxsize=1)
def _calendar() -> xcals.ExchangeCalendar:
    return xcals.get_calendar(EXCHANGE)


def _to_utc(ts: pd.Timestamp) -> datetime:
    value: datetime = ts.to_pydatetime()
    return value.astimezone(UTC)


def _require_aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts!r} has no time zone; ITS works in aware UTC datetimes")
    return ts.astimezone(UTC)


def session(day: date) -> Session | None:
    """The session on ``day`` (a New York calendar date), or None on weekends and holidays."""
    calendar = _calendar()
    label = pd.Timestamp(day)
    if not calendar.is_session(label):
        return None
    return Session(
        day=day,
        open=_to_utc(calendar.session_open(label)),
        close=_to_utc(calendar.session_close(label)),
    )


def is_trading_day(day: date) -> bool:
    return session(day) is not None


def is_open(ts: datetime) -> bool:
    """True during regular trading hours."""
    ts = _require_aware(ts)
    current = session(ts.astimezone(NEW_YORK).date())
    return current is not None and current.contains(ts)


def sessions_between(start: date, end: date) -> list[Session]:
    """Every session from ``start`` to ``end`` inclusive (New York dates)."""
    calendar = _calendar()
    labels = calendar.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return [
        Session(
            day=label.date(),
            open=_to_utc(calendar.session_open(label)),
            close=_to_utc(calendar.session_close(label)),
        )
        for label in labels
    ]


def next_session(ts: datetime) -> Session:
    """The session in progress at ``ts``, or else the next one to open."""
    ts = _require_aware(ts)
    day = ts.astimezone(NEW_YORK).date()
    for offset in range(0, 15):
        candidate = session(day + timedelta(days=offset))
        if candidate is not None and ts < candidate.close:
            return candidate
    raise LookupError(f"no session within 15 days after {ts.isoformat()}")


def current_session_open(now_ms: int) -> int:
    """Open (UTC ms) of the session in progress at ``now_ms`` or of the next one: the start of
    what a consumer of the current session's stream entries replays or keeps."""
    upcoming = next_session(datetime.fromtimestamp(now_ms / 1000, tz=UTC))
    return int(upcoming.open.timestamp() * 1000)


def new_york_date(ts: datetime) -> date:
    return _require_aware(ts).astimezone(NEW_YORK).date()
