"""The model runtime (its_common.model) without stable-baselines3: bundle refusals (each with a
message saying why), the runtime files' integrity, the seams (inference imports no trainer,
features or sb3 code)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from its_common.features import FEATURE_SPEC_HASH
from its_common.model.bundle import BundleError, load_bundle
from its_common.model.locate import find_bundle
from its_common.model.observation import OBS_SIZE, build_observation
from its_common.model.portfolio import EnvConfig, Portfolio
from its_common.model.runner import PolicyRunner

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
RUNTIME = ("bundle.json", "actor.pt", "normalization.json")


def runtime_copy(target: Path, **meta_changes: object) -> Path:
    """The demo bundle's runtime files only (as the inference image holds them)."""
    target.mkdir(parents=True)
    for name in RUNTIME:
        shutil.copy(DEMO / name, target / name)
    meta_path = target / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta.update(meta_changes)
    meta_path.write_text(json.dumps(meta))
    return target


def test_the_demo_bundle_loads_from_its_runtime_files_alone(tmp_path):
    bundle = load_bundle(runtime_copy(tmp_path / "demo"))
    assert bundle.meta["format"] == 2 and bundle.version == "demo" and bundle.demo
    assert bundle.symbols == ("NVDA", "MSFT")
    assert bundle.normalizer.size == OBS_SIZE
    runner = PolicyRunner(bundle)
    rng = np.random.default_rng(1)
    for i in range(5):
        choice = runner.step(rng.standard_normal(OBS_SIZE).astype(np.float32), i == 0)
        assert choice.probabilities.shape == (9,)
        assert abs(float(choice.probabilities.sum()) - 1.0) < 1e-5
        assert choice.action == int(np.argmax(choice.probabilities))


def test_a_format_1_bundle_is_refused_with_the_command_that_converts_it(tmp_path):
    path = runtime_copy(tmp_path / "old", format=1)
    with pytest.raises(BundleError) as caught:
        load_bundle(path)
    assert f"`its-trainer export {path}`" in str(caught.value)
    assert "format 1" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_spec_hash": "0" * 64}, f"computes features by spec {FEATURE_SPEC_HASH}"),
        ({"observation": {"size": 30}}, "observation size 30 differs from this code's 26"),
        ({"action_map": {"0": "BUY_EVERYTHING"}}, "action map differs"),
        ({"format": 3}, "bundle format 3, expected 2"),
        ({"network": {"obs_size": 26}}, "invalid network shape"),
        ({"sha256": {"actor": "0" * 64}}, "actor.pt does not match its SHA-256"),
    ],
)
def test_a_bundle_this_code_cannot_serve_is_refused_saying_why(tmp_path, change, message):
    path = runtime_copy(tmp_path / "b", **change)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_missing_or_mismatched_weights_are_refused(tmp_path):
    path = runtime_copy(tmp_path / "b")
    (path / "normalization.json").unlink()
    with pytest.raises(BundleError, match=r"normalization.json is missing"):
        load_bundle(path)
    path = runtime_copy(tmp_path / "c")
    meta = json.loads((path / "bundle.json").read_text())
    meta["network"]["lstm_hidden_size"] = 32  # weights are 64 wide
    del meta["sha256"]
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"actor\.pt does not fit the network"):
        load_bundle(path)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)
    assert find_bundle(path) == path


def test_weights_are_loaded_without_unpickling_code(tmp_path):
    """``weights_only=True``: a pickle that would run code is refused, not executed."""
    path = runtime_copy(tmp_path / "evil")
    meta = json.loads((path / "bundle.json").read_text())
    del meta["sha256"]
    (path / "bundle.json").write_text(json.dumps(meta))
    torch.save({"payload": Path("/")}, path / "actor.pt")  # an arbitrary object, not tensors
    with pytest.raises(BundleError, match=r"actor\.pt does not fit the network"):
        load_bundle(path)


def test_portfolio_and_observation():
    config = EnvConfig(slippage_bps=0.0, commission_min=0.0, commission_per_share=0.0)
    book = Portfolio(config, 10_000.0)
    book.step(8, [100.0, 50.0], [100.0, 50.0], [110.0, 50.0], last=False)  # BUY_BOTH
    assert book.shares == [10.0, 20.0] and book.cash == 8_000.0
    assert book.equity == 8_000.0 + 1_100.0 + 1_000.0
    positions = book.positions([110.0, 50.0])
    obs = build_observation(np.ones(12), np.full(12, 2.0), positions)
    assert obs.dtype == np.float32 and obs.shape == (OBS_SIZE,)
    assert obs[12] == np.float32(1_100.0 / book.equity) and obs[25] == np.float32(0.1 / 1.01)
    book.step(4, [110.0, 50.0], [111.0, 51.0], [112.0, 52.0], last=True)  # HOLD, session ends
    assert book.shares == [0.0, 0.0] and book.cash == book.equity == 8_000.0 + 1_120 + 1_040


def test_inference_imports_no_trainer_features_or_sb3_code():
    forbidden = ("its_trainer", "its_features", "its_marketsim", "stable_baselines3",
                 "sb3_contrib", "gymnasium", "matplotlib")  # fmt: skip
    code = (
        "import sys, its_inference.app, its_inference.policy, its_inference.bundles; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""


def test_declared_dependencies_keep_the_inference_image_light():
    def names(specs: list[str]) -> set[str]:
        out = set()
        for spec in specs:
            name = spec.split(";")[0].split("[")[0]
            for sep in "=<>!~ ":
                name = name.split(sep)[0]
            out.add(name.lower())
        return out

    def project(path: str) -> dict[str, Any]:
        loaded: dict[str, Any] = tomllib.loads((ROOT / path / "pyproject.toml").read_text())[
            "project"
        ]
        return loaded

    heavy = {"its-trainer", "its-features", "sb3-contrib", "stable-baselines3", "gymnasium",
             "pandas", "pyarrow", "matplotlib"}  # fmt: skip
    model_extra = project("libs/common")["optional-dependencies"]["model"]
    assert names(model_extra) == {"numpy", "torch"}
    inference = project("services/inference")["dependencies"]
    assert not names(inference) & heavy
    assert "its-common[model]" in inference
    assert [s for s in model_extra if s.startswith("torch")] == ["torch==2.13.0"]
