"""``its-trainer``: train a RecurrentPPO model bundle, backtest one, or export simulator bars.

its-trainer train --from 2025-01-02 --to 2025-03-31 --timesteps 200000 --seed 42 [--data FILE]
its-trainer backtest BUNDLE --from 2025-04-01 --to 2025-04-30 [--data FILE] [--out DIR]
    [--min-confidence 0.6 --cooldown-s 60 ... | --no-risk]
its-trainer sim-bars --from 2025-01-02 --to 2025-03-31 --out bars.parquet [--seed 42]
its-trainer evaluate --from 2025-01-02 --to 2025-06-30 --train-sessions 40 --test-sessions 10
    [train flags] [--bundle BUNDLE (its model card gets the evaluation)] [--out DIR]
its-trainer export BUNDLE   (a format-1 bundle to format 2, in place)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg

from its_common.db.connect import connection_kwargs
from its_common.logs import setup_logging
from its_common.risk import RiskLimits
from its_common.settings import SettingsError, load_settings
from its_trainer import __version__
from its_trainer.config import TrainerSettings, parse_pair

log = logging.getLogger("its.trainer")
T = TypeVar("T")


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from None


def _pair(value: str) -> tuple[str, str]:
    try:
        return parse_pair(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _range(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--from", dest="first", type=_date, required=True, help="YYYY-MM-DD (NY)")
    sub.add_argument("--to", dest="last", type=_date, required=True, help="YYYY-MM-DD inclusive")
    sub.add_argument(
        "--data",
        default=None,
        help="Parquet/CSV bars file (default ITS_TRAINER_DATA_FILE; unset = the database)",
    )
    sub.add_argument("--pair", type=_pair, default=None, help="FIRST,SECOND (ITS_TRAINER_PAIR)")
    sub.add_argument(
        "--wait-for-data",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the database to hold bars of the range (a Job started "
        "with a fresh install); 0 = do not wait",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="its-trainer",
        description="Two-ticker RecurrentPPO trainer: model bundles and backtests.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and write a bundle")
    _range(train)
    _train_flags(train)
    train.add_argument("--bundle-dir", default=None, help="parent directory of bundles")
    train.add_argument("--name", default=None, help="bundle name (default: time-pair-seed)")
    train.add_argument(
        "--demo", action="store_true", help='mark the bundle a demo model ("demo": true)'
    )
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps; 0 = none")
    train.add_argument("--no-progress", action="store_true", help="no progress lines")

    evaluate = sub.add_parser(
        "evaluate",
        help="walk-forward evaluation: train on N sessions, test on the next M, roll",
    )
    _range(evaluate)
    _train_flags(evaluate)
    evaluate.add_argument("--train-sessions", type=int, required=True, help="N")
    evaluate.add_argument("--test-sessions", type=int, required=True, help="M")
    evaluate.add_argument(
        "--max-folds", type=int, default=None, help="only the latest folds (default every one)"
    )
    evaluate.add_argument(
        "--out", type=Path, default=None,
        help="report and fold bundles (default <bundle-dir>/evaluations/<time-pair-seed>)",
    )  # fmt: skip
    evaluate.add_argument(
        "--bundle", type=Path, default=None,
        help="write the evaluation into this bundle's model card",
    )  # fmt: skip
    evaluate.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples (seeded by --seed)"
    )
    _risk_flags(evaluate)

    backtest = sub.add_parser("backtest", help="run a bundle over held-out days")
    backtest.add_argument("bundle", type=Path, help="bundle directory")
    _range(backtest)
    backtest.add_argument("--out", type=Path, default=None, help="report dir (default in bundle)")
    backtest.add_argument("--no-plot", action="store_true", help="no equity-curve PNG")
    _risk_flags(backtest)

    export = sub.add_parser(
        "export",
        help="convert a format-1 bundle (stable-baselines3 files only) to format 2 in place",
    )
    export.add_argument("bundle", type=Path, help="bundle directory")

    sim = sub.add_parser(
        "sim-bars", help="write simulator minute bars to a file (synthetic market)"
    )
    sim.add_argument("--from", dest="first", type=_date, required=True)
    sim.add_argument("--to", dest="last", type=_date, required=True)
    sim.add_argument("--out", type=Path, required=True, help=".parquet or .csv")
    sim.add_argument("--seed", type=int, default=42, help="the simulator's seed")
    sim.add_argument("--pair", type=_pair, default=None)
    sim.add_argument("--trades-per-day", type=int, default=None, help="lower = faster")
    sim.add_argument(
        "--demo-pattern",
        action="store_true",
        help="the demo market's planted pattern (its_common.simmarket.pattern; demo only)",
    )
    return parser


def _train_flags(sub: argparse.ArgumentParser) -> None:
    """The training configuration's flags (train and evaluate)."""
    sub.add_argument("--timesteps", type=int, default=None, help="environment steps")
    sub.add_argument("--seed", type=int, default=None, help="random seed (reproducible)")
    sub.add_argument("--n-envs", type=int, default=None, help="parallel environments")
    sub.add_argument("--vec-env", choices=("dummy", "subproc"), default=None)
    sub.add_argument("--n-steps", type=int, default=None, help="steps per env per update")
    sub.add_argument("--batch-size", type=int, default=None, help="minibatch size")
    sub.add_argument("--epochs", type=int, default=None, help="PPO epochs per update")
    sub.add_argument("--learning-rate", type=float, default=None)
    sub.add_argument("--lstm-hidden", type=int, default=None, help="LSTM hidden size")
    sub.add_argument("--hidden", type=int, default=None, help="MLP layer size (pi and vf)")
    sub.add_argument("--torch-threads", type=int, default=None)


