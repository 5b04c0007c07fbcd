"""``its-dashboard``: the web dashboard on ``ITS_HTTP_PORT`` (with /healthz, /readyz, /metrics)."""

from __future__ import annotations

import argparse
import sys

from its_common.runtime import run_service
from its_common.settings import SettingsError, load_settings
from its_dashboard import __version__
from its_dashboard.app import Dashboard
from its_dashboard.config import DashboardSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="its-dashboard", description="ITS web dashboard, JSON API and live updates."
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(DashboardSettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    dashboard = Dashboard(settings)
    return run_service(
        settings,
        dashboard.main,
        version=__version__,
        http_routes=dashboard.add_routes,
        needs_schema=True,
    )


if __name__ == "__main__":
    sys.exit(main())
