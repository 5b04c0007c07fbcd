"""The optional real IB Gateway (ghcr.io/gnzsnz/ib-gateway): off by default; when enabled a
StatefulSet + Service on the paper API port with the login from a Secret, under the pod policy
and the NetworkPolicies (trader -> gateway; gateway -> IB's servers)."""

from __future__ import annotations

import copy
import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from . import test_chart as chart_checks
from ._support import (
    KUBE_VERSIONS,
    WORKLOAD_KINDS,
    Obj,
    by_kind,
    env_of,
    find,
    parse_manifests,
    pod_spec,
    pod_template_metadata,
    selector_matches,
    workload_problems,
)
from .conftest import Render

ENABLED: dict[str, Any] = {"ibGateway": {"enabled": True, "existingSecret": "ib-login"}}
COMPONENT = "ib-gateway"


def gateway_objects(objects: list[Obj]) -> list[Obj]:
    return [
        o
        for o in objects
        if COMPONENT in o["metadata"]["name"]
        or o["metadata"]["labels"].get("app.kubernetes.io/component") == COMPONENT
    ]


@pytest.fixture(scope="module")
def enabled(render: Render) -> list[Obj]:
    return parse_manifests(render(copy.deepcopy(ENABLED)))


def test_disabled_by_default_renders_nothing(render: Render) -> None:
    objects = parse_manifests(render(None))
    assert gateway_objects(objects) == []
    assert not any("IB" in json.dumps(o) and "TWS_" in json.dumps(o) for o in objects)


def test_enabled_renders_a_statefulset_service_and_account(enabled: list[Obj]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in gateway_objects(enabled)}
    assert names == {
        ("ServiceAccount", "its-ib-gateway"),
        ("Service", "its-ib-gateway"),
        ("StatefulSet", "its-ib-gateway"),
        ("NetworkPolicy", "its-ib-gateway"),
        ("NetworkPolicy", "its-trader-to-ib-gateway"),
    }
    sts = find(enabled, "StatefulSet", "its-ib-gateway")
    assert sts["spec"]["replicas"] == 1
    container = pod_spec(sts)["containers"][0]
    assert container["image"] == "ghcr.io/gnzsnz/ib-gateway:10.37.1n"  # pinned, not latest
    assert container["ports"] == [{"name": "api", "containerPort": 4004, "protocol": "TCP"}]
    service = find(enabled, "Service", "its-ib-gateway")
    assert service["spec"]["ports"] == [
        {"name": "api", "port": 4002, "targetPort": "api", "protocol": "TCP"}
    ]
    assert selector_matches(service["spec"]["selector"], pod_template_metadata(sts)["labels"])
    env = env_of(container)
    assert env["TRADING_MODE"]["value"] == "paper"
    assert env["READ_ONLY_API"]["value"] == "no"


def test_credentials_come_from_the_secret_only(enabled: list[Obj]) -> None:
    sts = find(enabled, "StatefulSet", "its-ib-gateway")
    env = env_of(pod_spec(sts)["containers"][0])
    assert env["TWS_USERID"] == {
        "name": "TWS_USERID",
        "valueFrom": {"secretKeyRef": {"name": "ib-login", "key": "username"}},
    }
    assert env["TWS_PASSWORD"] == {
        "name": "TWS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "ib-login", "key": "password"}},
    }
    assert "value" not in env["TWS_USERID"] and "value" not in env["TWS_PASSWORD"]
    # The chart creates no Secret for it: the login is never part of the values.
    assert [s for s in by_kind(enabled, "Secret") if "ib" in s["metadata"]["name"]] == []


def test_the_secret_is_required_and_credentials_are_refused_as_values(render: Render) -> None:
    with pytest.raises(Exception, match="existingSecret"):
        render({"ibGateway": {"enabled": True}})
    for bad in (
        {"password": "hunter2"},
        {"username": "me"},
        {"env": {"TWS_PASSWORD": "hunter2"}},
        {"env": {"TWS_USERID": "me"}},
        {"tradingMode": "both"},
    ):
        with pytest.raises(helm.HelmValuesError, match="schema"):
            render({"ibGateway": {**ENABLED["ibGateway"], **bad}})


