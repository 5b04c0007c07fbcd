"""The Kubernetes API client of ITS (the ``kubernetes`` package): in a pod from the mounted
ServiceAccount, elsewhere from a kubeconfig (``KUBECONFIG``, ``--kubeconfig`` or ~/.kube/config).

Every caller gets its own ``ApiClient`` (never the package-wide default configuration), so a
test can point one at a local API server while another talks to a real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kubernetes import client, config

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster() -> bool:
    """True in a pod whose ServiceAccount token is mounted."""
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and (SERVICE_ACCOUNT_DIR / "token").is_file()
    )


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """An API client and the namespace it works in."""

    api: client.ApiClient
    namespace: str


def connect(kubeconfig: str | None = None, namespace: str | None = None) -> KubeTarget:
    """In-cluster configuration when running in a pod (and no kubeconfig is named), otherwise
    the kubeconfig's current context. ``namespace`` overrides the pod's or the context's."""
    configuration = client.Configuration()
    if kubeconfig is None and in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        default_ns = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        _, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        default_ns = str((active or {}).get("context", {}).get("namespace") or "default")
    return KubeTarget(client.ApiClient(configuration), namespace or default_ns)
