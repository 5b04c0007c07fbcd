"""Memory: Redis after a compressed full session of NVDA+MSFT, Redis at the whole market's peak,
and the resident memory of every process at rest and at peak.

1. Session: the simulator replays one full regular session of NVDA+MSFT (default activity:
   about 1.9 million trades; quotes off) at ``--speed 300`` (6.5 hours in 78 s, about 25,000
   trades/s on average, several times that at the open and close) through the router (trades
   and minute bars, its normal lag-aware trimming), one loader, the features service, inference
   (the committed demo model) and the trader (simulated broker): trades, bars, features,
   decisions and orders, as ``make run``. Redis ``used_memory`` is sampled every second: its
   peak during the session and its value once the session has closed and the loader has
   stored everything, against the 150 MB target (``make run`` gives Redis 200 MB with
   ``noeviction``).
2. Whole market: the end-to-end stack (8,000 tickers, ``T.*``/``AM.*``) with every other
   service of ``make run`` beside it (features, inference, trader, validator, alerter,
   collector, dashboard); resident memory of each process at rest (subscribed, rate 0), then
   ``PEAK_RATE`` trades/s for ``PEAK_S`` s: the peak of Redis ``used_memory`` and of each
   process' memory as proportional set size (PSS: shared pages divided among their sharers;
   PostgreSQL: the postmaster and its backends together, shared buffers counted once).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from its_common.streams import Stream
from tests.bench.e2e_bench import SIM_ARGS, _settle
from tests.bench.report import Figure
from tests.bench.wholestack import (
    Stack,
    start_decision_services,
    start_observers,
    wait_for,
    whole_stack,
)

SESSION_SPEED = os.environ.get("ITS_BENCH_MEMORY_SPEED", "300")
SESSION_DAY = "2025-11-03"
SESSION_CLOSE_MS = 1_762_203_600_000  # 2025-11-03 16:00 New York
TARGET_BYTES = 150 * 1024 * 1024
PEAK_RATE = int(os.environ.get("ITS_BENCH_MEMORY_PEAK_RATE", "120000"))
PEAK_S = float(os.environ.get("ITS_BENCH_MEMORY_PEAK_S", "20"))
MB = 1024 * 1024


def session(work: Path) -> dict[str, Any]:
    sim_args = ["--speed", SESSION_SPEED, "--start", SESSION_DAY, "--symbols", "NVDA,MSFT"]
    peak = 0
    peak_rss: dict[str, int] = {}
    with whole_stack(work / "session", sim_args) as stack:
        start_decision_services(stack)
        started = time.monotonic()
        while (status := stack.sim_status())["clock_ms"] < SESSION_CLOSE_MS + 60_000:
            if status["day"] not in (None, SESSION_DAY):
                break  # past the session (the stream moved on to the next day)
            peak = max(peak, stack.redis_memory()["used"])
            for name, rss in stack.rss().items():
                peak_rss[name] = max(peak_rss.get(name, 0), rss)
            time.sleep(1.0)
        seconds = time.monotonic() - started
        stack_drops = stack.sim_status()["slow_reader_drops"]
        # The session is over: the feed stops (the simulator would go on into the next days
        # without a pause, and the loader would never be seen with nothing left to store).
        simulator = stack.services["marketsim"].process
        simulator.terminate()
        simulator.wait(timeout=30)
        wait_for(lambda: stack.loader_lag() == 0, 120, "loader drained", interval_s=0.5)
        time.sleep(3)  # a few trimmer periods
        end = stack.redis_memory()["used"]
        lengths = _lengths(stack)
        stored = stack.sql("SELECT count(*) FROM trades")[0][0]
        bars = stack.sql("SELECT count(*) FROM market_data")[0][0]
        decisions = stack.sql("SELECT count(*) FROM signals")[0][0]
    return {
        "redis_used_peak_bytes": max(peak, end),
        "redis_used_end_bytes": end,
        "stream_lengths_end": lengths,
        "trades_stored": stored,
        "bars_stored": bars,
        "decisions_stored": decisions,
        "rss_peak_bytes": peak_rss,
        "session_wall_s": seconds,
        "slow_reader_drops": stack_drops,
    }


def _lengths(stack: Stack) -> dict[str, int]:
    client = stack.redis
    try:
        streams = (Stream.TRADES, Stream.BARS_1M, Stream.FEATURES, Stream.DECISIONS)
        return {s.value: int(client.xlen(s)) for s in streams}
    finally:
        client.close()


def whole_market(work: Path) -> dict[str, Any]:
    with whole_stack(work / "whole", SIM_ARGS, {"ITS_SUBSCRIBE_ALL": "true"}) as stack:
        wait_for(lambda: stack.sim_status()["subscribed"] >= 1, 60, "router subscribed")
        start_decision_services(stack)
        start_observers(stack)
        _settle(stack)
        rest = stack.rss()
        rest_redis = stack.redis_memory()["used"]
        stack.market(PEAK_RATE, set_rate=True)
        started = time.monotonic()
        peak = rest_redis
        peak_rss = dict(rest)
        while time.monotonic() - started < PEAK_S:
            peak = max(peak, stack.redis_memory()["used"])
            for name, rss in stack.rss().items():
                peak_rss[name] = max(peak_rss[name], rss)
            time.sleep(1.0)
        stack.market(0, set_rate=True)
        lag = stack.loader_lag()
    return {
        "rate": PEAK_RATE,
        "seconds": PEAK_S,
        "redis_used_rest_bytes": rest_redis,
        "redis_used_peak_bytes": peak,
        "loader_lag_entries_at_end": lag,
        "rss_rest_bytes": rest,
        "rss_peak_bytes": peak_rss,
    }


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="its-memory-bench-"))
    work.chmod(0o755)
    first = session(work)
    print(
        f"session NVDA+MSFT: Redis used {first['redis_used_end_bytes'] / MB:.1f} MB at the end,"
        f" peak {first['redis_used_peak_bytes'] / MB:.1f} MB (target < 150 MB); "
        f"{first['trades_stored']:,} trades, {first['bars_stored']:,} bars, "
        f"{first['decisions_stored']:,} decisions stored in "
        f"{first['session_wall_s']:.0f} s; slow-reader drops {first['slow_reader_drops']}",
        flush=True,
    )
    second = whole_market(work)
    print(
        f"whole market at {PEAK_RATE:,} trades/s for {PEAK_S:.0f} s: Redis peak "
        f"{second['redis_used_peak_bytes'] / MB:.1f} MB; RSS rest "
        f"{ {k: round(v / MB) for k, v in second['rss_rest_bytes'].items()} } MB, peak "
        f"{ {k: round(v / MB) for k, v in second['rss_peak_bytes'].items()} } MB",
        flush=True,
    )
    return {"session": first, "whole_market": second, "work": str(work)}


def figures(result: dict[str, Any]) -> list[Figure]:
    first, second = result["session"], result["whole_market"]
    out = [
        Figure(
            "Redis used_memory after a full NVDA+MSFT session (router, loader, features, "
            "inference, trader: trades, bars, features, decisions; normal trimming; speed "
            f"{SESSION_SPEED})",
            first["redis_used_end_bytes"] / MB,
            "MB",
            TARGET_BYTES / MB,
            "target",
            "< 150 MB",
        ),
        Figure(
            "Redis used_memory, peak during that session",
            first["redis_used_peak_bytes"] / MB,
            "MB",
            TARGET_BYTES / MB,
            "target",
            "< 150 MB",
        ),
        Figure(
            f"Redis used_memory, peak during {second['seconds']:.0f} s of the whole market at "
            f"{second['rate']:,} trades/s",
            second["redis_used_peak_bytes"] / MB,
            "MB",
            200.0,
            "make run's maxmemory",
        ),
    ]
    for name in sorted(second["rss_rest_bytes"]):
        out.append(
            Figure(
                f"memory (PSS) of {name}, whole market at rest (subscribed, rate 0)",
                second["rss_rest_bytes"][name] / MB,
                "MB",
            )
        )
        out.append(
            Figure(
                f"memory (PSS) of {name}, whole market at {second['rate']:,} trades/s (peak)",
                second["rss_peak_bytes"][name] / MB,
                "MB",
            )
        )
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2, default=str))
