"""The nightly gap-audit CronJob (loader image, `its-loader audit --trades --repair`)."""

from __future__ import annotations

import copy

from ._support import env_of, find, has, parse_manifests
from .conftest import Render
from .test_chart import PRODUCTION


def test_gap_audit_cronjob_defaults(render: Render) -> None:
    objects = parse_manifests(render(None))
    cron = find(objects, "CronJob", "its-gap-audit")
    spec = cron["spec"]
    assert spec["schedule"] == "30 1 * * *"
    assert spec["timeZone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["its-loader"]
    assert container["args"] == ["audit", "--trades", "--repair"]
    assert container["image"].startswith("its-loader:")
    env = env_of(container)
    assert env["DATABASE_PASSWORD_FILE"]["value"] == "/var/run/secrets/its/database/password"
    assert env["REDIS_PASSWORD_FILE"]["value"] == "/var/run/secrets/its/redis/password"
    assert "POLYGON_API_KEY_FILE" not in env  # no key: the in-cluster simulator serves REST
    labels = pod["metadata"]["labels"]
    assert labels["its.io/database-client"] == "true" and labels["its.io/redis-client"] == "true"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_gap_audit_with_polygon_and_production_images(render: Render) -> None:
    objects = parse_manifests(render(copy.deepcopy(PRODUCTION)))
    cron = find(objects, "CronJob", "its-gap-audit")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/its/its-loader:9.9.9"
    assert env_of(container)["POLYGON_API_KEY_FILE"]["value"].endswith("/polygon/api-key")
    assert pod["metadata"]["labels"]["its.io/internet-client"] == "true"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_gap_audit_can_be_disabled_or_configured(render: Render) -> None:
    objects = parse_manifests(render({"gapAudit": {"enabled": False}}))
    assert not has(objects, "CronJob", "its-gap-audit")
    objects = parse_manifests(render({"services": {"loader": {"enabled": False}}}))
    assert not has(objects, "CronJob", "its-gap-audit")
    values = {
        "gapAudit": {"repair": False, "extraArgs": ["--fail-on-gaps"], "schedule": "0 2 * * 2-6"}
    }
    cron = find(parse_manifests(render(values)), "CronJob", "its-gap-audit")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["audit", "--trades", "--fail-on-gaps"]
    assert cron["spec"]["schedule"] == "0 2 * * 2-6"


def test_collector_targets_every_enabled_service(render: Render) -> None:
    objects = parse_manifests(render(None))
    config = find(objects, "ConfigMap", "its-config")
    pairs = config["data"]["ITS_COLLECTOR_TARGETS"].split(",")
    targets = dict(pair.split("=", 1) for pair in pairs)
    assert {"marketsim", "router", "loader", "collector"} <= set(targets)
    assert targets["router"] == "http://its-router:8080/metrics"
    assert all(url.endswith(":8080/metrics") for url in targets.values())
