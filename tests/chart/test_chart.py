"""The Helm chart: lint, schema, render, Kubernetes validation and the pod/network policy."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from ._support import (
    CHART_DIR,
    KUBE_VERSIONS,
    WORKLOAD_KINDS,
    Obj,
    by_kind,
    containers,
    env_of,
    env_order_problems,
    find,
    has,
    notes,
    parse_manifests,
    pod_spec,
    pod_template_metadata,
    selector_matches,
    workload_problems,
)
from .conftest import Render

# A release as it will look with more services, replicas, Polygon and pre-made secrets.
PRODUCTION: dict[str, Any] = {
    "global": {
        "imageRegistry": "registry.example.com/its",
        "imageTag": "1.2.3",
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "polygon": {"existingSecret": "polygon-key", "existingSecretKey": "key"},
    "redis": {"auth": {"existingSecret": "redis-auth", "existingSecretPasswordKey": "pw"}},
    "timescaledb": {"auth": {"existingSecret": "db-auth", "existingSecretPasswordKey": "pw"}},
    "otel": {"exporterOtlpEndpoint": "http://otel-collector.observability:4318"},
    "alerting": {
        "slack": {"existingSecret": "alerter-secrets"},
        "smtp": {"host": "smtp.example.com", "port": 465, "existingSecret": "alerter-secrets"},
    },
    "networkPolicy": {
        "extraEgress": [
            {
                "to": [{"namespaceSelector": {"matchLabels": {"name": "observability"}}}],
                "ports": [{"protocol": "TCP", "port": 4318}],
            }
        ]
    },
    "services": {
        "marketsim": {"replicas": 2},
        "router": {
            "enabled": True,
            "image": {"repository": "its-router"},
            "replicas": 2,
            "needs": {"redis": True, "polygon": True},
            "env": {"ITS_LOG_LEVEL": "DEBUG"},
        },
        "loader": {
            "enabled": True,
            "image": {"repository": "its-loader", "tag": "9.9.9"},
            "needs": {"redis": True, "database": True},
            "probes": {"liveness": {"periodSeconds": 30}},
            "resources": {"limits": {"memory": "1Gi"}},
        },
        "dashboard": {
            "enabled": True,
            "image": {"repository": "its-dashboard"},
            "needs": {"redis": True, "database": True},
        },
    },
}

# The other switches: no NetworkPolicies, inline Polygon key, no helm test.
INLINE_KEY: dict[str, Any] = {
    "networkPolicy": {"enabled": False},
    "polygon": {"apiKey": "not-a-real-key"},
    "helmTest": {"enabled": False},
    "config": {"symbols": "AAPL,NVDA,MSFT", "extra": {"ITS_FEATURE_X": "on"}},
    "services": {"marketsim": {"needs": {"polygon": True}}},
}

SCENARIOS = {"default": {}, "production": PRODUCTION, "inline-key": INLINE_KEY}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, render: Render) -> tuple[str, list[Obj]]:
    name: str = request.param
    return name, parse_manifests(render(copy.deepcopy(SCENARIOS[name])))


def enabled_services(values: dict[str, Any], chart: helm.Chart) -> list[str]:
    merged = chart.merge_values(copy.deepcopy(values))
    return sorted(n for n, e in merged["services"].items() if e.get("enabled"))


# ----- lint and schema -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario_name", sorted(SCENARIOS))
def test_helm_lint_strict(scenario_name: str) -> None:
    report = helm.lint(
        CHART_DIR, copy.deepcopy(SCENARIOS[scenario_name]), strict=True, kube_version="v1.31.0"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error (strict lint fails on both). Info ("icon is recommended")
    # is allowed.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_values_schema_is_valid_draft7_and_accepts_defaults() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("values", "offending"),
    [
        ({"networkPolicies": {"enabled": False}}, "networkPolicies"),
        ({"services": {"marketsim": {"replica": 2}}}, "replica"),
        (
            {"services": {"marketsim": {"probes": {"liveness": {"periodSecond": 5}}}}},
            "periodSecond",
        ),
        ({"services": {"marketsim": {"needs": {"postgres": True}}}}, "postgres"),
        ({"services": {"marketsim": {"image": {"repo": "x"}}}}, "repo"),
        ({"redis": {"maxmemoryPolicy": "allkeys-lru"}}, "maxmemoryPolicy"),
        ({"redis": {"persistance": {"size": "1Gi"}}}, "persistance"),
        ({"timescaledb": {"auth": {"existingSecretKey": "pw"}}}, "existingSecretKey"),
        ({"global": {"imageTags": "x"}}, "imageTags"),
        ({"services": {"marketsim": {"ports": [{"name": "http", "port": 9000}]}}}, "name"),
        ({"services": {"Bad_Name": {"enabled": True, "image": {"repository": "x"}}}}, "Bad_Name"),
        ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilege"),
    ],
)
def test_schema_rejects_typos_and_unsafe_values(
    chart: helm.Chart, render: Render, values: dict[str, Any], offending: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as excinfo:
        chart.validate_schema(values)
    assert offending in str(excinfo.value)
    # `helm install` refuses them too (rendering validates against the schema).
    with pytest.raises(helm.HelmValuesError):
        render(values)


# ----- every rendered object -------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", [*KUBE_VERSIONS, kubernetes_validate.latest_version()])
def test_objects_validate_against_kubernetes(
    scenario: tuple[str, list[Obj]], kube_version: str
) -> None:
    _, objects = scenario
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")


def test_names_are_unique_and_namespaced(scenario: tuple[str, list[Obj]]) -> None:
    _, objects = scenario
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    for o in objects:
        assert o["metadata"]["namespace"] == "its", o["metadata"]["name"]
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == "its"


def test_every_workload_follows_the_pod_policy(scenario: tuple[str, list[Obj]]) -> None:
    _, objects = scenario
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    assert {w["kind"] for w in workloads} >= {"Deployment", "StatefulSet", "Job"}
    problems = [p for w in workloads for p in workload_problems(w)]
    assert problems == []


def test_env_references_come_after_their_variables(scenario: tuple[str, list[Obj]]) -> None:
    _, objects = scenario
    problems = [
        p
        for w in objects
        if w["kind"] in WORKLOAD_KINDS
        for c in containers(w)
        for p in env_order_problems(c)
    ]
    assert problems == []


def test_services_select_their_pods(scenario: tuple[str, list[Obj]]) -> None:
    _, objects = scenario
    pod_labels = [
        pod_template_metadata(w)["labels"]
        for w in objects
        if w["kind"] in ("Deployment", "StatefulSet")
    ]
    for svc in by_kind(objects, "Service"):
        matches = [
            labels for labels in pod_labels if selector_matches(svc["spec"]["selector"], labels)
        ]
        assert len(matches) == 1, (
            f"Service/{svc['metadata']['name']} selects {len(matches)} workloads"
        )
    for w in objects:
        if w["kind"] in ("Deployment", "StatefulSet"):
            selector = w["spec"]["selector"]["matchLabels"]
            assert selector_matches(selector, pod_template_metadata(w)["labels"])


# ----- ITS services ----------------------------------------------------------------------------


def test_each_enabled_service_gets_deployment_service_and_account(
    chart: helm.Chart, scenario: tuple[str, list[Obj]]
) -> None:
    name, objects = scenario
    services = enabled_services(SCENARIOS[name], chart)
    assert "marketsim" in services
    deployments = sorted(d["metadata"]["name"] for d in by_kind(objects, "Deployment"))
    assert deployments == [f"its-{s}" for s in services]
    for s in services:
        sa = find(objects, "ServiceAccount", f"its-{s}")
        deployment = find(objects, "Deployment", f"its-{s}")
        api_client = pod_template_metadata(deployment)["labels"].get("its.io/kubernetes-api")
        assert sa["automountServiceAccountToken"] is (api_client == "true")
        spec = pod_spec(deployment)
        assert spec["serviceAccountName"] == f"its-{s}"
        assert spec["enableServiceLinks"] is False
        service_ports = {
            p["name"]: p["port"] for p in find(objects, "Service", f"its-{s}")["spec"]["ports"]
        }
        container = spec["containers"][0]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert service_ports == container_ports
        assert service_ports["http"] == 8080
        env = env_of(container)
        assert env["OTEL_SERVICE_NAME"]["value"] == s
        assert env["ITS_SERVICE_NAME"]["value"] == s
        assert env["ITS_HTTP_PORT"]["value"] == "8080"
        attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
        assert "service.version=" in attributes
        assert container["envFrom"] == [{"configMapRef": {"name": "its-config"}}]
        annotations = pod_template_metadata(deployment)["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "8080"
        assert annotations["prometheus.io/path"] == "/metrics"


def test_marketsim_defaults(render: Render) -> None:
    objects = parse_manifests(render(None))
    deployment = find(objects, "Deployment", "its-marketsim")
    container = pod_spec(deployment)["containers"][0]
    assert container["image"] == "its-marketsim:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "ws": 8765, "rest": 8766}
    assert deployment["spec"]["replicas"] == 1
    env = env_of(container)
    # marketsim needs neither Redis, nor the database, nor Polygon.
    assert not {"REDIS_URL", "DATABASE_URL", "POLYGON_API_KEY_FILE"} & set(env)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env


def test_production_wiring(render: Render) -> None:
    objects = parse_manifests(render(copy.deepcopy(PRODUCTION)))
    loader = pod_spec(find(objects, "Deployment", "its-loader"))
    container = loader["containers"][0]
    env = env_of(container)
    assert env["REDIS_URL"]["value"] == "redis://its-redis:6379/0"
    assert env["DATABASE_URL"]["value"] == "postgresql://its@its-timescaledb:5432/its"
    assert env["REDIS_PASSWORD_FILE"]["value"] == "/var/run/secrets/its/redis/password"
    assert env["DATABASE_PASSWORD_FILE"]["value"] == "/var/run/secrets/its/database/password"
    # The loader backfills from Polygon REST (values.yaml: needs.polygon), so it gets the key.
    assert env["POLYGON_API_KEY_FILE"]["value"] == "/var/run/secrets/its/polygon/api-key"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http://otel-collector")
    assert container["image"] == "registry.example.com/its/its-loader:9.9.9"
    assert container["livenessProbe"]["periodSeconds"] == 30
    assert container["readinessProbe"]["periodSeconds"] == 5  # default kept
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert container["resources"]["requests"]["memory"] == "128Mi"  # default kept
    assert loader["imagePullSecrets"] == [{"name": "regcred"}]
    volumes = {v["name"]: v for v in loader["volumes"]}
    assert volumes["redis-secret"]["secret"]["secretName"] == "redis-auth"
    assert volumes["redis-secret"]["secret"]["items"] == [{"key": "pw", "path": "password"}]
    assert volumes["database-secret"]["secret"]["secretName"] == "db-auth"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/run/secrets/its/redis", "/var/run/secrets/its/database", "/tmp"} <= mounts

    router = pod_spec(find(objects, "Deployment", "its-router"))["containers"][0]
    router_env = env_of(router)
    assert router_env["POLYGON_API_KEY_FILE"]["value"] == "/var/run/secrets/its/polygon/api-key"
    assert router_env["ITS_LOG_LEVEL"]["value"] == "DEBUG"
    assert [e["name"] for e in router["env"]].count("ITS_LOG_LEVEL") == 1
    assert router["image"] == "registry.example.com/its/its-router:1.2.3"
    router_volumes = {
        v["name"]: v for v in pod_spec(find(objects, "Deployment", "its-router"))["volumes"]
    }
    assert router_volumes["polygon-secret"]["secret"]["secretName"] == "polygon-key"
    assert router_volumes["polygon-secret"]["secret"]["items"][0]["key"] == "key"

    # Pre-made secrets: the chart creates none of its own.
    assert by_kind(objects, "Secret") == []
    for sts, secret in (("its-redis", "redis-auth"), ("its-timescaledb", "db-auth")):
        names = {
            v["secret"]["secretName"]
            for v in pod_spec(find(objects, "StatefulSet", sts))["volumes"]
            if "secret" in v
        }
        assert names == {secret}

    configmap = find(objects, "ConfigMap", "its-config")["data"]
    assert configmap["ITS_POLYGON_WS_URL"] == "wss://socket.polygon.io/stocks"
    assert configmap["ITS_POLYGON_REST_URL"] == "https://api.polygon.io"


@pytest.mark.parametrize("scenario_name", sorted(SCENARIOS))
def test_pdb_exactly_for_services_with_several_replicas(
    chart: helm.Chart, render: Render, scenario_name: str
) -> None:
    values = copy.deepcopy(SCENARIOS[scenario_name])
    objects = parse_manifests(render(copy.deepcopy(values)))
    merged = chart.merge_values(values)
    expected = sorted(
        f"its-{n}"
        for n, e in merged["services"].items()
        if e.get("enabled") and e.get("replicas", merged["serviceDefaults"]["replicas"]) > 1
    )
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert sorted(p["metadata"]["name"] for p in pdbs) == expected
    for pdb in pdbs:
        deployment = find(objects, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1
    if scenario_name == "production":
        assert expected == ["its-marketsim", "its-router"]


def test_replicas_spread_over_nodes_unless_told_otherwise(render: Render) -> None:
    spread = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule"}]  # fmt: skip
    objects = parse_manifests(
        render(
            {
                "services": {
                    "loader": {"replicas": 3},
                    "router": {"replicas": 1},
                    "validator": {"replicas": 2, "topologySpreadConstraints": spread},
                }
            }
        )
    )
    loader = find(objects, "Deployment", "its-loader")["spec"]
    (constraint,) = loader["template"]["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    assert constraint["labelSelector"]["matchLabels"] == loader["selector"]["matchLabels"]
    router = find(objects, "Deployment", "its-router")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in router
    validator = find(objects, "Deployment", "its-validator")["spec"]["template"]["spec"]
    assert validator["topologySpreadConstraints"] == spread


def test_the_simulator_has_room_for_two_days_and_others_keep_the_default_tmp(
    render: Render,
) -> None:
    objects = parse_manifests(render({"services": {"router": {"tmpSizeLimit": "64Mi"}}}))

    def pod(name: str) -> dict[str, Any]:
        spec: dict[str, Any] = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        return spec

    def tmp_size(name: str) -> str:
        (tmp,) = [v for v in pod(name)["volumes"] if v["name"] == "tmp"]
        return str(tmp["emptyDir"]["sizeLimit"])

    assert tmp_size("its-marketsim") == "1Gi"
    assert tmp_size("its-router") == "64Mi"
    assert tmp_size("its-loader") == "256Mi"
    (simulator,) = pod("its-marketsim")["containers"]
    assert simulator["resources"]["limits"]["memory"] == "3Gi"


def test_replicas_zero_is_respected(render: Render) -> None:
    objects = parse_manifests(render({"services": {"marketsim": {"replicas": 0}}}))
    assert find(objects, "Deployment", "its-marketsim")["spec"]["replicas"] == 0


def test_disabled_service_renders_nothing(render: Render) -> None:
    objects = parse_manifests(render({"services": {"marketsim": {"enabled": False}}}))
    assert not [o for o in objects if o["metadata"]["name"] == "its-marketsim"]


# ----- config and checksums --------------------------------------------------------------------


def test_feed_defaults_to_the_in_cluster_simulator(render: Render) -> None:
    data = find(parse_manifests(render(None)), "ConfigMap", "its-config")["data"]
    assert data["ITS_SYMBOLS"] == "NVDA,MSFT"
    assert data["ITS_POLYGON_WS_URL"] == "ws://its-marketsim:8765/stocks"
    assert data["ITS_POLYGON_REST_URL"] == "http://its-marketsim:8766"


def test_inline_polygon_key_switches_feed_and_creates_secret(render: Render) -> None:
    objects = parse_manifests(render(copy.deepcopy(INLINE_KEY)))
    data = find(objects, "ConfigMap", "its-config")["data"]
    assert data["ITS_POLYGON_WS_URL"] == "wss://socket.polygon.io/stocks"
    assert data["ITS_SYMBOLS"] == "AAPL,NVDA,MSFT"
    assert data["ITS_FEATURE_X"] == "on"
    secret = find(objects, "Secret", "its-polygon")
    assert set(secret["data"]) == {"api-key"}
    assert by_kind(objects, "NetworkPolicy") == []
    assert not by_kind(objects, "Pod")  # helm test disabled


def checksums(objects: list[Obj]) -> tuple[str, str]:
    annotations = pod_template_metadata(find(objects, "Deployment", "its-marketsim"))["annotations"]
    return annotations["checksum/config"], annotations["checksum/secret"]


def test_checksums_are_stable_and_follow_config_and_secret_changes(render: Render) -> None:
    config, secret = checksums(parse_manifests(render(None)))
    # Generated passwords differ on every offline render; the checksum must not.
    assert checksums(parse_manifests(render(None))) == (config, secret)
    changed_config, same_secret = checksums(
        parse_manifests(render({"config": {"symbols": "NVDA"}}))
    )
    assert changed_config != config
    assert same_secret == secret
    same_config, changed_secret = checksums(
        parse_manifests(render({"polygon": {"existingSecret": "k"}}))
    )
    assert changed_secret != secret
    assert same_config != config  # the feed URLs moved to Polygon, so the config changed too


def test_generated_passwords_are_random_and_marked_keep(render: Render) -> None:
    objects = parse_manifests(render(None))
    redis = find(objects, "Secret", "its-redis")
    db = find(objects, "Secret", "its-timescaledb")
    assert set(redis["data"]) == {"redis-password"}
    assert set(db["data"]) == {"password"}
    for secret in (redis, db):
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    templates = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in templates  # kept across upgrades


# ----- Redis, TimescaleDB, migrations ----------------------------------------------------------


def test_redis_statefulset(render: Render) -> None:
    objects = parse_manifests(render(None))
    sts = find(objects, "StatefulSet", "its-redis")
    assert sts["spec"]["serviceName"] == "its-redis-headless"
    assert find(objects, "Service", "its-redis-headless")["spec"]["clusterIP"] == "None"
    assert find(objects, "Service", "its-redis")["spec"]["ports"][0]["port"] == 6379
    container = pod_spec(sts)["containers"][0]
    assert container["image"].startswith("redis:7")
    script = " ".join(container["command"])
    assert "--maxmemory 256mb" in script  # half the 512Mi limit (test_stores)
    assert "--maxmemory-policy noeviction" in script
    assert "requirepass" in script and "/var/run/secrets/redis/password" in script
    assert "redis-cli" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert "REDIS_PASSWORD" not in json.dumps(container)  # password only via the mounted file
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pod_spec(sts)["securityContext"]["runAsUser"] == 999


def test_timescaledb_statefulset(render: Render) -> None:
    objects = parse_manifests(render(None))
    sts = find(objects, "StatefulSet", "its-timescaledb")
    assert find(objects, "Service", "its-timescaledb-headless")["spec"]["clusterIP"] == "None"
    spec = pod_spec(sts)
    assert spec["securityContext"]["runAsUser"] == 1000
    container = spec["containers"][0]
    assert container["image"].startswith("timescale/timescaledb-ha:pg16")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "pg_isready" in " ".join(container[probe]["exec"]["command"])
    env = env_of(container)
    assert env["POSTGRES_PASSWORD_FILE"]["value"] == "/var/run/secrets/timescaledb/password"
    assert "POSTGRES_PASSWORD" not in env
    assert env["PGDATA"]["value"].startswith("/home/postgres/pgdata/")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/home/postgres/pgdata"] == "data"
    assert "/var/run/postgresql" in mounts
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_helm_test_pod_checks_every_enabled_service(chart: helm.Chart, render: Render) -> None:
    objects = parse_manifests(render(copy.deepcopy(PRODUCTION)))
    pod = find(objects, "Pod", "its-test-services")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    script = container["command"][2]
    assert "/healthz" in script and "/readyz" in script
    urls = container["command"][3:]
    expected = [f"http://its-{s}:8080" for s in enabled_services(PRODUCTION, chart)]
    assert urls == expected
    assert pod["spec"]["restartPolicy"] == "Never"


# ----- NetworkPolicies -------------------------------------------------------------------------


def egress_ports(policy: Obj) -> set[tuple[str, int]]:
    return {
        (p.get("protocol", "TCP"), p["port"])
        for rule in policy["spec"].get("egress", [])
        for p in rule.get("ports", [])
    }


def test_network_policies_default_deny_and_dns(scenario: tuple[str, list[Obj]]) -> None:
    name, objects = scenario
    policies = by_kind(objects, "NetworkPolicy")
    if name == "inline-key":
        assert policies == []
        return
    release = {"app.kubernetes.io/name": "its", "app.kubernetes.io/instance": "its"}
    deny = find(objects, "NetworkPolicy", "its-default-deny")
    assert deny["spec"]["podSelector"]["matchLabels"] == release
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    dns = find(objects, "NetworkPolicy", "its-allow-dns")
    assert dns["spec"]["podSelector"]["matchLabels"] == release
    assert egress_ports(dns) == {("UDP", 53), ("TCP", 53)}
    peer = dns["spec"]["egress"][0]["to"][0]
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_network_policies_cover_every_workload(scenario: tuple[str, list[Obj]]) -> None:
    """Every pod is under default deny, may resolve DNS, can be probed on http, and reaches
    exactly the backing stores its `needs` ask for."""
    name, objects = scenario
    if name == "inline-key":
        return
    policies = by_kind(objects, "NetworkPolicy")

    def applying(labels: dict[str, str], kind: str) -> list[Obj]:
        return [
            p
            for p in policies
            if kind in p["spec"]["policyTypes"]
            and selector_matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        ]

    for w in objects:
        if w["kind"] not in WORKLOAD_KINDS:
            continue
        labels = pod_template_metadata(w)["labels"]
        egress = applying(labels, "Egress")
        ports = set().union(*(egress_ports(p) for p in egress))
        assert ("UDP", 53) in ports, w["metadata"]["name"]
        assert any("egress" not in p["spec"] for p in egress)  # default deny applies
        assert (("TCP", 6379) in ports) == (labels.get("its.io/redis-client") == "true")
        assert (("TCP", 5432) in ports) == (labels.get("its.io/database-client") == "true")
        api_client = labels.get("its.io/kubernetes-api") == "true"  # the API server: 443/6443
        internet = "true" in {
            labels.get("its.io/internet-client"),
            labels.get("its.io/notify-client"),
        }
        assert (("TCP", 443) in ports) == (internet or api_client)
        assert (("TCP", 6443) in ports) == api_client
        if w["kind"] == "Deployment":
            ingress_ports = {
                p["port"]
                for pol in applying(labels, "Ingress")
                for rule in pol["spec"].get("ingress", [])
                for p in rule.get("ports", [])
            }
            container_ports = {
                p["containerPort"] for c in pod_spec(w)["containers"] for p in c["ports"]
            }
            assert container_ports <= ingress_ports, w["metadata"]["name"]
            # marketsim's feed ports are reachable from every release pod.
            assert ("TCP", 8765) in ports


def test_internet_egress_only_with_a_polygon_key(render: Render) -> None:
    assert not has(parse_manifests(render(None)), "NetworkPolicy", "its-allow-internet")
    objects = parse_manifests(render(copy.deepcopy(PRODUCTION)))
    policy = find(objects, "NetworkPolicy", "its-allow-internet")
    assert egress_ports(policy) == {("TCP", 443)}
    assert policy["spec"]["podSelector"]["matchLabels"]["its.io/internet-client"] == "true"
    router = pod_template_metadata(find(objects, "Deployment", "its-router"))["labels"]
    assert router["its.io/internet-client"] == "true"
    loader = pod_template_metadata(find(objects, "Deployment", "its-loader"))["labels"]
    assert loader["its.io/internet-client"] == "true"  # REST backfill
    collector = pod_template_metadata(find(objects, "Deployment", "its-collector"))["labels"]
    assert "its.io/internet-client" not in collector


def test_alerter_notify_egress_only_for_the_alerter_when_configured(render: Render) -> None:
    for values in ({}, {"alerting": {"smtp": {"existingSecret": "x"}}}):
        objects = parse_manifests(render(values))
        assert not has(objects, "NetworkPolicy", "its-allow-alerter-notify")
        alerter = pod_template_metadata(find(objects, "Deployment", "its-alerter"))["labels"]
        assert "its.io/notify-client" not in alerter
    objects = parse_manifests(render(copy.deepcopy(PRODUCTION)))
    policy = find(objects, "NetworkPolicy", "its-allow-alerter-notify")
    assert egress_ports(policy) == {("TCP", 443), ("TCP", 465)}
    assert policy["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    selected = [
        w["metadata"]["name"]
        for w in objects
        if w["kind"] in WORKLOAD_KINDS
        and selector_matches(
            policy["spec"]["podSelector"]["matchLabels"], pod_template_metadata(w)["labels"]
        )
    ]
    assert selected == ["its-alerter"]
    env = env_of(pod_spec(find(objects, "Deployment", "its-alerter"))["containers"][0])
    assert env["ITS_ALERTER_SLACK_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "alerter-secrets",
        "key": "slack-webhook-url",
    }
    assert env["ITS_ALERTER_SMTP_HOST"]["value"] == "smtp.example.com"
    assert env["ITS_ALERTER_SMTP_PORT"]["value"] == "465"
    assert env["ITS_ALERTER_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "smtp-password"
    smtp_only = parse_manifests(
        render({"alerting": {"smtp": {"host": "10.1.2.3"}, "egressCidr": "10.1.2.3/32"}})
    )
    policy = find(smtp_only, "NetworkPolicy", "its-allow-alerter-notify")
    assert egress_ports(policy) == {("TCP", 587)}
    assert policy["spec"]["egress"][0]["to"][0]["ipBlock"] == {"cidr": "10.1.2.3/32"}


# ----- singletons, cross-service URLs ----------------------------------------------------------

SINGLETONS = ("trader", "inference", "features")


def test_singletons_run_one_replica_recreated(render: Render) -> None:
    objects = parse_manifests(render(None))
    for name in SINGLETONS:
        deployment = find(objects, "Deployment", f"its-{name}")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for name in ("loader", "router", "dashboard"):
        assert "strategy" not in find(objects, "Deployment", f"its-{name}")["spec"]  # rolling


def test_elected_singletons_run_two_replicas_rolling_one_at_a_time(render: Render) -> None:
    values = {
        "leaderElection": {"enabled": True},
        "services": {name: {"replicas": 2} for name in SINGLETONS},
    }
    objects = parse_manifests(render(values))
    for name in SINGLETONS:
        spec = find(objects, "Deployment", f"its-{name}")["spec"]
        assert spec["replicas"] == 2
        # the new pod starts as a standby before an old one stops: never zero candidates
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
    with pytest.raises(helm.HelmValuesError):
        render({**values, "services": {"trader": {"replicas": 3}}})


@pytest.mark.parametrize("name", SINGLETONS)
def test_schema_refuses_a_second_singleton_replica(
    chart: helm.Chart, render: Render, name: str
) -> None:
    values = {"services": {name: {"replicas": 2}}}
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(values)
    # Zero (paused) stays allowed; a typo inside a singleton is still caught.
    chart.validate_schema({"services": {name: {"replicas": 0}}})
    with pytest.raises(helm.HelmValuesError, match="replica"):
        chart.validate_schema({"services": {name: {"replica": 1}}})


def test_service_defaults_do_not_scale_a_singleton(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="trader is a singleton"):
        render({"serviceDefaults": {"replicas": 2}})
    objects = parse_manifests(
        render(
            {
                "serviceDefaults": {"replicas": 2},
                "services": {name: {"replicas": 1} for name in SINGLETONS},
            }
        )
    )
    assert find(objects, "Deployment", "its-router")["spec"]["replicas"] == 2
    assert find(objects, "Deployment", "its-trader")["spec"]["replicas"] == 1


@pytest.mark.parametrize("release", ["its", "paper"])
def test_dashboard_router_metrics_url_follows_the_release(chart: helm.Chart, release: str) -> None:
    objects = parse_manifests(chart.render({}, name=release, namespace="its", is_install=True))
    dashboard = find(objects, "Deployment", f"{release}-dashboard")
    env = env_of(pod_spec(dashboard)["containers"][0])
    assert env["ITS_DASHBOARD_ROUTER_METRICS_URL"]["value"] == (
        f"http://{release}-router:8080/metrics"
    )
    assert has(objects, "Service", f"{release}-router")
    overridden = parse_manifests(
        chart.render(
            {"fullnameOverride": "prod", "global": {"httpPort": 9090}},
            name=release,
            namespace="its",
        )
    )
    env = env_of(pod_spec(find(overridden, "Deployment", "prod-dashboard"))["containers"][0])
    assert env["ITS_DASHBOARD_ROUTER_METRICS_URL"]["value"] == "http://prod-router:9090/metrics"
    without_router = parse_manifests(
        chart.render({"services": {"router": {"enabled": False}}}, name=release, namespace="its")
    )
    env = env_of(
        pod_spec(find(without_router, "Deployment", f"{release}-dashboard"))["containers"][0]
    )
    assert "ITS_DASHBOARD_ROUTER_METRICS_URL" not in env


# ----- NOTES -----------------------------------------------------------------------------------


def test_notes_without_dashboard(render: Render) -> None:
    text = notes(render({"services": {"dashboard": {"enabled": False}}}))
    assert "not deployed yet" in text
    assert "kubectl port-forward --namespace its svc/its-marketsim 8765:8765" in text
    assert "helm status its --namespace its" in text
    assert "svc/its-dashboard" not in text


def test_notes_with_dashboard_by_default(render: Render) -> None:
    assert "svc/its-dashboard 8080:8080" in notes(render(None))


def test_notes_with_dashboard(render: Render) -> None:
    text = notes(render(copy.deepcopy(PRODUCTION)))
    assert "kubectl port-forward --namespace its svc/its-dashboard 8080:8080" in text
    assert "not deployed yet" not in text
    assert "Polygon" in text


# ----- the checks above must bite --------------------------------------------------------------


def test_policy_check_catches_a_writable_root_filesystem(render: Render) -> None:
    values = {"containerSecurityContext": {"readOnlyRootFilesystem": False}}
    objects = parse_manifests(render(values))
    problems = [p for w in objects if w["kind"] in WORKLOAD_KINDS for p in workload_problems(w)]
    assert any("readOnlyRootFilesystem" in p and "its-marketsim" in p for p in problems)
    assert any("its-redis" in p for p in problems)


def test_policy_check_catches_a_chart_without_probes(tmp_path: Path) -> None:
    broken = tmp_path / "its"
    shutil.copytree(CHART_DIR, broken)
    template = broken / "templates" / "services.yaml"
    text = template.read_text()
    start = text.index("          livenessProbe:")
    end = text.index("          readinessProbe:")
    template.write_text(text[:start] + text[end:])
    with helm.Chart.load(broken) as chart:
        objects = parse_manifests(chart.render({}, name="its", namespace="its"))
    problems = [p for w in by_kind(objects, "Deployment") for p in workload_problems(w)]
    assert any("no livenessProbe" in p for p in problems)


def test_env_order_check_catches_a_forward_reference() -> None:
    container: Obj = {
        "name": "x",
        "env": [{"name": "A", "value": "$(B)"}, {"name": "B", "value": "b"}],
    }
    assert env_order_problems(container) == ["x: A uses $(B) before it"]
