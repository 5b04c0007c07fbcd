"""``its-validator``: compare the feed's last price with the broker's price per symbol."""

from __future__ import annotations

import argparse
import sys

from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_validator import __version__
from its_validator.app import main as service_main
from its_validator.config import ValidatorSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-validator", description="Feed vs broker price checks (price_checks, metrics)."
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(ValidatorSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__, needs_schema=True)


if __name__ == "__main__":
    sys.exit(main())
