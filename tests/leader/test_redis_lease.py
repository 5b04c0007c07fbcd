"""The Redis lease against real Redis: one holder, growing fencing tokens, expiry, release."""

from __future__ import annotations

import asyncio

import pytest

from its_common.leader.elector import LeaderElector
from its_common.leader.lease import LeaseTiming, NotLeaderError
from its_common.leader.redis_lease import RedisLease, lease_key
from tests.conditions import wait_until

FAST = LeaseTiming(lease_s=1.0, renew_s=0.2, renew_deadline_s=0.7, retry_s=0.1)


async def test_one_holder_and_a_larger_token_for_every_new_holder(redis_client):
    a = RedisLease(redis_client, "trader", "pod-a", FAST)
    b = RedisLease(redis_client, "trader", "pod-b", FAST)
    first = await a.acquire_or_renew()
    assert first is not None
    assert await b.acquire_or_renew() is None
    assert await a.acquire_or_renew() == first  # a renewal keeps the token
    assert await a.holder() == "pod-a"
    await b.release()  # not b's: nothing happens
    assert await a.holder() == "pod-a"
    await a.release()
    second = await b.acquire_or_renew()
    assert second is not None and second > first
    assert await a.acquire_or_renew() is None


async def test_an_unrenewed_lease_expires_and_the_renewal_extends_it(redis_client):
    a = RedisLease(redis_client, "features", "pod-a", FAST)
    b = RedisLease(redis_client, "features", "pod-b", FAST)
    token = await a.acquire_or_renew()
    ttl = await redis_client.pttl(lease_key("features"))
    assert 0 < ttl <= 1000
    # a stops renewing (dead or paused): the key expires in Redis and b takes the lease.
    taken: list[int] = []

    async def b_takes() -> bool:
        got = await b.acquire_or_renew()
        if got is not None:
            taken.append(got)
        return got is not None

    await wait_until(b_takes, 10, 0.05)
    assert token is not None and taken[0] > token
    assert await a.acquire_or_renew() is None


async def test_an_identity_with_the_separator_is_refused(redis_client):
    with pytest.raises(ValueError, match="cannot contain"):
        RedisLease(redis_client, "trader", "a|b", FAST)


async def test_a_standby_elector_takes_over_when_the_leader_stops_and_releases(redis_client):
    first = LeaderElector(RedisLease(redis_client, "inference", "pod-a", FAST), FAST)
    second = LeaderElector(RedisLease(redis_client, "inference", "pod-b", FAST), FAST)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    run_first = asyncio.create_task(first.run(stop_first))
    await wait_until(first.is_leader, 10, 0.02)
    run_second = asyncio.create_task(second.run(stop_second))
    try:
        await asyncio.sleep(0)  # let the standby try once
        await wait_until(lambda: second.renew_failures == 0 and not second.is_leader(), 5, 0.02)
        with pytest.raises(NotLeaderError):
            second.fence_token()
        token = first.fence_token()
        stop_first.set()  # a clean stop releases the lease: no wait for the expiry
        await run_first
        assert not first.is_leader()
        await wait_until(second.is_leader, 5, 0.02)
        assert second.fence_token() > token
        assert not first.lost.is_set()
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(run_first, run_second)


async def test_a_lost_token_counter_restarts_above_the_old_tokens(redis_client):
    a = RedisLease(redis_client, "trader", "pod-a", FAST)
    old = await a.acquire_or_renew()
    assert old is not None
    await redis_client.flushdb()  # Redis lost its data; the database fence keeps `old`
    b = RedisLease(redis_client, "trader", "pod-b", FAST)
    new = await b.acquire_or_renew()
    assert new is not None and new > old
