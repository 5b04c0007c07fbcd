"""What the market is doing, as the header shows it: open or closed by the exchange calendar,
or the feed replaying an earlier session (the simulator on a weekend or holiday) or simulating a
later one.

A replay is recognised from the feed clock (:mod:`its_common.clock`) alone, so it holds for any
feed: events keep arriving (the clock was written within :data:`FRESH_MS`) but their market time
is more than :data:`REPLAY_LAG_MS` behind (or ahead of) the wall clock. Polygon's 15-minute
delayed data stays below that lag; a quiet real feed on a weekend is not fresh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from its_common import calendar
from its_common.clock import to_datetime

NEW_YORK: Final = ZoneInfo("America/New_York")
FRESH_MS: Final = 120_000
REPLAY_LAG_MS: Final = 30 * 60_000


def replay_state(event_ms: int, written_ms: int, wall_ms: int) -> dict[str, Any] | None:
    """``{"session", "feed_ms", "ahead", "label"}`` when the feed is off the wall clock, else
    None. Behind it is a replay; ahead of it is the simulator having run past the end of the
    replayed session into the next one (it skips closed periods), which it then simulates."""
    lag = wall_ms - event_ms
    if wall_ms - written_ms > FRESH_MS or abs(lag) <= REPLAY_LAG_MS:
        return None
    moment = to_datetime(event_ms).astimezone(NEW_YORK)
    verb = "replaying" if lag > 0 else "simulating"
    return {
        "session": moment.date().isoformat(),
        "feed_ms": event_ms,
        "ahead": lag < 0,
        "market_open": calendar.is_open(to_datetime(event_ms)),
        "label": f"{verb} {moment:%a %Y-%m-%d, %H:%M} ET",
    }


def market_open_now(wall_ms: int) -> bool:
    return calendar.is_open(datetime.fromtimestamp(wall_ms / 1000, tz=UTC))
