"""Model bundles: a directory with ``bundle.json`` and the files it names.

Format 2 (what this code serves) holds the **runtime files** every consumer loads without
stable-baselines3: ``actor.pt`` (the :class:`~its_common.model.policy.RecurrentActor`'s state_dict,
saved with ``torch.save`` and loaded with ``weights_only=True``) and ``normalization.json`` (the
frozen VecNormalize statistics); bundle.json carries the network's shape (``network``) and the
SHA-256 of both files. The trainer's own stable-baselines3 files (``policy.zip``,
``vecnormalize.pkl``, to resume or inspect training) may sit beside them; nothing here reads
them. Format 1 (stable-baselines3 files only) is refused with the command that converts it.

Every load checks what must match this code: the feature spec hash, the observation size, the
action map, the network's input and output sizes and the normalization's size.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from its_common.actions import N_ACTIONS, action_map
from its_common.features import FEATURE_SPEC_HASH
from its_common.model.normalize import ObsNormalizer
from its_common.model.observation import OBS_SIZE
from its_common.model.policy import PolicyShape, RecurrentActor
from its_common.model.portfolio import EnvConfig

BUNDLE_FORMAT: Final = 2
META_FILE: Final = "bundle.json"
ACTOR_FILE: Final = "actor.pt"
NORMALIZATION_FILE: Final = "normalization.json"
EXPORT_COMMAND: Final = "its-trainer export"


class BundleError(ValueError):
    """A bundle that cannot be used with this code (missing files, other feature spec...)."""


@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]
    actor: RecurrentActor
    normalizer: ObsNormalizer

    @property
    def symbols(self) -> tuple[str, str]:
        first, second = self.meta["symbols"]
        return str(first), str(second)

    @property
    def version(self) -> str:
        """The model version written with every decision: the bundle's name."""
        return str(self.meta.get("name") or self.path.name)

    @property
    def demo(self) -> bool:
        return bool(self.meta.get("demo", False))

    @property
    def demo_market(self) -> str:
        """The label of the planted pattern of the market the bundle was trained on (bundle.json
        ``data.market.demo_pattern.label``, e.g. "demo market with a planted pattern"); "" when
        it was trained on a market without one."""
        market = self.meta.get("data", {}).get("market")
        planted = market.get("demo_pattern") if isinstance(market, dict) else None
        if not isinstance(planted, dict):
            return ""
        return str(planted.get("label") or "market with a planted pattern")

    def env_config(self) -> EnvConfig:
        return EnvConfig(**self.meta["env_config"])

    def normalize(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """The observation as the policy saw it in training (VecNormalize statistics, frozen)."""
        return self.normalizer(obs)


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path} is not a JSON object")
    return meta


def check_meta(meta: Mapping[str, Any], path: Path) -> None:
    """Refuse a bundle this code cannot serve, saying why (and how to fix it)."""
    found = meta.get("format")
    if found == 1:
        raise BundleError(
            f"{path}: bundle format 1 (stable-baselines3 files only) is no longer served; "
            f"convert it to format {BUNDLE_FORMAT} with `{EXPORT_COMMAND} {path}`"
        )
    if found != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {found!r}, expected {BUNDLE_FORMAT}")
    if meta.get("feature_spec_hash") != FEATURE_SPEC_HASH:
        raise BundleError(
            f"{path}: trained with feature spec {meta.get('feature_spec_hash')}, but this code "
            f"computes features by spec {FEATURE_SPEC_HASH}; retrain the model (or run the code "
            "version it was trained with)"
        )
    size = meta.get("observation", {}).get("size")
    if size != OBS_SIZE:
        raise BundleError(f"{path}: observation size {size!r} differs from this code's {OBS_SIZE}")
    if meta.get("action_map") != action_map():
        raise BundleError(f"{path}: action map differs from this code's {action_map()}")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _runtime_file(path: Path, meta: Mapping[str, Any], key: str) -> Path:
    name = meta.get("files", {}).get(key)
    if not name:
        raise BundleError(f"{path}: {META_FILE} names no {key!r} file")
    file = path / str(name)
    if not file.is_file():
        raise BundleError(f"{path}: {name} is missing")
    expected = meta.get("sha256", {}).get(key)
    if expected is not None and file_digest(file) != expected:
        raise BundleError(f"{path}: {name} does not match its SHA-256 in {META_FILE}")
    return file


def load_network(path: Path, meta: Mapping[str, Any]) -> tuple[RecurrentActor, ObsNormalizer]:
    """The actor with its weights and the normalizer, checked against this code's sizes."""
    try:
        shape = PolicyShape.from_json(meta["network"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: invalid network shape in {META_FILE}: {exc}") from exc
    if shape.obs_size != OBS_SIZE or shape.n_actions != N_ACTIONS:
        raise BundleError(
            f"{path}: network takes {shape.obs_size} inputs and gives {shape.n_actions} actions; "
            f"this code has {OBS_SIZE} and {N_ACTIONS}"
        )
    actor = RecurrentActor(shape)
    weights = _runtime_file(path, meta, "actor")
    try:
        # weights_only: tensors and plain containers only; anything else is refused unexecuted.
        state = torch.load(weights, map_location="cpu", weights_only=True)
        actor.load_state_dict(state, strict=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: {weights.name} does not fit the network: {exc}") from exc
    actor.eval()
    stats = _runtime_file(path, meta, "normalization")
    try:
        normalizer = ObsNormalizer.from_json(json.loads(stats.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: invalid {stats.name}: {exc}") from exc
    if normalizer.size != OBS_SIZE:
        raise BundleError(
            f"{path}: {stats.name} normalizes {normalizer.size} values, not {OBS_SIZE}"
        )
    return actor, normalizer


def load_bundle(path: Path) -> Bundle:
    """Read, check and load a format-2 bundle; :class:`BundleError` says why one is refused."""
    meta = read_meta(path)
    check_meta(meta, path)
    actor, normalizer = load_network(path, meta)
    return Bundle(path=path, meta=meta, actor=actor, normalizer=normalizer)


def write_runtime(
    path: Path,
    actor_state: Mapping[str, torch.Tensor],
    shape: PolicyShape,
    normalizer: ObsNormalizer,
) -> dict[str, Any]:
    """Write the runtime files into ``path``; returns the bundle.json entries that describe them
    (``files`` additions, ``network``, ``sha256``). The weights are checked to fit ``shape``."""
    actor = RecurrentActor(shape)
    actor.load_state_dict(dict(actor_state), strict=True)
    weights = path / ACTOR_FILE
    torch.save({k: v.detach().clone().contiguous() for k, v in actor.state_dict().items()}, weights)
    stats = path / NORMALIZATION_FILE
    stats.write_text(json.dumps(normalizer.to_json(), indent=2) + "\n")
    return {
        "files": {"actor": ACTOR_FILE, "normalization": NORMALIZATION_FILE},
        "network": shape.to_json(),
        "sha256": {"actor": file_digest(weights), "normalization": file_digest(stats)},
    }
