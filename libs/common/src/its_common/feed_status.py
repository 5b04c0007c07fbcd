"""The feed's state as the router publishes it: the hash :data:`FEED_STATE_KEY` (``state``,
``detail``, ``ts_ms``: the newest state) and one entry per change on
:data:`its_common.streams.Stream.FEED_STATUS` (``v=1``, ``type=feed_status``, ``data``: JSON of
:class:`FeedStatus`). Read by the alerter and the dashboard.
"""

from __future__ import annotations

from typing import Final

import msgspec

FEED_STATE_KEY: Final = "its:feed:state"
# The states a healthy connection is in; every other state means no data is flowing.
HEALTHY_STATES: Final = frozenset({"subscribed", "connected"})
# The feed closed the connection because this reader fell behind (Polygon closes a slow
# consumer with 1011 "keepalive ping timeout"): the alerter's feed_overflow rule reads it.
SLOW_CONSUMER: Final = "slow_consumer"


class FeedStatus(msgspec.Struct, frozen=True):
    """One entry of ``its:stream:feed-status`` (field ``data``; ``v=1``, ``type=feed_status``)."""

    # connected | subscribed | disconnected | slow_consumer | stale | auth_failed |
    # max_connections
    state: str
    detail: str
    ts_ms: int
    source: str = "router"


def decode_status(fields: dict[bytes, bytes]) -> FeedStatus:
    return msgspec.json.decode(fields[b"data"], type=FeedStatus)
