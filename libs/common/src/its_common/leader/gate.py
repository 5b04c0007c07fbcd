"""The leadership gate of a singleton service's main.

With leader election off (``ITS_LEADER_ELECTION=off``, the default for a single local process)
the body runs at once and ``fence()`` gives None. Otherwise the process waits hot as a standby
(heartbeat status ``standby``, ``/readyz`` ready with ``role: standby``) until it holds the
lease, runs the body while it leads, and raises :class:`LeadershipLostError` the moment the
lease is lost, so the process exits and comes back as a standby with fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from its_common.leader.elector import LeaderElector
from its_common.leader.lease import LeadershipLostError, Lease, LeaseTiming
from its_common.runtime import ServiceContext
from its_common.settings import BaseServiceSettings

log = logging.getLogger("its.leader")


@dataclass(frozen=True, slots=True)
class Leadership:
    """What the body gets: the fencing token of the current holding (None without election)."""

    elector: LeaderElector | None

    def fence(self) -> int | None:
        """The token to store with an effect; NotLeaderError when the lease is not held now."""
        return None if self.elector is None else self.elector.fence_token()


def identity() -> str:
    """Unique per process: the pod name (hostname) in a cluster, plus pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def lease_timing(settings: BaseServiceSettings) -> LeaseTiming:
    return LeaseTiming(
        lease_s=settings.leader_lease_s,
        renew_s=settings.leader_renew_s,
        renew_deadline_s=settings.leader_renew_deadline_s,
        retry_s=settings.leader_retry_s,
    )


def build_lease(ctx: ServiceContext[Any]) -> Lease | None:
    """The lease the settings ask for: ``kubernetes`` (in a pod: ``auto``), ``redis``, or none."""
    settings = ctx.settings
    mode = settings.leader_election
    if mode == "off":
        return None
    name = settings.leader_lease_name or ctx.service
    timing = lease_timing(settings)
    from its_common import kube

    if mode == "kubernetes" or (mode == "auto" and kube.in_cluster()):
        from its_common.leader.k8s_lease import KubernetesLease

        target = kube.connect(settings.kubeconfig, settings.kube_namespace)
        labels = {"app.kubernetes.io/component": ctx.service}
        return KubernetesLease(target.api, target.namespace, name, identity(), timing, labels)
    from its_common.leader.redis_lease import RedisLease

    return RedisLease(ctx.require_redis(), name, identity(), timing)


async def lead(
    ctx: ServiceContext[Any], body: Callable[[Leadership], Coroutine[Any, Any, None]]
) -> None:
    """Run ``body`` only while this process holds the service's lease (see the module doc)."""
    lease = build_lease(ctx)
    if lease is None:
        await body(Leadership(None))
        return
    elector = LeaderElector(lease, lease_timing(ctx.settings))
    # The election stops only after the body has finished (a SIGTERM'd leader keeps its lease
    # through its shutdown grace, so no standby acts while it still flushes).
    halt = asyncio.Event()
    election = asyncio.create_task(elector.run(halt), name="leader-election")
    ctx.status = "standby"
    ctx.health.role = "standby"
    log.info("standby for lease %s as %s", lease.name, lease.identity)
    leading = asyncio.ensure_future(elector.leading.wait())
    stop = asyncio.ensure_future(ctx.stopping.wait())
    try:
        await asyncio.wait({leading, stop, election}, return_when=asyncio.FIRST_COMPLETED)
        if not elector.leading.is_set():
            return  # stopped while standby
        ctx.status = "running"
        ctx.health.role = "leader"
        main = asyncio.create_task(body(Leadership(elector)), name="leader-body")
        lost = asyncio.ensure_future(elector.lost.wait())
        try:
            await asyncio.wait({main, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
            raise LeadershipLostError(f"lease {lease.name} lost: stopping to restart as standby")
        main.result()
    finally:
        leading.cancel()
        stop.cancel()
        halt.set()  # ends the election loop, which releases a held lease
        await asyncio.gather(election, return_exceptions=True)
