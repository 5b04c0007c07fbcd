"""RecurrentPPO (MlpLstmPolicy) with VecNormalize over vectorized two-ticker environments, and the
model bundle it writes: format 2 (:mod:`its_common.model.bundle`), the runtime files (actor weights,
normalization statistics) plus the trainer's own stable-baselines3 files, and bundle.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from its_common.actions import action_map
from its_common.features import FEATURE_NAMES, FEATURE_SPEC, FEATURE_SPEC_HASH
from its_common.model.bundle import BUNDLE_FORMAT, META_FILE
from its_common.model.card import build_card, write_card
from its_trainer import __version__
from its_trainer.bundle import POLICY_FILE, VECNORM_FILE, Sb3Files, add_runtime
from its_trainer.data import PairData
from its_trainer.env import OBS_SIZE, EnvConfig, TwoTickerEnv, observation_layout

__all__ = ["BUNDLE_FORMAT", "META_FILE", "POLICY_FILE", "VECNORM_FILE", "TrainConfig", "train"]

LIBRARIES = (
    "numpy",
    "torch",
    "gymnasium",
    "stable-baselines3",
    "sb3-contrib",
    "its-common",
    "its-trainer",
)


@dataclass(frozen=True)
class TrainConfig:
    timesteps: int = 200_000
    seed: int = 42
    n_envs: int = 8
    vec_env: str = "dummy"
    n_steps: int = 256
    batch_size: int = 512
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.99
    ent_coef: float = 0.01
    lstm_hidden: int = 64
    hidden: int = 64
    checkpoint_every: int = 0
    torch_threads: int = 1


@dataclass
class TrainResult:
    bundle: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - always installed here
            versions[name] = "unknown"
    return versions


def make_vec_env(
    data: PairData, env_config: EnvConfig, n_envs: int, kind: str, seed: int
) -> VecEnv:
    """``n_envs`` monitored environments in one process (dummy) or one process each (subproc)."""

    def factory(rank: int) -> Callable[[], gym.Env[Any, Any]]:
        def make() -> gym.Env[Any, Any]:
            env = TwoTickerEnv(data, env_config)
            env.reset(seed=seed + rank)
            return Monitor(env)

        return make

    fns = [factory(i) for i in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(fns) if kind == "subproc" else DummyVecEnv(fns)
    venv.seed(seed)
    return venv


class ProgressCallback(BaseCallback):
    """Progress lines on a stream (every ~5 % and at the end), episode statistics, checkpoints."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None,
        checkpoint_every: int = 0,
        checkpoint_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.total = total
        self.stream = stream
        self.every = max(total // 20, 1)
        self.next_report = self.every
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = checkpoint_dir
        self.next_checkpoint = checkpoint_every
        self.started = time.monotonic()
        self.episode_rewards: list[float] = []
        self.checkpoints: list[str] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self.episode_rewards.append(float(episode["r"]))
        steps = self.num_timesteps
        if self.stream is not None and (steps >= self.next_report or steps >= self.total):
            self.next_report += self.every
            elapsed = time.monotonic() - self.started
            recent = self.episode_rewards[-20:]
            mean = f"{np.mean(recent):+.5f}" if recent else "n/a"
            fraction = min(steps / self.total, 1.0)
            self.stream.write(
                f"[{'#' * int(30 * fraction):<30}] {steps}/{self.total} {fraction:6.1%} "
                f"{elapsed:6.1f}s {steps / max(elapsed, 1e-9):7.0f} steps/s "
                f"episodes {len(self.episode_rewards)} mean reward (last 20) {mean}\n"
            )
            self.stream.flush()
        if self.checkpoint_every and self.checkpoint_dir and steps >= self.next_checkpoint:
            self.next_checkpoint += self.checkpoint_every
            self.save_checkpoint(steps)
        return True

    def save_checkpoint(self, steps: int) -> None:
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        stem = self.checkpoint_dir / f"step_{steps:09d}"
        self.model.save(str(stem) + ".zip")
        venv = self.model.get_vec_normalize_env()
        if venv is not None:
            venv.save(str(stem) + ".vecnormalize.pkl")
        self.checkpoints.append(stem.name)


def bundle_name(symbols: tuple[str, str], seed: int, when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    return f"{when:%Y%m%dT%H%M%SZ}-{symbols[0]}-{symbols[1]}-s{seed}"


def train(
    data: PairData,
    config: TrainConfig,
    env_config: EnvConfig,
    bundle_dir: Path,
    *,
    data_source: str = "",
    market: dict[str, Any] | None = None,
    demo: bool = False,
    progress: TextIO | None = sys.stderr,
) -> TrainResult:
    """Train and write a bundle into ``bundle_dir`` (created; must not hold a bundle already)
    with its model card (:mod:`its_common.model.card`, no evaluation yet). ``market``: what the
    bars' market was when known (the simulator's description of ``sim-bars`` output); ``demo``:
    mark the bundle as a demo model (``"demo": true``: inference and the dashboard say DEMO)."""
    if (bundle_dir / META_FILE).exists():
        raise FileExistsError(f"{bundle_dir} already holds a bundle")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.torch_threads)
    set_random_seed(config.seed)
    venv = make_vec_env(data, env_config, config.n_envs, config.vec_env, config.seed)
    env = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=config.gamma)
    policy_kwargs = {
        "lstm_hidden_size": config.lstm_hidden,
        "n_lstm_layers": 1,
        "net_arch": {"pi": [config.hidden], "vf": [config.hidden]},
    }
    model = RecurrentPPO(
        "MlpLstmPolicy",
        env,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        ent_coef=config.ent_coef,
        policy_kwargs=policy_kwargs,
        seed=config.seed,
        device="cpu",
        verbose=0,
    )
    callback = ProgressCallback(
        config.timesteps, progress, config.checkpoint_every, bundle_dir / "checkpoints"
    )
    started = time.monotonic()
    try:
        model.learn(total_timesteps=config.timesteps, callback=callback)
    finally:
        env.close()
    wall = time.monotonic() - started
    model.save(str(bundle_dir / POLICY_FILE))
    env.save(str(bundle_dir / VECNORM_FILE))
    logged = {k: float(v) for k, v in model.logger.name_to_value.items() if _is_number(v)}
    rewards = callback.episode_rewards
    metrics: dict[str, Any] = {
        "timesteps": int(model.num_timesteps),
        "wall_seconds": round(wall, 3),
        "steps_per_second": round(model.num_timesteps / max(wall, 1e-9), 1),
        "episodes": len(rewards),
        "mean_episode_reward": float(np.mean(rewards)) if rewards else None,
        "mean_episode_reward_last_20": float(np.mean(rewards[-20:])) if rewards else None,
        "last_update": logged,
        "checkpoints": callback.checkpoints,
    }
    meta = {
        "format": BUNDLE_FORMAT,
        "name": bundle_dir.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "algorithm": "RecurrentPPO",
        "policy": "MlpLstmPolicy",
        "files": {"policy": POLICY_FILE, "vecnormalize": VECNORM_FILE},
        "feature_spec_hash": FEATURE_SPEC_HASH,
        "feature_spec_version": FEATURE_SPEC["version"],
        "feature_names": list(FEATURE_NAMES),
        "observation": {"size": OBS_SIZE, "layout": observation_layout(data.symbols)},
        "action_map": action_map(),
        "symbols": list(data.symbols),
        "data": {
            "source": data_source,
            "from": data.first_day.isoformat(),
            "to": data.last_day.isoformat(),
            "sessions": data.episodes,
            "rows": len(data.ts),
            "filled_minutes": {s: int(data.filled[:, i].sum()) for i, s in enumerate(data.symbols)},
            **({"market": market} if market else {}),
        },
        "seed": config.seed,
        "train_config": config.__dict__,
        "env_config": env_config.as_dict(),
        "policy_kwargs": policy_kwargs,
        "libraries": library_versions(),
        "trainer_version": __version__,
        "metrics": metrics,
        **({"demo": True} if demo else {}),
    }
    meta = add_runtime(bundle_dir, meta, Sb3Files(model, env))
    (bundle_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    write_card(bundle_dir, build_card(json.loads((bundle_dir / META_FILE).read_text())))
    return TrainResult(bundle=bundle_dir, metrics=metrics)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and np.isfinite(float(value))
