"""``its-alerter``: evaluate the alert rules and notify (Slack, e-mail, log)."""

from __future__ import annotations

import sys

from its_alerter import __version__
from its_alerter.app import main as service_main
from its_alerter.config import AlerterSettings
from its_common.runtime import service_cli


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        "its-alerter",
        "Alert rules over Redis, PostgreSQL and events; Slack, e-mail and log.",
        AlerterSettings,
        service_main,
        version=__version__,
        argv=argv,
        needs_schema=True,
    )


if __name__ == "__main__":
    sys.exit(main())
