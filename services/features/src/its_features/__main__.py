"""``its-features``: the live features service."""

from __future__ import annotations

import argparse
import sys

from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_features import __version__
from its_features.app import main as service_main
from its_features.config import FeaturesSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-features",
        description="Live minute-bar features: bars stream in, features stream and cache out.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(FeaturesSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
