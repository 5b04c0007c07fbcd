"""``its-ibsim``: the command line. Every flag is also an ``ITS_IBSIM_*`` variable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from its_ibsim import __version__

FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--host", "API bind address (ITS_IBSIM_HOST, 127.0.0.1)", {}),
    ("--port", "API port (ITS_IBSIM_PORT, 4002 = paper gateway)", {"type": int}),
    ("--account", "managed account id (ITS_IBSIM_ACCOUNT, DU1234567)", {}),
    ("--server-version", "TWS API server version 157-178 (176)", {"type": int}),
    (
        "--feed",
        "redis (latest trades) or static (ITS_IBSIM_FEED)",
        {"choices": ["redis", "static"]},
    ),
    ("--static-price", "price of any symbol (ITS_IBSIM_STATIC_PRICE, 0 = none)", {"type": float}),
    ("--static-prices", "SYM=PRICE,... (ITS_IBSIM_STATIC_PRICES)", {}),
    ("--initial-cash", "starting cash (ITS_IBSIM_INITIAL_CASH, 100000)", {"type": float}),
    ("--commission-per-share", "USD per share (0.005)", {"type": float}),
    ("--commission-min", "USD minimum per execution (1.0)", {"type": float}),
    ("--spread-bps", "bid/ask spread around the last trade (2)", {"type": float}),
    ("--tick-interval-s", "price polling interval per subscription (0.25)", {"type": float}),
    ("--fill-delay-s", "seconds between acknowledgement and fill (0)", {"type": float}),
    (
        "--quote-size",
        "shares shown at bid and ask per print, at least (ITS_IBSIM_QUOTE_SIZE, 100)",
        {"type": float},
    ),
    ("--ignore-order-symbols", "orders in these symbols are never acknowledged", {}),
    (
        "--no-admin",
        "disable /admin on the health port",
        {"action": "store_const", "const": False, "dest": "admin_enabled"},
    ),
    ("--http-port", "health/metrics/admin port (ITS_HTTP_PORT)", {"type": int}),
    ("--http-host", "health/metrics/admin bind address (ITS_HTTP_HOST)", {}),
    ("--log-level", "DEBUG, INFO, ... (ITS_LOG_LEVEL)", {}),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="its-ibsim",
        description="Local IB Gateway simulator (TWS API). Unset flags fall back to their "
        "environment variables, then to the defaults.",
    )
    for flag, help_text, extra in FLAGS:
        parser.add_argument(flag, help=help_text, default=None, **extra)
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from its_common.runtime import run_service
    from its_common.settings import SettingsError, load_settings
    from its_ibsim.app import http_routes
    from its_ibsim.app import main as service_main
    from its_ibsim.config import IbSimSettings

    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = load_settings(IbSimSettings, **overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(
        settings,
        service_main,
        version=__version__,
        uses_redis=settings.feed == "redis",
        http_routes=http_routes,
    )


if __name__ == "__main__":
    sys.exit(main())
