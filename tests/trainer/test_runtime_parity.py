"""The runtime actor (its_common.model, plain torch) reproduces sb3-contrib's policy
(RecurrentActorCriticPolicy): the same action probabilities from the same observations, LSTM
state and episode starts, and the same normalized observations; for the committed demo bundle, a
freshly trained one, other network shapes, and a format-1 bundle converted by ``its-trainer
export``."""

from __future__ import annotations

import json
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from its_common.model.bundle import BundleError, load_bundle
from its_common.model.normalize import ObsNormalizer
from its_common.model.policy import RecurrentActor
from its_trainer.__main__ import main
from its_trainer.bundle import load_sb3, runtime_of
from its_trainer.data import build_pair, frame_to_bars
from its_trainer.env import EnvConfig
from its_trainer.simdata import simulator_bars
from its_trainer.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
PAIR = ("NVDA", "MSFT")
TOL = 1e-6


def sequence(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random raw observations (wide, so clipping happens too) and episode starts (the first,
    every 60th and ~3 % at random)."""
    rng = np.random.default_rng(seed)
    obs = (rng.standard_normal((n, size)) * rng.uniform(0.1, 20.0, size)).astype(np.float32)
    starts = rng.random(n) < 0.03
    starts[::60] = True
    return obs, starts


def compare(policy: Any, vecnormalize: VecNormalize | None, actor: RecurrentActor,
            normalizer: ObsNormalizer | None, n: int = 400, seed: int = 0) -> float:  # fmt: skip
    """Step both over one sequence; returns the largest probability difference."""
    policy.set_training_mode(False)
    obs, starts = sequence(n, actor.shape.obs_size, seed)
    shape = tuple(int(k) for k in policy.lstm_hidden_state_shape)
    theirs: tuple[torch.Tensor, ...] = (torch.zeros(shape), torch.zeros(shape))
    ours = actor.initial_state()
    assert ours[0].shape == theirs[0].shape
    worst = 0.0
    for raw, start in zip(obs, starts, strict=True):
        row = raw
        if vecnormalize is not None and normalizer is not None:
            expected: Any = vecnormalize.normalize_obs(raw[None, :])
            got = normalizer(raw[None, :])
            assert got.dtype == np.float32 and np.array_equal(got, expected)
            row = got[0]
        x = torch.as_tensor(row[None, :])
        flag = torch.tensor([1.0 if start else 0.0])
        with torch.no_grad():
            dist, theirs = policy.get_distribution(x, theirs, flag)
            probs, ours = actor(x, ours, flag)
        expected_probs = dist.distribution.probs
        worst = max(worst, float((expected_probs - probs).abs().max()))
        assert int(torch.argmax(probs)) == int(torch.argmax(expected_probs))
    for a, b in zip(theirs, ours, strict=True):
        assert torch.allclose(a, b, atol=TOL, rtol=0)
    return worst


def test_the_demo_bundle(tmp_path):
    bundle = load_bundle(DEMO)
    sb3 = load_sb3(DEMO)
    worst = compare(sb3.model.policy, sb3.vecnormalize, bundle.actor, bundle.normalizer)
    assert worst <= TOL, worst


def test_a_freshly_trained_bundle(tmp_path):
    first, last = date(2025, 3, 3), date(2025, 3, 4)
    frame = simulator_bars(PAIR, first, last, seed=5, trades_per_day=5_000)
    data = build_pair(frame_to_bars(frame, PAIR, first, last), PAIR, first, last)
    config = TrainConfig(timesteps=256, seed=3, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
                         lstm_hidden=16, hidden=12)  # fmt: skip
    result = train(data, config, EnvConfig(), tmp_path / "fresh", progress=None)
    bundle = load_bundle(result.bundle)
    assert bundle.meta["network"]["lstm_hidden_size"] == 16
    assert bundle.meta["network"]["pi_layers"] == [12]
    sb3 = load_sb3(result.bundle)
    worst = compare(sb3.model.policy, sb3.vecnormalize, bundle.actor, bundle.normalizer, seed=1)
    assert worst <= TOL, worst


class _Box(gym.Env[np.ndarray, np.int64]):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (26,), np.float32)
    action_space = gym.spaces.Discrete(9)

    def reset(self, *, seed=None, options=None):
        return np.zeros(26, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(26, dtype=np.float32), 0.0, False, False, {}


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        {"lstm_hidden_size": 24, "n_lstm_layers": 2, "net_arch": {"pi": [32, 16], "vf": [8]},
         "activation_fn": torch.nn.ReLU},
        {"lstm_hidden_size": 8, "net_arch": [10, 10], "shared_lstm": True,
         "enable_critic_lstm": False},
        {"lstm_hidden_size": 8, "net_arch": {"pi": [], "vf": [4]}, "enable_critic_lstm": False},
    ],
    ids=["two-layer-lstm-relu", "list-net-arch-shared-lstm", "no-pi-layers-no-critic-lstm"],
)  # fmt: skip
def test_other_network_shapes(policy_kwargs):
    """Untrained but randomly initialised (orthogonal) weights: every shape the converter
    accepts gives the same distribution."""
    env = DummyVecEnv([_Box])
    model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=policy_kwargs, seed=11, device="cpu")
    venv = VecNormalize(env, clip_obs=3.0)
    rng = np.random.default_rng(2)
    venv.obs_rms.update(rng.standard_normal((500, 26)) * 4 + 1)
    state, shape, normalizer = runtime_of(model, venv)
    actor = RecurrentActor(shape)
    actor.load_state_dict(state, strict=True)
    worst = compare(model.policy, venv, actor, normalizer, n=200, seed=3)
    assert worst <= TOL, worst


def test_export_converts_a_format_1_bundle(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("policy.zip", "vecnormalize.pkl"):
        shutil.copy(DEMO / name, old / name)
    meta = json.loads((DEMO / "bundle.json").read_text())
    meta["format"] = 1
    meta["files"] = {"policy": "policy.zip", "vecnormalize": "vecnormalize.pkl"}
    del meta["network"], meta["sha256"]
    (old / "bundle.json").write_text(json.dumps(meta))

    with pytest.raises(
        BundleError, match=re.escape(f"convert it to format 2 with `its-trainer export {old}`")
    ):
        load_bundle(old)
    assert main(["export", str(old)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == 2 and summary["files"]["actor"] == "actor.pt"
    converted = load_bundle(old)
    demo = load_bundle(DEMO)
    assert converted.meta["network"] == demo.meta["network"]
    for key, value in demo.actor.state_dict().items():
        assert torch.equal(converted.actor.state_dict()[key], value)
    assert (old / "normalization.json").read_text() == (DEMO / "normalization.json").read_text()
    # Converting twice is refused (exit 2 with the reason).
    assert main(["export", str(old)]) == 2
    assert "already a format-2 bundle" in capsys.readouterr().err
