"""Profile of the router's write side on Polygon-like frames (cProfile, one process).

``python -m tests.bench.router_profile [FRAMES]``: the real :class:`StreamWriter` batches and
writes the frames of :mod:`tests.bench.polygon_frames` to a fresh local Redis, under cProfile;
prints the events/s reached and the top functions by own time. The WebSocket read side is
profiled with py-spy on a running router (see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from its_common.localstack.servers import RedisServer
from its_common.streams import connect, now_ms
from its_router.batching import Frame
from its_router.metrics import RouterMetrics
from its_router.writer import StreamWriter
from tests.bench.polygon_frames import event_count, polygon_frames


async def write_all(url: str, frames: list[bytes], per_batch: int = 40) -> float:
    redis = connect(url)
    writer = StreamWriter(
        redis, RouterMetrics.create(CollectorRegistry()), batch_max_events=20_000,
        hold_max_events=10_000_000,
    )  # fmt: skip
    started = time.perf_counter()
    for start in range(0, len(frames), per_batch):
        received = now_ms()
        writer.hold_frames([Frame(received, f) for f in frames[start : start + per_batch]])
        assert await writer.flush()
    elapsed = time.perf_counter() - started
    await redis.aclose()
    return elapsed


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 2_000
    frames = polygon_frames(count)
    events = sum(map(event_count, frames))
    work = Path(tempfile.mkdtemp(prefix="its-router-profile-"))
    server = RedisServer(work / "redis").start()
    try:
        profile = cProfile.Profile()
        profile.enable()
        elapsed = asyncio.run(write_all(server.url, frames))
        profile.disable()
    finally:
        server.stop()
    print(f"{events:,} events in {count:,} frames: {events / elapsed:,.0f} events/s under cProfile")
    pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
