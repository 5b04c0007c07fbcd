"""Trainer throughput: environment steps per second.

Data: 10 simulated sessions of NVDA and MSFT (its-marketsim, seed 11). Figures:

- ``env_single``: the environment alone in one process (random actions): the ceiling.
- ``vec_dummy_8`` / ``vec_subproc_2``: the same stepping through DummyVecEnv (8 envs, one
  process) and SubprocVecEnv (2 worker processes, one per core), random actions.
- ``train_single_env``: RecurrentPPO training (MlpLstmPolicy 64, VecNormalize) with one
  environment in one process: the naive baseline.
- ``train_dummy_8`` / ``train_subproc_2``: the same training with 8 environments in one
  process, and with 2 environments in 2 worker processes (the 2-core setups). Target: >= 500
  training steps/s. Printed: steps/s and each ratio to the naive baseline.
"""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from its_trainer.data import PairData, build_pair, frame_to_bars
from its_trainer.env import EnvConfig, TwoTickerEnv
from its_trainer.simdata import simulator_bars
from its_trainer.train import TrainConfig, make_vec_env, train

PAIR = ("NVDA", "MSFT")
FIRST, LAST = date(2025, 3, 3), date(2025, 3, 14)
TRAIN_STEPS = 8192


def load() -> PairData:
    frame = simulator_bars(PAIR, FIRST, LAST, seed=11, trades_per_day=20_000)
    return build_pair(frame_to_bars(frame, PAIR, FIRST, LAST), PAIR, FIRST, LAST)


def env_single(data: PairData, steps: int = 100_000) -> float:
    env = TwoTickerEnv(data)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 9, steps).tolist()
    started = time.perf_counter()
    for action in actions:
        if env.step(action)[2]:
            env.reset()
    return steps / (time.perf_counter() - started)


def vec_rate(data: PairData, n_envs: int, kind: str, batches: int) -> float:
    venv = make_vec_env(data, EnvConfig(), n_envs, kind, seed=0)
    try:
        venv.reset()
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for _ in range(batches):
            venv.step(rng.integers(0, 9, n_envs))
        return batches * n_envs / (time.perf_counter() - started)
    finally:
        venv.close()


def train_rate(data: PairData, n_envs: int, kind: str, torch_threads: int = 1) -> float:
    config = TrainConfig(
        timesteps=TRAIN_STEPS,
        seed=0,
        n_envs=n_envs,
        vec_env=kind,
        n_steps=max(2048 // n_envs, 64),
        batch_size=512,
        n_epochs=4,
        torch_threads=torch_threads,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train(data, config, EnvConfig(), Path(tmp) / "bundle", progress=None)
    return float(result.metrics["steps_per_second"])


def run() -> dict[str, Any]:
    data = load()
    out: dict[str, Any] = {
        "env_single": round(env_single(data)),
        "vec_dummy_8": round(vec_rate(data, 8, "dummy", 5_000)),
        "vec_subproc_2": round(vec_rate(data, 2, "subproc", 10_000)),
        "train_single_env": train_rate(data, 1, "dummy"),
        "train_dummy_8": train_rate(data, 8, "dummy"),
        "train_subproc_2": train_rate(data, 2, "subproc"),
    }
    base = out["train_single_env"]
    out["ratio_dummy_8_vs_single"] = round(out["train_dummy_8"] / base, 2)
    out["ratio_subproc_2_vs_single"] = round(out["train_subproc_2"] / base, 2)
    out["target_steps_per_s"] = 500
    out["meets_target"] = max(out["train_dummy_8"], out["train_subproc_2"]) >= 500
    for key, value in out.items():
        print(f"   {key}: {value}", flush=True)
    return out


if __name__ == "__main__":
    run()
