"""The Cluster panel: the release's pods, read through the Kubernetes API.

Enabled when the dashboard runs in a pod with its ServiceAccount token mounted (the chart binds
it to a read-only Role: pods get/list/watch) or when a kubeconfig is configured (``KUBECONFIG``).
A background task lists the pods matching ``ITS_DASHBOARD_CLUSTER_SELECTOR`` once, then follows
a watch from the list's resourceVersion (re-listing when the watch ends or fails), and
``/api/cluster`` serves the current rows. The page's ``static/cluster.js`` renders them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from kubernetes import client, watch

from its_common import kube
from its_common.redaction import redact
from its_dashboard.config import DashboardSettings

log = logging.getLogger("its.dashboard.cluster")
WATCH_TIMEOUT_S = 60


def image_tag(image: str) -> str:
    """``repo/its-router:1.2.3`` -> ``1.2.3``; a digest -> its first 12 hex digits."""
    if "@" in image:
        return image.rsplit("@", 1)[1].removeprefix("sha256:")[:12]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def pod_row(pod: client.V1Pod, now: datetime) -> dict[str, Any]:
    meta = pod.metadata or client.V1ObjectMeta()
    status = pod.status or client.V1PodStatus()
    statuses = status.container_statuses or []
    ready = sum(1 for c in statuses if c.ready)
    reason = None
    for c in statuses:
        last = c.last_state.terminated if c.last_state else None
        if last is not None and last.reason:
            reason = last.reason
        waiting = c.state.waiting if c.state else None
        if waiting is not None and waiting.reason in ("CrashLoopBackOff", "ImagePullBackOff"):
            reason = f"{waiting.reason} ({reason})" if reason else waiting.reason
    containers = pod.spec.containers if pod.spec else []
    images = [c.image for c in statuses if c.image] or [c.image for c in containers if c.image]
    created = meta.creation_timestamp
    labels = meta.labels or {}
    return {
        "name": meta.name,
        "component": labels.get("app.kubernetes.io/component", ""),
        "phase": status.phase or "Unknown",
        "ready": f"{ready}/{len(statuses) or len(containers)}",
        "all_ready": bool(statuses) and ready == len(statuses),
        "restarts": sum(c.restart_count or 0 for c in statuses),
        "last_termination": reason,
        "image_tag": image_tag(images[0]) if images else "",
        "age_s": int((now - created).total_seconds()) if created is not None else None,
        "deleting": meta.deletion_timestamp is not None,
    }


class ClusterPanel:
    """Follows the release's pods (list, then watch) in a thread; serves ``/api/cluster``."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.enabled = kube.in_cluster() or bool(settings.kubeconfig)
        self.namespace = ""
        self.error: str | None = None
        self.updated_ms: int | None = None
        self._pods: dict[str, client.V1Pod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/cluster", self.api_cluster)

    async def api_cluster(self, _: web.Request) -> web.Response:
        return web.json_response(self.view())

    def view(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        with self._lock:
            pods = list(self._pods.values())
        rows = sorted((pod_row(p, now) for p in pods), key=lambda r: (r["component"], r["name"]))
        return {
            "enabled": self.enabled,
            "namespace": self.namespace,
            "selector": self.settings.cluster_selector,
            "pods": rows,
            "error": self.error,
            "updated_ms": self.updated_ms,
        }

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the pods in a daemon thread (the client blocks) until ``stopping``."""
        if not self.enabled:
            return
        threading.Thread(target=self._follow, name="cluster-pods", daemon=True).start()
        try:
            await stopping.wait()
        finally:
            self._stop.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                target = kube.connect(self.settings.kubeconfig, self.settings.kube_namespace)
                self.namespace = target.namespace
                self._list_and_watch(client.CoreV1Api(target.api), target.namespace)
            except Exception as exc:  # API unreachable, RBAC denied...: shown in the panel
                self.error = redact(f"{type(exc).__name__}: {exc}")[:300]
                log.warning("cluster panel: %s", self.error)
                self._stop.wait(max(1.0, self.settings.refresh_s))

    def _list_and_watch(self, core: client.CoreV1Api, namespace: str) -> None:
        selector = self.settings.cluster_selector
        listed = core.list_namespaced_pod(namespace, label_selector=selector)
        with self._lock:
            self._pods = {str(p.metadata.name): p for p in listed.items if p.metadata}
        self.error = None
        self.updated_ms = int(time.time() * 1000)
        version = listed.metadata.resource_version if listed.metadata else None
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_S,
        ):
            if self._stop.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
                break
            pod = event["object"]
            if not isinstance(pod, client.V1Pod) or pod.metadata is None:
                continue  # a watch ERROR (e.g. 410 Gone): the next round re-lists
            with self._lock:
                if event["type"] == "DELETED":
                    self._pods.pop(str(pod.metadata.name), None)
                else:
                    self._pods[str(pod.metadata.name)] = pod
            self.updated_ms = int(time.time() * 1000)
