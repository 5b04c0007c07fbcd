"""The optional OpenTelemetry Collector (and Jaeger) of the chart."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ._support import (
    KUBE_VERSIONS,
    Obj,
    by_kind,
    containers,
    env_of,
    find,
    has,
    parse_manifests,
    pod_spec,
    pod_template_metadata,
    selector_matches,
    workload_problems,
)
from .conftest import Render

ENABLED: dict[str, Any] = {"otelCollector": {"enabled": True}}
WITH_JAEGER: dict[str, Any] = {"otelCollector": {"enabled": True, "jaeger": {"enabled": True}}}
COLLECTOR = "http://its-otel-collector:4318"


@pytest.fixture(scope="module")
def objects(render: Render) -> list[Obj]:
    return parse_manifests(render(copy.deepcopy(WITH_JAEGER)))


def service_deployments(objects: list[Obj]) -> list[Obj]:
    return [
        d
        for d in by_kind(objects, "Deployment")
        if d["metadata"]["name"] not in ("its-otel-collector", "its-jaeger")
    ]


def test_disabled_by_default(render: Render) -> None:
    objects = parse_manifests(render(None))
    assert not has(objects, "Deployment", "its-otel-collector")
    assert not has(objects, "NetworkPolicy", "its-allow-egress-otel-collector")
    for deployment in service_deployments(objects):
        for c in containers(deployment):
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(c)


@pytest.mark.parametrize("kube_version", [*KUBE_VERSIONS, kubernetes_validate.latest_version()])
def test_objects_validate_against_kubernetes(objects: list[Obj], kube_version: str) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")


def test_collector_and_jaeger_follow_the_pod_policy(objects: list[Obj]) -> None:
    collector = find(objects, "Deployment", "its-otel-collector")
    jaeger = find(objects, "Deployment", "its-jaeger")
    assert workload_problems(collector) == []
    assert workload_problems(jaeger) == []
    image = pod_spec(collector)["containers"][0]["image"]
    assert image.startswith("otel/opentelemetry-collector-contrib:")
    assert not image.endswith((":latest", ":"))
    assert pod_spec(jaeger)["containers"][0]["image"].startswith("jaegertracing/all-in-one:")


def test_collector_config(objects: list[Obj]) -> None:
    config = yaml.safe_load(find(objects, "ConfigMap", "its-otel-collector")["data"]["config.yaml"])
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert config["extensions"]["health_check"]["endpoint"].endswith(":8080")
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "its-jaeger:4317"
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and traces["exporters"] == ["debug", "otlp/jaeger"]
    mounts = pod_spec(find(objects, "Deployment", "its-otel-collector"))["containers"][0]
    assert "--config=/conf/config.yaml" in mounts["args"]
    service = find(objects, "Service", "its-otel-collector")
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 8080}


def test_collector_without_jaeger(render: Render) -> None:
    objects = parse_manifests(render(copy.deepcopy(ENABLED)))
    assert has(objects, "Deployment", "its-otel-collector")
    assert not has(objects, "Deployment", "its-jaeger")
    config = yaml.safe_load(find(objects, "ConfigMap", "its-otel-collector")["data"]["config.yaml"])
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["debug"]
    assert "otlp/jaeger" not in config["exporters"]
    assert workload_problems(find(objects, "Deployment", "its-otel-collector")) == []


def test_services_export_to_the_collector(objects: list[Obj]) -> None:
    deployments = service_deployments(objects)
    assert deployments
    for deployment in deployments:
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == COLLECTOR
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"


def test_an_explicit_endpoint_wins(render: Render) -> None:
    values = {**copy.deepcopy(ENABLED), "otel": {"exporterOtlpEndpoint": "http://elsewhere:4318"}}
    for deployment in service_deployments(parse_manifests(render(values))):
        env = env_of(pod_spec(deployment)["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://elsewhere:4318"


def test_schema_rejects_unknown_keys(render: Render) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError):
        render({"otelCollector": {"enabled": True, "jaegr": {"enabled": True}}})


def allowed(policies: list[Obj], kind: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Rules of the policies of ``kind`` that select a pod with ``labels``."""
    key = "egress" if kind == "Egress" else "ingress"
    return [
        rule
        for p in policies
        if kind in p["spec"]["policyTypes"]
        and selector_matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        for rule in p["spec"].get(key, [])
    ]


def reaches(rules: list[dict[str, Any]], peer: dict[str, str], port: int) -> bool:
    """Some rule lets traffic to/from a pod with labels ``peer`` on ``port``."""
    for rule in rules:
        peers = rule.get("to", rule.get("from"))
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        if peers is None or any(
            selector_matches(x.get("podSelector", {}).get("matchLabels", {}), peer)
            for x in peers
            if "podSelector" in x
        ):
            return True
    return False


def test_network_policies_allow_otlp(objects: list[Obj]) -> None:
    policies = by_kind(objects, "NetworkPolicy")
    labels = {
        d["metadata"]["name"]: pod_template_metadata(d)["labels"]
        for d in by_kind(objects, "Deployment")
    }
    collector, jaeger = labels.pop("its-otel-collector"), labels.pop("its-jaeger")
    for name, pod in labels.items():
        for port in (4317, 4318):
            assert reaches(allowed(policies, "Egress", pod), collector, port), (name, port)
            assert reaches(allowed(policies, "Ingress", collector), pod, port), (name, port)
    assert reaches(allowed(policies, "Egress", collector), jaeger, 4317)
    assert reaches(allowed(policies, "Ingress", jaeger), collector, 4317)
    assert not reaches(allowed(policies, "Ingress", jaeger), labels["its-router"], 4317)
    assert reaches(allowed(policies, "Ingress", jaeger), {}, 16686)  # the UI
    for pod in (collector, jaeger):
        assert reaches(allowed(policies, "Ingress", pod), {}, 8080)  # probes
