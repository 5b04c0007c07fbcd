"""``its-collector``: samples every service's metrics and Redis INFO into sys_metrics."""

from __future__ import annotations

import argparse
import sys

from its_collector import __version__
from its_collector.app import main as service_main
from its_collector.config import CollectorSettings
from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-collector",
        description="Sample every service's /metrics, heartbeats and Redis INFO into sys_metrics.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(CollectorSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_service(settings, service_main, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
