"""The migration and trainer Jobs: no `helm install --wait` deadlock, no restart by an unrelated
upgrade (issue 13, items 1 and 3)."""

from __future__ import annotations

import copy
from typing import Any

from ._support import Obj, by_kind, env_of, parse_manifests, pod_spec, pod_template_metadata
from .conftest import Render

TRAINER: dict[str, Any] = {"trainer": {"enabled": True}}


def jobs(objects: list[Obj], component: str) -> list[Obj]:
    return [
        j
        for j in by_kind(objects, "Job")
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]


def only_job(render: Render, component: str, values: dict[str, Any] | None = None) -> Obj:
    found = jobs(parse_manifests(render(copy.deepcopy(values or {}))), component)
    assert len(found) == 1, [j["metadata"]["name"] for j in found]
    return found[0]


# ----- migrations ------------------------------------------------------------------------------


def test_migration_job_is_part_of_the_release_not_a_hook(render: Render) -> None:
    """A post-install hook runs only after `--wait` saw every Deployment ready, and the services
    are ready only with the schema: a deadlock. The Job is an ordinary resource instead."""
    job = only_job(render, "migrate")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    assert job["metadata"]["name"].startswith("its-migrate-")
    migrate = pod_spec(job)["containers"][0]
    assert migrate["command"] == ["its-migrate", "--wait", "600"]
    assert migrate["image"] == "its-common:0.1.0"
    env = env_of(migrate)
    assert env["DATABASE_URL"]["value"] == "postgresql://its@its-timescaledb:5432/its"
    assert env["DATABASE_PASSWORD_FILE"]["value"].endswith("/database/password")
    assert pod_template_metadata(job)["labels"]["its.io/database-client"] == "true"
    assert not jobs(parse_manifests(render({"migrations": {"enabled": False}})), "migrate")


def test_no_workload_of_an_install_is_a_hook_that_waits_for_readiness(render: Render) -> None:
    """Nothing the services' readiness depends on may run after `--wait` (post-install)."""
    for values in ({}, TRAINER):
        for obj in parse_manifests(render(copy.deepcopy(values))):
            hook = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
            assert "post-install" not in hook, obj["metadata"]["name"]
            assert "pre-install" not in hook, obj["metadata"]["name"]


def test_migration_job_name_follows_its_spec_only(render: Render) -> None:
    """Same spec, same name (an unrelated upgrade leaves the finished Job alone); a new image
    gives a new Job (a Job's pod template is immutable, so the name must change with it)."""
    name = only_job(render, "migrate")["metadata"]["name"]
    unrelated = {"config": {"symbols": "AAPL"}, "services": {"loader": {"replicas": 3}}}
    assert only_job(render, "migrate", unrelated)["metadata"]["name"] == name
    new_image = {"migrations": {"image": {"repository": "its-common", "tag": "0.2.0"}}}
    assert only_job(render, "migrate", new_image)["metadata"]["name"] != name


# ----- trainer ---------------------------------------------------------------------------------


def test_trainer_job_waits_for_data_and_is_no_hook(render: Render) -> None:
    job = only_job(render, "trainer", TRAINER)
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    assert ".Release.Revision" not in job["metadata"]["name"]
    container = pod_spec(job)["containers"][0]
    args = container["args"]
    assert args[0] == "train"
    assert args[args.index("--wait-for-data") + 1] == "21600"
    # The wait fits in the Job's deadline with time left to train.
    assert job["spec"]["activeDeadlineSeconds"] > 21600
    no_wait = only_job(render, "trainer", {"trainer": {"enabled": True, "waitForDataSeconds": 0}})
    assert "--wait-for-data" not in pod_spec(no_wait)["containers"][0]["args"]


def test_trainer_job_name_survives_unrelated_upgrades(render: Render) -> None:
    """Revision, config, other services and the chart's labels do not touch the training; its
    own values do (a new Job; Helm deletes the old one)."""
    name = only_job(render, "trainer", TRAINER)["metadata"]["name"]
    assert name.startswith("its-trainer-")
    unrelated = {
        **copy.deepcopy(TRAINER),
        "config": {"symbols": "AAPL,MSFT"},
        "services": {"loader": {"replicas": 2}},
        "global": {"imagePullPolicy": "IfNotPresent"},
    }
    assert only_job(render, "trainer", unrelated)["metadata"]["name"] == name
    pod_labels = pod_template_metadata(only_job(render, "trainer", TRAINER))["labels"]
    assert "helm.sh/chart" not in pod_labels and "app.kubernetes.io/version" not in pod_labels
    for change in (
        {"args": ["train", "--from", "2025-02-03", "--to", "2025-03-31"]},
        {"image": {"repository": "its-trainer", "tag": "0.2.0"}},
        {"env": {"ITS_TRAINER_SEED": "7"}},
    ):
        values = {"trainer": {"enabled": True, **change}}
        assert only_job(render, "trainer", values)["metadata"]["name"] != name, change


def test_trainer_job_name_is_stable_across_revisions(chart: Any) -> None:
    """The old chart put the release revision into the name (every upgrade retrained)."""
    names = set()
    for revision in (1, 2, 7):
        rendered = chart.render(
            copy.deepcopy(TRAINER), name="its", namespace="its", revision=revision
        )
        names |= {j["metadata"]["name"] for j in jobs(parse_manifests(rendered), "trainer")}
    assert len(names) == 1


def test_scheduled_trainer_is_a_cronjob_that_also_waits(render: Render) -> None:
    objects = parse_manifests(render({"trainer": {"enabled": True, "schedule": "0 2 * * 6"}}))
    assert not jobs(objects, "trainer")
    cron = [c for c in by_kind(objects, "CronJob") if c["metadata"]["name"] == "its-trainer"]
    assert len(cron) == 1
    args = cron[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--wait-for-data" in args
