"""Which ITS services the local stack runs, on which ports, with which environment.

A service runs when its console script (``its-<name>``) is installed in the virtualenv. Each later
service adds its entry here; ports are fixed offsets from one base port (``Ports``), so URLs
stay the same across runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LocalService:
    name: str
    http_port: int
    env: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def executable(self) -> str | None:
        script = f"its-{self.name}"
        beside_python = Path(sys.executable).parent / script
        if beside_python.exists():
            return str(beside_python)
        return shutil.which(script)


DEFAULT_BASE_PORT = 18080
# Every port of the local stack is ``base + offset``; the offsets keep the historic defaults at the
# default base (18080), so `make run` URLs do not change. `its-local run --base-port N`
# (ITS_LOCAL_BASE_PORT, `make run BASE_PORT=N`) moves all of them together.
PORT_OFFSETS: dict[str, int] = {
    "marketsim": 0,
    "router": 1,
    "loader": 2,
    "collector": 3,
    "features": 4,
    "inference": 5,
    "trader": 6,
    "validator": 7,
    "alerter": 8,
    "dashboard": 9,
    "ibsim": 10,
    "marketsim websocket": 685,  # 18765
    "marketsim rest": 686,  # 18766
    "redis": -1701,  # 16379
    "postgres": -2648,  # 15432
    "ibsim api": -4078,  # 14002, not 4002: a real IB Gateway on this machine keeps its port
}
MIN_BASE_PORT = 1024 - min(PORT_OFFSETS.values())
MAX_BASE_PORT = 65535 - max(PORT_OFFSETS.values())


@dataclass(frozen=True)
class Ports:
    """The local stack's ports, all at fixed offsets from one base port."""

    base: int = DEFAULT_BASE_PORT

    def __post_init__(self) -> None:
        if not MIN_BASE_PORT <= self.base <= MAX_BASE_PORT:
            raise ValueError(
                f"base port {self.base}: expected {MIN_BASE_PORT}..{MAX_BASE_PORT} "
                "(every port of the stack is at a fixed offset from it)"
            )

    def __getitem__(self, name: str) -> int:
        return self.base + PORT_OFFSETS[name]

    def all(self) -> dict[str, int]:
        return {name: self.base + offset for name, offset in PORT_OFFSETS.items()}


DEV_API_KEY = "its-dev-key"  # the simulator's local key: not a secret, documented in the README


def ib_simulator(broker: str, ports: Ports = Ports()) -> list[LocalService]:
    """`make run BROKER=ib-sim`: the local IB Gateway simulator, started before the trader."""
    if broker != "ib-sim":
        return []
    api = ports["ibsim api"]
    env = {"ITS_IBSIM_PORT": str(api), "ITS_IBSIM_FEED": "redis"}
    urls = {"ib api": f"127.0.0.1:{api} (paper account DU1234567)"}
    return [LocalService("ibsim", ports["ibsim"], env=env, urls=urls)]


# With the IB simulator the trader sends marketable-limit orders (20 bp cap, the remainder is
# cancelled after 30 s): the IB path's limit orders and partial fills are exercised locally.
IB_SIM_ORDER_ENV = {"ITS_TRADER_ORDER_TYPE": "marketable_limit"}


def trader_env(broker: str, ports: Ports = Ports()) -> dict[str, str]:
    """BROKER=sim (default), ib-sim (the local simulator) or ib (ITS_IB_* from the environment)."""
    if broker == "ib-sim":
        return {
            **IB_SIM_ORDER_ENV,
            "ITS_TRADER_BROKER": "ib",
            "ITS_IB_HOST": "127.0.0.1",
            "ITS_IB_PORT": str(ports["ibsim api"]),
            "ITS_IB_CLIENT_ID": "1",
        }
    if broker == "ib":
        return {"ITS_TRADER_BROKER": "ib"}
    # The trader keeps its production confidence threshold (0.6): the demo model trades on the
    # demo market's planted pattern (ITS_MARKETSIM_DEMO_PATTERN below), not on a lowered bar.
    return {}


METRICS_TARGETS = (
    "marketsim", "router", "loader", "features", "inference", "trader", "validator", "alerter",
    "dashboard",
)  # fmt: skip


def local_services(
    polygon_key_set: bool,
    broker: str = "sim",
    ports: Ports = Ports(),
    dashboard_env: dict[str, str] | None = None,
    marketsim_env: dict[str, str] | None = None,
) -> list[LocalService]:
    ws_port, rest_port = ports["marketsim websocket"], ports["marketsim rest"]
    feed_ws = (
        "wss://socket.polygon.io/stocks" if polygon_key_set else f"ws://127.0.0.1:{ws_port}/stocks"
    )
    feed_rest = "https://api.polygon.io" if polygon_key_set else f"http://127.0.0.1:{rest_port}"
    feed_env = {"ITS_POLYGON_WS_URL": feed_ws, "ITS_POLYGON_REST_URL": feed_rest}
    if not polygon_key_set:
        feed_env["POLYGON_API_KEY"] = DEV_API_KEY
    dashboard_url = f"http://127.0.0.1:{ports['dashboard']}/"
    return [
        LocalService(
            "marketsim",
            ports["marketsim"],
            env={
                "ITS_MARKETSIM_PORT": str(ws_port),
                "ITS_MARKETSIM_REST_PORT": str(rest_port),
                "ITS_MARKETSIM_API_KEYS": DEV_API_KEY,
                "ITS_MARKETSIM_SPEED": "1",
                # The demo market: a planted, documented pattern the demo model learnt
                # (its_common.simmarket.pattern); the simulator's log and the dashboard say so.
                "ITS_MARKETSIM_DEMO_PATTERN": "true",
                **(marketsim_env or {}),
            },
            urls={
                "websocket": f"ws://127.0.0.1:{ws_port}/stocks",
                "rest": f"http://127.0.0.1:{rest_port}",
            },
        ),
        LocalService("router", ports["router"], env=feed_env),
        LocalService("loader", ports["loader"], env=feed_env),
        LocalService(
            "collector",
            ports["collector"],
            env={
                "ITS_COLLECTOR_TARGETS": ",".join(
                    f"{name}=http://127.0.0.1:{ports[name]}/metrics" for name in METRICS_TARGETS
                ),
            },
        ),
        LocalService("features", ports["features"]),
        LocalService(
            "inference",
            ports["inference"],
            # The demo model committed under models/demo (its-local runs from the repo root);
            # ITS_INFERENCE_BUNDLE_DIR in the environment wins (e.g. var/models of its-trainer).
            env={
                "ITS_INFERENCE_BUNDLE_DIR": os.environ.get("ITS_INFERENCE_BUNDLE_DIR")
                or str(Path.cwd() / "models" / "demo")
            },
        ),
        *ib_simulator(broker, ports),
        LocalService("trader", ports["trader"], env=trader_env(broker, ports)),
        LocalService("validator", ports["validator"]),
        LocalService(
            "alerter",
            ports["alerter"],
            # Slack/e-mail only when ITS_ALERTER_SLACK_WEBHOOK_URL / ITS_ALERTER_SMTP_* are set.
            env={"ITS_ALERTER_EXPECTED_SERVICES": "router,loader,collector"},
        ),
        LocalService(
            "dashboard",
            ports["dashboard"],
            env={
                "ITS_DASHBOARD_ROUTER_METRICS_URL": f"http://127.0.0.1:{ports['router']}/metrics",
                **(dashboard_env or {}),
            },
            urls={"dashboard": dashboard_url},
        ),
    ]
