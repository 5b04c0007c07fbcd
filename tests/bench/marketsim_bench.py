"""Market simulator push rate: trade events per second received by one real WebSocket client.

The simulator runs in a subprocess at ``--speed max`` with batched frames; the client subscribes
to ``T.*`` and does minimal work per frame (counts ``"ev":"T"`` with ``bytes.count``). Run it
with ``python -m tests.bench.marketsim_bench`` (or via ``make bench``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
TARGET_EVENTS_PER_S = 1_000_000
BATCH_SIZE = int(os.environ.get("MARKETSIM_BENCH_BATCH", "10000"))
KEY = "bench-key"


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


async def _measure(port: int, seconds: float, warmup: float) -> dict[str, Any]:
    async with connect(
        f"ws://127.0.0.1:{port}/stocks", compression=None, max_size=None, max_queue=64
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "auth", "params": KEY}))
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*"}))
        await ws.recv()
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


def run(seconds: float = 5.0, warmup: float = 1.0) -> dict[str, Any]:
    """Start the simulator, measure, stop it; returns the figures (events_per_s is the key one)."""
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
        "--speed", "max", "--start", "2025-11-03", "--seed", "42",
        "--batch-size", str(BATCH_SIZE), "--api-keys", KEY,
        "--trades-per-day", "NVDA=4000000,MSFT=2000000",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        asyncio.run(_wait_for_port(process, port, 30.0))
        result = asyncio.run(_measure(port, seconds, warmup))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    result.update(
        {
            "name": "marketsim_push",
            "batch_size": BATCH_SIZE,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "ratio_to_target": round(result["events_per_s"] / TARGET_EVENTS_PER_S, 3),
        }
    )
    return result


if __name__ == "__main__":
    figures = run()
    print(json.dumps(figures))
    print(f"marketsim: {figures['events_per_s']:,} trade events/s ({figures['mb_per_s']} MB/s)")
