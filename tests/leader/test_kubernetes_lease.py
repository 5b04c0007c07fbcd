"""The Kubernetes Lease backend with the real ``kubernetes`` client against the local fake API
server: create, renew, 409 conflicts on a stale resourceVersion, takeover after expiry,
release, and the elector on top."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from its_common import kube
from its_common.leader.elector import LeaderElector
from its_common.leader.k8s_lease import KubernetesLease
from its_common.leader.lease import LeaseTiming
from tests.conditions import wait_until
from tests.k8s_fake.fixtures import NAMESPACE

FAST = LeaseTiming(lease_s=1.0, renew_s=0.2, renew_deadline_s=0.7, retry_s=0.1)


def make_lease(kubeconfig, identity: str, name: str = "its-trader") -> KubernetesLease:
    target = kube.connect(str(kubeconfig))
    assert target.namespace == NAMESPACE  # from the kubeconfig's context
    return KubernetesLease(target.api, target.namespace, name, identity, FAST)


async def test_create_then_renew_then_refuse_another_holder(kube_api, kubeconfig):
    a = make_lease(kubeconfig, "pod-a")
    b = make_lease(kubeconfig, "pod-b")
    before = int(time.time() * 1e6)
    first = await a.acquire_or_renew()  # created (404 first): the token is the clock in µs
    assert first is not None and before <= first <= time.time() * 1e6
    created = kube_api.get("leases", NAMESPACE, "its-trader")
    assert created is not None
    assert created["apiVersion"] == "coordination.k8s.io/v1"
    assert created["spec"]["holderIdentity"] == "pod-a"
    assert created["spec"]["leaseDurationSeconds"] == 1
    assert created["metadata"]["annotations"]["its.io/fencing-token"] == str(first)
    assert created["spec"]["leaseTransitions"] == 0
    assert await a.acquire_or_renew() == first  # renewed: a PUT with the read resourceVersion
    renewed = kube_api.get("leases", NAMESPACE, "its-trader")
    assert renewed is not None
    assert int(renewed["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert renewed["spec"]["renewTime"] >= created["spec"]["renewTime"]
    assert await b.acquire_or_renew() is None  # held and just seen: not expired for b
    methods = [m for m, path in kube_api.requests if "/leases" in path]
    assert methods[:3] == ["GET", "POST", "GET"] and "PUT" in methods


async def test_a_stale_resource_version_is_a_409_conflict_and_the_round_is_lost(
    kube_api, kubeconfig
):
    a = make_lease(kubeconfig, "pod-a")
    token = await a.acquire_or_renew()
    assert token is not None
    # Another writer changes the Lease between a's read and its update.
    kube_api.after_get = kube_api.touch
    assert await a.acquire_or_renew() is None
    assert a.conflicts == 1
    kube_api.after_get = None
    assert await a.acquire_or_renew() == token  # the next round reads the new version

    # The client sees the API's Status object: 409 Conflict with its reason.
    api = client.CoordinationV1Api(kube.connect(str(kubeconfig)).api)
    lease = api.read_namespaced_lease("its-trader", NAMESPACE)
    assert lease.metadata is not None
    stale = lease.metadata.resource_version
    kube_api.touch("leases", NAMESPACE, "its-trader")
    lease.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_lease("its-trader", NAMESPACE, lease)
    assert conflict.value.status == 409
    assert '"reason":"Conflict"' in str(conflict.value.body).replace(" ", "")
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_lease("nope", NAMESPACE)
    assert missing.value.status == 404


async def test_a_create_race_is_a_409_already_exists(kube_api, kubeconfig):
    a = make_lease(kubeconfig, "pod-a", "its-features")

    # a reads 404; before its create, another replica creates the Lease.
    def another_creates(plural: str, ns: str, name: str) -> None:
        if kube_api.get(plural, ns, name) is None:
            kube_api.put_object(
                "leases",
                ns,
                {
                    "metadata": {"name": name},
                    "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 1},
                },
            )

    kube_api.after_get = another_creates
    assert await a.acquire_or_renew() is None
    assert a.conflicts == 1
    kube_api.after_get = None
    lease = kube_api.get("leases", NAMESPACE, "its-features")
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-b"


async def test_takeover_after_the_holder_stops_renewing_and_a_higher_token(kube_api, kubeconfig):
    a = make_lease(kubeconfig, "pod-a")
    b = make_lease(kubeconfig, "pod-b")
    first = await a.acquire_or_renew()
    assert first is not None
    # a stops renewing. b judges expiry on its own clock: leaseDurationSeconds after it first
    # saw this record unchanged.
    tokens: list[int] = []

    async def b_takes() -> bool:
        token = await b.acquire_or_renew()
        if token is not None:
            tokens.append(token)
        return token is not None

    await wait_until(b_takes, 10, 0.1)
    assert tokens == [first + 1]
    lease = kube_api.get("leases", NAMESPACE, "its-trader")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert lease["metadata"]["annotations"]["its.io/fencing-token"] == str(first + 1)
    assert await a.acquire_or_renew() is None  # the old holder sees b and stays out


async def test_electors_hand_over_on_release(kube_api, kubeconfig):
    first = LeaderElector(make_lease(kubeconfig, "pod-a", "its-inference"), FAST)
    second = LeaderElector(make_lease(kubeconfig, "pod-b", "its-inference"), FAST)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    run_first = asyncio.create_task(first.run(stop_first))
    await wait_until(first.is_leader, 10, 0.02)
    first_token = first.fence_token()
    run_second = asyncio.create_task(second.run(stop_second))
    try:
        stop_first.set()
        await run_first
        lease = kube_api.get("leases", NAMESPACE, "its-inference")
        assert lease is not None and lease["spec"]["holderIdentity"] in ("", "pod-b")
        await wait_until(second.is_leader, 10, 0.02)
        assert second.fence_token() == first_token + 1
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(run_first, run_second)


async def test_a_recreated_lease_outranks_the_tokens_of_the_deleted_one(kube_api, kubeconfig):
    a = make_lease(kubeconfig, "pod-a")
    b = make_lease(kubeconfig, "pod-b")
    old = await a.acquire_or_renew()
    assert old is not None
    # Someone deletes the Lease (the database fence keeps the last token it saw): the next
    # holder's token is still larger, as it starts from the clock.
    kube_api.delete_object("leases", NAMESPACE, "its-trader")
    new = await b.acquire_or_renew()
    assert new is not None and new > old
