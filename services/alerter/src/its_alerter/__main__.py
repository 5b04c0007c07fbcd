"""``its-alerter``: evaluate the alert rules and notify (Slack, e-mail, log)."""

from __future__ import annotations

import argparse
import sys

from its_alerter import __version__
from its_alerter.app import main as service_main
from its_alerter.config import AlerterSettings
from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-alerter",
        description="Alert rules over Redis, PostgreSQL and events; Slack, e-mail and log.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(AlerterSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
