"""``its-inference``: the live inference service."""

from __future__ import annotations

import sys

from its_common.runtime import service_cli
from its_inference import __version__
from its_inference.app import main as service_main
from its_inference.config import InferenceSettings


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        "its-inference",
        "Live decisions of a RecurrentPPO model bundle on the features stream.",
        InferenceSettings,
        service_main,
        version=__version__,
        argv=argv,
        needs_schema=lambda settings: settings.write_signals,
    )


if __name__ == "__main__":
    sys.exit(main())
