"""Market simulator: push rate, and the pauses a client sees at day changes and quote builds.

The simulator runs in a subprocess at ``--speed max`` with batched frames; the client subscribes
to ``T.*`` and does minimal work per frame (counts ``"ev":"T"`` with ``bytes.count``, reads the
last event's ``"t"`` with ``bytes.rfind``). Phases:

- push rate: trade events/s received by one real WebSocket client (NVDA+MSFT);
- day change: the client streams a whole day into the next one and records every gap between
  two frames; the longest gap across the day change (the last second of one day to the first
  second of the next) stands beside the longest gap within the day (same run), for NVDA+MSFT
  and in whole-market mode (8,000 more tickers), with the simulator's resident memory there;
- first quote subscription of a day: the client streaming ``T.*`` subscribes ``Q.*``; the time
  to its first quote and the longest gap between frames meanwhile.

Run it with ``python -m tests.bench marketsim_bench`` (or ``make bench BENCH=marketsim``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.bench.report import Figure
from tests.bench.wholestack import process_rss

ROOT = Path(__file__).resolve().parents[2]
TARGET_EVENTS_PER_S = 1_000_000
BATCH_SIZE = int(os.environ.get("MARKETSIM_BENCH_BATCH", "10000"))
KEY = "bench-key"
TRADES = "NVDA=4000000,MSFT=2000000"
WHOLE_MARKET_SYMBOLS = 8_000
DAY_CHANGE_START = "2025-11-03"  # from the open; the next trading day is 2025-11-04
NEXT_DAY_S = 3.0  # how long the client keeps streaming the next day
DAY_GAP_MS = 3_600_000  # a jump of the events' time this large is a day change
NEAR_CHANGE_S = 1.0  # gaps within this long of the day change count as "across the change"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(process: subprocess.Popen[bytes], port: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"simulator exited with {process.returncode}: {stderr[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"simulator did not listen on {port} within {within_s}s")


@contextmanager
def _simulator(*extra: str, start: str = "2025-11-03") -> Iterator[tuple[int, int]]:
    """A simulator subprocess at speed max: yields (ws port, pid); stopped on exit."""
    port, rest_port, http_port = _free_port(), _free_port(), _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [
            str(ROOT / "libs/common/src"),
            str(ROOT / "services/marketsim/src"),
            env.get("PYTHONPATH", ""),
        ]
    )
    env.update({"ITS_HTTP_PORT": str(http_port), "ITS_LOG_LEVEL": "WARNING"})
    command = [
        sys.executable, "-m", "its_marketsim",
        "--port", str(port), "--rest-port", str(rest_port),
        "--speed", "max", "--start", start, "--seed", "42",
        "--batch-size", str(BATCH_SIZE), "--api-keys", KEY,
        "--trades-per-day", TRADES, *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_for_port(process, port, 60.0))
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _subscribe(port: int, topics: str) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/stocks", compression=None, max_size=None, max_queue=64
    )
    await ws.recv()
    await ws.send(json.dumps({"action": "auth", "params": KEY}))
    await ws.recv()
    await ws.send(json.dumps({"action": "subscribe", "params": topics}))
    await ws.recv()
    return ws


def _last_time(frame: bytes) -> int:
    """The ``"t"`` of a frame's last event (ms), read without decoding the frame."""
    at = frame.rfind(b'"t":')
    if at < 0:
        return -1
    end = at + 4
    while end < len(frame) and frame[end : end + 1].isdigit():
        end += 1
    return int(frame[at + 4 : end])


async def _measure(port: int, seconds: float, warmup: float) -> dict[str, Any]:
    ws = await _subscribe(port, "T.*")
    async with ws:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup:
            await ws.recv(decode=False)
        events = frames = nbytes = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            frame = await ws.recv(decode=False)
            assert isinstance(frame, bytes)
            events += frame.count(b'"ev":"T"')
            nbytes += len(frame)
            frames += 1
    return {
        "events": events,
        "frames": frames,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "mb_per_s": round(nbytes / elapsed / 1e6, 1),
    }


def push_rate(seconds: float = 5.0, warmup: float = 1.0) -> dict[str, Any]:
    with _simulator() as (port, _):
        return asyncio.run(_measure(port, seconds, warmup))


