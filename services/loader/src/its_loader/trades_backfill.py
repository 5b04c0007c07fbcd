"""REST backfill of trades: ``GET /v3/trades/{T}`` pages into ``trades``, final minutes only.

Mapping of a v3 result (Polygon, and the ITS simulator's REST) to a ``trades`` row, chosen so a
trade that also came over the WebSocket has the same primary key ``(symbol, ts, exchange,
trade_id)`` and is stored once:

* ``ts`` = ``sip_timestamp`` (ns) floored to milliseconds: the WebSocket's ``t`` is the same SIP
  time in milliseconds (the simulator emits ``t_ns // 1_000_000``);
* ``trade_id`` = ``id``, ``exchange`` = ``exchange``, ``tape`` = ``tape``, ``price``, ``size``,
  ``conditions`` (absent = none), ``sequence`` = ``sequence_number``;
* ``participant_timestamp``, ``trf_id``, ``trf_timestamp`` are not stored (the WebSocket path
  does not store them either).

Only trades of minutes final on the market clock are fetched (:mod:`its_loader.finality`): the
window is cut at ``final_until``. Each page is stored in its own transaction through the same
path as the stream's trades (binary COPY, ``ON CONFLICT DO NOTHING``), so a window is idempotent
and a crash mid-window just repeats pages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from its_common.events import Trade
from its_common.streams import now_ms
from its_loader.finality import iso_utc
from its_loader.metrics import LoaderMetrics
from its_loader.rest import BackfillError, PolygonRest
from its_loader.store import store_trades, trade_payload

log = logging.getLogger("its.loader.backfill")
NS_PER_MS = 1_000_000


def rest_trade(symbol: str, item: dict[str, Any]) -> Trade:
    """One ``/v3/trades`` result as the stream's Trade (see the module docstring)."""
    try:
        return Trade(
            symbol=symbol,
            exchange=int(item["exchange"]),
            trade_id=str(item["id"]),
            tape=int(item["tape"]),
            price=float(item["price"]),
            size=int(item["size"]),
            timestamp=int(item["sip_timestamp"]) // NS_PER_MS,
            sequence=int(item["sequence_number"]),
            conditions=tuple(int(c) for c in item.get("conditions") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackfillError(f"malformed REST trade for {symbol}: {exc!r} in {item!r}") from exc


def rest_trades(symbol: str, page: Sequence[dict[str, Any]]) -> list[Trade]:
    return [rest_trade(symbol, item) for item in page]


async def backfill_trades_window(
    rest: PolygonRest,
    conn: psycopg.AsyncConnection[Any],
    symbol: str,
    start_ms: int,
    end_ms: int,
    final_until: int,
    metrics: LoaderMetrics | None = None,
) -> int:
    """Every REST trade of ``symbol`` in ``[start_ms, min(end_ms, final_until))``, stored once;
    returns the rows inserted (trades already stored are not counted)."""
    end = min(end_ms, final_until)
    if end <= start_ms:
        log.info(
            "trades of %s %s..%s: no final minute yet", symbol, iso_utc(start_ms), iso_utc(end_ms)
        )
        return 0
    fetched = 0
    stored = 0
    async for page in rest.trade_pages(symbol, start_ms * NS_PER_MS, end * NS_PER_MS):
        if not page:
            continue
        payload, count = trade_payload([(now_ms(), rest_trades(symbol, page))])
        fetched += count
        # REST pages overlap what the WebSocket stored: the conflict path directly.
        stored += (await store_trades(conn, payload, insert_first=False))[0]
    if metrics is not None:
        metrics.backfill_trades.inc(stored)
    log.info(
        "backfilled trades %s %s..%s: %d REST trades, %d new rows%s",
        symbol,
        iso_utc(start_ms),
        iso_utc(end),
        fetched,
        stored,
        f" (cut at {iso_utc(final_until)}: not final)" if end < end_ms else "",
    )
    return stored
