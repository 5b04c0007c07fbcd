"""`its-router`: run the feed router, or change the live symbol list.

its-router                       run (settings from the environment; see README.md)
its-router set-symbols NVDA,AAPL change the symbols every router subscribes to, no restart
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from its_common.rediscluster import connect_redis
from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_common.symbols import SymbolError, parse_symbols, set_symbols
from its_router import __version__
from its_router.app import main as service_main
from its_router.config import RouterSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-router", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    setter = sub.add_parser("set-symbols", help="set the live symbol list (Redis)")
    setter.add_argument("symbols", help="comma-separated tickers, e.g. NVDA,MSFT")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(RouterSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "set-symbols":
        try:
            symbols = parse_symbols(args.symbols)
        except SymbolError as exc:
            print(f"its-router: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_set_symbols(settings, symbols))
    if settings.polygon_api_key is None:
        print(
            "invalid configuration for router:\n  POLYGON_API_KEY: required (or "
            "POLYGON_API_KEY_FILE); locally the simulator's key is its-dev-key",
            file=sys.stderr,
        )
        return 2
    return run_service(settings, service_main, version=__version__)


async def _set_symbols(settings: RouterSettings, symbols: list[str]) -> int:
    client = connect_redis(settings)
    try:
        await set_symbols(client, symbols, settings.symbols_key)
    except SymbolError as exc:
        print(f"its-router: symbols not changed: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()
    print(f"symbols set to {','.join(symbols)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