async def _across_day_change(port: int, pid: int) -> dict[str, Any]:
    """Stream T.* into the next day; every inter-frame gap, split at the day change."""
    ws = await _subscribe(port, "T.*")
    async with ws:
        arrivals: list[tuple[float, int]] = []  # (received, last event time)
        changed_at: float | None = None
        events = 0
        while True:
            frame = await ws.recv(decode=False)
            now = time.perf_counter()
            assert isinstance(frame, bytes)
            events += frame.count(b'"ev":"T"')
            t = _last_time(frame)
            if arrivals and changed_at is None and t - arrivals[-1][1] > DAY_GAP_MS:
                changed_at = now
            arrivals.append((now, t))
            if changed_at is not None and now - changed_at >= NEXT_DAY_S:
                break
        rss = process_rss(pid)
    assert changed_at is not None
    gaps = [(b[0] - a[0], b[0]) for a, b in itertools.pairwise(arrivals)]
    near = [g for g, at in gaps if abs(at - changed_at) <= NEAR_CHANGE_S]
    within = [g for g, at in gaps if at < changed_at - NEAR_CHANGE_S]
    return {
        "frames": len(arrivals),
        "events": events,
        "longest_gap_across_change_s": round(max(near), 3),
        "gap_at_change_s": round(next(g for g, at in gaps if at == changed_at), 3),
        "longest_gap_within_day_s": round(max(within or [0.0]), 3),
        "rss_bytes": rss,
    }


def day_change(*extra: str) -> dict[str, Any]:
    with _simulator(*extra, start=DAY_CHANGE_START) as (port, pid):
        return asyncio.run(_across_day_change(port, pid))


async def _first_quotes(port: int, warmup: float) -> dict[str, Any]:
    ws = await _subscribe(port, "T.*")
    async with ws:
        start = time.perf_counter()
        while time.perf_counter() - start < warmup:
            await ws.recv(decode=False)
        await ws.send(json.dumps({"action": "subscribe", "params": "Q.*"}))
        asked = last = time.perf_counter()
        longest = 0.0
        while True:
            frame = await ws.recv(decode=False)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
            assert isinstance(frame, bytes)
            if b'"ev":"Q"' in frame:
                return {"first_quote_after_s": round(now - asked, 3), "longest_gap_s": longest}


def first_quotes(warmup: float = 1.0) -> dict[str, Any]:
    with _simulator() as (port, _):
        return asyncio.run(_first_quotes(port, warmup))


def run() -> dict[str, Any]:
    """Every phase; returns the figures (events_per_s and the gaps are the key ones)."""
    result: dict[str, Any] = {
        "name": "marketsim",
        "batch_size": BATCH_SIZE,
        "trades_per_day": TRADES,
        "push": push_rate(),
        "day_change": day_change(),
        "day_change_whole_market": day_change("--whole-market-symbols", str(WHOLE_MARKET_SYMBOLS)),
        "first_quotes": first_quotes(),
        "target_events_per_s": TARGET_EVENTS_PER_S,
    }
    result["ratio_to_target"] = round(result["push"]["events_per_s"] / TARGET_EVENTS_PER_S, 3)
    return result


def figures(result: dict[str, Any]) -> list[Figure]:
    push, day, whole, quotes = (
        result["push"], result["day_change"], result["day_change_whole_market"],
        result["first_quotes"],
    )  # fmt: skip
    out = [
        Figure(
            f"simulator push rate, speed max, T.* (NVDA+MSFT {result['trades_per_day']}, "
            f"frames of {result['batch_size']:,})",
            push["events_per_s"],
            "events/s",
            TARGET_EVENTS_PER_S,
            "target",
            ">= 1,000,000 events/s",
        )
    ]
    for label, one in (
        ("NVDA+MSFT", day),
        (f"whole market ({WHOLE_MARKET_SYMBOLS:,} more tickers)", whole),
    ):
        out.append(
            Figure(
                f"longest gap between frames across a day change, speed max, {label}",
                one["longest_gap_across_change_s"] * 1000,
                "ms",
                one["longest_gap_within_day_s"] * 1000,
                "longest gap within the day, same run",
                "no pause (ratio about 1)",
            )
        )
    out.append(
        Figure(
            f"simulator resident memory (with its generator process) after a day change, whole "
            f"market ({WHOLE_MARKET_SYMBOLS:,} more tickers)",
            whole["rss_bytes"] / 1e6,
            "MB",
        )
    )
    out.append(
        Figure(
            "first quote subscription of a day (Q.* while streaming T.*, speed max): "
            "longest gap between frames meanwhile",
            quotes["longest_gap_s"] * 1000,
            "ms",
            day["longest_gap_within_day_s"] * 1000,
            "longest gap within the day, day-change run",
            "no pause",
        )
    )
    out.append(
        Figure(
            "first quote subscription of a day: time to the first quote",
            quotes["first_quote_after_s"] * 1000,
            "ms",
        )
    )
    return out


if __name__ == "__main__":
    figures_ = run()
    print(json.dumps(figures_))
