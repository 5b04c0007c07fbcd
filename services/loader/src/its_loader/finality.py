"""When a minute is final: the one rule every REST path of the loader applies.

A minute is **final** once it has closed on the feed's clock (:class:`its_common.clock.MarketClock`,
``its:clock:feed``) plus :data:`SETTLE_MS`: by then its WebSocket bar (and the corrections of
late trades that matter) has arrived, and REST's aggregate of it is complete. Before that, REST
returns what it has so far: the minute in progress (09:30 with 113,181 shares instead of
2,006,782), or a just-closed minute still being aggregated.

The rule: REST data of a minute that is not final is never stored as final. Bars of such minutes
are stored as ``polygon_rest_provisional`` (:mod:`its_loader.store`), which any WebSocket bar and
any later REST read replace; trades of such minutes are not stored at all (the WebSocket or a
later backfill brings them, deduplicated by the trades' primary key).

Why provisional bars rather than nothing: a gap window reaching the minute in progress (start-up,
a reconnect) may be the only source of that minute if the WebSocket lost its bar too; a
provisional row keeps the hole visibly filled, the complete WebSocket bar replaces it when it
comes, the next start-up re-reads it (start-up windows begin after the last *non-provisional*
bar) and the gap audit reports a provisional row of a settled minute as a mismatch that
``--repair`` replaces with the final REST bar.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

MINUTE_MS: Final = 60_000
# How long after a minute's end its data is taken as complete (the audit uses the same delay).
SETTLE_MS: Final = 60_000


def final_until_ms(market_now_ms: int, settle_ms: int = SETTLE_MS) -> int:
    """The end of the last final minute (a minute boundary): minute ``m`` (start ms) is final
    iff ``m + MINUTE_MS <= final_until_ms(now)``; a trade at ``t`` is in a final minute iff
    ``t < final_until_ms(now)``."""
    return ((market_now_ms - settle_ms) // MINUTE_MS) * MINUTE_MS


def is_final(minute_start_ms: int, final_until: int) -> bool:
    return minute_start_ms + MINUTE_MS <= final_until


def iso_utc(ms: int, timespec: str = "seconds") -> str:
    """A millisecond timestamp as ISO 8601 in UTC, for log lines."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec=timespec)