def test_custom_keys_live_mode_and_extra_env(render: Render) -> None:
    values = {
        "ibGateway": {
            "enabled": True,
            "existingSecret": "ib",
            "usernameKey": "user",
            "passwordKey": "pw",
            "tradingMode": "live",
            "readOnlyApi": True,
            "env": {"EXISTING_SESSION_DETECTED_ACTION": "primary"},
        }
    }
    objects = parse_manifests(render(values))
    sts = find(objects, "StatefulSet", "its-ib-gateway")
    container = pod_spec(sts)["containers"][0]
    env = env_of(container)
    assert env["TWS_USERID"]["valueFrom"]["secretKeyRef"] == {"name": "ib", "key": "user"}
    assert env["TWS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "ib", "key": "pw"}
    assert env["TRADING_MODE"]["value"] == "live" and env["READ_ONLY_API"]["value"] == "yes"
    assert env["EXISTING_SESSION_DETECTED_ACTION"]["value"] == "primary"
    assert container["ports"][0]["containerPort"] == 4003  # socat's live port
    service = find(objects, "Service", "its-ib-gateway")
    assert service["spec"]["ports"][0]["port"] == 4001


def test_the_workload_follows_the_pod_policy(enabled: list[Obj]) -> None:
    sts = find(enabled, "StatefulSet", "its-ib-gateway")
    assert workload_problems(sts) == []
    spec = pod_spec(sts)
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 1000  # the image's ibgateway user
    # The image writes its config into its home: a writable copy made by the init container.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/home/ibgateway"]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    init = spec["initContainers"][0]
    assert "/home/ibgateway/." in " ".join(init["command"])
    assert {m["name"] for m in init["volumeMounts"]} >= {mounts["/home/ibgateway"]}
    assert (
        "exec" in container["startupProbe"]
        and "4002" in container["readinessProbe"]["exec"]["command"][-1]
    )
    assert container["livenessProbe"]["tcpSocket"]["port"] == "api"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_enabled_objects_validate_against_kubernetes(enabled: list[Obj], kube_version: str) -> None:
    for obj in gateway_objects(enabled):
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")


def test_enabled_release_passes_the_chart_wide_checks(enabled: list[Obj]) -> None:
    scenario = ("ib-gateway", enabled)
    chart_checks.test_names_are_unique_and_namespaced(scenario)
    chart_checks.test_every_workload_follows_the_pod_policy(scenario)
    chart_checks.test_services_select_their_pods(scenario)
    chart_checks.test_network_policies_default_deny_and_dns(scenario)
    chart_checks.test_network_policies_cover_every_workload(scenario)
    assert all(workload_problems(w) == [] for w in enabled if w["kind"] in WORKLOAD_KINDS)


def test_network_policies_trader_in_ib_servers_out(enabled: list[Obj]) -> None:
    sts = find(enabled, "StatefulSet", "its-ib-gateway")
    gateway_labels = pod_template_metadata(sts)["labels"]
    trader = find(enabled, "Deployment", "its-trader")
    trader_labels = pod_template_metadata(trader)["labels"]
    policy = find(enabled, "NetworkPolicy", "its-ib-gateway")
    assert selector_matches(policy["spec"]["podSelector"]["matchLabels"], gateway_labels)
    (ingress,) = policy["spec"]["ingress"]
    assert selector_matches(ingress["from"][0]["podSelector"]["matchLabels"], trader_labels)
    assert ingress["ports"] == [{"protocol": "TCP", "port": 4004}]
    (egress,) = policy["spec"]["egress"]
    assert egress["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in egress["to"][0]["ipBlock"]["except"]
    assert {p["port"] for p in egress["ports"]} == {443, 4000, 4001}
    out = find(enabled, "NetworkPolicy", "its-trader-to-ib-gateway")
    assert selector_matches(out["spec"]["podSelector"]["matchLabels"], trader_labels)
    assert not selector_matches(out["spec"]["podSelector"]["matchLabels"], gateway_labels)
    peer = out["spec"]["egress"][0]
    assert selector_matches(peer["to"][0]["podSelector"]["matchLabels"], gateway_labels)
    assert peer["ports"] == [{"protocol": "TCP", "port": 4004}]


def test_no_network_policies_when_disabled(render: Render) -> None:
    values = {**copy.deepcopy(ENABLED), "networkPolicy": {"enabled": False}}
    objects = parse_manifests(render(values))
    assert by_kind(objects, "NetworkPolicy") == []
    assert find(objects, "StatefulSet", "its-ib-gateway")
