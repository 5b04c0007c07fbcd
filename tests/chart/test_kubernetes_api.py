"""ITS's own Kubernetes API access in the chart: only the dashboard (Cluster panel) and, with
leader election, the singletons get a ServiceAccount token, each bound to a Role with only the
verbs it needs; the singletons may then run two replicas."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from ._support import (
    KUBE_VERSIONS,
    Obj,
    by_kind,
    containers,
    env_of,
    find,
    parse_manifests,
    pod_spec,
    pod_template_metadata,
    workload_problems,
)
from .conftest import Render

SINGLETONS = ("trader", "inference", "features")
LEADER_ELECTION: dict[str, Any] = {
    "leaderElection": {"enabled": True},
    "services": {name: {"replicas": 2} for name in SINGLETONS},
}


def api_clients(objects: list[Obj]) -> set[str]:
    return {
        d["metadata"]["name"]
        for d in by_kind(objects, "Deployment")
        if pod_template_metadata(d)["labels"].get("its.io/kubernetes-api") == "true"
    }


def bound_rules(objects: list[Obj], account: str) -> list[Obj]:
    """Every rule of every Role bound to the ServiceAccount ``account``."""
    rules: list[Obj] = []
    for binding in by_kind(objects, "RoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            rules += find(objects, "Role", binding["roleRef"]["name"])["rules"]
    assert not [b for b in by_kind(objects, "ClusterRoleBinding")], "no cluster-wide grants"
    return rules


def validate(objects: list[Obj]) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_by_default_only_the_dashboard_reads_pods_and_nothing_else(render: Render) -> None:
    objects = parse_manifests(render(None))
    assert api_clients(objects) == {"its-dashboard"}
    assert bound_rules(objects, "its-dashboard") == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    for name in ("its-router", "its-trader", "its-loader"):
        assert bound_rules(objects, name) == []
        assert pod_spec(find(objects, "Deployment", name))["automountServiceAccountToken"] is False
    dashboard = find(objects, "Deployment", "its-dashboard")
    assert pod_spec(dashboard)["automountServiceAccountToken"] is True
    env = env_of(next(containers(dashboard)))
    selector = env["ITS_DASHBOARD_CLUSTER_SELECTOR"]["value"]
    assert selector == "app.kubernetes.io/name=its,app.kubernetes.io/instance=its"
    assert "ITS_LEADER_ELECTION" not in env_of(
        next(containers(find(objects, "Deployment", "its-trader")))
    )
    assert not [r for r in by_kind(objects, "Role") if "leases" in r["metadata"]["name"]]
    egress = find(objects, "NetworkPolicy", "its-kubernetes-api-egress")
    assert egress["spec"]["podSelector"]["matchLabels"]["its.io/kubernetes-api"] == "true"
    validate(objects)


def test_the_cluster_panel_can_be_switched_off(render: Render) -> None:
    objects = parse_manifests(render({"kubernetesApi": {"clusterPanel": False}}))
    assert api_clients(objects) == set()
    assert bound_rules(objects, "its-dashboard") == []
    assert (
        pod_spec(find(objects, "Deployment", "its-dashboard"))["automountServiceAccountToken"]
        is False
    )


def test_leader_election_gives_each_singleton_its_lease_and_two_replicas(render: Render) -> None:
    objects = parse_manifests(render(LEADER_ELECTION))
    leases = [f"its-{name}" for name in SINGLETONS]
    assert api_clients(objects) == {"its-dashboard", *leases}
    for name in SINGLETONS:
        deployment = find(objects, "Deployment", f"its-{name}")
        assert deployment["spec"]["replicas"] == 2
        assert workload_problems(deployment) == []
        env = env_of(next(containers(deployment)))
        assert env["ITS_LEADER_ELECTION"]["value"] == "kubernetes"
        assert env["ITS_LEADER_LEASE_NAME"]["value"] == f"its-{name}"
        assert env["ITS_LEADER_LEASE_S"]["value"] == "10"
        assert env["ITS_LEADER_RENEW_S"]["value"] == "3"
        rules = bound_rules(objects, f"its-{name}")
        assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "resourceNames": sorted(leases, key=lambda n: SINGLETONS.index(n[4:])),
                "verbs": ["get", "update"]} in rules  # fmt: skip
        assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["create"]} in rules  # fmt: skip
        assert not [r for r in rules if "pods" in r["resources"]]
        find(objects, "PodDisruptionBudget", f"its-{name}")
    # The dashboard reads pods but holds no lease.
    assert all("leases" not in r["resources"] for r in bound_rules(objects, "its-dashboard"))
    validate(objects)


def test_a_disabled_singleton_gets_no_lease_grant(render: Render) -> None:
    values = {"leaderElection": {"enabled": True}, "services": {"features": {"enabled": False}}}
    objects = parse_manifests(render(values))
    role = find(objects, "Role", "its-leases")
    assert role["rules"][0]["resourceNames"] == ["its-trader", "its-inference"]
    binding = find(objects, "RoleBinding", "its-leases")
    assert [s["name"] for s in binding["subjects"]] == ["its-trader", "its-inference"]


@pytest.mark.parametrize(
    "values",
    [
        {"services": {"trader": {"replicas": 2}}},  # two traders without a lease
        {"services": {"features": {"replicas": 2}}},
        {"leaderElection": {"enabled": True}, "services": {"inference": {"replicas": 3}}},
    ],
)
def test_singleton_replicas_are_one_or_two_with_leader_election(
    render: Render, values: dict[str, Any]
) -> None:
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        render(values)
