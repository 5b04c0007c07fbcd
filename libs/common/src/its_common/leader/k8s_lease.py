"""The lease in a cluster: a ``coordination.k8s.io/v1`` Lease per singleton.

Read, then create (404) or replace with the read ``resourceVersion``: a concurrent writer makes
the API answer 409 Conflict and this round is lost, never both. As client-go does, expiry is
judged on the local monotonic clock: another holder's lease is expired once its record has not
changed for ``leaseDurationSeconds`` since this process first saw it (no trust in clocks of other
nodes). The fencing token is the annotation ``its.io/fencing-token``: the clock in microseconds
when the Lease is created (so a deleted and re-created Lease never goes below tokens the database
fence has already seen), plus one at every change of holder.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from its_common.leader.lease import LeaseTiming

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
TOKEN_ANNOTATION = "its.io/fencing-token"


class KubernetesLease:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.labels = labels or {}
        self.conflicts = 0
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0

    async def acquire_or_renew(self) -> int | None:
        return await asyncio.to_thread(self._acquire_or_renew)

    async def release(self) -> None:
        await asyncio.to_thread(self._release)

    def _acquire_or_renew(self) -> int | None:
        now = datetime.now(UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != HTTP_NOT_FOUND:
                raise
            return self._create(now)
        spec = lease.spec or client.V1LeaseSpec()
        transitions = int(spec.lease_transitions or 0)
        token = _token(lease, transitions)
        if spec.holder_identity == self.identity:
            spec.renew_time = now
            spec.lease_duration_seconds = self._duration()
            return token if self._replace(lease, spec, token) else None
        if not self._expired(lease, spec):
            return None
        spec.holder_identity = self.identity
        spec.acquire_time = now
        spec.renew_time = now
        spec.lease_duration_seconds = self._duration()
        spec.lease_transitions = transitions + 1
        return token + 1 if self._replace(lease, spec, token + 1) else None

    def _duration(self) -> int:
        return math.ceil(self.timing.lease_s)

    def _expired(self, lease: client.V1Lease, spec: client.V1LeaseSpec) -> bool:
        if not spec.holder_identity:
            return True  # released
        record = (
            str(spec.holder_identity),
            str(spec.renew_time),
            str(_meta(lease).resource_version),
        )
        mono = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, mono
            return False
        duration = float(spec.lease_duration_seconds or self._duration())
        return mono - self._observed_at >= duration

    def _create(self, now: datetime) -> int | None:
        token = int(now.timestamp() * 1_000_000)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels=self.labels or None,
                annotations={TOKEN_ANNOTATION: str(token)},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self._duration(),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status == HTTP_CONFLICT:  # AlreadyExists: another replica created it first
                self.conflicts += 1
                return None
            raise
        return token

    def _replace(
        self, lease: client.V1Lease, spec: client.V1LeaseSpec, token: int | None = None
    ) -> bool:
        annotations = dict(_meta(lease).annotations or {})
        if token is not None:
            annotations[TOKEN_ANNOTATION] = str(token)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                resource_version=_meta(lease).resource_version,
                labels=_meta(lease).labels,
                annotations=annotations or None,
            ),
            spec=spec,
        )
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == HTTP_CONFLICT:  # someone wrote since our read: this round is lost
                self.conflicts += 1
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                return
            raise
        spec = lease.spec or client.V1LeaseSpec()
        if spec.holder_identity != self.identity:
            return
        spec.holder_identity = ""
        spec.renew_time = datetime.now(UTC)
        self._replace(lease, spec)


def _meta(lease: client.V1Lease) -> client.V1ObjectMeta:
    return lease.metadata or client.V1ObjectMeta()


def _token(lease: client.V1Lease, transitions: int) -> int:
    """The Lease's fencing token (a Lease made by another tool has none: its transitions)."""
    raw = (_meta(lease).annotations or {}).get(TOKEN_ANNOTATION)
    try:
        return int(raw) if raw is not None else transitions
    except ValueError:
        return transitions
