"""A minimal service on the ITS runtime, run as a subprocess by the runtime tests."""

from __future__ import annotations

import asyncio
import logging
import sys

from its_common.runtime import ServiceContext, service_cli
from its_common.settings import BaseServiceSettings

log = logging.getLogger("demo")


class DemoSettings(BaseServiceSettings):
    SERVICE = "demo"


async def main(ctx: ServiceContext[DemoSettings]) -> None:
    ticks = 0
    log.info("demo started")
    while not ctx.stopping.is_set():
        ticks += 1
        ctx.counters["ticks"] = ticks
        await asyncio.sleep(0.05)
    log.info("demo flushed and stopping", extra={"ticks": ticks})


if __name__ == "__main__":
    sys.exit(service_cli("demo", "A demo service.", DemoSettings, main, version="9.9.9"))
