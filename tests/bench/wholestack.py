"""The real path for the end-to-end and memory benchmarks: simulator -> router -> Redis ->
loader -> PostgreSQL, every piece its own process (the services' own command lines), with
probes: the simulator's admin API, the services' metrics, Redis INFO and XINFO, PostgreSQL
commit timestamps (``track_commit_timestamp``: when a row was stored) and resident memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
import redis

from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import PostgresServer, RedisServer, free_port
from its_common.localstack.token import dashboard_token
from its_common.streams import Stream

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
KEY = "bench-key"
LOADER_GROUP = "loader"
LAG_CAP = 100_000


def http(method: str, url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_for(check: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s}s")


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of a Prometheus series on a service's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    log: Path

    def rss(self) -> int:
        return process_rss(self.process.pid)

    def cpu_s(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)


def process_rss(pid: int, children: bool = True) -> int:
    """Memory of a process and its children (PostgreSQL's backends, Redis' rewrite fork) as
    the sum of their proportional set sizes: a page shared by n processes counts 1/n to each,
    so PostgreSQL's shared buffers or a fork's copy-on-write pages are counted once, not once
    per process as plain RSS would."""
    proc = psutil.Process(pid)
    total = _pss(proc)
    if children:
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += _pss(child)
    return int(total)


def _pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):  # no smaps to read: resident set instead
        return int(proc.memory_info().rss)


def tree_cpu_s(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for one in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = one.cpu_times()
            total += times.user + times.system
    return total


@dataclass
class Stack:
    work: Path
    redis_server: RedisServer
    postgres: PostgresServer
    services: dict[str, Service] = field(default_factory=dict)
    sim_rest: int = 0
    sim_ws: int = 0

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def sim_status(self) -> Any:
        return http("GET", f"http://127.0.0.1:{self.sim_rest}/admin/status")

    def market(self, rate: float | None = None, set_rate: bool = False) -> Any:
        url = f"http://127.0.0.1:{self.sim_rest}/admin/market"
        if set_rate:
            return http("POST", url, {"rate": rate})
        return http("GET", url)

    def loader_lag(self) -> int:
        """Entries of the trades stream not yet stored: undelivered (after the group's
        last-delivered id; Redis 6.2 has no XINFO ``lag``) + delivered but unacknowledged."""
        undelivered, pending, _ = self._loader_backlog()
        return undelivered + pending

    def loader_lag_ms(self) -> int:
        """How old the oldest entry not yet stored is (0 when everything is stored): entry ids
        are Redis' clock at XADD, so this is the loader's lag in time."""
        _, _, oldest = self._loader_backlog()
        return 0 if oldest is None else max(0, int(time.time() * 1000) - oldest)

    def _loader_backlog(self) -> tuple[int, int, int | None]:
        client = self.redis
        try:
            for group in client.xinfo_groups(Stream.TRADES):
                name = group["name"]
                if (name.decode() if isinstance(name, bytes) else name) != LOADER_GROUP:
                    continue
                last = group["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else str(last)
                undelivered = client.xrange(Stream.TRADES, f"({last}", "+", count=LAG_CAP) or []
                pending = int(group["pending"])
                oldest_ids = [undelivered[0][0]] if undelivered else []
                if pending:
                    summary: Any = client.xpending(Stream.TRADES, LOADER_GROUP)
                    oldest_ids.append(summary["min"])
                stamps = [int(_text(i).split("-")[0]) for i in oldest_ids if i]
                return len(undelivered), pending, min(stamps) if stamps else None
            length = int(client.xlen(Stream.TRADES))  # no group yet: nothing stored
            return length, 0, None
        finally:
            client.close()

    def redis_breakdown(self) -> dict[str, int]:
        """Where Redis' memory is: dataset, client buffers, the AOF (rewrite) buffers."""
        client = self.redis
        try:
            info = client.info("memory")
            keys = ("used_memory", "used_memory_dataset", "mem_clients_normal", "mem_aof_buffer")
            out = {k: int(info.get(k, 0)) for k in keys}
            out["trades_stream"] = int(client.memory_usage(Stream.TRADES, samples=0) or 0)
            out["trades_entries"] = int(client.xlen(Stream.TRADES))
            return out
        finally:
            client.close()

    def redis_memory(self) -> dict[str, int]:
        client = self.redis
        try:
            info = client.info("memory")
            return {"used": int(info["used_memory"]), "peak": int(info["used_memory_peak"])}
        finally:
            client.close()

    def rss(self) -> dict[str, int]:
        out = {name: s.rss() for name, s in self.services.items()}
        assert self.redis_server.process is not None and self.postgres.process is not None
        out["redis-server"] = process_rss(self.redis_server.process.pid)
        out["postgres"] = process_rss(self.postgres.process.pid)
        return out

    def cpu(self) -> dict[str, float]:
        out = {name: s.cpu_s() for name, s in self.services.items()}
        assert self.redis_server.process is not None and self.postgres.process is not None
        out["redis-server"] = tree_cpu_s(self.redis_server.process.pid)
        out["postgres"] = tree_cpu_s(self.postgres.process.pid)
        return out

    def sql(self, query: str) -> Any:
        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def start_service(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        port = free_port()
        log = self.work / f"{name}.log"
        environment = {
            **os.environ,
            "REDIS_URL": self.redis_server.url,
            "DATABASE_URL": self.postgres.url,
            "ITS_HTTP_PORT": str(port),
            "ITS_LOG_LEVEL": "WARNING",
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, env=environment, stdout=out, stderr=subprocess.STDOUT, cwd=self.work
            )
        service = Service(name, process, port, log)
        self.services[name] = service

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} ended: {log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(healthy, 60, f"{name} health")
        return service


def feed_env(stack: Stack) -> dict[str, str]:
    return {
        "ITS_POLYGON_WS_URL": f"ws://127.0.0.1:{stack.sim_ws}/stocks",
        "ITS_POLYGON_REST_URL": f"http://127.0.0.1:{stack.sim_rest}",
        "POLYGON_API_KEY": KEY,
    }


def start_decision_services(stack: Stack) -> None:
    """Features, inference (the committed demo model, as ``make run``) and the trader (the
    simulated broker): bars -> features -> decisions -> orders, as in the local stack."""
    env = feed_env(stack)
    stack.start_service("features", [str(BIN / "its-features")], env)
    bundle = {"ITS_INFERENCE_BUNDLE_DIR": str(ROOT / "models" / "demo")}
    stack.start_service("inference", [str(BIN / "its-inference")], {**env, **bundle})
    stack.start_service("trader", [str(BIN / "its-trader")], env)


def start_observers(stack: Stack) -> None:
    """The rest of ``make run``: validator, alerter, collector (scraping every service) and
    the dashboard, with the local stack's settings."""
    env = feed_env(stack)
    stack.start_service("validator", [str(BIN / "its-validator")], env)
    alerter_env = {"ITS_ALERTER_EXPECTED_SERVICES": "router,loader"}
    stack.start_service("alerter", [str(BIN / "its-alerter")], {**env, **alerter_env})
    targets = ",".join(
        f"{name}=http://127.0.0.1:{service.http_port}/metrics"
        for name, service in stack.services.items()
    )
    stack.start_service(
        "collector", [str(BIN / "its-collector")], {"ITS_COLLECTOR_TARGETS": targets}
    )
    token_env, _ = dashboard_token(stack.work)
    router_metrics = f"http://127.0.0.1:{stack.services['router'].http_port}/metrics"
    stack.start_service(
        "dashboard",
        [str(BIN / "its-dashboard")],
        {**token_env, "ITS_DASHBOARD_ROUTER_METRICS_URL": router_metrics},
    )


@contextlib.contextmanager
def whole_stack(
    work: Path, sim_args: list[str], router_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Redis, PostgreSQL (commit timestamps on), the simulator with ``sim_args``, the router
    and one loader (no start-up backfill: the benchmark measures the live path). The data is
    deleted afterwards (``ITS_BENCH_KEEP=1`` keeps it); the services' logs stay in ``work``."""
    redis_server = RedisServer(work / "redis").start()
    postgres = PostgresServer(work / "postgres")
    stack = Stack(work, redis_server, postgres)
    try:
        postgres.start()
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        postgres.stop()
        postgres.start()
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            apply_migrations(conn)
        stack.sim_ws, stack.sim_rest = free_port(), free_port()
        sim_argv = [
            str(BIN / "its-marketsim"),
            "--port", str(stack.sim_ws),
            "--rest-port", str(stack.sim_rest),
            "--api-keys", KEY,
            "--quotes-per-trade", "0",
            *sim_args,
        ]  # fmt: skip
        stack.start_service("marketsim", sim_argv, {})
        stack.start_service(
            "router",
            [str(BIN / "its-router")],
            {**feed_env(stack), "ITS_CHANNELS": "T,AM", **(router_env or {})},
        )
        stack.start_service(
            "loader",
            [str(BIN / "its-loader")],
            {**feed_env(stack), "ITS_LOADER_BACKFILL_ON_START": "false"},
        )
        yield stack
    finally:
        for service in reversed(list(stack.services.values())):
            service.process.terminate()
        for service in stack.services.values():
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.process.kill()
        redis_server.stop()
        if os.environ.get("ITS_BENCH_KEEP"):  # keep the data for a look; logs always stay
            postgres.stop()
        else:
            postgres.discard()
            shutil.rmtree(work / "redis", ignore_errors=True)
