"""A protocol-faithful local Kubernetes API server, for tests of ITS's Kubernetes API use.

It serves, over loopback HTTP, exactly the endpoints ITS calls, with the real API's JSON shapes:
pods list and watch (``?watch=true`` streams one JSON event per line) by namespace and label
selector, a pod's log, batch/v1 jobs create/get/list, coordination.k8s.io/v1 leases
get/create/update, v1 configmaps get/create/update. Every object gets a ``resourceVersion`` from
one counter; an update whose ``metadata.resourceVersion`` is stale answers 409 Conflict, a create
of an existing name 409 AlreadyExists, a missing object 404 NotFound, each as a ``Status`` object
as kube-apiserver returns it. The real ``kubernetes`` client talks to it through a kubeconfig
(:meth:`FakeKubeApi.write_kubeconfig`).

The test drives the "cluster" through methods: :meth:`put_pod`, :meth:`delete_pod`,
:meth:`set_job_status`, :meth:`set_pod_log`; every request is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
# (plural, group/version prefix, kind) of each resource served
RESOURCES: dict[str, tuple[str, str]] = {
    "pods": ("v1", "Pod"),
    "configmaps": ("v1", "ConfigMap"),
    "jobs": ("batch/v1", "Job"),
    "leases": ("coordination.k8s.io/v1", "Lease"),
}
NO_ROUTE = "the server could not find the requested resource"
GROUP = {"pods": "", "configmaps": "", "jobs": "batch", "leases": "coordination.k8s.io"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, plural: str = "", name: str = "") -> web.Response:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if plural:
        details: Obj = {"name": name, "kind": plural}
        if GROUP[plural]:
            details["group"] = GROUP[plural]
        body["details"] = details
    return web.json_response(body, status=code)


def qualified(plural: str) -> str:
    return f"{plural}.{GROUP[plural]}" if GROUP[plural] else plural


def matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``), comma-joined."""
    if not selector:
        return True
    for raw in selector.split(","):
        term = raw.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Event:
    rv: int
    type: str
    obj: Obj


