"""The model card of a bundle: what a model was trained on and how it did out of sample.

Two files beside ``bundle.json`` (neither is a runtime file: inference never needs them, and
rewriting them leaves the runtime files' SHA-256 valid):

- ``model_card.json`` (:data:`MODEL_CARD_FILE`): ``card_version``, ``model`` (the bundle's name),
  ``created_at``, ``demo``, ``intended_use``, ``symbols``, ``data`` (source, range, sessions,
  rows, and ``market`` when the bars came from the simulator: its seed and planted pattern, if
  any), ``seed``, ``feature_spec`` (hash, version, names), ``trainer`` (version, train config,
  environment config, network, libraries), ``training`` (the training metrics) and
  ``evaluation`` (``its-trainer evaluate``'s walk-forward report, or null until one ran).
- ``MODEL_CARD.md`` (:data:`MODEL_CARD_MARKDOWN`): the same for people.

``its-trainer train`` writes the card (evaluation null); ``its-trainer evaluate --bundle``
fills in the evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

MODEL_CARD_FILE: Final = "model_card.json"
MODEL_CARD_MARKDOWN: Final = "MODEL_CARD.md"
CARD_VERSION: Final = 1


def build_card(
    meta: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The card of a bundle from its ``bundle.json`` and an evaluation report (or None)."""
    demo = bool(meta.get("demo", False))
    data = dict(meta.get("data", {}))
    market = data.get("market") or {}
    pattern = market.get("demo_pattern") if isinstance(market, Mapping) else None
    if demo:
        use = "demo only: trained on the ITS market simulator's data, not for real trading"
        if pattern:
            label = pattern.get("label", "a planted pattern")
            use += f" ({label}: what it learnt is not in real markets)"
    else:
        use = "paper trading and research; check the evaluation before any use"
    return {
        "card_version": CARD_VERSION,
        "model": meta.get("name"),
        "created_at": meta.get("created_at"),
        "demo": demo,
        "intended_use": use,
        "symbols": meta.get("symbols"),
        "data": data,
        "seed": meta.get("seed"),
        "feature_spec": {
            "hash": meta.get("feature_spec_hash"),
            "version": meta.get("feature_spec_version"),
            "names": meta.get("feature_names"),
        },
        "trainer": {
            "version": meta.get("trainer_version"),
            "train_config": meta.get("train_config"),
            "env_config": meta.get("env_config"),
            "network": meta.get("network"),
            "libraries": meta.get("libraries"),
        },
        "training": meta.get("metrics"),
        "evaluation": None if evaluation is None else dict(evaluation),
    }


def read_card(path: Path) -> dict[str, Any] | None:
    """A bundle's card, None when it has none."""
    file = path / MODEL_CARD_FILE
    if not file.is_file():
        return None
    card = json.loads(file.read_text())
    if not isinstance(card, dict):
        raise ValueError(f"{file} is not a JSON object")
    return card


def write_card(path: Path, card: Mapping[str, Any]) -> list[Path]:
    """Write both files of the card into the bundle directory ``path``."""
    files = [path / MODEL_CARD_FILE, path / MODEL_CARD_MARKDOWN]
    files[0].write_text(json.dumps(card, indent=2, default=str) + "\n")
    files[1].write_text(render_markdown(card))
    return files


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):+.2%}"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2%}"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def render_markdown(card: Mapping[str, Any]) -> str:
    data = card.get("data") or {}
    trainer = card.get("trainer") or {}
    lines = [
        f"# Model card: {card.get('model')}",
        "",
        f"- Intended use: {card.get('intended_use')}",
        f"- Symbols: {', '.join(card.get('symbols') or [])}",
        f"- Training data: {data.get('from')} .. {data.get('to')} ({data.get('sessions')} "
        f"sessions, {data.get('rows')} rows) from {data.get('source')}",
    ]
    market = data.get("market")
    if market:
        lines.append(f"- Market: {json.dumps(market, sort_keys=True)}")
    spec = card.get("feature_spec") or {}
    lines += [
        f"- Seed: {card.get('seed')}",
        f"- Feature spec: version {spec.get('version')}, hash `{spec.get('hash')}`",
        f"- Trainer: its-trainer {trainer.get('version')}, "
        f"config `{json.dumps(trainer.get('train_config'), sort_keys=True)}`",
        f"- Costs: `{json.dumps(trainer.get('env_config'), sort_keys=True)}`",
        "",
        "## Evaluation (walk-forward, out of sample)",
        "",
    ]
    evaluation = card.get("evaluation")
    if not evaluation:
        lines.append("None yet: `its-trainer evaluate ... --bundle <this bundle>` adds it.")
        return "\n".join(lines) + "\n"
    plan = evaluation.get("plan", {})
    folds = len(evaluation.get("folds", []))
    rules = "the live trader's" if evaluation.get("risk_limits") else "none"
    lines += [
        f"Data {evaluation.get('from')} .. {evaluation.get('to')}: {folds} folds, train on "
        f"{plan.get('train_sessions')} sessions, test on the next {plan.get('test_sessions')}, "
        f"roll by {plan.get('test_sessions')}; risk rules: {rules}.",
        "",
        "| fold | test | return | B&H return | Sharpe | B&H Sharpe | max DD | turnover |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fold in evaluation.get("folds", []):
        p, b = fold["policy"], fold["buy_and_hold"]
        lines.append(
            f"| {fold['fold']} | {fold['test']['from']} .. {fold['test']['to']} | "
            f"{_pct(p['total_return'])} | {_pct(b['total_return'])} | {_num(p['sharpe'])} | "
            f"{_num(b['sharpe'])} | {_share(p['max_drawdown'])} | {_num(p['turnover'])} |"
        )
    overall = evaluation.get("overall", {})
    p, b = overall.get("policy", {}), overall.get("buy_and_hold", {})
    lines.append(
        f"| all | | {_pct(p.get('total_return'))} | {_pct(b.get('total_return'))} | "
        f"{_num(p.get('sharpe'))} | {_num(b.get('sharpe'))} | {_share(p.get('max_drawdown'))} | "
        f"{_num(p.get('turnover'))} |"
    )
    boot = evaluation.get("bootstrap", {})
    if boot:
        level = boot.get("confidence", 0.95)
        lines += ["", f"Bootstrap over test sessions ({boot.get('resamples')} resamples, seed "
                  f"{boot.get('seed')}), {level:.0%} intervals:", ""]  # fmt: skip
        for key, label in (
            ("mean_session_return", "mean session return"),
            ("mean_session_excess", "mean session return minus buy-and-hold's"),
        ):
            item = boot.get(key, {})
            lines.append(
                f"- {label}: {_pct(item.get('mean'))} "
                f"[{_pct(item.get('low'))}, {_pct(item.get('high'))}]"
            )
    return "\n".join(lines) + "\n"
