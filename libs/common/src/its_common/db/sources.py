"""Values of ``market_data.source``: who a stored minute bar came from (one contract for the
loader that writes them and every reader of ``market_data``).

A provisional REST bar is the REST aggregate of a minute that was not final on the market clock
when it was fetched (it may be partial): any WebSocket bar or later REST read replaces it, and
readers that need complete bars (features rebuild, training data) skip it.
"""

from __future__ import annotations

from typing import Final

SOURCE_WS: Final = "polygon_ws"
SOURCE_REST: Final = "polygon_rest"
SOURCE_REST_PROVISIONAL: Final = "polygon_rest_provisional"