@dataclass
class FakeKubeApi:
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    port: int = 0
    _rv: int = 100
    _loop: asyncio.AbstractEventLoop | None = None
    _changed: asyncio.Condition | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    after_get: Callable[[str, str, str], None] | None = None
    """Runs after a GET of one object is answered: a test makes "another writer" change the
    object between a client's read and its update (which then carries a stale resourceVersion)."""

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeKubeApi:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-kube-api", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Kubernetes API did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, namespace: str = "its") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application()
        core = "/api/v1/namespaces/{ns}/{plural}"
        named = "/apis/{group}/{version}/namespaces/{ns}/{plural}"
        for prefix in (core, named):
            app.router.add_get(prefix, self._list)
            app.router.add_post(prefix, self._create)
            app.router.add_get(prefix + "/{name}", self._get)
            app.router.add_put(prefix + "/{name}", self._replace)
            app.router.add_delete(prefix + "/{name}", self._delete)
        app.router.add_get(core + "/{name}/log", self._log)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- store ---------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _write(self, plural: str, ns: str, name: str, obj: Obj | None, kind: str) -> Obj | None:
        """Store (or delete, obj None) under a new resourceVersion and log the watch event."""
        with self._lock:
            rv = self._next_rv()
            key = (plural, ns, name)
            if obj is None:
                old = self.objects.pop(key, None)
                if old is not None:
                    old = copy.deepcopy(old)
                    old["metadata"]["resourceVersion"] = str(rv)
                    self.events.append(Event(rv, "DELETED", old))
                stored = old
            else:
                obj["metadata"]["resourceVersion"] = str(rv)
                self.objects[key] = obj
                self.events.append(Event(rv, kind, copy.deepcopy(obj)))
                stored = obj
        self._notify()
        return copy.deepcopy(stored) if stored is not None else None

    def _notify(self) -> None:
        loop, cond = self._loop, self._changed
        if loop is None or cond is None:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        if threading.current_thread() is self._thread:
            loop.create_task(wake())
        else:
            asyncio.run_coroutine_threadsafe(wake(), loop)

    @staticmethod
    def _new_meta(obj: Obj, ns: str) -> None:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("labels", {})

    # -- the test's controls -------------------------------------------------------------------

    def put_pod(self, ns: str, pod: Obj) -> Obj:
        """Create or update a pod (as the kubelet and controllers would)."""
        pod = copy.deepcopy(pod)
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        name = pod["metadata"]["name"]
        existed = ("pods", ns, name) in self.objects
        if not existed:
            self._new_meta(pod, ns)
        else:
            old = self.objects[("pods", ns, name)]["metadata"]
            pod["metadata"] = {**old, **pod["metadata"]}
        stored = self._write("pods", ns, name, pod, "MODIFIED" if existed else "ADDED")
        assert stored is not None
        return stored

    def delete_pod(self, ns: str, name: str) -> None:
        self._write("pods", ns, name, None, "DELETED")

    def delete_object(self, plural: str, ns: str, name: str) -> None:
        self._write(plural, ns, name, None, "DELETED")

    def set_job_status(self, ns: str, name: str, job_status: Obj) -> None:
        job = copy.deepcopy(self.objects[("jobs", ns, name)])
        job["status"] = job_status
        self._write("jobs", ns, name, job, "MODIFIED")

    def set_pod_log(self, ns: str, pod: str, text: str) -> None:
        self.logs[(ns, pod)] = text

    def get(self, plural: str, ns: str, name: str) -> Obj | None:
        with self._lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def touch(self, plural: str, ns: str, name: str) -> None:
        """Another writer updates the object (a new resourceVersion, nothing else changes)."""
        obj = self.get(plural, ns, name)
        assert obj is not None
        self._write(plural, ns, name, obj, "MODIFIED")

    def put_object(self, plural: str, ns: str, obj: Obj) -> Obj:
        """Create an object directly (e.g. the chart's ConfigMap)."""
        obj = copy.deepcopy(obj)
        api_version, kind = RESOURCES[plural]
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        self._new_meta(obj, ns)
        stored = self._write(plural, ns, obj["metadata"]["name"], obj, "ADDED")
        assert stored is not None
        return stored

    def on_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    # -- handlers ------------------------------------------------------------------------------

    def _check(self, request: web.Request) -> tuple[str, str, web.Response | None]:
        plural = request.match_info["plural"]
        ns = request.match_info["ns"]
        self.on_request(request.method, request.path_qs)
        if plural not in RESOURCES:
            return (
                plural,
                ns,
                status(404, "NotFound", NO_ROUTE),
            )
        if "group" in request.match_info:
            prefix = f"{request.match_info['group']}/{request.match_info['version']}"
            if RESOURCES[plural][0] != prefix:
                return (
                    plural,
                    ns,
                    status(404, "NotFound", NO_ROUTE),
                )
        elif RESOURCES[plural][0] != "v1":
            return (
                plural,
                ns,
                status(404, "NotFound", NO_ROUTE),
            )
        return plural, ns, None

    async def _get(self, request: web.Request) -> web.Response:
        plural, ns, error = self._check(request)
        if error is not None:
            return error
        name = request.match_info["name"]
        obj = self.get(plural, ns, name)
        if obj is None:
            response = status(
                404, "NotFound", f'{qualified(plural)} "{name}" not found', plural, name
            )
        else:
            response = web.json_response(obj)
        if self.after_get is not None:
            self.after_get(plural, ns, name)
        return response

    async def _create(self, request: web.Request) -> web.Response:
        plural, ns, error = self._check(request)
        if error is not None:
            return error
        obj = await request.json()
        name = obj.get("metadata", {}).get("name")
        if not name:
            return status(
                422, "Invalid", f"{RESOURCES[plural][1]} is invalid: metadata.name: Required value"
            )
        if obj.get("metadata", {}).get("namespace", ns) != ns:
            return status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the"
                " request",
            )
        if self.get(plural, ns, name) is not None:
            return status(
                409, "AlreadyExists", f'{qualified(plural)} "{name}" already exists', plural, name
            )
        api_version, kind = RESOURCES[plural]
        obj["apiVersion"], obj["kind"] = api_version, kind
        obj["metadata"].pop("resourceVersion", None)
        self._new_meta(obj, ns)
        if plural == "jobs":
            obj.setdefault("status", {})
        stored = self._write(plural, ns, name, obj, "ADDED")
        return web.json_response(stored, status=201)

    async def _replace(self, request: web.Request) -> web.Response:
        plural, ns, error = self._check(request)
        if error is not None:
            return error
        name = request.match_info["name"]
        obj = await request.json()
        current = self.get(plural, ns, name)
        if current is None:
            return status(404, "NotFound", f'{qualified(plural)} "{name}" not found', plural, name)
        if obj.get("metadata", {}).get("name") != name:
            return status(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        sent_rv = obj["metadata"].get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {qualified(plural)} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                plural,
                name,
            )
        api_version, kind = RESOURCES[plural]
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta = obj["metadata"]
        for keep in ("uid", "creationTimestamp"):
            meta[keep] = current["metadata"][keep]
        meta["namespace"] = ns
        meta.setdefault("labels", {})
        stored = self._write(plural, ns, name, obj, "MODIFIED")
        return web.json_response(stored)

    async def _delete(self, request: web.Request) -> web.Response:
        plural, ns, error = self._check(request)
        if error is not None:
            return error
        name = request.match_info["name"]
        stored = self._write(plural, ns, name, None, "DELETED")
        if stored is None:
            return status(404, "NotFound", f'{qualified(plural)} "{name}" not found', plural, name)
        return web.json_response(stored)

    async def _log(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.on_request("GET", request.path_qs)
        if self.get("pods", ns, name) is None:
            return status(404, "NotFound", f'pods "{name}" not found', "pods", name)
        return web.Response(text=self.logs.get((ns, name), ""), content_type="text/plain")

    async def _list(self, request: web.Request) -> web.StreamResponse:
        plural, ns, error = self._check(request)
        if error is not None:
            return error
        selector = request.query.get("labelSelector")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, plural, ns, selector)
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (p, n, _), obj in sorted(self.objects.items())
                if p == plural and n == ns and matches(selector, obj["metadata"].get("labels", {}))
            ]
            rv = self._rv
        api_version, kind = RESOURCES[plural]
        return web.json_response(
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, plural: str, ns: str, selector: str | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds", "300"))
        since = request.query.get("resourceVersion")
        assert self._changed is not None

        def wanted(event: Event) -> bool:
            meta = event.obj["metadata"]
            return (
                event.obj.get("kind") == RESOURCES[plural][1]
                and meta.get("namespace") == ns
                and matches(selector, meta.get("labels", {}))
            )

        with self._lock:
            if since:
                cursor = int(since)
                pending: list[Event] = []
            else:  # no resourceVersion: the current state as ADDED events first
                cursor = self._rv
                pending = [
                    Event(int(obj["metadata"]["resourceVersion"]), "ADDED", copy.deepcopy(obj))
                    for (p, n, _), obj in sorted(self.objects.items())
                    if p == plural and n == ns
                ]
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                for event in pending:
                    if wanted(event):
                        line = json.dumps({"type": event.type, "object": event.obj}) + "\n"
                        await response.write(line.encode())
                with self._lock:
                    pending = [e for e in self.events if e.rv > cursor]
                    if pending:
                        cursor = pending[-1].rv
                if pending:
                    continue
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        await response.write_eof()
        return response


def running_pod(
    name: str,
    labels: dict[str, str],
    image: str = "its-router:1.2.3",
    *,
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    last_reason: str | None = None,
    created: str | None = None,
) -> Obj:
    """A pod object as the API returns it, with one container's status."""
    container_status: Obj = {
        "name": labels.get("app.kubernetes.io/component", "main"),
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": restarts,
        "started": phase == "Running",
        "state": {"running": {"startedAt": now_iso()}}
        if phase == "Running"
        else {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
    }
    if last_reason is not None:
        container_status["lastState"] = {
            "terminated": {
                "exitCode": 1,
                "reason": last_reason,
                "startedAt": now_iso(),
                "finishedAt": now_iso(),
            }
        }
    metadata: Obj = {"name": name, "labels": labels}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": container_status["name"], "image": image}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [container_status],
            "startTime": now_iso(),
        },
    }
