"""Fixtures for the chart tests. Rendering is offline: helm-python-sdk embeds Helm's Go SDK
(libhelm_c via ctypes), so no helm binary, cluster or network is involved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import helm_python as helm
import pytest

from ._support import CHART_DIR, NAMESPACE, RELEASE

Render = Callable[[dict[str, Any] | None], dict[str, str]]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Render:
    """Render the chart as `helm install its charts/its -n its` would (schema validated)."""

    def _render(values: dict[str, Any] | None = None) -> dict[str, str]:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)

    return _render
