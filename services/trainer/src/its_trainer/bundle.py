"""Bundles on the trainer's side. Loading and every check are :mod:`its_common.model.bundle`'s (one
implementation, shared with inference); this module adds the trainer's own stable-baselines3
files (``policy.zip``, ``vecnormalize.pkl``) and their conversion into the runtime files
(:func:`runtime_of`, :func:`export_bundle`: format 1 -> format 2)."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecNormalize

from its_common.model.bundle import (
    BUNDLE_FORMAT,
    META_FILE,
    Bundle,
    BundleError,
    load_bundle,
    read_meta,
    write_runtime,
)
from its_common.model.normalize import ObsNormalizer
from its_common.model.policy import ACTIVATIONS, PolicyShape

__all__ = [
    "POLICY_FILE",
    "VECNORM_FILE",
    "Bundle",
    "BundleError",
    "Sb3Files",
    "export_bundle",
    "load_bundle",
    "load_sb3",
    "runtime_of",
]

POLICY_FILE = "policy.zip"
VECNORM_FILE = "vecnormalize.pkl"
# sb3's mlp_extractor.policy_net.* is the runtime actor's policy_net.*.
_PREFIXES = (("lstm_actor.", "lstm_actor."), ("mlp_extractor.policy_net.", "policy_net."),
             ("action_net.", "action_net."))  # fmt: skip


@dataclass
class Sb3Files:
    """A bundle's stable-baselines3 model and VecNormalize statistics (the trainer's files)."""

    model: RecurrentPPO
    vecnormalize: VecNormalize


def load_sb3(path: Path) -> Sb3Files:
    """``policy.zip`` and ``vecnormalize.pkl`` of a bundle (any format), on the CPU."""
    files = read_meta(path).get("files", {})
    policy = path / str(files.get("policy", POLICY_FILE))
    stats = path / str(files.get("vecnormalize", VECNORM_FILE))
    for needed in (policy, stats):
        if not needed.is_file():
            raise BundleError(f"{path}: {needed.name} is missing")
    model = RecurrentPPO.load(str(policy), device="cpu")
    with stats.open("rb") as handle:
        vecnormalize = pickle.load(handle)
    if not isinstance(vecnormalize, VecNormalize):
        raise BundleError(f"{path}: {stats.name} is not VecNormalize statistics")
    vecnormalize.training = False
    vecnormalize.norm_reward = False
    return Sb3Files(model, vecnormalize)


def runtime_of(
    model: RecurrentPPO, vecnormalize: VecNormalize
) -> tuple[dict[str, torch.Tensor], PolicyShape, ObsNormalizer]:
    """The runtime actor's weights, its shape and the normalizer of an sb3-contrib
    ``MlpLstmPolicy`` model; refuses what the runtime actor does not reproduce."""
    policy: Any = model.policy
    if not isinstance(policy.pi_features_extractor, FlattenExtractor):
        raise BundleError("only the default FlattenExtractor features extractor is supported")
    if policy.lstm_kwargs:
        raise BundleError(f"LSTM options {policy.lstm_kwargs} are not supported")
    activation = policy.activation_fn.__name__.lower()
    if activation not in ACTIVATIONS:
        raise BundleError(f"activation {policy.activation_fn.__name__} is not supported")
    net_arch = policy.net_arch
    pi_layers = net_arch.get("pi", []) if isinstance(net_arch, dict) else list(net_arch)
    lstm = policy.lstm_actor
    shape = PolicyShape(
        obs_size=int(lstm.input_size),
        n_actions=int(policy.action_net.out_features),
        lstm_hidden_size=int(lstm.hidden_size),
        n_lstm_layers=int(lstm.num_layers),
        pi_layers=tuple(int(n) for n in pi_layers),
        activation=activation,
    )
    state: dict[str, torch.Tensor] = {}
    for key, value in policy.state_dict().items():
        for sb3_prefix, ours in _PREFIXES:
            if key.startswith(sb3_prefix):
                state[ours + key.removeprefix(sb3_prefix)] = value.detach().cpu()
    if not vecnormalize.norm_obs:
        raise BundleError("VecNormalize without observation normalization is not supported")
    rms: Any = vecnormalize.obs_rms  # sb3 types it as a dict only
    if not isinstance(rms, RunningMeanStd):
        raise BundleError("only one observation statistics array is supported (not a dict)")
    normalizer = ObsNormalizer(
        mean=np.asarray(rms.mean, dtype=np.float64),
        var=np.asarray(rms.var, dtype=np.float64),
        clip_obs=float(vecnormalize.clip_obs),
        epsilon=float(vecnormalize.epsilon),
    )
    return state, shape, normalizer


def add_runtime(path: Path, meta: dict[str, Any], sb3: Sb3Files) -> dict[str, Any]:
    """Write the runtime files of ``sb3`` into ``path``; ``meta`` updated to format 2."""
    state, shape, normalizer = runtime_of(sb3.model, sb3.vecnormalize)
    entries = write_runtime(path, state, shape, normalizer)
    return {
        **meta,
        "format": BUNDLE_FORMAT,
        "files": {**meta.get("files", {}), **entries["files"]},
        "network": entries["network"],
        "sha256": entries["sha256"],
    }


def export_bundle(path: Path) -> Bundle:
    """Convert a format-1 bundle (stable-baselines3 files only) to format 2 in place: the
    runtime files are added beside the sb3 files, bundle.json is rewritten; the converted bundle
    is loaded back (every check) and returned."""
    meta = read_meta(path)
    if meta.get("format") == BUNDLE_FORMAT:
        raise BundleError(f"{path} is already a format-{BUNDLE_FORMAT} bundle")
    if meta.get("format") != 1:
        raise BundleError(f"{path}: cannot convert bundle format {meta.get('format')!r}")
    updated = add_runtime(path, meta, load_sb3(path))
    (path / META_FILE).write_text(json.dumps(updated, indent=2, default=str) + "\n")
    return load_bundle(path)
