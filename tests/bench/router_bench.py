"""Router benchmark: simulator -> router -> Redis, against the Redis write ceiling of the same run.

1. Ceiling: the same entry payloads XADDed by a raw pipeline (no parsing, no router).
2. Throughput: the real simulator at full speed, trades of two symbols, the real router process;
   events/s written = growth of ``router_events_total`` over the measurement window. The
   simulator pauses while it generates the next day's trades, so this figure is bounded by it.
2b. Capacity: the same router fed by a Polygon-protocol pusher of pre-encoded 500-trade frames
   as fast as the router reads (the feed is never the limit).
3. Latency at a fixed 20,000 events/s (a paced Polygon-protocol pusher: 200 frames/s x 100
   trades): receive-to-stored per entry = the XADD id's millisecond time (Redis' clock) minus the
   entry's ``rt`` (the router's receive stamp of the entry's first frame), so batching is charged.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
import websockets
from websockets.asyncio.server import ServerConnection, serve

from its_common import streams
from its_common.events import Trade, encode_frame
from its_common.localstack.servers import RedisServer, free_port
from its_common.streams import Stream
from tests.router.harness import SIM_KEY, Sim, router, simulator, wait_until

THROUGHPUT_WINDOW_S = 10.0
LATENCY_RATE = 20_000
LATENCY_SECONDS = 10.0


def _trades(count: int, start: int = 0) -> list[Trade]:
    return [
        Trade("NVDA", 4, str(i), 3, 180.0 + (i % 100) / 100, 100, 1_764_081_000_000 + i, i)
        for i in range(start, start + count)
    ]


def redis_ceiling(url: str, events_per_entry: int = 500, seconds: float = 3.0) -> float:
    """Events/s a raw pipeline of router-format entries achieves against this Redis."""
    client = redis.Redis.from_url(url)
    fields: Any = streams.encode_entry("T", _trades(events_per_entry))
    written = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(20):
            pipe.xadd("bench:ceiling", fields, maxlen=1_000, approximate=True)
        pipe.execute()
        written += 20 * events_per_entry
    rate = written / (time.perf_counter() - started)
    client.delete("bench:ceiling")
    client.close()
    return rate


def throughput(work: Path, redis_url: str) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with simulator(
        work / "sim",
        "--speed", "max",
        "--quotes-per-trade", "0",
        "--trades-per-day", "NVDA=8000000,MSFT=6000000",  # long days: no day change in the window
        "--batch-size", "500",
    ) as sim, router(work / "router", redis_url, sim, ITS_CHANNELS="T") as rt:  # fmt: skip
        wait_until(lambda: rt.metric("router_events_total", type="T") > 100_000, 60, "warm-up")
        first, started = rt.metric("router_events_total", type="T"), time.perf_counter()
        time.sleep(THROUGHPUT_WINDOW_S)
        last, ended = rt.metric("router_events_total", type="T"), time.perf_counter()
        dropped = rt.metric("router_queue_dropped_frames_total") + rt.metric(
            "router_dropped_events_total"
        )
        depth = rt.metric("router_queue_depth")
    client.close()
    return {"events_per_s": (last - first) / (ended - started), "dropped": dropped, "depth": depth}


async def _paced_feed(
    port_box: list[int], stop: asyncio.Event, rate: float | None = LATENCY_RATE, size: int = 100
) -> None:
    """A Polygon-protocol pusher of pre-encoded trade frames: ``rate`` events/s, or (None) as
    fast as the client reads (backpressure through the WebSocket's drain)."""
    frames = [encode_frame(_trades(size, start=i * size)).decode() for i in range(200)]

    async def handler(ws: ServerConnection) -> None:
        connected = {"ev": "status", "status": "connected", "message": "Connected Successfully"}
        await ws.send(json.dumps([connected]))
        auth = json.loads(await ws.recv())
        ok = auth.get("params") == SIM_KEY
        status = "auth_success" if ok else "auth_failed"
        await ws.send(json.dumps([{"ev": "status", "status": status, "message": status}]))
        await ws.recv()  # subscribe
        interval = size / rate if rate else 0.0
        next_at = time.perf_counter()
        index = 0
        while not stop.is_set():
            try:
                await ws.send(frames[index % len(frames)])
            except websockets.ConnectionClosed:
                return  # the router under test stopped
            index += 1
            if not interval:
                continue
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port_box.append(server.sockets[0].getsockname()[1])
        await stop.wait()


def router_capacity(work: Path, redis_url: str) -> float:
    """Events/s the router sustains when the feed is never the limit (pre-encoded frames)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    port_box: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    feed = _paced_feed(port_box, stop, rate=None, size=500)
    thread = threading.Thread(target=loop.run_until_complete, args=(feed,))
    thread.start()
    wait_until(lambda: port_box, 10, "pusher")
    sim = Sim(process=None, ws_port=port_box[0], rest_port=free_port())  # type: ignore[arg-type]
    try:
        with router(work / "router-capacity", redis_url, sim, ITS_CHANNELS="T") as rt:
            wait_until(lambda: rt.metric("router_events_total", type="T") > 200_000, 30, "warm")
            first, started = rt.metric("router_events_total", type="T"), time.perf_counter()
            time.sleep(THROUGHPUT_WINDOW_S)
            last, ended = rt.metric("router_events_total", type="T"), time.perf_counter()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    client.close()
    return (last - first) / (ended - started)


def latency(work: Path, redis_url: str) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    port_box: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    thread = threading.Thread(target=loop.run_until_complete, args=(_paced_feed(port_box, stop),))
    thread.start()
    wait_until(lambda: port_box, 10, "paced feed")
    sim = Sim(process=None, ws_port=port_box[0], rest_port=free_port())  # type: ignore[arg-type]
    try:
        with router(work / "router-latency", redis_url, sim, ITS_CHANNELS="T"):
            time.sleep(2)  # warm-up
            client.delete(Stream.TRADES)
            time.sleep(LATENCY_SECONDS)
            rows: Any = client.xrange(Stream.TRADES)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    delays = []
    events = 0
    for entry_id, fields in rows:
        stored_ms = int(entry_id.split(b"-")[0])
        delays.append(stored_ms - int(fields[b"rt"]))
        events += int(fields[b"n"])
    values = np.array(delays, dtype=float)
    client.close()
    return {
        "rate_events_per_s": events / LATENCY_SECONDS,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "entries": float(len(values)),
    }


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="its-router-bench-"))
    work.chmod(0o755)
    server = RedisServer(work / "redis").start()
    try:
        # The ceiling last: its flood of writes would leave Redis rewriting its AOF meanwhile.
        flow = throughput(work, server.url)
        capacity = router_capacity(work, server.url)
        lat = latency(work, server.url)
        ceiling = redis_ceiling(server.url)
    finally:
        server.stop()
    result = {
        "redis_ceiling_events_per_s": round(ceiling),
        "router_events_per_s": round(flow["events_per_s"]),
        "ratio_to_ceiling": round(flow["events_per_s"] / ceiling, 3),
        "router_capacity_events_per_s": round(capacity),
        "capacity_ratio_to_ceiling": round(capacity / ceiling, 3),
        "dropped_during_throughput": flow["dropped"],
        "latency_at_20k": {k: round(v, 2) for k, v in lat.items()},
        "targets": {"events_per_s": 200_000, "p99_ms": 10},
    }
    print(
        f"router: {result['router_events_per_s']:,} trade events/s sustained "
        f"(Redis raw-pipeline ceiling {result['redis_ceiling_events_per_s']:,} events/s, "
        f"ratio {result['ratio_to_ceiling']:.2f}; target >= 200,000)\n"
        f"router capacity with a pre-encoded pusher (feed never the limit): "
        f"{result['router_capacity_events_per_s']:,} events/s, ratio "
        f"{result['capacity_ratio_to_ceiling']:.2f} of the ceiling\n"
        f"router latency at {lat['rate_events_per_s']:,.0f} events/s, receive->stored: "
        f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
        f"(target p99 <= 10 ms)",
        flush=True,
    )
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    sys.exit(0)
