"""pytest fixtures for the fake Kubernetes API (imported by the conftest of suites that use it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s_fake.server import FakeKubeApi

NAMESPACE = "its"


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    yield api
    api.stop()


@pytest.fixture
def kubeconfig(kube_api: FakeKubeApi, tmp_path: Path) -> Path:
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
