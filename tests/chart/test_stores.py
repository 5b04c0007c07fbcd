"""Redis and TimescaleDB: pinned images, pull secrets, the memory budget and the persistence
guard (issue 13, items 4, 5 and 8)."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from ._support import CHART_DIR, find, parse_manifests, pod_spec
from .conftest import Render

STORES = ("its-redis", "its-timescaledb")
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def container(objects: list[dict[str, Any]], sts: str) -> dict[str, Any]:
    first: dict[str, Any] = pod_spec(find(objects, "StatefulSet", sts))["containers"][0]
    return first


def maxmemory_bytes(redis: dict[str, Any]) -> int:
    match = re.search(r"--maxmemory (\d+)mb", " ".join(redis["command"]))
    assert match, redis["command"]
    return int(match.group(1)) * 2**20


def limit_bytes(redis: dict[str, Any]) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", redis["resources"]["limits"]["memory"]).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


# ----- images ----------------------------------------------------------------------------------


def test_third_party_images_are_pinned_exact_versions(render: Render) -> None:
    objects = parse_manifests(render(None))
    redis = container(objects, "its-redis")["image"]
    assert re.fullmatch(r"redis:7\.4\.\d+-alpine@sha256:[0-9a-f]{64}", redis), redis
    db = container(objects, "its-timescaledb")["image"]
    assert re.fullmatch(r"timescale/timescaledb-ha:pg16\.\d+-ts2\.\d+\.\d+", db), db


def test_digest_and_registry_apply_to_third_party_images(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    values = {
        "global": {
            "thirdPartyRegistry": "mirror.example.com/hub/",
            "imagePullSecrets": [{"name": "regcred"}],
        },
        "timescaledb": {"image": {"digest": digest}},
    }
    objects = parse_manifests(render(values))
    db = container(objects, "its-timescaledb")["image"]
    assert db == f"mirror.example.com/hub/timescale/timescaledb-ha:pg16.6-ts2.17.2@{digest}"
    assert container(objects, "its-redis")["image"].startswith("mirror.example.com/hub/redis:7.4")
    for sts in STORES:
        assert pod_spec(find(objects, "StatefulSet", sts))["imagePullSecrets"] == [
            {"name": "regcred"}
        ]


def test_a_malformed_digest_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="digest"):
        chart.validate_schema({"redis": {"image": {"digest": "latest"}}})


# ----- Redis memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["512Mi", "384Mi", "1Gi", "2Gi"])
def test_redis_maxmemory_leaves_the_fork_half_the_limit(render: Render, limit: str) -> None:
    """With AOF, the rewrite forks: copy-on-write pages of a busy Redis can approach its data
    size, so the data budget is half the container limit, never near all of it."""
    redis = container(
        parse_manifests(render({"redis": {"resources": {"limits": {"memory": limit}}}})),
        "its-redis",
    )
    ratio = maxmemory_bytes(redis) / limit_bytes(redis)
    assert 0.45 <= ratio <= 0.5, ratio


def test_redis_default_budget(render: Render) -> None:
    redis = container(parse_manifests(render(None)), "its-redis")
    assert redis["resources"]["limits"]["memory"] == "512Mi"
    assert "--maxmemory 256mb" in " ".join(redis["command"])


def test_redis_explicit_maxmemory_within_and_beyond_the_cap(render: Render) -> None:
    within = container(parse_manifests(render({"redis": {"maxmemory": "300mb"}})), "its-redis")
    assert "--maxmemory 300mb" in " ".join(within["command"])
    with pytest.raises(helm.HelmRenderError, match="AOF rewrite fork"):
        render({"redis": {"maxmemory": "400mb"}})  # 78 % of 512Mi


def test_alerter_memory_alert_default_is_below_the_redis_budget(render: Render) -> None:
    from its_alerter.config import AlerterSettings

    redis = container(parse_manifests(render(None)), "its-redis")
    threshold = AlerterSettings.model_fields["redis_memory_bytes"].default
    assert threshold < maxmemory_bytes(redis)


# ----- persistence -----------------------------------------------------------------------------

GUARD_PROBE = (
    '{{- include "its.persistenceGuard" (dict "root" $ "component" "redis" "values" "redis"'
    ' "persistence" .Values.redis.persistence'
    ' "live" (fromYaml (.Files.Get "live.yaml"))) -}}\n'
)


def guard_render(tmp_path: Path, live_claim: dict[str, Any], values: dict[str, Any]) -> None:
    """Render a copy of the chart whose guard sees ``live_claim`` as the live StatefulSet's
    claim template (offline rendering has no cluster for `lookup`)."""
    chart_dir = tmp_path / "its"
    shutil.copytree(CHART_DIR, chart_dir)
    live = {"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": live_claim}]}}
    (chart_dir / "live.yaml").write_text(yaml.safe_dump(live))
    (chart_dir / "templates" / "zz-guard-probe.yaml").write_text(GUARD_PROBE)
    with helm.Chart.load(chart_dir) as chart:
        chart.render(values, name="its", namespace="its", is_upgrade=True)


LIVE = {
    "accessModes": ["ReadWriteOnce"],
    "resources": {"requests": {"storage": "2Gi"}},
    "volumeMode": "Filesystem",
}


def test_persistence_guard_passes_unchanged_claims(tmp_path: Path) -> None:
    guard_render(tmp_path, LIVE, {})
    # The same size written another way (the API server keeps the canonical form).
    guard_render(tmp_path / "mi", LIVE, {"redis": {"persistence": {"size": "2048Mi"}}})


@pytest.mark.parametrize(
    "change",
    [
        {"size": "4Gi"},
        {"storageClass": "fast"},
        {"accessModes": ["ReadWriteOncePod"]},
    ],
    ids=["size", "storageClass", "accessModes"],
)
def test_persistence_guard_refuses_a_changed_claim_with_the_way_out(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    with pytest.raises(helm.HelmRenderError) as excinfo:
        guard_render(tmp_path, LIVE, {"redis": {"persistence": change}})
    message = str(excinfo.value)
    assert "redis.persistence changed" in message
    assert "volumeClaimTemplates cannot change" in message
    assert "data-its-redis-0" in message and "--cascade=orphan" in message


def test_both_statefulsets_look_up_their_live_object() -> None:
    for template in ("redis.yaml", "timescaledb.yaml"):
        text = (CHART_DIR / "templates" / template).read_text()
        assert 'include "its.persistenceGuard"' in text
        assert 'lookup "apps/v1" "StatefulSet"' in text


# ----- external stores and stream shards (issue 14) --------------------------------------------


EXTERNAL = {
    "redis": {
        "external": {
            "url": "rediss://redis.example.net:6380/0",
            "port": 6380,
            "cidr": "10.8.0.0/16",
        },
        "auth": {"existingSecret": "managed-redis"},
    },
    "timescaledb": {
        "external": {"host": "tsdb.example.net", "port": 5433},
        "auth": {"existingSecret": "managed-tsdb"},
    },
}


def test_external_redis_and_timescaledb_replace_the_in_chart_stores(render: Render) -> None:
    objects = parse_manifests(render(EXTERNAL))
    for name in STORES:
        assert not any(
            o["metadata"]["name"] == name for o in objects if o["kind"] != "NetworkPolicy"
        )
    loader = next(c for c in pod_spec(find(objects, "Deployment", "its-loader"))["containers"])
    env = {e["name"]: e.get("value") for e in loader["env"]}
    assert env["REDIS_URL"] == "rediss://redis.example.net:6380/0"
    assert env["DATABASE_URL"] == "postgresql://its@tsdb.example.net:5433/its"
    secrets = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    assert "its-redis" not in secrets and "its-timescaledb" not in secrets
    clients = find(objects, "NetworkPolicy", "its-redis-clients")["spec"]["egress"]
    assert clients == [
        {"to": [{"ipBlock": {"cidr": "10.8.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 6380}]}
    ]
    db = find(objects, "NetworkPolicy", "its-timescaledb-clients")["spec"]["egress"]
    assert db[0]["ports"] == [{"protocol": "TCP", "port": 5433}]
    assert not any(
        o["metadata"]["name"].endswith("-ingress") and "redis" in o["metadata"]["name"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
    )


def test_an_external_store_needs_an_existing_secret(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="existingSecret"):
        render({"redis": {"external": {"url": "redis://redis.example.net:6379/0"}}})


def test_an_external_redis_cluster_sets_cluster_mode_for_every_process(render: Render) -> None:
    cluster: dict[str, Any] = copy.deepcopy(EXTERNAL)
    cluster["redis"]["external"]["cluster"] = True
    objects = parse_manifests(render(cluster))
    config = find(objects, "ConfigMap", "its-config")
    assert config["data"]["ITS_REDIS_CLUSTER"] == "true"
    # Every container given REDIS_URL also reads the shared ConfigMap: none misses the setting.
    redis_users = []
    for workload in objects:
        if workload["kind"] == "CronJob":
            spec = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif workload["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = pod_spec(workload)
        else:
            continue
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            if any(e["name"] == "REDIS_URL" for e in c.get("env", [])):
                refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
                assert "its-config" in refs, (workload["metadata"]["name"], c["name"])
                redis_users.append(workload["metadata"]["name"])
    assert {"its-router", "its-loader", "its-features", "its-trader"} <= set(redis_users)
    single = parse_manifests(render(EXTERNAL))
    assert find(single, "ConfigMap", "its-config")["data"]["ITS_REDIS_CLUSTER"] == "false"
    assert (
        find(parse_manifests(render(None)), "ConfigMap", "its-config")["data"]["ITS_REDIS_CLUSTER"]
        == "false"
    )


def test_cluster_mode_needs_an_external_redis_and_a_boolean(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"redis\.external\.url"):
        render({"redis": {"external": {"cluster": True}}})
    with pytest.raises(helm.HelmValuesError, match="boolean"):
        render({"redis": {"external": {"cluster": "yes"}}})


def test_stream_shards_are_one_setting_for_every_service(render: Render) -> None:
    objects = parse_manifests(render({"config": {"streamShards": 4}}))
    assert find(objects, "ConfigMap", "its-config")["data"]["ITS_STREAM_SHARDS"] == "4"
