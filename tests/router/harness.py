"""Real processes for router tests: the ITS market simulator and the router, over loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from its_common.localstack.servers import free_port

BIN = Path(sys.executable).parent
SIM_KEY = "router-test-key"


def http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode()


def wait_until(check: Any, timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")


@dataclass
class Sim:
    process: subprocess.Popen[bytes]
    ws_port: int
    rest_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/stocks"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def faults(self, **changes: Any) -> None:
        status, body = http("PUT", f"{self.rest_url}/admin/faults", changes)
        assert status == 200, body

    def drop(self, code: int | None = None) -> None:
        """Drop every WebSocket connection (aborted, or closed with ``code``)."""
        status, body = http(
            "POST", f"{self.rest_url}/admin/drop", {} if code is None else {"code": code}
        )
        assert status == 200, body


@contextmanager
def simulator(log_dir: Path, *extra: str) -> Iterator[Sim]:
    ws_port, rest_port, http_port = free_port(), free_port(), free_port()
    argv = [
        str(BIN / "its-marketsim"),
        "--port", str(ws_port),
        "--rest-port", str(rest_port),
        "--http-port", str(http_port),
        "--api-keys", SIM_KEY,
        "--speed", "60",
        "--start", "2025-11-03",
        "--trades-per-day", "NVDA=200000,MSFT=100000,AAPL=100000",
        *extra,
    ]  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "marketsim.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    sim = Sim(process, ws_port, rest_port)
    try:
        wait_until(lambda: http("GET", f"{sim.rest_url}/admin/status")[0] == 200, 30, "simulator")
        yield sim
    finally:
        process.terminate()
        process.wait(timeout=15)


@dataclass
class Router:
    process: subprocess.Popen[bytes]
    http_port: int
    log_file: Path

    def metric(self, name: str, **labels: str) -> float:
        status, text = http("GET", f"http://127.0.0.1:{self.http_port}/metrics")
        assert status == 200
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def readyz(self) -> tuple[int, Any]:
        return http("GET", f"http://127.0.0.1:{self.http_port}/readyz")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def router_env(redis_url: str, sim: Sim) -> dict[str, str]:
    """The router's environment against ``sim``: quick reconnects for tests."""
    return {
        "REDIS_URL": redis_url,
        "ITS_POLYGON_WS_URL": sim.ws_url,
        "ITS_POLYGON_REST_URL": sim.rest_url,
        "POLYGON_API_KEY": SIM_KEY,
        "ITS_BACKOFF_INITIAL_S": "0.1",
        "ITS_BACKOFF_MAX_S": "1",
        "ITS_SYMBOLS_POLL_S": "0.3",
    }


@contextmanager
def router(log_dir: Path, redis_url: str, sim: Sim, **env: str) -> Iterator[Router]:
    with router_process(log_dir, redis_url, sim, None, env) as handle:
        yield handle


@contextmanager
def router_process(
    log_dir: Path, redis_url: str, sim: Sim, command: list[str] | None, env: dict[str, str]
) -> Iterator[Router]:
    """The router process (``command`` replaces ``its-router``, e.g. a faulty-wiring script)."""
    http_port = free_port()
    environment = {
        **os.environ,
        **router_env(redis_url, sim),
        "ITS_HTTP_PORT": str(http_port),
        "ITS_HEARTBEAT_INTERVAL_S": "1",
        **env,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"router-{http_port}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command or [str(BIN / "its-router")],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    handle = Router(process, http_port, log_file)
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or http("GET", f"http://127.0.0.1:{http_port}/healthz")[0] == 200
            ),
            30,
            "router health endpoint",
        )
        if command is None:
            assert process.poll() is None, handle.log()
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def rest_trade_count(sim: Sim, symbol: str, query: str) -> int:
    """How many trades the simulator's REST history has for ``symbol`` under ``query`` (e.g.
    ``timestamp.gte=2025-11-03&timestamp.lte=2025-11-03``), following every page."""
    url = f"{sim.rest_url}/v3/trades/{symbol}?{query}&limit=50000&apiKey={SIM_KEY}"
    total = 0
    while url:
        status, body = http("GET", url, timeout=60)
        assert status == 200, body
        total += len(body["results"])
        url = body.get("next_url", "")
        if url:
            url += f"&apiKey={SIM_KEY}"
    return total
