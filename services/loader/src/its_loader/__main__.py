"""``its-loader``: the loader service, ``backfill`` and ``audit``.

its-loader                                   run the service (same as ``its-loader run``)
its-loader backfill --symbol NVDA --from 2026-11-20 --to 2026-11-24 [--trades]
its-loader audit --date 2026-11-24 [--repair] [--no-event] [--json] [--trades]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, TextIO

import psycopg
from redis.exceptions import RedisError

from its_common.clock import MarketClock
from its_common.db.connect import connection_kwargs
from its_common.logs import setup_logging
from its_common.rediscluster import connect_redis
from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_common.symbols import read_symbols
from its_loader import __version__
from its_loader.app import main as service_main
from its_loader.app import rest_config
from its_loader.audit import (
    as_dict,
    audit_day,
    format_report,
    last_completed_session,
    publish_audit_event,
    write_audit,
)
from its_loader.backfill import backfill_range
from its_loader.config import LoaderSettings
from its_loader.finality import final_until_ms
from its_loader.rest import BackfillError, PolygonRest
from its_loader.store import prepare_session
from its_loader.trades_audit import (
    audit_trades_day,
    format_trades_report,
    trades_as_dict,
    write_trades_audit,
)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="its-loader",
        description="Redis Streams to TimescaleDB loader, REST backfill and gap audit.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the loader service (the default)")

    backfill = sub.add_parser("backfill", help="backfill minute bars from Polygon REST")
    backfill.add_argument(
        "--symbol", action="append", required=True, help="ticker (repeatable or A,B)"
    )
    backfill.add_argument("--from", dest="first", type=_date, required=True, help="YYYY-MM-DD")
    backfill.add_argument("--to", dest="last", type=_date, required=True, help="YYYY-MM-DD")
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar")
    backfill.add_argument(
        "--trades", action="store_true", help="also backfill trades from /v3/trades"
    )

    audit = sub.add_parser("audit", help="audit one trading day's minute bars against REST")
    audit.add_argument(
        "--date", type=_date, default=None, help="YYYY-MM-DD (default: last completed session)"
    )
    audit.add_argument("--symbol", action="append", help="ticker (default: ITS_SYMBOLS)")
    audit.add_argument("--repair", action="store_true", help="upsert REST bars for the gaps")
    audit.add_argument("--no-event", action="store_true", help="do not publish the event")
    audit.add_argument(
        "--no-write", action="store_true", help="do not write gap_audit rows (bars or trades)"
    )
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.add_argument(
        "--trades",
        action="store_true",
        help="also audit trades per minute (count, volume) against REST /v3/trades",
    )
    audit.add_argument(
        "--fail-on-gaps", action="store_true", help="exit 1 when missing or mismatched minutes"
    )
    return parser


def _symbols(values: Sequence[str] | None, default: Sequence[str]) -> list[str]:
    if not values:
        return list(default)
    out: list[str] = []
    for value in values:
        out += [part.strip().upper() for part in value.split(",") if part.strip()]
    return out


class ProgressBar:
    """A one-line text progress bar on stderr (a plain line per step when not a terminal)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.started
        line = f"[{bar}] {done}/{total} {fraction:6.1%} {elapsed:5.1f}s {label}"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


async def run_backfill(settings: LoaderSettings, args: argparse.Namespace) -> int:
    market_now, live_symbols = await _live_view(settings)
    symbols = _symbols(args.symbol, live_symbols)
    if args.last < args.first:
        print("--to is before --from", file=sys.stderr)
        return 2
    progress = None if args.no_progress else ProgressBar()
    async with (
        PolygonRest(rest_config(settings)) as rest,
        await psycopg.AsyncConnection.connect(**connection_kwargs(settings)) as conn,
    ):
        await prepare_session(conn)
        try:
            rows = await backfill_range(
                rest,
                conn,
                symbols,
                args.first,
                args.last,
                final_until_ms(int(market_now.timestamp() * 1000)),
                progress,
                trades=args.trades,
            )
        except BackfillError as exc:
            print(f"backfill failed: {exc}", file=sys.stderr)
            return 1
    print(f"backfill done: {rows} rows written for {', '.join(symbols)}")
    return 0


async def run_audit(settings: LoaderSettings, args: argparse.Namespace) -> int:
    market_now, live_symbols = await _live_view(settings)
    symbols = _symbols(args.symbol, live_symbols)
    day = args.date or last_completed_session(market_now)
    async with (
        PolygonRest(rest_config(settings)) as rest,
        await psycopg.AsyncConnection.connect(**connection_kwargs(settings)) as conn,
    ):
        await prepare_session(conn)
        try:
            report = await audit_day(
                conn,
                rest,
                day,
                symbols,
                settings.audit_price_tolerance,
                settings.audit_volume_tolerance,
                repair=args.repair,
                market_now=market_now,
            )
            trades = (
                await audit_trades_day(
                    conn, rest, day, symbols, repair=args.repair, market_now=market_now
                )
                if args.trades
                else None
            )
        except BackfillError as exc:
            print(f"audit failed: {exc}", file=sys.stderr)
            return 1
        if not args.no_write:
            await write_audit(conn, report)
            if trades is not None:
                await write_trades_audit(conn, trades)
    if not args.no_event and report.trading_day:
        redis = connect_redis(settings)
        try:
            await publish_audit_event(redis, report)
        finally:
            await redis.aclose()
    if args.json:
        data = as_dict(report)
        if trades is not None:
            data["trades"] = trades_as_dict(trades)
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_report(report))
        if trades is not None:
            print(format_trades_report(trades))
    ok = report.ok and (trades is None or trades.ok)
    return 1 if args.fail_on_gaps and not ok else 0


async def _live_view(settings: LoaderSettings) -> tuple[datetime, list[str]]:
    """The market clock and the live symbol list from Redis (its_common.clock / .symbols); the
    wall clock and ITS_SYMBOLS when Redis cannot be reached (said on stderr)."""
    redis = connect_redis(settings)
    try:
        now = await asyncio.wait_for(MarketClock(redis).now(), timeout=5)
        symbols = await read_symbols(redis, default=settings.symbols)
        return now, symbols
    except (RedisError, OSError, TimeoutError) as exc:
        print(f"Redis unavailable ({exc}); using the wall clock and ITS_SYMBOLS", file=sys.stderr)
        return datetime.now(UTC), list(settings.symbols)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(LoaderSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command in (None, "run"):
        return run_service(settings, service_main, version=__version__, needs_schema=True)
    setup_logging(settings.effective_service_name(), settings.log_level)
    tool: dict[str, Any] = {"backfill": run_backfill, "audit": run_audit}
    try:
        return int(asyncio.run(tool[args.command](settings, args)))
    except psycopg.OperationalError as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
