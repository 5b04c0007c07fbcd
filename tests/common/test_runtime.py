"""The service runtime over real HTTP and a real Redis: probes, metrics, heartbeat, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from its_common.localstack.servers import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, dict[str, Any] | str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def wait_http(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def start_demo(redis_url: str, port: int, **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "ITS_HTTP_PORT": str(port),
        "ITS_HEARTBEAT_INTERVAL_S": "0.5",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.common.demo_service"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def demo(redis_server: RedisServer) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = start_demo(redis_server.url, port)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


def test_probes_metrics_and_heartbeat(demo: tuple[subprocess.Popen[str], int], redis_server):
    _, port = demo
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and isinstance(body, dict) and body["version"] == "9.9.9"
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    assert status == 200 and isinstance(body, dict) and body["checks"] == {"redis": "ok"}
    status, metrics = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and isinstance(metrics, str)
    assert 'its_service_info{service="demo",version="9.9.9"} 1.0' in metrics

    client: Any = redis.Redis.from_url(redis_server.url, decode_responses=True)
    deadline = time.monotonic() + 5
    beat: dict[str, Any] = {}
    while time.monotonic() < deadline and beat.get("status") != "running":
        keys = list(client.scan_iter("its:heartbeat:demo:*"))
        beat = client.hgetall(keys[0]) if keys else {}
        time.sleep(0.1)
    assert beat["service"] == "demo" and beat["version"] == "9.9.9"
    assert beat["status"] == "running"  # after "starting"
    assert 0 < client.pttl(keys[0]) <= 1500  # TTL of three intervals
    time.sleep(0.6)
    counters = json.loads(client.hgetall(keys[0])["counters"])
    assert counters["ticks"] > 0


def test_sigterm_stops_gracefully_with_json_logs(demo: tuple[subprocess.Popen[str], int]):
    process, _ = demo
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [record["message"] for record in records]
    assert "demo flushed and stopping" in messages  # main ran to its end, not cancelled
    assert all(record["service"] == "demo" for record in records)


def test_readyz_fails_and_names_redis_when_it_is_unreachable() -> None:
    port = free_port()
    process = start_demo(f"redis://127.0.0.1:{free_port()}/0", port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert isinstance(body, dict) and body["checks"]["redis"] != "ok"
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive though not ready
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_bad_configuration_exits_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.common.demo_service"],
        cwd=REPO,
        env={**os.environ, "ITS_HTTP_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "ITS_HTTP_PORT='not-a-port'" in result.stderr
