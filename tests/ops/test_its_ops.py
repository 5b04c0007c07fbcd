"""``its-ops`` with the real ``kubernetes`` client against the local fake API server: Jobs from
the chart's rendered templates (created, followed to completion or failure with their pod's log),
promotion of a bundle and rollback, and inference reading the promoted bundle."""

from __future__ import annotations

import asyncio
import json

import helm_python as helm
import kubernetes_validate
import yaml

from its_common.ops import cli
from its_common.promotion import read_pinned
from tests.chart._support import CHART_DIR
from tests.conditions import wait_until
from tests.k8s_fake.fixtures import NAMESPACE
from tests.k8s_fake.server import FakeKubeApi, running_pod


def install_chart_configmap(kube_api: FakeKubeApi) -> None:
    """The chart's <release>-ops-jobs ConfigMap, rendered as `helm install its` would."""
    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(
            {"trainer": {"enabled": True}}, name="its", namespace=NAMESPACE, is_install=True
        )
    text = next(v for k, v in rendered.items() if k.endswith("ops-jobs-configmap.yaml"))
    configmap = yaml.safe_load(text)
    kube_api.put_object("configmaps", NAMESPACE, configmap)


async def run_job(kube_api: FakeKubeApi, name: str, log: str, outcome: str) -> None:
    """What the Job controller and the kubelet do: a pod, its log, the Job's final status."""
    await wait_until(lambda: kube_api.get("jobs", NAMESPACE, name), 20)
    labels = {"batch.kubernetes.io/job-name": name, "job-name": name}
    kube_api.put_pod(NAMESPACE, running_pod(f"{name}-x1", labels, "its-loader:1.0"))
    kube_api.set_job_status(NAMESPACE, name, {"active": 1})
    kube_api.set_pod_log(NAMESPACE, f"{name}-x1", log)
    done = {"Complete": {"succeeded": 1}, "Failed": {"failed": 1}}[outcome]
    kube_api.set_job_status(
        NAMESPACE, name, {**done, "conditions": [{"type": outcome, "status": "True"}]}
    )


async def test_a_backfill_job_from_the_chart_template_is_created_and_followed(
    kube_api, kubeconfig, capsys
):
    install_chart_configmap(kube_api)
    argv = [
        "--kubeconfig", str(kubeconfig), "backfill", "--from", "2025-01-02", "--to",
        "2025-01-31", "--symbol", "NVDA,MSFT", "--name", "its-backfill-jan", "--follow",
    ]  # fmt: skip
    command = asyncio.create_task(asyncio.to_thread(cli.main, argv))
    await run_job(kube_api, "its-backfill-jan", "day 2025-01-02: 780 bars\ndone\n", "Complete")
    assert await command == 0
    out = capsys.readouterr().out
    assert "job its/its-backfill-jan created" in out
    assert "[its-backfill-jan-x1] day 2025-01-02: 780 bars" in out
    assert "Complete" in out
    job = kube_api.get("jobs", NAMESPACE, "its-backfill-jan")
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["its-loader"]
    assert container["args"] == [
        "backfill", "--from", "2025-01-02", "--to", "2025-01-31", "--no-progress",
        "--symbol", "NVDA,MSFT",
    ]  # fmt: skip
    job.pop("status", None)
    kubernetes_validate.validate(job, "1.31", strict=True)


async def test_a_failed_training_job_makes_its_ops_fail(kube_api, kubeconfig, capsys):
    install_chart_configmap(kube_api)
    argv = [
        "--kubeconfig", str(kubeconfig), "train", "--from", "2025-01-02", "--to", "2025-03-31",
        "--name", "its-train-q1", "--follow", "--", "--timesteps", "1000",
    ]  # fmt: skip
    command = asyncio.create_task(asyncio.to_thread(cli.main, argv))
    await run_job(kube_api, "its-train-q1", "not enough bars\n", "Failed")
    assert await command == 1
    job = kube_api.get("jobs", NAMESPACE, "its-train-q1")
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["train", "--from", "2025-01-02"]
    assert container["args"][-2:] == ["--timesteps", "1000"]
    assert any(v.get("persistentVolumeClaim") for v in job["spec"]["template"]["spec"]["volumes"])
    assert "[its-train-q1-x1] not enough bars" in capsys.readouterr().out


async def test_without_the_chart_its_ops_says_what_is_missing(kube_api, kubeconfig, capsys):
    argv = ["--kubeconfig", str(kubeconfig), "train", "--from", "2025-01-02", "--to", "2025-01-03"]
    assert await asyncio.to_thread(cli.main, argv) == 2
    assert "ConfigMap its/its-ops-jobs not found" in capsys.readouterr().err


async def test_promote_and_rollback_through_the_model_configmap(kube_api, kubeconfig, capsys):
    base = ["--kubeconfig", str(kubeconfig)]
    assert await asyncio.to_thread(cli.main, [*base, "rollback"]) == 2  # nothing yet
    assert await asyncio.to_thread(cli.main, [*base, "promote", "b-2025-01"]) == 0
    assert await asyncio.to_thread(cli.main, [*base, "promote", "b-2025-02"]) == 0
    cm = kube_api.get("configmaps", NAMESPACE, "its-model")
    assert cm is not None
    assert cm["data"] == {"bundle": "b-2025-02", "history": '["b-2025-01"]'}
    assert await asyncio.to_thread(cli.main, [*base, "rollback"]) == 0
    cm = kube_api.get("configmaps", NAMESPACE, "its-model")
    assert cm is not None and cm["data"]["bundle"] == "b-2025-01"
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, [*base, "current"]) == 0
    assert json.loads(capsys.readouterr().out) == {"bundle": "b-2025-01", "history": []}
    assert await asyncio.to_thread(cli.main, [*base, "promote", "../etc"]) == 2
    # The ConfigMap was written with its resourceVersion: a PUT, never a blind overwrite.
    puts = [p for m, p in kube_api.requests if m == "PUT" and "/configmaps/its-model" in p]
    assert len(puts) == 2


def test_inference_reads_the_promoted_bundle_from_the_file(tmp_path):
    promoted = tmp_path / "bundle"
    assert read_pinned(str(promoted), "pinned-by-env") == "pinned-by-env"  # no promotion yet
    assert cli.main(["promote", "b1", "--file", str(promoted)]) == 0
    assert cli.main(["promote", "b2", "--file", str(promoted)]) == 0
    assert read_pinned(str(promoted), "pinned-by-env") == "b2"
    assert cli.main(["rollback", "--file", str(promoted)]) == 0
    assert read_pinned(str(promoted)) == "b1"
    assert cli.main(["rollback", "--file", str(promoted)]) == 2