def _risk_flags(sub: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`its_common.risk.RiskLimits` (the trader's
    ``ITS_TRADER_<FIELD>``), defaulting to the trader's defaults; ``--no-risk`` turns them off."""
    group = sub.add_argument_group("risk rules (the live trader's; defaults are its defaults)")
    group.add_argument("--no-risk", action="store_true", help="backtest without the risk rules")
    for spec in dataclasses.fields(RiskLimits):
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = int if isinstance(default, int) else float
            group.add_argument(flag, type=kind, default=default, help=f"default {default:g}")


def _risk_limits(args: argparse.Namespace) -> RiskLimits | None:
    if args.no_risk:
        return None
    return RiskLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RiskLimits)})


def _load_pair_data(
    settings: TrainerSettings, args: argparse.Namespace
) -> tuple[object, str, dict[str, Any] | None]:
    """(PairData, data source, the market's description when ``sim-bars`` left one)."""
    from its_trainer.data import build_pair, read_database, read_file, wait_for_bars
    from its_trainer.simdata import read_market

    symbols = args.pair or parse_pair(settings.pair)
    data_file = args.data or settings.data_file
    if args.last < args.first:
        raise SettingsError("--to is before --from")
    market = None
    if data_file:
        bars = read_file(Path(data_file), symbols, args.first, args.last)
        source = f"file:{Path(data_file).name}"
        market = read_market(Path(data_file))
    else:
        if args.wait_for_data > 0:
            wait_for_bars(
                connection_kwargs(settings), symbols, args.first, args.last, args.wait_for_data,
                log=log.info,
            )  # fmt: skip
        bars = read_database(connection_kwargs(settings), symbols, args.first, args.last)
        source = f"database:{settings.database_url}"
    return build_pair(bars, symbols, args.first, args.last), source, market


def _pick(flag: Any, setting: T) -> T:
    """The flag's value when given, else the setting's."""
    return setting if flag is None else cast(T, flag)


def _train_config(settings: TrainerSettings, args: argparse.Namespace) -> Any:
    from its_trainer.train import TrainConfig

    return TrainConfig(
        timesteps=_pick(args.timesteps, settings.timesteps),
        seed=_pick(args.seed, settings.seed),
        n_envs=_pick(args.n_envs, settings.n_envs),
        vec_env=_pick(args.vec_env, settings.vec_env),
        n_steps=_pick(args.n_steps, settings.n_steps),
        batch_size=_pick(args.batch_size, settings.batch_size),
        n_epochs=_pick(args.epochs, settings.n_epochs),
        learning_rate=_pick(args.learning_rate, settings.learning_rate),
        gamma=settings.gamma,
        ent_coef=settings.ent_coef,
        lstm_hidden=_pick(args.lstm_hidden, settings.lstm_hidden),
        hidden=_pick(args.hidden, settings.hidden),
        checkpoint_every=_pick(getattr(args, "checkpoint_every", 0), settings.checkpoint_every),
        torch_threads=_pick(args.torch_threads, settings.torch_threads),
    )


def _env_config(settings: TrainerSettings) -> Any:
    from its_trainer.env import EnvConfig

    return EnvConfig(
        initial_capital=settings.initial_capital,
        commission_per_share=settings.commission_per_share,
        commission_min=settings.commission_min,
        slippage_bps=settings.slippage_bps,
        max_position_fraction=settings.max_position_fraction,
        risk_penalty=settings.risk_penalty,
    )


