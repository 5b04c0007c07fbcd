"""Inference latency on CPU, with the demo bundle (models/demo) on two simulated sessions.

- ``decision_latency_ms``: one decision = decode the features entry, build the observation
  (shadow portfolio step), normalize, one LSTM step, the action's probability; measured per
  minute inside the inference processor (what ``its_inference_decision_latency_seconds``
  records). Target p99 <= 5 ms.
- ``bar_close_to_decision_ms``: the whole live path per minute, in process over a real Redis:
  the minute's bars entry appended to ``its:stream:bars:1m`` (the moment its bars closed) ->
  features consumer group read, features computed, cache + features entry written -> inference
  consumer group read, decision, decision entry written. The wait for a bar after its close
  (the feed's own delay) is not in it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from its_common.localstack.servers import RedisServer
from its_common.streams import Stream, connect, encode_entry, ensure_group, read_group
from its_features.app import FeaturesMetrics, FeaturesProcessor
from its_features.live import MinuteAssembler
from its_inference.app import InferenceMetrics, InferenceProcessor
from its_inference.bundles import load
from its_inference.policy import LivePolicy
from its_trainer.simdata import simulator_bars
from tests.inference.helpers import DEMO, PAIR, minute_agg

FIRST, LAST = date(2025, 3, 17), date(2025, 3, 18)


def percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000.0
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
        "n": len(samples),
    }


async def measure(url: str) -> dict[str, Any]:
    frame = simulator_bars(PAIR, FIRST, LAST, seed=42, trades_per_day=20_000)
    redis = connect(url)
    try:
        await ensure_group(redis, Stream.BARS_1M, "features", start="0")
        await ensure_group(redis, Stream.FEATURES, "inference", start="0")
        features = FeaturesProcessor(
            redis, MinuteAssembler(PAIR), FeaturesMetrics(CollectorRegistry())
        )
        inference = InferenceProcessor(
            redis, LivePolicy(load(DEMO)), InferenceMetrics(CollectorRegistry())
        )
        decision_s: list[float] = []
        end_to_end_s: list[float] = []
        for minute, rows in frame.groupby("ts"):
            events = [minute_agg(r) for r in rows.itertuples(index=False)]
            fields: dict[Any, Any] = encode_entry("AM", events)
            started = time.perf_counter()
            await redis.xadd(Stream.BARS_1M, fields)
            bars = await read_group(redis, "features", "f", [Stream.BARS_1M], block_ms=None)
            await features.handle(bars, now=int(minute) + 61_000)
            feats = await read_group(redis, "inference", "i", [Stream.FEATURES], block_ms=None)
            decisions = await inference.handle(feats)
            if decisions:
                end_to_end_s.append(time.perf_counter() - started)
                decision_s += [d.latency_us / 1e6 for d in decisions]
        return {
            "decision_latency_ms": percentiles(decision_s),
            "bar_close_to_decision_ms": percentiles(end_to_end_s),
            "target_decision_p99_ms": 5.0,
            "torch_threads": torch.get_num_threads(),
        }
    finally:
        await redis.aclose()


def run() -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="its-bench-inference-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        server = RedisServer(base / "redis").start()
        try:
            result = asyncio.run(measure(server.url))
        finally:
            server.stop()
    d, e = result["decision_latency_ms"], result["bar_close_to_decision_ms"]
    print(
        f"   decision latency p50 {d['p50']} ms, p95 {d['p95']} ms, p99 {d['p99']} ms "
        f"(target p99 <= 5 ms); bar close -> decision p99 {e['p99']} ms",
        flush=True,
    )
    return result


if __name__ == "__main__":
    print(run())
