"""Leader election takeover, with the default timings (lease 10 s, renew 3 s, deadline 7 s,
retry 1 s), as a ratio of the stated bound (``LeaseTiming.takeover_bound_s``, 12 s):

1. Redis lease, the leader dies without releasing (as kill -9): time until the standby leads.
2. Redis lease, the leader stops cleanly (releases): time until the standby leads.
3. Kubernetes Lease (the local fake API server, the real client), the leader dies: same.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from its_common import kube
from its_common.leader.elector import LeaderElector
from its_common.leader.k8s_lease import KubernetesLease
from its_common.leader.lease import Lease, LeaseTiming
from its_common.leader.redis_lease import RedisLease
from its_common.localstack.servers import RedisServer
from tests.k8s_fake.server import FakeKubeApi

TIMING = LeaseTiming()


async def takeover(first: Lease, second: Lease, release: bool) -> float:
    leader, standby = LeaderElector(first, TIMING), LeaderElector(second, TIMING)
    stop_leader, stop_standby = asyncio.Event(), asyncio.Event()
    leading = asyncio.create_task(leader.run(stop_leader))
    while not leader.is_leader():
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(standby.run(stop_standby))
    await asyncio.sleep(TIMING.renew_s + 0.5)  # somewhere inside a renewal period
    died = time.monotonic()
    if release:
        stop_leader.set()
        await leading
    else:
        leader.lost.set()  # no release on the way out: as a killed process
        leading.cancel()
    while not standby.is_leader():
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - died
    stop_standby.set()
    await waiting
    return elapsed


async def measure(redis_url: str, kube_api: FakeKubeApi, kubeconfig: Path) -> dict[str, Any]:
    r = aioredis.Redis.from_url(redis_url)
    out: dict[str, Any] = {"bound_s": TIMING.takeover_bound_s}
    try:
        for name, release in (("redis_killed", False), ("redis_clean_stop", True)):
            seconds = await takeover(
                RedisLease(r, name, "a", TIMING), RedisLease(r, name, "b", TIMING), release
            )
            out[name] = {
                "seconds": round(seconds, 2),
                "of_bound": round(seconds / TIMING.takeover_bound_s, 2),
            }
    finally:
        await r.aclose()
    target = kube.connect(str(kubeconfig))
    leases = [
        KubernetesLease(target.api, target.namespace, "bench", who, TIMING) for who in ("a", "b")
    ]
    seconds = await takeover(leases[0], leases[1], release=False)
    out["kubernetes_killed"] = {
        "seconds": round(seconds, 2),
        "of_bound": round(seconds / TIMING.takeover_bound_s, 2),
    }
    return out


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="its-bench-leader-"))
    server = RedisServer(work / "redis").start()
    kube_api = FakeKubeApi().start()
    try:
        kubeconfig = kube_api.write_kubeconfig(work / "kubeconfig")
        result = asyncio.run(measure(server.url, kube_api, kubeconfig))
    finally:
        kube_api.stop()
        server.stop()
    for key, value in result.items():
        print(f"   {key}: {value}", flush=True)
    return result
