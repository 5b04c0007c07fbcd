"""Inference: bundle choice and refusal, the decision entry, a new bundle taken at the next
session open without a restart."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import msgspec
import pytest

from its_common.decisions import Decision, decode_decision, encode_decision
from its_common.streams import EntryFormatError
from its_common.symbols import ACTIVE_MODEL_KEY, active_model
from its_inference.bundles import BundleError, find_bundle, load, version_of
from its_trainer.simdata import simulator_bars
from tests.inference.helpers import DEMO, PAIR, run_live


def copy_bundle(target: Path, **meta_changes: object) -> Path:
    shutil.copytree(DEMO, target)
    meta_path = target / "bundle.json"
    meta = json.loads(meta_path.read_text())
    meta.update(meta_changes)
    meta_path.write_text(json.dumps(meta))
    return target


def test_newest_or_pinned_bundle(tmp_path):
    copy_bundle(tmp_path / "a", name="a", created_at="2025-01-01T00:00:00+00:00")
    copy_bundle(tmp_path / "b", name="b", created_at="2025-02-01T00:00:00+00:00")
    assert find_bundle(tmp_path) == tmp_path / "b"
    assert find_bundle(tmp_path, "a") == tmp_path / "a"
    assert find_bundle(DEMO) == DEMO  # a bundle directory itself
    with pytest.raises(BundleError, match="pinned bundle 'zzz' not found"):
        find_bundle(tmp_path, "zzz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no model bundle"):
        find_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match="does not exist"):
        find_bundle(tmp_path / "missing")


def test_a_bundle_of_another_feature_spec_is_refused_clearly(tmp_path):
    copy_bundle(tmp_path / "old", feature_spec_hash="0" * 64)
    with pytest.raises(BundleError, match=r"trained with feature spec 0000.*retrain the model"):
        load(tmp_path / "old")


def test_demo_bundle_is_labelled_and_loads():
    bundle = load(DEMO)
    assert version_of(bundle) == "demo" and bundle.meta["demo"] is True
    assert bundle.symbols == PAIR
    assert sum(f.stat().st_size for f in DEMO.iterdir()) < 3_000_000


def test_the_demo_market_is_named_in_the_load_log_decisions_and_signals(caplog):
    from its_inference.app import _demo_label
    from its_inference.policy import LivePolicy

    with caplog.at_level("WARNING", logger="its"):
        bundle = load(DEMO)
    assert "DEMO MODEL demo loaded" in caplog.text
    assert "(demo market with a planted pattern)" in caplog.text
    policy = LivePolicy(bundle)
    assert policy.demo and policy.demo_market == "demo market with a planted pattern"
    decision = Decision(
        ts_ms=1_742_218_200_000, action=8, action_name="BUY_BOTH", confidence=0.9,
        model_version="demo", features_hash="ab" * 32, symbols=PAIR, demo=True,
        demo_market=policy.demo_market,
    )  # fmt: skip
    assert _demo_label(decision) == "DEMO model (demo market with a planted pattern) "
    assert decode_decision("1-0", encode_decision(decision)).demo_market == policy.demo_market
    plain = msgspec.structs.replace(decision, demo_market="")
    assert _demo_label(plain) == "DEMO model "
    assert _demo_label(msgspec.structs.replace(plain, demo=False)) == ""


def test_decision_entry_round_trip_and_versioning():
    decision = Decision(
        ts_ms=1_742_218_200_000,
        action=7,
        action_name="BUY_NVDA_HOLD_MSFT",
        confidence=0.61,
        model_version="demo",
        features_hash="ab" * 32,
        symbols=PAIR,
        session_start=True,
    )
    fields = encode_decision(decision)
    assert fields[b"v"] == b"1" and fields[b"ts"] == b"1742218200000"
    assert decode_decision("1-0", fields) == decision
    with pytest.raises(EntryFormatError, match="unsupported decision version"):
        decode_decision("1-0", {**fields, b"v": b"2"})
    with pytest.raises(EntryFormatError):
        decode_decision(
            "1-0", {**fields, b"data": fields[b"data"].replace(b'"action":7', b'"action":3')}
        )
    with pytest.raises(ValueError):
        Decision(
            ts_ms=0, action=9, action_name="X", confidence=0.5, model_version="m",
            features_hash="", symbols=PAIR,
        )  # fmt: skip
    assert msgspec.json.decode(fields[b"data"])["action_name"] == "BUY_NVDA_HOLD_MSFT"


async def test_a_new_bundle_is_used_from_the_next_session_open(redis_client, tmp_path):
    first, last = date(2025, 3, 20), date(2025, 3, 21)
    frame = simulator_bars(PAIR, first, last, seed=5, trades_per_day=10_000)
    newer = load(copy_bundle(tmp_path / "v2", name="v2"))
    minutes = sorted(frame["ts"].unique())
    stage_minute = int(minutes[100])  # staged mid-way through the first session
    live = await run_live(redis_client, frame, load(DEMO), stage_at=(stage_minute, newer))
    versions = [(d.ts_ms, d.model_version, d.session_start) for d in live.decisions]
    second_open = next(ts for ts, _, start in versions[1:] if start)
    assert {v for ts, v, _ in versions if ts < second_open} == {"demo"}
    assert {v for ts, v, _ in versions if ts >= second_open} == {"v2"}
    assert live.inference.metrics.swaps._value.get() == 1
    # The bundle in use is published for the symbol-list guard and the model-age rule.
    await live.inference.announce()
    assert await active_model(redis_client) == ("v2", list(PAIR))
    raw = await redis_client.hgetall(ACTIVE_MODEL_KEY)
    assert raw[b"name"] == b"v2" and raw[b"created_at"]
