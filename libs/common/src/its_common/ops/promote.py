"""Promote a bundle to inference and roll it back: the ConfigMap ``<release>-model`` (see
:mod:`its_common.promotion`), written with resourceVersion checks (a concurrent promotion makes
this one fail with 409 rather than lose an entry of the history)."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from its_common.ops.jobs import OpsError
from its_common.promotion import (
    BUNDLE_KEY,
    HISTORY_KEY,
    decode_history,
    encode_history,
    model_configmap,
)


@dataclass(frozen=True, slots=True)
class Promotion:
    current: str
    history: list[str]


def read(core: client.CoreV1Api, namespace: str, release: str) -> tuple[Promotion, str | None]:
    """The current promotion and the ConfigMap's resourceVersion (None: not created yet)."""
    try:
        cm = core.read_namespaced_config_map(model_configmap(release), namespace)
    except ApiException as exc:
        if exc.status == 404:
            return Promotion("", []), None
        raise
    data = cm.data or {}
    version = cm.metadata.resource_version if cm.metadata else None
    return Promotion(data.get(BUNDLE_KEY, ""), decode_history(data.get(HISTORY_KEY))), version


def write(
    core: client.CoreV1Api, namespace: str, release: str, promo: Promotion, version: str | None
) -> None:
    name = model_configmap(release)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name=name,
            resource_version=version,
            labels={"app.kubernetes.io/instance": release, "app.kubernetes.io/part-of": "its"},
        ),
        data={BUNDLE_KEY: promo.current, HISTORY_KEY: encode_history(promo.history)},
    )
    try:
        if version is None:
            core.create_namespaced_config_map(namespace, body)
        else:
            core.replace_namespaced_config_map(name, namespace, body)
    except ApiException as exc:
        if exc.status == 409:
            raise OpsError(f"{name} changed meanwhile (another promotion?): try again") from exc
        raise


def promote(core: client.CoreV1Api, namespace: str, release: str, bundle: str) -> Promotion:
    if not bundle or "/" in bundle or bundle.startswith("."):
        raise OpsError(f"{bundle!r} is not a bundle name (a directory name under the models dir)")
    current, version = read(core, namespace, release)
    if current.current == bundle:
        return current
    history = [*current.history, current.current] if current.current else current.history
    promo = Promotion(bundle, history)
    write(core, namespace, release, promo, version)
    return promo


def rollback(core: client.CoreV1Api, namespace: str, release: str) -> Promotion:
    current, version = read(core, namespace, release)
    if not current.history:
        raise OpsError("nothing to roll back to: no earlier promotion")
    promo = Promotion(current.history[-1], current.history[:-1])
    write(core, namespace, release, promo, version)
    return promo
