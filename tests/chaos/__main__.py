"""``python -m tests.chaos --variant short|soak --seed N``: one chaos run; exit 0 only if held."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.chaos.runner import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--variant", choices=["short", "soak"], default="short")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--soak-minutes", type=float, default=30.0, help="soak: at least this")
    parser.add_argument("--rounds", type=int, default=None, help="soak: exactly this many rounds")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="its-chaos-"))
    outcome = run(
        args.variant,
        args.seed,
        work_dir,
        soak_minutes=args.soak_minutes,
        rounds=args.rounds,
        say=lambda line: print(line, flush=True),
    )
    print(outcome.text, flush=True)
    print(f"logs: {work_dir / 'logs'}" if args.keep or not outcome.held else "", flush=True)
    if outcome.held and not args.keep and args.work_dir is None:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if outcome.held else 1


if __name__ == "__main__":
    sys.exit(main())
