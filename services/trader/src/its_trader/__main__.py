"""``its-trader``: the trader service and its kill switch.

its-trader                      run the service (same as ``its-trader run``)
its-trader kill [--flatten] [--reason TEXT]
                                halt trading now: cancel open orders (and close positions with
                                --flatten); the HALTED state persists until ``resume``
its-trader resume               clear the halt (explicit; a restart never resumes)
its-trader status               halt state, kill flag and positions as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import psycopg

from its_common.db.connect import connection_kwargs
from its_common.rediscluster import connect_redis
from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_trader import __version__, control
from its_trader.app import main as service_main
from its_trader.config import TraderSettings
from its_trader.store import TraderStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="its-trader", description="ITS trader: risk engine, broker adapter, kill switch."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the trader service (the default)")
    kill = sub.add_parser("kill", help="engage the kill switch: cancel open orders and halt")
    kill.add_argument("--flatten", action="store_true", help="also close every position")
    kill.add_argument("--reason", default="manual (CLI)", help="recorded with the halt")
    sub.add_parser("resume", help="clear the HALTED state and the kill flag")
    sub.add_parser("status", help="print the halt state, the kill flag and positions")
    return parser


async def run_tool(settings: TraderSettings, args: argparse.Namespace) -> int:
    redis = connect_redis(settings)
    store = TraderStore(connection_kwargs(settings))
    try:
        await store.connect()
        if args.command == "kill":
            flag = await control.engage_kill(redis, store, flatten=args.flatten, reason=args.reason)
            print(f"kill switch engaged (flatten={flag['flatten']}); trading HALTED")
        elif args.command == "resume":
            previous = await control.resume(redis, store)
            was = f"was halted: {previous.reason}" if previous.halted else "was not halted"
            print(f"trading resumed ({was})")
        else:
            halt = await control.load_halt(store)
            report = {
                "halt": control.halt_to_state(halt),
                "kill_flag": await control.read_kill(redis),
                "positions": await store.positions(settings.account),
            }
            print(json.dumps(report, indent=2))
    finally:
        await store.close()
        await redis.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(TraderSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command in (None, "run"):
        return run_service(settings, service_main, version=__version__, needs_schema=True)
    try:
        return asyncio.run(run_tool(settings, args))
    except (psycopg.OperationalError, OSError) as exc:
        print(f"database or Redis unavailable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
