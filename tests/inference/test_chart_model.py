"""The chart's model pieces: features and inference Deployments, the trainer Job / CronJob
writing bundles to the models PVC, and an inference Deployment mounting that PVC."""

from __future__ import annotations

from typing import Any

from tests.chart._support import (
    by_kind,
    env_of,
    find,
    parse_manifests,
    pod_spec,
    workload_problems,
)


def test_features_and_inference_deployments(render: Any) -> None:
    objects = parse_manifests(render({}))
    for name in ("its-features", "its-inference"):
        deployment = find(objects, "Deployment", name)
        assert workload_problems(deployment) == []
        container = pod_spec(deployment)["containers"][0]
        env = env_of(container)
        assert "REDIS_URL" in env and "DATABASE_URL" in env
    # Trainer disabled by default: no Job, no PVC.
    assert not [o for o in by_kind(objects, "Job") if "trainer" in o["metadata"]["name"]]
    assert by_kind(objects, "PersistentVolumeClaim") == []


def test_trainer_job_writes_bundles_to_the_models_pvc(render: Any) -> None:
    objects = parse_manifests(render({"trainer": {"enabled": True}}))
    pvc = find(objects, "PersistentVolumeClaim", "its-models")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    (job,) = [
        o
        for o in objects
        if o["kind"] == "Job" and o["metadata"]["name"].startswith("its-trainer-")
    ]
    assert workload_problems(job) == []
    spec = pod_spec(job)
    container = spec["containers"][0]
    assert container["command"] == ["its-trainer"] and container["args"][0] == "train"
    assert {"name": "models", "mountPath": "/models"} in container["volumeMounts"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["its-models"]
    assert env_of(container)["ITS_TRAINER_BUNDLE_DIR"]["value"] == "/models"
    assert job["spec"]["template"]["metadata"]["labels"]["its.io/database-client"] == "true"


def test_trainer_cronjob_and_inference_serving_the_pvc(render: Any) -> None:
    values = {
        "trainer": {"enabled": True, "schedule": "0 2 * * 6", "env": {"ITS_TRAINER_SEED": 7}},
        "services": {
            "inference": {
                "env": {"ITS_INFERENCE_BUNDLE_DIR": "/models/trained"},
                "extraVolumes": [
                    {"name": "models", "persistentVolumeClaim": {"claimName": "its-models"}}
                ],
                "extraVolumeMounts": [
                    {"name": "models", "mountPath": "/models/trained", "readOnly": True}
                ],
            }
        },
    }
    objects = parse_manifests(render(values))
    cron = find(objects, "CronJob", "its-trainer")
    assert cron["spec"]["schedule"] == "0 2 * * 6"
    job = {"kind": "Job", "metadata": cron["metadata"], "spec": cron["spec"]["jobTemplate"]["spec"]}
    assert workload_problems(job) == []
    container = pod_spec(job)["containers"][0]
    assert env_of(container)["ITS_TRAINER_SEED"]["value"] == "7"
    inference = find(objects, "Deployment", "its-inference")
    spec = pod_spec(inference)
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": "models", "mountPath": "/models/trained", "readOnly": True} in mounts
    assert any(v.get("persistentVolumeClaim") for v in spec["volumes"])
    assert env_of(spec["containers"][0])["ITS_INFERENCE_BUNDLE_DIR"]["value"] == "/models/trained"
