"""The fencing token where orders are recorded: an order under a token lower than one already
seen is refused in the INSERT's transaction; a trader without the lease records nothing."""

from __future__ import annotations

import pytest

from its_common.leader.lease import NotLeaderError
from its_trader.store import FencedOutError, TraderStore

from .conftest import Feed, decision, make_settings, query


def order(store: TraderStore, cid: str, token: int | None):
    return store.record_order(cid, "SIM", "sim", "NVDA", "BUY", 10, None, "buy", token)


async def test_a_stale_token_is_refused_in_the_same_transaction(db_url):
    old, new = TraderStore({"conninfo": db_url}), TraderStore({"conninfo": db_url})
    try:
        assert await order(old, "its-1", 1)
        await new.claim_fence(2)  # a new leader took over
        with pytest.raises(FencedOutError, match="token 1 is stale"):
            await order(old, "its-2", 1)
        assert await order(new, "its-3", 2)
        with pytest.raises(FencedOutError):
            await old.claim_fence(1)
        assert await order(old, "its-4", None)  # leader election off: no fence
    finally:
        await old.close()
        await new.close()
    rows = query(db_url, "SELECT client_order_id, fence_token FROM orders ORDER BY 1")
    assert rows == [("its-1", 1), ("its-3", 2), ("its-4", None)]


async def test_a_trader_that_lost_the_lease_records_and_sends_nothing(
    redis_client, redis_server, db_url, make_trader
):
    feed = Feed(redis_client)
    await feed.prices(NVDA=100.0, MSFT=400.0)
    trader = make_trader(make_settings(redis_server.url, db_url))
    await trader.start()

    def lost() -> int:
        raise NotLeaderError("not the leader of trader")

    trader.fence = lost
    with pytest.raises(NotLeaderError):
        await trader.handle_decision(decision(feed.t, 8))
    assert query(db_url, "SELECT count(*) FROM orders") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM sim_orders") == [(0,)]
