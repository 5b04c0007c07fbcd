"""``its-collector``: samples every service's metrics and Redis INFO into sys_metrics."""

from __future__ import annotations

import sys

from its_collector import __version__
from its_collector.app import main as service_main
from its_collector.config import CollectorSettings
from its_common.runtime import service_cli


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        "its-collector",
        "Sample every service's /metrics, heartbeats and Redis INFO into sys_metrics.",
        CollectorSettings,
        service_main,
        version=__version__,
        argv=argv,
        needs_schema=True,
    )


if __name__ == "__main__":
    sys.exit(main())
