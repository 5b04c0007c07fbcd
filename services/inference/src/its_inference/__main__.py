"""``its-inference``: the live inference service."""

from __future__ import annotations

import argparse
import sys

from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_inference import __version__
from its_inference.app import main as service_main
from its_inference.config import InferenceSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-inference",
        description="Live decisions of a RecurrentPPO model bundle on the features stream.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(InferenceSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
