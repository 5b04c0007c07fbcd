"""``its-features``: the live features service."""

from __future__ import annotations

import sys

from its_common.runtime import service_cli
from its_features import __version__
from its_features.app import main as service_main
from its_features.config import FeaturesSettings


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        "its-features",
        "Live minute-bar features: bars stream in, features stream and cache out.",
        FeaturesSettings,
        service_main,
        version=__version__,
        argv=argv,
        needs_schema=True,
    )


if __name__ == "__main__":
    sys.exit(main())
