"""The whole local stack as real processes the chaos runner can kill, freeze and restart.

Redis and PostgreSQL come from the same launchers as ``make run`` and the test fixtures
(:mod:`its_common.localstack.servers`); the simulator and the router from the router test
harness; every other service from :func:`tests.processes.start_service`. Each service keeps its
HTTP port across restarts, and every pid ever started is remembered so the end of the run can
prove that nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from its_common.clock import FEED_CLOCK_KEY
from its_common.db.migrate import apply_migrations
from its_common.localstack.servers import PostgresServer, RedisServer
from tests.processes import REPO, ServiceProcess, start_service, stop_process
from tests.router.harness import SIM_KEY, Sim, router_env, simulator

SYMBOLS = ("NVDA", "MSFT")


def start_time(pid: int) -> int:
    """The start time of ``pid`` (clock ticks since boot; -1 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return -1


# Every service the stack runs; the router starts last (see ChaosStack.start).
SERVICES = ("trader", "inference", "features", "loader", "validator", "alerter", "router")
HEARTBEAT_MAX_AGE_S = 2


@dataclass(frozen=True)
class StackConfig:
    speed: int = 60
    trades_per_day: str = "NVDA=20000,MSFT=10000"
    late_bar_rate: float = 0.1  # minutes whose bar is re-sent corrected (late reports)
    start_day: str = "2025-11-03"


@dataclass
class ChaosStack:
    work_dir: Path
    config: StackConfig = field(default_factory=StackConfig)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    # Every process started: pid -> its start time (/proc), so a pid the system gave to
    # another process since (a long run on a busy machine wraps pids) is not taken for it.
    pids: dict[int, int] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # killed on purpose, not restarted yet

    def __post_init__(self) -> None:
        self.redis = RedisServer(self.work_dir / "redis")
        self.postgres = PostgresServer(self.work_dir / "postgres", fast_unsafe=True)
        self._stack = ExitStack()
        self.sim: Sim | None = None
        self.client: redis.Redis | None = None

    # -- start and stop ---------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()
        self._remember(self.redis.process, self.redis.port)
        self._remember(self.postgres.process, self.postgres.port)
        with psycopg.connect(self.postgres.url) as conn:
            apply_migrations(conn)
        self.client = redis.Redis.from_url(self.redis.url)
        cfg = self.config
        self.sim = self._stack.enter_context(
            simulator(
                self.work_dir / "logs",
                "--speed", str(cfg.speed),
                "--start", cfg.start_day,
                "--symbols", ",".join(SYMBOLS),
                "--trades-per-day", cfg.trades_per_day,
                "--quotes-per-trade", "0",
                "--late-bar-rate", str(cfg.late_bar_rate),
                "--max-connections-drop", "oldest",  # a second client takes the router's place
                # The demo market (the demo model's planted pattern), so the demo model trades at
                # the trader's production threshold and the order checks compare real orders.
                "--demo-pattern",
            )
        )  # fmt: skip
        self._remember(self.sim.process, self.sim.ws_port, self.sim.rest_port)
        common = {
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "ITS_SYMBOLS": ",".join(SYMBOLS),
        }
        feed = {"ITS_POLYGON_REST_URL": self.sim.rest_url, "POLYGON_API_KEY": SIM_KEY}
        self.envs = {
            "trader": {**common, "ITS_TRADER_BLOCK_MS": "100"},
            "inference": {
                **common,
                "ITS_INFERENCE_BUNDLE_DIR": str(REPO / "models" / "demo"),
                "ITS_INFERENCE_BLOCK_MS": "100",
            },
            "features": common,
            "loader": {**common, **feed, "ITS_LOADER_BACKFILL_ON_START": "false"},
            "validator": common,
            "alerter": {
                **common,
                "ITS_ALERTER_INTERVAL_S": "0.5",
                "ITS_ALERTER_EXPECTED_SERVICES": "router,loader,features,inference,trader",
                "ITS_ALERTER_HEARTBEAT_MAX_AGE_S": str(HEARTBEAT_MAX_AGE_S),
                "ITS_ALERTER_FEED_ALWAYS": "true",
                "ITS_ALERTER_FEED_STALE_AFTER_S": "3",
                "ITS_ALERTER_COOLDOWN_S": "0",
                "ITS_ALERTER_REDIS_TIMEOUT_S": "1",
                "ITS_ALERTER_DATABASE_TIMEOUT_S": "1",
                # the windowed rules resolve this long after the last event
                "ITS_ALERTER_DEAD_LETTER_WINDOW_S": "3",
                "ITS_ALERTER_FEED_OVERFLOW_WINDOW_S": "3",
            },
            "router": {
                **common,
                **router_env(self.redis.url, self.sim),
                "ITS_STALE_AFTER_S": "2",
                "ITS_MAX_CONNECTIONS_BACKOFF_S": "2",
                "ITS_WATCHDOG_ALWAYS": "true",
            },
        }
        # Everything but the router starts at once (each waits for its own health endpoint);
        # the router last, so every consumer group exists before the feed flows.
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            list(pool.map(self.start_service, [n for n in SERVICES if n != "router"]))
        self.start_service("router")

    def start_service(self, name: str) -> ServiceProcess:
        previous = self.services.get(name)
        handle = start_service(
            name,
            self.work_dir / "logs",
            self.envs[name],
            port=previous.port if previous else None,
        )
        self.services[name] = handle
        self._remember(handle.process, handle.port)
        self.down.discard(name)
        return handle

    def stop(self) -> None:
        """Stop everything, the feed first and the databases last."""
        for name in reversed(SERVICES):
            handle = self.services.get(name)
            if handle is not None:
                stop_process(handle.process)
        self._stack.close()
        if self.client is not None:
            self.client.close()
        self.postgres.stop()
        if self.postgres.relocated:  # root: the throwaway data lives in /var/lib/its-local
            shutil.rmtree(self.postgres.server_dir, ignore_errors=True)
        self.redis.stop()

    def _remember(self, process: subprocess.Popen[Any] | None, *ports: int) -> None:
        if process is not None:
            self.pids[process.pid] = start_time(process.pid)
        self.ports.update(ports)

    # -- faults on processes ----------------------------------------------------------------

    def kill(self, name: str) -> None:
        """kill -9 of one service (the runner restarts it: :meth:`start_service`)."""
        self.down.add(name)
        process = self.services[name].process
        process.kill()
        process.wait(10)

    def signal_service(self, name: str, sig: signal.Signals) -> None:
        os.kill(self.services[name].process.pid, sig)

    def redis_signal(self, sig: signal.Signals) -> None:
        assert self.redis.process is not None
        os.kill(self.redis.process.pid, sig)

    def redis_kill(self) -> None:
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait(10)

    def redis_start(self) -> None:
        self.redis.start()  # the same port and data directory (AOF)
        self._remember(self.redis.process)

    def postgres_stop(self) -> None:
        self.postgres.stop()

    def postgres_start(self) -> None:
        self.postgres.start()
        self._remember(self.postgres.process)

    def dead_services(self) -> dict[str, int]:
        return {
            name: code
            for name, handle in list(self.services.items())
            if name not in self.down and (code := handle.process.poll()) is not None
        }

    # -- what the runner watches ------------------------------------------------------------

    def feed_clock_ms(self) -> int:
        assert self.client is not None
        try:
            return int(self.client.hget(FEED_CLOCK_KEY, "event_ms") or 0)
        except redis.RedisError:
            return 0

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url, connect_timeout=5) as conn:
            return list(conn.execute(query.encode(), params).fetchall())

    def scalar(self, query: str, *params: Any) -> Any:
        rows = self.sql(query, *params)
        return rows[0][0] if rows else None
