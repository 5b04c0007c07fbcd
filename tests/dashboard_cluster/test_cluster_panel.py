"""The dashboard's Cluster panel against the local fake Kubernetes API: the release's pods (phase,
readiness, restarts, last termination reason, image tag, age) in /api/cluster and on the page in
Chromium, following pod changes through the watch; other releases' pods are not shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from playwright.async_api import Browser, async_playwright, expect

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import free_port
from tests.conditions import wait_until
from tests.k8s_fake.fixtures import NAMESPACE
from tests.k8s_fake.server import FakeKubeApi, running_pod

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
RELEASE = {"app.kubernetes.io/instance": "its", "app.kubernetes.io/part-of": "its"}


def labels(component: str, release: str = "its") -> dict[str, str]:
    return {
        **RELEASE,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/component": component,
    }


@pytest.fixture
def dashboard(redis_server, database_url, kubeconfig, tmp_path) -> Iterator[str]:
    with psycopg.connect(database_url) as conn:
        apply_migrations(conn)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITS_", "OTEL_", "KUBE"))}
    env.update(
        REDIS_URL=redis_server.url, DATABASE_URL=database_url, ITS_HTTP_PORT=str(port),
        KUBECONFIG=str(kubeconfig), ITS_DASHBOARD_REFRESH_S="0.5",
        ITS_DASHBOARD_CLUSTER_SELECTOR="app.kubernetes.io/instance=its", ITS_LOG_LEVEL="INFO",
    )  # fmt: skip
    exe = shutil.which("its-dashboard", path=str(Path(sys.executable).parent))
    assert exe is not None
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen([exe], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def cluster_view(url: str) -> dict[str, Any] | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/api/cluster") as r:
            return await r.json() if r.status == 200 else None
    except aiohttp.ClientError:
        return None


async def pods_shown(url: str, count: int) -> dict[str, Any] | bool:
    view = await cluster_view(url)
    return view if view is not None and len(view["pods"]) == count else False


@pytest.fixture
async def page_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def test_the_cluster_panel_lists_the_release_pods_and_follows_changes(
    kube_api: FakeKubeApi, dashboard: str, page_browser
):
    kube_api.put_pod(
        NAMESPACE, running_pod("its-router-7d9f-abcde", labels("router"), "its-router:1.4.2")
    )
    kube_api.put_pod(
        NAMESPACE,
        running_pod(
            "its-trader-5c8b-fghij", labels("trader"), "registry.example/its-trader:1.4.2",
            ready=False, restarts=3, last_reason="OOMKilled", created="2026-01-01T00:00:00Z",
        ),
    )  # fmt: skip
    kube_api.put_pod(NAMESPACE, running_pod("other-router-1", labels("router", "other")))
    view = await wait_until(lambda: pods_shown(dashboard, 2), 30, 0.2)
    assert view["enabled"] and view["namespace"] == NAMESPACE and view["error"] is None
    router, trader = view["pods"]
    assert router["name"] == "its-router-7d9f-abcde"
    assert (router["phase"], router["ready"], router["restarts"]) == ("Running", "1/1", 0)
    assert router["image_tag"] == "1.4.2" and router["last_termination"] is None
    assert trader["ready"] == "0/1" and not trader["all_ready"]
    assert (trader["restarts"], trader["last_termination"]) == (3, "OOMKilled")
    assert trader["age_s"] > 86400  # created on 2026-01-01
    # The dashboard listed, then watched, with the release's selector.
    watches = [p for m, p in kube_api.requests if "/pods" in p and "watch=true" in p]
    assert watches and all("labelSelector=app.kubernetes.io" in p for p in watches)

    # The page shows the panel with one row per pod.
    page = await page_browser.new_page()
    await page.goto(dashboard + "/")
    rows = page.locator("#panel-cluster tbody tr")
    await expect(rows).to_have_count(2, timeout=15000)
    trader_row = page.locator('#panel-cluster tr[data-pod="its-trader-5c8b-fghij"]')
    await expect(trader_row).to_contain_text("OOMKilled")
    await expect(trader_row).to_contain_text("0/1")

    # A new pod appears and the router pod goes away: the watch brings both.
    kube_api.put_pod(
        NAMESPACE,
        running_pod(
            "its-loader-1", labels("loader"), "its-loader:1.4.2", phase="Pending", ready=False
        ),
    )
    kube_api.delete_pod(NAMESPACE, "its-router-7d9f-abcde")
    await expect(page.locator('#panel-cluster tr[data-pod="its-loader-1"]')).to_contain_text(
        "Pending", timeout=15000
    )
    await expect(rows).to_have_count(2, timeout=15000)
    final = await cluster_view(dashboard)
    assert final is not None
    names = {p["name"] for p in final["pods"]}
    assert names == {"its-trader-5c8b-fghij", "its-loader-1"}
    await page.close()
