"""Which ITS services the local stack runs, on which ports, with which environment.

A service runs when its console script (``its-<name>``) is installed in the virtualenv. Each later
service adds its entry here; ports are fixed so URLs stay the same across runs.
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


MARKETSIM_WS_PORT = 18765
MARKETSIM_REST_PORT = 18766
DEV_API_KEY = "its-dev-key"  # the simulator's local key: not a secret, documented in the README


IBSIM_API_PORT = 14002  # not 4002: a real IB Gateway on this machine keeps its port


def ib_simulator(broker: str) -> list[LocalService]:
    """`make run BROKER=ib-sim`: the local IB Gateway simulator, started before the trader."""
    if broker != "ib-sim":
        return []
    env = {"ITS_IBSIM_PORT": str(IBSIM_API_PORT), "ITS_IBSIM_FEED": "redis"}
    urls = {"ib api": f"127.0.0.1:{IBSIM_API_PORT} (paper account DU1234567)"}
    return [LocalService("ibsim", 18090, env=env, urls=urls)]


# The committed demo model is unsure of itself (its action probabilities rarely pass the
# production threshold of 0.6), so locally the trader accepts lower confidence: the demo trades.
DEMO_TRADER_ENV = {"ITS_TRADER_MIN_CONFIDENCE": "0.2"}


def trader_env(broker: str) -> dict[str, str]:
    """BROKER=sim (default), ib-sim (the local simulator) or ib (ITS_IB_* from the environment)."""
    if broker == "ib-sim":
        return {
            **DEMO_TRADER_ENV,
            "ITS_TRADER_BROKER": "ib",
            "ITS_IB_HOST": "127.0.0.1",
            "ITS_IB_PORT": str(IBSIM_API_PORT),
            "ITS_IB_CLIENT_ID": "1",
        }
    if broker == "ib":
        return {"ITS_TRADER_BROKER": "ib", **DEMO_TRADER_ENV}
    return dict(DEMO_TRADER_ENV)


def local_services(polygon_key_set: bool, broker: str = "sim") -> list[LocalService]:
    feed_ws = (
        "wss://socket.polygon.io/stocks"
        if polygon_key_set
        else f"ws://127.0.0.1:{MARKETSIM_WS_PORT}/stocks"
    )
    feed_rest = (
        "https://api.polygon.io" if polygon_key_set else f"http://127.0.0.1:{MARKETSIM_REST_PORT}"
    )
    feed_env = {"ITS_POLYGON_WS_URL": feed_ws, "ITS_POLYGON_REST_URL": feed_rest}
    if not polygon_key_set:
        feed_env["POLYGON_API_KEY"] = DEV_API_KEY
    return [
        LocalService(
            "marketsim",
            18080,
            env={
                "ITS_MARKETSIM_PORT": str(MARKETSIM_WS_PORT),
                "ITS_MARKETSIM_REST_PORT": str(MARKETSIM_REST_PORT),
                "ITS_MARKETSIM_API_KEYS": DEV_API_KEY,
                "ITS_MARKETSIM_SPEED": "1",
            },
            urls={
                "websocket": f"ws://127.0.0.1:{MARKETSIM_WS_PORT}/stocks",
                "rest": f"http://127.0.0.1:{MARKETSIM_REST_PORT}",
            },
        ),
        LocalService("router", 18081, env=feed_env),
        LocalService("loader", 18082, env=feed_env),
        LocalService(
            "collector",
            18083,
            env={
                "ITS_COLLECTOR_TARGETS": ",".join(
                    f"{name}=http://127.0.0.1:{port}/metrics"
                    for name, port in (
                        ("marketsim", 18080),
                        ("router", 18081),
                        ("loader", 18082),
                        ("features", 18084),
                        ("inference", 18085),
                        ("trader", 18086),
                        ("validator", 18087),
                        ("alerter", 18088),
                        ("dashboard", 18089),
                    )
                ),
            },
        ),
        LocalService("features", 18084),
        LocalService(
            "inference",
            18085,
            # The demo model committed under models/demo (its-local runs from the repo root);
            # ITS_INFERENCE_BUNDLE_DIR in the environment wins (e.g. var/models of its-trainer).
            env={
                "ITS_INFERENCE_BUNDLE_DIR": os.environ.get("ITS_INFERENCE_BUNDLE_DIR")
                or str(Path.cwd() / "models" / "demo")
            },
        ),
        *ib_simulator(broker),
        LocalService("trader", 18086, env=trader_env(broker)),
        LocalService("validator", 18087),
        LocalService(
            "alerter",
            18088,
            # Slack/e-mail only when ITS_ALERTER_SLACK_WEBHOOK_URL / ITS_ALERTER_SMTP_* are set.
            env={"ITS_ALERTER_EXPECTED_SERVICES": "router,loader,collector"},
        ),
        LocalService(
            "dashboard",
            18089,
            # The kill switch is enabled when ITS_DASHBOARD_TOKEN is exported before `make run`.
            env={"ITS_DASHBOARD_ROUTER_METRICS_URL": "http://127.0.0.1:18081/metrics"},
            urls={"dashboard": "http://127.0.0.1:18089/"},
        ),
    ]
