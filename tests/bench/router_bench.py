"""Router benchmark on frames that look like Polygon's, against the same entries' write ceiling.

1. Ceiling, measured first on a fresh Redis: the entries the router writes for these frames
   (its own batching code builds them: same streams, fields, sizes, events per entry) XADDed by
   a raw pipeline, no parsing, no router.
2. Capacity: the real router process fed by a Polygon-protocol pusher of pre-encoded Polygon-like
   frames (:mod:`tests.bench.polygon_frames`: 8 symbols interleaved, trades with quotes and
   minute bars in the same frames, condition lists, normal JSON spacing, ~500 events a frame);
   events/s = growth of ``router_events_total`` (every type) over 10 s. The headline is the
   loss-free capacity of one process: the feed paced at rising rates (PACED_RATES), the highest
   rate written in full with no frame dropped. Fed faster than it writes (unpaced, once in one
   process, once with write workers, ``ITS_ROUTER_WORKERS``), the router reads on and drops what
   its full queue cannot take (with workers the main process out-reads them): counted,
   published as gap windows for backfill, stated beside those overload figures. Both modes are
   also fed at the target rate.
3. Best case, labelled as such: pre-encoded frames of 500 trades of one symbol, compact JSON,
   against the ceiling of its own entries.
4. Compute on one core, no I/O: the router's parse/validate/batch (``build_batch``) over the same
   frames, against msgspec's decode of them alone.
5. Latency at a fixed 20,000 events/s (Polygon-like frames of ~100 events): receive-to-stored
   per entry = the XADD id's millisecond time (Redis' clock)
   minus the entry's ``rt`` (the router's receive stamp of the entry's first frame).

The router fed by the simulator is measured end to end (simulator -> router -> Redis -> loader)
by the end-to-end bench; here the feed is never the limit.
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
from its_common.events import Trade, decode_frame, encode_frame
from its_common.localstack.servers import RedisServer, free_port
from its_common.streams import Stream
from its_router.batching import Frame, build_batch
from tests.bench.polygon_frames import FrameMix, event_count, polygon_frames
from tests.bench.report import Figure
from tests.router.harness import SIM_KEY, Sim, router, wait_until

THROUGHPUT_WINDOW_S = 10.0
LATENCY_RATE = 20_000
LATENCY_SECONDS = 10.0
FRAMES = 200  # distinct frames the pushers cycle through
WORKERS = 2  # the write workers measured beside one process (a 2-core machine)
TARGET_EVENTS_PER_S = 250_000
TARGET_RATIO = 0.25
# The rising paced rates of the capacity search (events/s): the highest one the router writes in
# full (>= 97 %) with no frame dropped is its loss-free capacity, the headline figure.
PACED_RATES = (250_000, 350_000, 450_000, 550_000, 650_000, 800_000)


def _trades(count: int, start: int = 0) -> list[Trade]:
    return [
        Trade("NVDA", 4, str(i), 3, 180.0 + (i % 100) / 100, 100, 1_764_081_000_000 + i, i)
        for i in range(start, start + count)
    ]


def realistic_frames(mean_events: int = 500) -> list[bytes]:
    return polygon_frames(FRAMES, FrameMix(mean_events=mean_events))


def best_case_frames() -> list[bytes]:
    return [encode_frame(_trades(500, start=i * 500)) for i in range(FRAMES)]


def router_entries(frames: list[bytes], frames_per_batch: int = 40) -> list[tuple[str, Any, int]]:
    """``(stream, fields, events)`` of the entries the router writes for ``frames`` when it is
    backlogged (its own batching code: a batch of the frames waiting, <= 2,000 events an entry)."""
    out: list[tuple[str, Any, int]] = []
    for start in range(0, len(frames), frames_per_batch):
        chunk = [Frame(streams.now_ms(), f) for f in frames[start : start + frames_per_batch]]
        batch = build_batch(chunk)
        for (_, tag, _), group in batch.groups.items():
            for data, count in group.entries(2_000):
                fields = streams.encode_entry_raw(tag, data, count, batch.first_received_ms)
                out.append((streams.STREAM_FOR_EVENT[tag], fields, count))
    return out


def redis_ceiling(url: str, entries: list[tuple[str, Any, int]], seconds: float = 3.0) -> float:
    """Events/s a raw pipeline XADDing exactly ``entries`` (cycled) achieves against this Redis."""
    client = redis.Redis.from_url(url)
    written = 0
    index = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(20):
            stream, fields, count = entries[index % len(entries)]
            index += 1
            pipe.xadd(stream, fields, maxlen=100, approximate=True)  # ~40 MB: under maxmemory
            written += count
        pipe.execute()
    rate = written / (time.perf_counter() - started)
    client.flushdb()
    client.close()
    return rate


def compute_per_core(frames: list[bytes], seconds: float = 3.0) -> dict[str, float]:
    """Events/s of the router's parse/validate/batch on one core (no I/O), and of msgspec's
    decode of the same frames alone (the floor of any parse)."""
    events = sum(map(event_count, frames))

    def rate(work: Any) -> float:
        rounds, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            work()
            rounds += 1
        return rounds * events / (time.perf_counter() - started)

    def batches() -> None:
        for start in range(0, len(frames), 40):
            build_batch([Frame(0, f) for f in frames[start : start + 40]])

    def decode_only() -> None:
        for frame in frames:
            decode_frame(frame)

    return {"build_batch_events_per_s": rate(batches), "decode_events_per_s": rate(decode_only)}


async def _paced_feed(
    port_box: list[int],
    stop: asyncio.Event,
    frames: list[bytes],
    rate: float | None = LATENCY_RATE,
) -> None:
    """A Polygon-protocol pusher of pre-encoded frames: ``rate`` events/s, or (None) as fast as
    the client reads (backpressure through the WebSocket's drain)."""
    texts = [frame.decode() for frame in frames]
    sizes = [event_count(frame) for frame in frames]

    async def handler(ws: ServerConnection) -> None:
        connected = {"ev": "status", "status": "connected", "message": "Connected Successfully"}
        await ws.send(json.dumps([connected]))
        auth = json.loads(await ws.recv())
        ok = auth.get("params") == SIM_KEY
        status = "auth_success" if ok else "auth_failed"
        await ws.send(json.dumps([{"ev": "status", "status": status, "message": status}]))
        await ws.recv()  # subscribe
        next_at = time.perf_counter()
        index = 0
        while not stop.is_set():
            try:
                await ws.send(texts[index % len(texts)])
            except websockets.ConnectionClosed:
                return  # the router under test stopped
            if rate:
                next_at += sizes[index % len(texts)] / rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            index += 1

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port_box.append(server.sockets[0].getsockname()[1])
        await stop.wait()


def router_capacity(
    work: Path, redis_url: str, frames: list[bytes], rate: float | None = None, **env: str
) -> dict[str, float]:
    """Events/s the router sustains when the feed is never the limit (pre-encoded frames), or
    (``rate``) what it writes and drops fed at that many events/s."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    port_box: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    feed = _paced_feed(port_box, stop, frames, rate=rate)
    thread = threading.Thread(target=loop.run_until_complete, args=(feed,))
    thread.start()
    wait_until(lambda: port_box, 10, "pusher")
    sim = Sim(process=None, ws_port=port_box[0], rest_port=free_port())  # type: ignore[arg-type]
    name = f"router-{rate or 'capacity'}-" + "-".join(f"{k}{v}" for k, v in env.items())
    try:
        with router(work / name, redis_url, sim, ITS_CHANNELS="T,Q,AM", **env) as rt:
            wait_until(lambda: rt.metric("router_events_total") > 300_000, 60, "warm")
            first, started = rt.metric("router_events_total"), time.perf_counter()
            frames_first = rt.metric("router_frames_total")
            dropped_first = rt.metric("router_queue_dropped_frames_total")
            time.sleep(THROUGHPUT_WINDOW_S)
            last, ended = rt.metric("router_events_total"), time.perf_counter()
            frames_last = rt.metric("router_frames_total")
            dropped = rt.metric("router_queue_dropped_frames_total") - dropped_first
            entries = sum(client.xlen(s) for s in (Stream.TRADES, Stream.QUOTES, Stream.BARS_1M))
            dead = client.xlen(Stream.DEAD_LETTER)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    client.close()
    elapsed = ended - started
    # Frames read off the WebSocket (written or, past a full read queue, dropped as a counted gap):
    # how far the receiving side goes, whatever the writing side keeps up with.
    read = (frames_last - frames_first) / elapsed * sum(map(event_count, frames)) / len(frames)
    return {
        "events_per_s": (last - first) / elapsed,
        "read_events_per_s": read,
        "dropped_frames": dropped,
        "entries": entries,
        "dead": dead,
    }


def loss_free_capacity(work: Path, redis_url: str, frames: list[bytes]) -> dict[str, Any]:
    """The highest of PACED_RATES one router process writes in full with no frame dropped
    (0 when even the first is not), and every step measured."""
    steps: list[dict[str, float]] = []
    best = 0
    for rate in PACED_RATES:
        step = router_capacity(work, redis_url, frames, rate=rate)
        step["rate"] = rate
        steps.append(step)
        print(f"   one process paced at {rate:,}/s: {step}", flush=True)
        if step["dropped_frames"] > 0 or step["events_per_s"] < 0.97 * rate:
            break
        best = rate
    return {"events_per_s": best, "steps": steps}


def latency(work: Path, redis_url: str) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    port_box: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    feed = _paced_feed(port_box, stop, realistic_frames(mean_events=100))
    thread = threading.Thread(target=loop.run_until_complete, args=(feed,))
    thread.start()
    wait_until(lambda: port_box, 10, "paced feed")
    sim = Sim(process=None, ws_port=port_box[0], rest_port=free_port())  # type: ignore[arg-type]
    try:
        with router(work / "router-latency", redis_url, sim, ITS_CHANNELS="T,Q,AM"):
            time.sleep(2)  # warm-up
            client.delete(Stream.TRADES, Stream.QUOTES, Stream.BARS_1M)
            time.sleep(LATENCY_SECONDS)
            written: Any = [
                client.xrange(s) for s in (Stream.TRADES, Stream.QUOTES, Stream.BARS_1M)
            ]
            rows = [row for stream_rows in written for row in stream_rows]
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
    frames, best = realistic_frames(), best_case_frames()
    entries, best_entries = router_entries(frames), router_entries(best)
    server = RedisServer(work / "redis").start()
    try:
        # The ceilings first, on a fresh Redis (nothing written yet, no AOF rewrite running).
        ceiling = redis_ceiling(server.url, entries)
        best_ceiling = redis_ceiling(server.url, best_entries)
        print(f"   ceilings: {ceiling:,.0f} events/s, best case {best_ceiling:,.0f}", flush=True)
        one = router_capacity(work, server.url, frames)
        print(f"   one process: {one}", flush=True)
        several = router_capacity(work, server.url, frames, ITS_ROUTER_WORKERS=str(WORKERS))
        print(f"   {WORKERS} workers: {several}", flush=True)
        best_case = router_capacity(work, server.url, best)
        print(f"   best case: {best_case}", flush=True)
        capacity = loss_free_capacity(work, server.url, frames)
        paced_one = capacity["steps"][0]
        paced_several = router_capacity(
            work, server.url, frames, rate=TARGET_EVENTS_PER_S, ITS_ROUTER_WORKERS=str(WORKERS)
        )
        print(f"   {WORKERS} workers fed {TARGET_EVENTS_PER_S:,}/s: {paced_several}", flush=True)
        lat = latency(work, server.url)
    finally:
        server.stop()
    compute = compute_per_core(frames)
    events_per_entry = sum(c for _, _, c in entries) / len(entries)
    result = {
        "frames": {
            "events_per_frame": round(sum(map(event_count, frames)) / len(frames), 1),
            "bytes_per_frame": round(sum(map(len, frames)) / len(frames)),
            "ceiling_events_per_entry": round(events_per_entry, 1),
        },
        "redis_ceiling_events_per_s": round(ceiling),
        "loss_free_events_per_s": capacity["events_per_s"],
        "loss_free_ratio_to_ceiling": round(capacity["events_per_s"] / ceiling, 3),
        "loss_free_steps": capacity["steps"],
        "router_events_per_s": round(one["events_per_s"]),
        "ratio_to_ceiling": round(one["events_per_s"] / ceiling, 3),
        "router_workers": WORKERS,
        "router_dropped_frames": one["dropped_frames"],
        "router_workers_events_per_s": round(several["events_per_s"]),
        "router_workers_dropped_frames": several["dropped_frames"],
        "workers_ratio_to_ceiling": round(several["events_per_s"] / ceiling, 3),
        "workers_main_read_events_per_s": round(several["read_events_per_s"]),
        "paced": {
            "rate": TARGET_EVENTS_PER_S,
            "one_process_events_per_s": round(paced_one["events_per_s"]),
            "one_process_dropped_frames": paced_one["dropped_frames"],
            "workers_events_per_s": round(paced_several["events_per_s"]),
            "workers_dropped_frames": paced_several["dropped_frames"],
        },
        "dead_letters": one["dead"] + several["dead"],
        "best_case_ceiling_events_per_s": round(best_ceiling),
        "best_case_events_per_s": round(best_case["events_per_s"]),
        "compute_per_core": {k: round(v) for k, v in compute.items()},
        "latency_at_20k": {k: round(v, 2) for k, v in lat.items()},
        "targets": {"events_per_s": TARGET_EVENTS_PER_S, "ratio": TARGET_RATIO, "p99_ms": 10},
    }
    print(
        f"router on Polygon-like frames: loss-free {capacity['events_per_s']:,} events/s in one "
        f"process (paced); fed unpaced {result['router_events_per_s']:,} events/s in one "
        f"process, {result['router_workers_events_per_s']:,} with {WORKERS} write workers "
        f"(same-entry ceiling {result['redis_ceiling_events_per_s']:,}; ratios "
        f"{result['ratio_to_ceiling']:.2f} / {result['workers_ratio_to_ceiling']:.2f})\n"
        f"best case (one symbol, trades only, compact JSON): "
        f"{result['best_case_events_per_s']:,} events/s (ceiling "
        f"{result['best_case_ceiling_events_per_s']:,})\n"
        f"compute on one core: build_batch {compute['build_batch_events_per_s']:,.0f} events/s, "
        f"msgspec decode alone {compute['decode_events_per_s']:,.0f}\n"
        f"latency at {lat['rate_events_per_s']:,.0f} events/s, receive->stored: "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms",
        flush=True,
    )
    return result


def figures(result: dict[str, Any]) -> list[Figure]:
    shape = result["frames"]
    frames = (
        f"Polygon-like frames ({shape['events_per_frame']:.0f} events, "
        f"{shape['bytes_per_frame']:,} bytes a frame; 8 symbols; T+Q+AM)"
    )
    same = "raw pipelined XADD of the same entries, fresh Redis, measured first"
    target = f">= {TARGET_EVENTS_PER_S:,} events/s and >= {TARGET_RATIO}"
    lat = result["latency_at_20k"]
    steps = ", ".join(f"{s['rate'] / 1000:,.0f}k" for s in result["loss_free_steps"])
    return [
        Figure(
            f"router, one process, {frames}: highest paced rate written in full with no frame "
            f"dropped (rates tried: {steps})",
            result["loss_free_events_per_s"],
            "events/s",
            result["redis_ceiling_events_per_s"],
            same,
            target,
        ),
        Figure(
            f"router, one process, fed as fast as it reads (overloaded: it reads on and drops "
            f"what its full queue cannot take, as gaps): written; frames dropped "
            f"{result['router_dropped_frames']:,.0f}",
            result["router_events_per_s"],
            "events/s",
            result["redis_ceiling_events_per_s"],
            same,
        ),
        Figure(
            f"router, {result['router_workers']} write workers (ITS_ROUTER_WORKERS), fed as fast "
            f"as the main process reads; frames dropped as gaps (the workers' queues full, by "
            f"design: published for backfill): {result['router_workers_dropped_frames']:,.0f}",
            result["router_workers_events_per_s"],
            "events/s",
            result["redis_ceiling_events_per_s"],
            same,
        ),
        Figure(
            f"router main process with {result['router_workers']} write workers: events read off "
            "the WebSocket and handed over (written or, past a full queue, dropped as gaps)",
            result["workers_main_read_events_per_s"],
            "events/s",
            result["router_workers_events_per_s"],
            "written by the workers, same run",
        ),
        Figure(
            f"router, one process, fed {result['paced']['rate']:,} events/s (paced), written; "
            f"frames dropped: {result['paced']['one_process_dropped_frames']:,.0f}",
            result["paced"]["one_process_events_per_s"],
            "events/s",
            result["paced"]["rate"],
            "the feed's rate",
        ),
        Figure(
            f"router, {result['router_workers']} write workers, fed {result['paced']['rate']:,} "
            f"events/s (paced), written; frames dropped: "
            f"{result['paced']['workers_dropped_frames']:,.0f}",
            result["paced"]["workers_events_per_s"],
            "events/s",
            result["paced"]["rate"],
            "the feed's rate",
        ),
        Figure(
            "BEST CASE, not the headline: router on 500 trades of one symbol a frame, compact JSON",
            result["best_case_events_per_s"],
            "events/s",
            result["best_case_ceiling_events_per_s"],
            "raw pipelined XADD of its entries, fresh Redis",
        ),
        Figure(
            "router parse/validate/batch on one core, no I/O, Polygon-like frames",
            result["compute_per_core"]["build_batch_events_per_s"],
            "events/s",
            result["compute_per_core"]["decode_events_per_s"],
            "msgspec decode of the same frames alone",
        ),
        Figure(
            f"router receive->stored p99 at {lat['rate_events_per_s']:,.0f} events/s "
            f"(Polygon-like frames of ~100 events)",
            lat["p99_ms"],
            "ms",
            lat["p50_ms"],
            "p50 of the same run",
            "<= 10 ms",
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    sys.exit(0)
