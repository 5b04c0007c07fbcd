"""Loading a model bundle written by :func:`its_trainer.train.train`, with its checks."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.vec_env import VecNormalize

from its_common.actions import action_map
from its_common.features import FEATURE_SPEC_HASH
from its_trainer.env import OBS_SIZE, EnvConfig
from its_trainer.train import BUNDLE_FORMAT, META_FILE


class BundleError(ValueError):
    """A bundle that cannot be used with this code (missing files, other feature spec...)."""


@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]
    model: RecurrentPPO
    vecnormalize: VecNormalize

    @property
    def symbols(self) -> tuple[str, str]:
        first, second = self.meta["symbols"]
        return str(first), str(second)

    def env_config(self) -> EnvConfig:
        return EnvConfig(**self.meta["env_config"])

    def normalize(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """The observation as the policy saw it in training (VecNormalize statistics, frozen)."""
        out: NDArray[np.float32] = np.asarray(
            self.vecnormalize.normalize_obs(obs), dtype=np.float32
        )
        return out


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no {META_FILE})")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    return meta


def check_meta(meta: dict[str, Any], path: Path) -> None:
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {meta.get('format')!r}, expected {BUNDLE_FORMAT}")
    if meta.get("feature_spec_hash") != FEATURE_SPEC_HASH:
        raise BundleError(
            f"{path}: trained with feature spec {meta.get('feature_spec_hash')}, but this code "
            f"computes features by spec {FEATURE_SPEC_HASH}; retrain the model (or run the code "
            "version it was trained with)"
        )
    if meta.get("observation", {}).get("size") != OBS_SIZE:
        raise BundleError(f"{path}: observation size differs from this code's {OBS_SIZE}")
    if meta.get("action_map") != action_map():
        raise BundleError(f"{path}: action map differs from this code's")


def load_bundle(path: Path) -> Bundle:
    meta = read_meta(path)
    check_meta(meta, path)
    files = meta["files"]
    model = RecurrentPPO.load(str(path / files["policy"]), device="cpu")
    with (path / files["vecnormalize"]).open("rb") as handle:
        vecnormalize = pickle.load(handle)
    if not isinstance(vecnormalize, VecNormalize):
        raise BundleError(f"{path}: {files['vecnormalize']} is not VecNormalize statistics")
    vecnormalize.training = False
    vecnormalize.norm_reward = False
    return Bundle(path=path, meta=meta, model=model, vecnormalize=vecnormalize)