def run_train(settings: TrainerSettings, args: argparse.Namespace) -> int:
    from its_trainer.data import PairData
    from its_trainer.train import bundle_name, train

    data, source, market = _load_pair_data(settings, args)
    assert isinstance(data, PairData)
    config = _train_config(settings, args)
    env_config = _env_config(settings)
    root = Path(args.bundle_dir or settings.bundle_dir)
    target = root / (args.name or bundle_name(data.symbols, config.seed))
    log.info(
        "training %s on %s sessions (%s..%s) from %s into %s",
        ",".join(data.symbols), data.episodes, data.first_day, data.last_day, source, target,
    )  # fmt: skip
    result = train(
        data,
        config,
        env_config,
        target,
        data_source=source,
        market=market,
        demo=args.demo,
        progress=None if args.no_progress else sys.stderr,
    )
    print(json.dumps({"bundle": str(result.bundle), **result.metrics}, indent=2, default=str))
    return 0


def run_evaluate(settings: TrainerSettings, args: argparse.Namespace) -> int:
    from its_common.model.bundle import BundleError, read_meta
    from its_common.model.card import build_card, write_card
    from its_trainer.data import PairData
    from its_trainer.evaluate import Plan, walk_forward
    from its_trainer.train import bundle_name

    meta = None
    if args.bundle is not None:
        meta = read_meta(args.bundle)
        if args.pair is None:
            args.pair = tuple(meta["symbols"])
        elif list(args.pair) != list(meta["symbols"]):
            raise BundleError(f"{args.bundle} trades {meta['symbols']}, not {list(args.pair)}")
    data, source, market = _load_pair_data(settings, args)
    assert isinstance(data, PairData)
    config = _train_config(settings, args)
    plan = Plan(args.train_sessions, args.test_sessions, args.max_folds)
    plan.folds(data.episodes)  # a range without a fold is refused before any training
    name = bundle_name(data.symbols, config.seed)
    out = args.out or Path(settings.bundle_dir) / "evaluations" / name
    report = walk_forward(
        data, plan, config, _env_config(settings), out, _risk_limits(args),
        data_source=source, market=market, resamples=args.resamples, log=log.info,
    )  # fmt: skip
    summary: dict[str, Any] = {
        "evaluation": str(out / "evaluation.json"),
        "overall": report["overall"],
        "bootstrap": report["bootstrap"],
    }
    if meta is not None:
        trained = meta.get("train_config", {})
        evaluated = {k: v for k, v in config.__dict__.items() if k != "checkpoint_every"}
        report["same_config_as_bundle"] = all(trained.get(k) == v for k, v in evaluated.items())
        files = write_card(args.bundle, build_card(meta, report))
        summary["model_card"] = [str(f) for f in files]
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_backtest_cmd(settings: TrainerSettings, args: argparse.Namespace) -> int:
    from its_common.model.bundle import load_bundle
    from its_trainer.backtest import run_backtest, write_report
    from its_trainer.data import PairData

    bundle = load_bundle(args.bundle)
    if args.pair is None:
        args.pair = bundle.symbols
    data, _, _ = _load_pair_data(settings, args)
    assert isinstance(data, PairData)
    result = run_backtest(bundle, data, limits=_risk_limits(args))
    out = args.out or args.bundle / "backtests" / f"{args.first}_{args.last}"
    paths = write_report(result, out, plot=not args.no_plot)
    print(json.dumps({**result.report(), "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    return 0


def run_export(settings: TrainerSettings, args: argparse.Namespace) -> int:
    from its_trainer.bundle import export_bundle

    bundle = export_bundle(args.bundle)
    print(
        json.dumps(
            {
                "bundle": str(bundle.path),
                "format": bundle.meta["format"],
                "files": bundle.meta["files"],
                "network": bundle.meta["network"],
            },
            indent=2,
        )
    )
    return 0


def run_sim_bars(settings: TrainerSettings, args: argparse.Namespace) -> int:
    from its_trainer.simdata import describe_market, market_file, simulator_bars

    symbols = args.pair or parse_pair(settings.pair)
    frame = simulator_bars(
        symbols, args.first, args.last, args.seed, args.trades_per_day, args.demo_pattern
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(args.out, index=False)
    else:
        frame.to_csv(args.out, index=False)
    market = describe_market(args.seed, args.trades_per_day, args.demo_pattern)
    market_file(args.out).write_text(json.dumps(market, indent=2) + "\n")
    label = " (demo market with a planted pattern)" if args.demo_pattern else ""
    print(f"{len(frame)} bars of {', '.join(symbols)}{label} written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(TrainerSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.effective_service_name(), settings.log_level)
    from its_common.model.bundle import BundleError
    from its_trainer.data import DataError

    commands = {
        "train": run_train,
        "evaluate": run_evaluate,
        "backtest": run_backtest_cmd,
        "sim-bars": run_sim_bars,
        "export": run_export,
    }
    try:
        return commands[args.command](settings, args)
    except (SettingsError, DataError, BundleError, FileExistsError) as exc:
        print(f"its-trainer {args.command}: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"database unavailable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
