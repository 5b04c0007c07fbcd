"""A consumer's checked read on one Redis (MULTI/EXEC) and on a 3-primary Redis Cluster (the
CHECKED_READ script): entries/s of the same stream, same run (not part of ``make bench``).

``python -m tests.bench.cluster_read``
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from its_common.consumer.ops import ConsumerOps
from its_common.localstack.servers import RedisServer
from its_common.streams import connect
from tests.rediscluster.cluster import RedisClusterServers

ENTRIES, BATCH = 40_000, 500
FIELDS = {b"v": b"1", b"type": b"T", b"n": b"10", b"data": b"x" * 1000, b"rt": b"1"}
STREAM = "its:stream:{g0}:trades"


async def entries_per_second(url: str, cluster: bool) -> float:
    redis = connect(url, cluster=cluster)
    try:
        await redis.delete(STREAM)
        for _ in range(0, ENTRIES, 1000):
            pipe = redis.pipeline(transaction=False)
            for _ in range(1000):
                pipe.xadd(STREAM, dict(FIELDS))  # type: ignore[arg-type]
            await pipe.execute()
        await redis.xgroup_create(STREAM, "g", id="0")
        ops = ConsumerOps(redis, STREAM, "g", "c")
        started, read = time.perf_counter(), 0
        while read < ENTRIES:
            _, entries = await ops.read_new_checked(BATCH)
            read += len(entries)
        return read / (time.perf_counter() - started)
    finally:
        await redis.aclose()


async def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="its-cluster-bench-"))
    single = RedisServer(base / "single").start()
    cluster = RedisClusterServers(base / "cluster").start()
    print(f"load average {os.getloadavg()[0]:.2f}")
    try:
        for _ in range(2):
            one = await entries_per_second(single.url, False)
            many = await entries_per_second(cluster.url, True)
            print(
                f"checked read, {BATCH}-entry batches of ~1.1 KB entries: one Redis (MULTI) "
                f"{one:,.0f} entries/s, cluster (script) {many:,.0f} entries/s, "
                f"ratio {many / one:.2f}"
            )
    finally:
        single.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
