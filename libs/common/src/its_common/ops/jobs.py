"""Jobs from the chart's templates: the ConfigMap ``<release>-ops-jobs`` holds one Job manifest
per kind (``train.json``, ``backfill.json``); its-ops fills in a name and the container's args,
creates it, and follows its status and its pod's log."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException

JOB_KINDS: Final = ("train", "backfill")
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL: Final = "job-name"


class OpsError(RuntimeError):
    """A clear, user-facing failure of an its-ops command."""


def jobs_configmap(release: str) -> str:
    return f"{release}-ops-jobs"


def job_args(kind: str, first: date, last: date, extra: list[str]) -> list[str]:
    """The container args of a Job: ``its-trainer train ...`` or ``its-loader backfill ...``."""
    if last < first:
        raise OpsError(f"--to {last} is before --from {first}")
    span = ["--from", first.isoformat(), "--to", last.isoformat(), "--no-progress"]
    if kind == "train":
        return ["train", *span, *extra]
    if kind == "backfill":
        return ["backfill", *span, *extra]
    raise OpsError(f"unknown job kind {kind!r} (one of {', '.join(JOB_KINDS)})")


def load_template(
    core: client.CoreV1Api, namespace: str, release: str, kind: str
) -> dict[str, Any]:
    name = jobs_configmap(release)
    try:
        configmap = core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise OpsError(
                f"ConfigMap {namespace}/{name} not found: is the chart installed as release "
                f"{release!r} with kubernetesApi.opsConfigMap?"
            ) from exc
        raise
    text = (configmap.data or {}).get(f"{kind}.json")
    if not text:
        raise OpsError(f"ConfigMap {name} has no {kind}.json (train needs trainer.enabled)")
    template: dict[str, Any] = json.loads(text)
    return template


def build_job(template: dict[str, Any], name: str, args: list[str]) -> dict[str, Any]:
    job = copy.deepcopy(template)
    job["metadata"]["name"] = name
    job["metadata"].pop("generateName", None)
    containers = job["spec"]["template"]["spec"]["containers"]
    containers[0]["args"] = args
    return job


def job_name(kind: str, release: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{release}-{kind}-{stamp}"


def create_job(batch: client.BatchV1Api, namespace: str, job: dict[str, Any]) -> str:
    try:
        created = batch.create_namespaced_job(namespace, job)  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status == 409:
            raise OpsError(f"job {job['metadata']['name']} already exists") from exc
        raise
    return str(created.metadata.name if created.metadata else job["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class JobState:
    active: int
    succeeded: int
    failed: int
    condition: str | None  # Complete / Failed when finished

    @property
    def finished(self) -> bool:
        return self.condition in ("Complete", "Failed")


def job_state(batch: client.BatchV1Api, namespace: str, name: str) -> JobState:
    job = batch.read_namespaced_job(name, namespace)
    status = job.status or client.V1JobStatus()
    condition = None
    for c in status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            condition = c.type
    return JobState(status.active or 0, status.succeeded or 0, status.failed or 0, condition)


def job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items
    if not pods:  # clusters before 1.27 set only the legacy label
        selector = f"{LEGACY_JOB_NAME_LABEL}={name}"
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return sorted(str(p.metadata.name) for p in pods if p.metadata and p.metadata.name)


def follow(
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    emit: Callable[[str], None],
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> JobState:
    """Print the job's progress and its pods' new log lines until it finishes."""
    printed: dict[str, int] = {}
    last_state: JobState | None = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = job_state(batch, namespace, name)
        if state != last_state:
            emit(
                f"job {name}: active {state.active}, succeeded {state.succeeded}, "
                f"failed {state.failed}" + (f", {state.condition}" if state.condition else "")
            )
            last_state = state
        for pod in job_pods(core, namespace, name):
            try:
                text = core.read_namespaced_pod_log(pod, namespace)
            except ApiException as exc:
                if exc.status in (400, 404):  # container not started yet, or pod gone
                    continue
                raise
            seen = printed.get(pod, 0)
            for line in str(text)[seen:].splitlines():
                emit(f"[{pod}] {line}")
            printed[pod] = max(seen, len(str(text)))
        if state.finished:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise OpsError(f"job {name} not finished within {timeout_s:.0f}s")
        time.sleep(poll_s)
