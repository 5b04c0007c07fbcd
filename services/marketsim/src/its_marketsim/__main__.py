"""``its-marketsim``: the command line. Every flag is also an ``ITS_MARKETSIM_*`` variable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from its_marketsim import __version__

FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--host", "bind address of the WebSocket and REST servers (ITS_MARKETSIM_HOST)", {}),
    ("--port", "WebSocket port, path /stocks (ITS_MARKETSIM_PORT, 8765)", {"type": int}),
    ("--rest-port", "REST + admin port (ITS_MARKETSIM_REST_PORT, 8766)", {"type": int}),
    ("--api-keys", "comma-separated valid API keys (ITS_MARKETSIM_API_KEYS)", {}),
    ("--symbols", "comma-separated tickers (ITS_MARKETSIM_SYMBOLS or ITS_SYMBOLS)", {}),
    ("--seed", "random seed (ITS_MARKETSIM_SEED, 42)", {"type": int}),
    ("--speed", "1 = real time, 60 = a day in 6.5 min, max (ITS_MARKETSIM_SPEED)", {}),
    ("--start", "auto, now, YYYY-MM-DD or ISO date-time (ITS_MARKETSIM_START)", {}),
    (
        "--extended-hours",
        "trade 04:00-20:00 New York (ITS_MARKETSIM_EXTENDED_HOURS)",
        {"action": "store_const", "const": True},
    ),
    (
        "--no-skip-closed",
        "wait through closed periods instead of skipping them",
        {"action": "store_const", "const": False, "dest": "skip_closed"},
    ),
    ("--start-prices", "SYM=PRICE,... (ITS_MARKETSIM_START_PRICES)", {}),
    ("--volatility", "SYM=ANNUAL_VOL,... (ITS_MARKETSIM_VOLATILITY)", {}),
    ("--trades-per-day", "SYM=COUNT,... (ITS_MARKETSIM_TRADES_PER_DAY)", {}),
    ("--tapes", "SYM=TAPE,... (ITS_MARKETSIM_TAPES)", {}),
    (
        "--correlation",
        "pairwise correlation of returns (ITS_MARKETSIM_CORRELATION, 0.6)",
        {"type": float},
    ),
    ("--quotes-per-trade", "quotes per trade (ITS_MARKETSIM_QUOTES_PER_TRADE, 1)", {"type": float}),
    ("--extended-activity", "share of trades outside regular hours (0.05)", {"type": float}),
    (
        "--late-bar-rate",
        "share of minutes with late reports (ITS_MARKETSIM_LATE_BAR_RATE)",
        {"type": float},
    ),
    ("--batch-size", "events per frame at most (ITS_MARKETSIM_BATCH_SIZE, 500)", {"type": int}),
    (
        "--send-buffer-bytes",
        "per-connection send buffer (ITS_MARKETSIM_SEND_BUFFER_BYTES)",
        {"type": int},
    ),
    ("--slow-reader-timeout-s", "max-speed wait for a slow reader before 1011", {"type": float}),
    (
        "--auth-timeout-s",
        "seconds to wait for auth (ITS_MARKETSIM_AUTH_TIMEOUT_S, 10)",
        {"type": float},
    ),
    ("--auth-close-code", "close code after auth_failed/auth_timeout (1000)", {"type": int}),
    ("--max-connections-per-key", "connections per API key (1)", {"type": int}),
    (
        "--max-connections-drop",
        "which connection to drop: oldest or newest",
        {"choices": ["oldest", "newest"]},
    ),
    ("--max-connections-close-code", "1000 or 1008", {"type": int, "choices": [1000, 1008]}),
    ("--replay-file", "CSV or Parquet of trades to replay (ITS_MARKETSIM_REPLAY_FILE)", {}),
    ("--rest-rate-limit", "REST requests per minute per key, 0 = off", {"type": int}),
    ("--rest-max-days", "sessions of history REST serves before the clock (370)", {"type": int}),
    (
        "--rest-sessions-per-request",
        "most sessions one REST request reads; the rest through next_url (5)",
        {"type": int},
    ),
    ("--admin-token", "require X-Admin-Token on /admin (ITS_MARKETSIM_ADMIN_TOKEN)", {}),
    (
        "--no-admin",
        "disable /admin",
        {"action": "store_const", "const": False, "dest": "admin_enabled"},
    ),
    ("--faults", "initial faults as JSON (ITS_MARKETSIM_FAULTS)", {}),
    ("--public-base-url", "base of next_url links (default: the request's origin)", {}),
    (
        "--demo-pattern",
        "the demo market's planted, learnable pattern (ITS_MARKETSIM_DEMO_PATTERN; demo only)",
        {"action": "store_const", "const": True},
    ),
    (
        "--position-path",
        "file keeping a replay's position for the next start (ITS_MARKETSIM_POSITION_PATH)",
        {},
    ),
    (
        "--whole-market-symbols",
        "whole-market mode: this many more tickers, light model (0 = off)",
        {"type": int},
    ),
    ("--whole-market-rate", "their average trades/s in regular hours (2000)", {"type": float}),
    ("--whole-market-zipf", "Zipf exponent of their activity (0.9)", {"type": float}),
    ("--whole-market-burst-rate", "trades/s during a burst (0 = none)", {"type": float}),
    ("--whole-market-burst-every-s", "seconds between bursts (600)", {"type": float}),
    ("--whole-market-burst-s", "length of a burst in seconds (5)", {"type": float}),
    ("--http-port", "health/metrics port (ITS_HTTP_PORT)", {"type": int}),
    ("--http-host", "health/metrics bind address (ITS_HTTP_HOST)", {}),
    ("--log-level", "DEBUG, INFO, ... (ITS_LOG_LEVEL)", {}),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="its-marketsim",
        description="Polygon-compatible market simulator (WebSocket /stocks + REST). "
        "Unset flags fall back to their environment variables, then to the defaults.",
    )
    for flag, help_text, extra in FLAGS:
        parser.add_argument(flag, help=help_text, default=None, **extra)
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from its_common.runtime import run_service
    from its_common.settings import SettingsError, load_settings
    from its_marketsim.app import main as service_main
    from its_marketsim.config import MarketSimSettings

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["facts"]:  # its-marketsim facts: the market's stylized facts, no server
        from its_marketsim.facts import main as facts_main

        return facts_main(argv[1:])
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if "symbols" in overrides:
        overrides["symbols"] = [s.strip() for s in overrides["symbols"].split(",") if s.strip()]
    if "speed" in overrides:
        overrides["speed"] = str(overrides["speed"])
    try:
        settings = load_settings(MarketSimSettings, **overrides)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__, uses_redis=False)


if __name__ == "__main__":
    sys.exit(main())
