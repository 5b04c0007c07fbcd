"""Simulated days, the live path (features processor + inference processor over real Redis) and
the offline path (batch features + the environment + the bundle), for the inference tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import redis.asyncio as aioredis
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from its_common.events import MinuteAgg
from its_common.featureset import FeatureSet
from its_common.streams import Stream, encode_entry, ensure_group, read_group
from its_features.app import FeaturesMetrics, FeaturesProcessor
from its_features.live import MinuteAssembler
from its_inference.app import InferenceMetrics, InferenceProcessor
from its_inference.bundles import Bundle
from its_inference.policy import LivePolicy
from its_trainer.bundle import load_sb3
from its_trainer.data import PairData, build_pair, frame_to_bars
from its_trainer.env import TwoTickerEnv

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
PAIR = ("NVDA", "MSFT")
BAR = 60_000


def minute_agg(row: Any) -> MinuteAgg:
    vwap = float(row.vwap) if "vwap" in row._fields and np.isfinite(row.vwap) else 0.0
    return MinuteAgg(
        symbol=str(row.symbol),
        volume=float(row.volume),
        open=float(row.open),
        close=float(row.close),
        high=float(row.high),
        low=float(row.low),
        start=int(row.ts),
        end=int(row.ts) + BAR,
        vwap=vwap,
    )


@dataclass
class LiveRun:
    feature_sets: dict[int, FeatureSet]
    decisions: list[Any]
    features: FeaturesProcessor
    inference: InferenceProcessor


async def run_live(
    redis: aioredis.Redis,
    frame: pd.DataFrame,
    bundle: Bundle,
    conn: psycopg.AsyncConnection[Any] | None = None,
    grace_ms: int = 5_000,
    stage_at: tuple[int, Bundle] | None = None,
) -> LiveRun:
    """Replay ``frame`` minute by minute as the feed would send it (one entry per minute with
    every symbol's bar), through the features processor and the inference processor, both
    reading their streams through consumer groups; simulated time = the minute's close + 1 s."""
    await ensure_group(redis, Stream.BARS_1M, "features", start="0")
    await ensure_group(redis, Stream.FEATURES, "inference", start="0")
    features = FeaturesProcessor(
        redis, MinuteAssembler(PAIR, grace_ms), FeaturesMetrics(CollectorRegistry())
    )
    inference = InferenceProcessor(
        redis, LivePolicy(bundle), InferenceMetrics(CollectorRegistry()), conn
    )
    sets: dict[int, FeatureSet] = {}
    decisions: list[Any] = []
    minutes = sorted(frame["ts"].unique())

    async def pump(now: int) -> None:
        entries = await read_group(redis, "features", "f1", [Stream.BARS_1M], block_ms=None)
        for fs in await features.handle(entries, now=now):
            sets[fs.ts_ms] = fs
        feats = await read_group(redis, "inference", "i1", [Stream.FEATURES], block_ms=None)
        decisions.extend(await inference.handle(feats))

    by_minute = frame.groupby("ts")
    for minute in minutes:
        if stage_at is not None and minute == stage_at[0]:
            inference.stage(stage_at[1])
        rows = by_minute.get_group(minute)
        events = [minute_agg(r) for r in rows.itertuples(index=False)]
        fields: dict[Any, Any] = encode_entry("AM", events, received_ms=int(minute) + BAR + 200)
        await redis.xadd(Stream.BARS_1M, fields)
        await pump(int(minute) + BAR + 1_000)
    await pump(int(minutes[-1]) + 3_600_000)  # the end of the day: flush what is left
    return LiveRun(sets, decisions, features, inference)


@dataclass
class OfflineRun:
    data: PairData
    actions: dict[int, int]  # ts -> action (rows with a decision: all but each session's last)
    confidences: dict[int, float]
    equity: float


def run_offline(frame: pd.DataFrame, bundle: Bundle, first: date, last: date) -> OfflineRun:
    """Batch features over the whole range, the environment, the bundle's policy driven as the
    backtest drives it (one sequence: state kept, episode_start at each session). The policy is
    the trainer's stable-baselines3 model and VecNormalize (``predict``), not the runtime actor
    the live path uses: the parity covers the runtime's reimplementation too."""
    data = build_pair(frame_to_bars(frame, PAIR, first, last), PAIR, first, last)
    sb3 = load_sb3(bundle.path)
    env = TwoTickerEnv(data, bundle.env_config(), sequential=True)
    actions: dict[int, int] = {}
    confidences: dict[int, float] = {}
    capital = bundle.env_config().initial_capital
    for episode in range(data.episodes):
        obs, _ = env.reset(options={"episode": episode, "capital": capital})
        state: tuple[NDArray[np.float32], ...] | None = None
        start = np.array([True])
        done = False
        while not done:
            normalized = sb3.vecnormalize.normalize_obs(obs[None, :])
            action, state = sb3.model.predict(
                normalized, state=state, episode_start=start, deterministic=True
            )
            start = np.array([False])
            ts = int(data.ts[env.t])
            actions[ts] = int(action[0])
            obs, _, done, _, _ = env.step(int(action[0]))
        capital = env.equity
    return OfflineRun(data, actions, confidences, capital)


def drop_bars(frame: pd.DataFrame, drops: Sequence[tuple[str, int]]) -> pd.DataFrame:
    """``frame`` without the bars (symbol, index of the minute in the symbol's rows)."""
    out = frame
    for symbol, i in drops:
        ts = frame.loc[frame["symbol"] == symbol, "ts"].sort_values().iloc[i]
        out = out[~((out["symbol"] == symbol) & (out["ts"] == ts))]
    return out.reset_index(drop=True)
